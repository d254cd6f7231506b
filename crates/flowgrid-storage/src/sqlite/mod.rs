//! The embedded backend: SQLite in one file, WAL mode, safe for several processes at once.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions (one writer at a time across processes, others
//! wait up to the busy timeout); reads never block writers. Every table's key starts with the
//! tenant id. Connections are pooled per process and used on Tokio's blocking threads, except
//! point reads by key ([`Sqlite::read`]), which run where they are called.
//!
//! This module holds the pool, the migrations ([`schema`]), the error translation
//! ([`DbError`]) and the steps every store shares (the compare step of a compare-and-swap,
//! [`require_etag`]); each aggregate's store is a module of its own. Documents are encoded by
//! [`crate::codec`], pages by [`crate::keyset`].

mod agents;
mod analytics;
mod api_requests;
mod connections;
mod jobs;
mod revocations;
mod schema;
mod sessions;
mod signing_keys;
mod spend;
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
    /// Connections of [`Sqlite::read`]: read-only, and without a busy timeout, so that a read
    /// that would have to wait fails at once instead of stalling an async worker thread.
    readers: Mutex<Vec<Connection>>,
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
                readers: Mutex::new(Vec::new()),
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

    /// Runs the point read `f` (one row by its key) with a pooled read-only connection on the
    /// calling thread, without the hop to a blocking thread and back: with the pages cached it
    /// takes a few microseconds, less than the hop. A WAL reader does not wait for writers; when
    /// it would wait all the same (SQLite busy or locked: a checkpoint or a recovery holds the
    /// WAL index) or fails to reach the file, `f` runs again through [`Sqlite::run`], which waits
    /// up to the busy timeout on a blocking thread. Not for scans or anything that writes.
    pub async fn read<T, F>(&self, f: F) -> flowgrid_domain::Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T> + Send + 'static,
    {
        match self.inner.with_reader(&f) {
            Err(Error::Unavailable(_)) => self.run(move |conn| f(conn)).await,
            done => done,
        }
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

impl Inner {
    /// Runs `f` with an idle reader connection (a new one when none is idle), then returns it
    /// to the pool unless the pool is full.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> flowgrid_domain::Result<T> {
        let pooled = self.readers.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => connect_reader(&self.path)?,
        };
        let result = f(&mut conn);
        if let Ok(mut idle) = self.readers.lock()
            && idle.len() < POOL_SIZE
            && conn.is_autocommit()
        {
            idle.push(conn);
        }
        Ok(result?)
    }
}

/// A connection for [`Sqlite::read`]: no busy handler (busy is an error at once) and
/// `query_only`, so a write through it fails instead of running on an async thread.
fn connect_reader(path: &Path) -> Result<Connection> {
    let conn = connect(path)?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_point_read_runs_on_the_calling_thread_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
        let caller = std::thread::current().id();
        let (one, thread) = db
            .read(|conn| {
                let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0))?;
                Ok((one, std::thread::current().id()))
            })
            .await
            .unwrap();
        assert_eq!((one, thread), (1, caller));
        let write = db
            .read(|conn| Ok(conn.execute("CREATE TABLE x (a)", [])?))
            .await;
        assert!(write.is_err(), "a write through read() must fail");
    }

    #[tokio::test]
    async fn a_point_read_that_finds_the_database_busy_runs_again_on_a_blocking_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let caller = std::thread::current().id();
        let thread = db
            .read(move |conn| {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    // What a reader without busy handler gets while a checkpoint holds the WAL index.
                    let busy = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY);
                    return Err(rusqlite::Error::SqliteFailure(busy, None).into());
                }
                let _: i64 = conn.query_row("SELECT 1", [], |r| r.get(0))?;
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_ne!(thread, caller, "the retry runs on a blocking thread");
    }
}
