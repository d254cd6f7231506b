//! The embedded backend: SQLite in one file, WAL mode, safe for several processes at once.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions (one writer at a time across processes, others
//! wait up to the busy timeout); reads never block writers. Every table's key starts with the
//! tenant id. Connections are pooled per process and used on Tokio's blocking threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use flowgrid_domain::Error;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::Condition;
use flowgrid_domain::store::{
    AgentQuery, AgentStore, AgentVersionSummary, Page, decode_token, encode_token,
};
use flowgrid_domain::{Agent, AgentId, TenantId};

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

mod identity;
mod jobs;

pub use identity::{insert_signing_key, list_signing_keys};

const MIGRATIONS: &[&str] = &[
    // 1: agents and their version history.
    "CREATE TABLE agents (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        name_key TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        etag TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX agents_by_name ON agents (tenant_id, name_key);
    CREATE INDEX agents_by_created ON agents (tenant_id, created_ms DESC, id DESC);
    CREATE TABLE agent_versions (
        tenant_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, agent_id, version)
    ) WITHOUT ROWID;",
    // 2: tenants, users, sessions, refresh tokens, signing keys, revoked sessions.
    identity::MIGRATION,
    // 3: jobs (the Execution app).
    jobs::MIGRATION,
];

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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Sqlite {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
        };
        db.run(migrate).await?;
        Ok(db)
    }

    /// Opens the database like [`Sqlite::open`], on the calling thread (start-up code that has
    /// no async runtime at hand).
    pub fn open_blocking(path: &Path) -> flowgrid_domain::Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Sqlite {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
        };
        db.run_blocking(migrate)?;
        Ok(db)
    }

    /// Runs `f` with a pooled connection on the calling thread.
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> flowgrid_domain::Result<T> {
        let pooled = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => connect(&self.inner.path)?,
        };
        let result = f(&mut conn);
        if let Ok(mut idle) = self.inner.idle.lock()
            && idle.len() < POOL_SIZE
            && conn.is_autocommit()
        {
            idle.push(conn);
        }
        Ok(result?)
    }

    /// Runs `f` with a pooled connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> flowgrid_domain::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.idle.lock().ok().and_then(|mut idle| idle.pop());
            let mut conn = match pooled {
                Some(c) => c,
                None => connect(&inner.path)?,
            };
            let result = f(&mut conn);
            if let Ok(mut idle) = inner.idle.lock()
                && idle.len() < POOL_SIZE
                && conn.is_autocommit()
            {
                idle.push(conn);
            }
            Ok(result?)
        })
        .await
        .map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
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
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(Error::Config(format!(
            "the database schema (version {current}) is newer than this build knows ({})",
            MIGRATIONS.len()
        ))
        .into());
    }
    for sql in &MIGRATIONS[current..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
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

fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn to_doc(agent: &Agent) -> Result<String> {
    serde_json::to_string(agent).map_err(|e| Error::Internal(format!("encoding agent: {e}")).into())
}

fn from_doc(doc: &str, etag: String) -> Result<Agent> {
    let mut agent: Agent = serde_json::from_str(doc)
        .map_err(|e| Error::Internal(format!("decoding stored agent: {e}")))?;
    agent.etag = etag;
    Ok(agent)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn name_taken(e: rusqlite::Error) -> Error {
    if is_unique_violation(&e) {
        Error::Conflict("An agent with this name already exists.".into())
    } else {
        DbError::from(e).into()
    }
}

/// Where a listing page ended: (created_ms, id) of its last agent.
#[derive(Serialize, Deserialize)]
struct AgentCursor {
    c: i64,
    i: String,
}

/// Where a version listing page ended.
#[derive(Serialize, Deserialize)]
struct VersionCursor {
    v: u32,
}

fn like_pattern(text: &str) -> String {
    let escaped: String = text
        .to_lowercase()
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}

#[async_trait::async_trait]
impl AgentStore for Sqlite {
    async fn insert(&self, agent: &Agent) -> flowgrid_domain::Result<Agent> {
        let mut agent = agent.clone();
        agent.etag = new_etag();
        self.run(move |conn| {
            let doc = to_doc(&agent)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO agents (tenant_id, id, name_key, status, created_ms, etag, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    agent.tenant_id.as_str(),
                    agent.id.to_string(),
                    agent.name_key(),
                    agent.status.as_str(),
                    agent.created_at.timestamp_millis(),
                    agent.etag,
                    doc
                ],
            )
            .map_err(name_taken)?;
            tx.execute(
                "INSERT INTO agent_versions (tenant_id, agent_id, version, doc) VALUES (?1, ?2, ?3, ?4)",
                params![agent.tenant_id.as_str(), agent.id.to_string(), agent.version, doc],
            )?;
            tx.commit()?;
            Ok(agent)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: AgentId) -> flowgrid_domain::Result<Agent> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let (doc, etag): (String, String) = conn
                .prepare_cached("SELECT doc, etag FROM agents WHERE tenant_id = ?1 AND id = ?2")?
                .query_row(params![tenant.as_str(), id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            from_doc(&doc, etag)
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        query: &AgentQuery,
    ) -> flowgrid_domain::Result<Page<Agent>> {
        let tenant = tenant.clone();
        let cursor: Option<AgentCursor> = query
            .continuation_token
            .as_deref()
            .map(decode_token)
            .transpose()?;
        let status = query.status.map(|s| s.as_str());
        let name = query.name_contains.as_deref().map(like_pattern);
        let limit = query.limit;
        self.run(move |conn| {
            let (c, i) = cursor
                .map(|c| (Some(c.c), Some(c.i)))
                .unwrap_or((None, None));
            let mut stmt = conn.prepare_cached(
                "SELECT doc, etag, created_ms, id FROM agents
                 WHERE tenant_id = ?1
                   AND (?2 IS NULL OR status = ?2)
                   AND (?3 IS NULL OR name_key LIKE ?3 ESCAPE '\\')
                   AND (?4 IS NULL OR created_ms < ?4 OR (created_ms = ?4 AND id < ?5))
                 ORDER BY created_ms DESC, id DESC
                 LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![tenant.as_str(), status, name, c, i, i64::from(limit) + 1],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )?;
            let mut items = Vec::new();
            let mut last = None;
            for row in rows {
                let (doc, etag, created, id) = row?;
                if items.len() == limit as usize {
                    return Ok(Page {
                        items,
                        continuation_token: last.map(|p| encode_token(&p)),
                    });
                }
                items.push(from_doc(&doc, etag)?);
                last = Some(AgentCursor { c: created, i: id });
            }
            Ok(Page {
                items,
                continuation_token: None,
            })
        })
        .await
    }

    async fn replace(&self, next: &Agent, expected_etag: &str) -> flowgrid_domain::Result<Agent> {
        let mut agent = next.clone();
        agent.etag = new_etag();
        let expected = expected_etag.to_owned();
        self.run(move |conn| {
            let doc = to_doc(&agent)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_etag(&tx, "agents", agent.tenant_id.as_str(), &agent.id.to_string(), &expected)?;
            tx.execute(
                "UPDATE agents SET name_key = ?3, status = ?4, etag = ?5, doc = ?6 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    agent.tenant_id.as_str(),
                    agent.id.to_string(),
                    agent.name_key(),
                    agent.status.as_str(),
                    agent.etag,
                    doc
                ],
            )
            .map_err(name_taken)?;
            tx.execute(
                "INSERT INTO agent_versions (tenant_id, agent_id, version, doc) VALUES (?1, ?2, ?3, ?4)",
                params![agent.tenant_id.as_str(), agent.id.to_string(), agent.version, doc],
            )
            .map_err(|e| {
                if is_unique_violation(&e) { Error::PreconditionFailed } else { DbError::from(e).into() }
            })?;
            tx.commit()?;
            Ok(agent)
        })
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        id: AgentId,
        if_match: Option<&Condition>,
    ) -> flowgrid_domain::Result<()> {
        let tenant = tenant.clone();
        let if_match = if_match.cloned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let etag = current_etag(&tx, "agents", tenant.as_str(), &id.to_string())?;
            if let Some(condition) = if_match
                && !condition.matches(&etag)
            {
                return Err(Error::PreconditionFailed.into());
            }
            tx.execute(
                "DELETE FROM agents WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), id.to_string()],
            )?;
            tx.execute(
                "DELETE FROM agent_versions WHERE tenant_id = ?1 AND agent_id = ?2",
                params![tenant.as_str(), id.to_string()],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn versions(
        &self,
        tenant: &TenantId,
        id: AgentId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> flowgrid_domain::Result<Page<AgentVersionSummary>> {
        let tenant = tenant.clone();
        let cursor: Option<VersionCursor> = continuation_token.map(decode_token).transpose()?;
        self.run(move |conn| {
            // The agent must exist now: a deleted agent has no history to show.
            conn.query_row(
                "SELECT 1 FROM agents WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), id.to_string()],
                |_| Ok(()),
            )?;
            let mut stmt = conn.prepare_cached(
                "SELECT doc FROM agent_versions WHERE tenant_id = ?1 AND agent_id = ?2 AND (?3 IS NULL OR version < ?3)
                 ORDER BY version DESC LIMIT ?4",
            )?;
            let docs = stmt
                .query_map(params![tenant.as_str(), id.to_string(), cursor.map(|c| c.v), i64::from(limit) + 1], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = docs.len() > limit as usize;
            let items = docs
                .iter()
                .take(limit as usize)
                .map(|d| from_doc(d, String::new()).map(|a| AgentVersionSummary::from(&a)))
                .collect::<Result<Vec<_>>>()?;
            let continuation_token = match (more, items.last()) {
                (true, Some(last)) => Some(encode_token(&VersionCursor { v: last.version })),
                _ => None,
            };
            Ok(Page { items, continuation_token })
        })
        .await
    }

    async fn scheduled(&self, limit: u32) -> flowgrid_domain::Result<Vec<Agent>> {
        self.run(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT doc, etag FROM agents WHERE json_extract(doc, '$.schedule') IS NOT NULL
                     AND status != 'disabled' ORDER BY tenant_id, id LIMIT ?1",
                )?
                .query_map(params![limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(doc, etag)| from_doc(&doc, etag))
                .collect()
        })
        .await
    }

    async fn version(
        &self,
        tenant: &TenantId,
        id: AgentId,
        version: u32,
    ) -> flowgrid_domain::Result<Agent> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let doc: String = conn.query_row(
                "SELECT v.doc FROM agent_versions v JOIN agents a ON a.tenant_id = v.tenant_id AND a.id = v.agent_id
                 WHERE v.tenant_id = ?1 AND v.agent_id = ?2 AND v.version = ?3",
                params![tenant.as_str(), id.to_string(), version],
                |r| r.get(0),
            )?;
            from_doc(&doc, String::new())
        })
        .await
    }
}
