//! The embedded backend: SQLite in one file, WAL mode, safe for several processes at once.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions (one writer at a time across processes, others
//! wait up to the busy timeout); reads never block writers. Every table's key starts with the
//! tenant id. Connections are pooled per process and used on Tokio's blocking threads.
//!
//! This module holds the pool, the migrations ([`schema`]), the error translation
//! ([`DbError`]) and the steps every store shares (the compare step of a compare-and-swap,
//! [`require_etag`]); each aggregate's store is a module of its own. Documents are encoded by
//! [`crate::codec`], pages by [`crate::keyset`].

mod agents;
mod jobs;
mod revocations;
mod schema;
mod sessions;
mod signing_keys;
mod tenants;
mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::keyset::{self, ByCreated};
use flowgrid_domain::Error;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::Page;

pub use signing_keys::{insert_signing_key, list_signing_keys};

/// An error inside a SQLite call: a domain error, or SQLite's own, translated once here
/// (no row → not found; busy, locked, I/O → unavailable; anything else → internal).
#[derive(Debug)]
pub struct DbError(Error);

impl From<Error> for DbError {
    fn from(e: Error) -> Self {
        DbError(e)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        e.0
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NotFound,
            rusqlite::Error::SqliteFailure(code, _)
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                ) =>
            {
                Error::Unavailable(format!("sqlite: {e}"))
            }
            other => Error::Internal(format!("sqlite: {other}")),
        })
    }
}

/// What code on a connection returns: `?` takes both SQLite and domain errors.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// How long a statement waits for another process's write lock before giving up (→ 503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections kept open per process.
const POOL_SIZE: usize = 8;

/// A handle on the database file; cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Sqlite {
    /// Opens (creating when needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> flowgrid_domain::Result<Sqlite> {
        let db = Sqlite::at(path)?;
        db.run(migrate).await?;
        Ok(db)
    }

    /// Opens the database like [`Sqlite::open`], on the calling thread (start-up code that has
    /// no async runtime at hand).
    pub fn open_blocking(path: &Path) -> flowgrid_domain::Result<Sqlite> {
        let db = Sqlite::at(path)?;
        db.run_blocking(migrate)?;
        Ok(db)
    }

    /// A handle on `path` with an empty pool, its folder made when missing.
    fn at(path: &Path) -> flowgrid_domain::Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        Ok(Sqlite {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `f` with a pooled connection on the calling thread.
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> flowgrid_domain::Result<T> {
        self.inner.with_connection(f)
    }

    /// Runs `f` with a pooled connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> flowgrid_domain::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_connection(f))
            .await
            .map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
    }
}

impl Inner {
    /// Runs `f` with an idle connection (a new one when none is idle), then returns it to the
    /// pool unless the pool is full or `f` left a transaction open.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> flowgrid_domain::Result<T> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => connect(&self.path)?,
        };
        let result = f(&mut conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < POOL_SIZE
            && conn.is_autocommit()
        {
            idle.push(conn);
        }
        Ok(result?)
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| Error::Unavailable(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let migrations = schema::MIGRATIONS;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > migrations.len() {
        return Err(Error::Config(format!(
            "the database schema (version {current}) is newer than this build knows ({})",
            migrations.len()
        ))
        .into());
    }
    for sql in &migrations[current..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", migrations.len() as i64)?;
    tx.commit()?;
    Ok(())
}

#[async_trait::async_trait]
impl HealthCheck for Sqlite {
    fn name(&self) -> &'static str {
        "storage"
    }

    async fn check(&self) -> flowgrid_domain::Result<()> {
        self.run(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }
}

/// The document and ETag of the tenant's row `id` in `table`; `None` when there is none.
pub(crate) fn load_doc(
    conn: &Connection,
    table: &'static str,
    tenant: &str,
    id: &str,
) -> Result<Option<(String, String)>> {
    let sql = format!("SELECT doc, etag FROM {table} WHERE tenant_id = ?1 AND id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![tenant, id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// The ETag of the tenant's row `id` in `table`; [`Error::NotFound`] when there is none.
pub(crate) fn current_etag(
    conn: &Connection,
    table: &'static str,
    tenant: &str,
    id: &str,
) -> Result<String> {
    let sql = format!("SELECT etag FROM {table} WHERE tenant_id = ?1 AND id = ?2");
    conn.query_row(&sql, params![tenant, id], |r| r.get(0))
        .optional()?
        .ok_or(Error::NotFound.into())
}

/// Succeeds when the tenant's row `id` in `table` still has ETag `expected`: the compare step of
/// every compare-and-swap write ([`Error::NotFound`] when gone, [`Error::PreconditionFailed`] when moved on).
pub(crate) fn require_etag(
    conn: &Connection,
    table: &'static str,
    tenant: &str,
    id: &str,
    expected: &str,
) -> Result<()> {
    if current_etag(conn, table, tenant, id)? == expected {
        Ok(())
    } else {
        Err(Error::PreconditionFailed.into())
    }
}

/// A fresh ETag for a row being written.
pub(crate) fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `taken` when `e` is a unique or primary key violation (the row or the unique value exists);
/// otherwise `e`, translated.
pub(crate) fn if_taken(e: rusqlite::Error, taken: Error) -> DbError {
    let unique = matches!(&e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY);
    if unique { taken.into() } else { e.into() }
}

/// A newest-first page: `stmt` selects `doc, etag, created_ms, id` of up to `limit + 1` rows
/// in that order; `item` makes each of the first `limit` from its document and ETag.
pub(crate) fn newest_first<T>(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    limit: u32,
    item: impl Fn(&str, String) -> flowgrid_domain::Result<T>,
) -> Result<Page<T>> {
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(keyset::page(
        rows,
        limit as usize,
        |(_, _, created, id)| ByCreated {
            c: *created,
            i: id.clone(),
        },
        |(doc, etag, _, _)| item(&doc, etag),
    )?)
}
