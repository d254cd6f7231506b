//! The identity stores (tenants, users, sessions, signing keys, revocations) on SQLite.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::{DbError, Result, Sqlite, is_unique_violation, new_etag, require_etag};
use flowgrid_domain::Error;
use flowgrid_domain::store::{
    Page, RevocationStore, SessionStore, SigningKeyStore, StoredSigningKey, TenantStore, UserStore,
    decode_token, encode_token,
};
use flowgrid_domain::{RefreshOutcome, RefreshToken, Session, Tenant, TenantId, User, UserId};

/// Schema of the identity tables (migration 2).
pub(super) const MIGRATION: &str = "
    CREATE TABLE tenants (
        id TEXT NOT NULL PRIMARY KEY,
        doc TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE users (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        email_key TEXT NOT NULL,
        etag TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX users_by_email ON users (email_key, tenant_id);
    CREATE TABLE sessions (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER,
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_user ON sessions (tenant_id, user_id);
    CREATE TABLE refresh_tokens (
        hash TEXT NOT NULL PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        issued_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_ms INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX refresh_tokens_by_session ON refresh_tokens (tenant_id, session_id);
    CREATE TABLE signing_keys (
        kid TEXT NOT NULL PRIMARY KEY,
        alg TEXT NOT NULL,
        public_jwk TEXT NOT NULL,
        encrypted_private TEXT NOT NULL,
        kek_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        retired_ms INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE revoked_sessions (
        sid TEXT NOT NULL PRIMARY KEY,
        until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;";

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("encoding {what}: {e}")).into())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc)
        .map_err(|e| Error::Internal(format!("decoding stored {what}: {e}")).into())
}

fn user_from(doc: &str, etag: String) -> Result<User> {
    let mut user: User = decode("user", doc)?;
    user.etag = etag;
    Ok(user)
}

fn email_taken(e: rusqlite::Error) -> Error {
    if is_unique_violation(&e) {
        Error::Conflict("A user with this email already exists in the tenant.".into())
    } else {
        DbError::from(e).into()
    }
}

#[async_trait::async_trait]
impl TenantStore for Sqlite {
    async fn insert(&self, tenant: &Tenant) -> flowgrid_domain::Result<()> {
        let doc = encode("tenant", tenant)?;
        let id = tenant.id.as_str().to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO tenants (id, doc) VALUES (?1, ?2)",
                params![id, doc],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict("The tenant exists.".into())
                } else {
                    DbError::from(e).into()
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &TenantId) -> flowgrid_domain::Result<Tenant> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            let doc: String = conn
                .prepare_cached("SELECT doc FROM tenants WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))?;
            decode("tenant", &doc)
        })
        .await
    }
}

/// Where a user listing page ended.
#[derive(Serialize, Deserialize)]
struct UserCursor {
    i: String,
}

#[async_trait::async_trait]
impl UserStore for Sqlite {
    async fn insert(&self, user: &User) -> flowgrid_domain::Result<User> {
        let mut user = user.clone();
        user.etag = new_etag();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO users (tenant_id, id, email_key, etag, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.tenant_id.as_str(),
                    user.id.to_string(),
                    user.email.key(),
                    user.etag,
                    encode("user", &user)?
                ],
            )
            .map_err(email_taken)?;
            Ok(user)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: UserId) -> flowgrid_domain::Result<User> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let (doc, etag): (String, String) = conn
                .prepare_cached("SELECT doc, etag FROM users WHERE tenant_id = ?1 AND id = ?2")?
                .query_row(params![tenant.as_str(), id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            user_from(&doc, etag)
        })
        .await
    }

    async fn find_by_email(&self, email_key: &str) -> flowgrid_domain::Result<Vec<User>> {
        let key = email_key.to_owned();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc, etag FROM users WHERE email_key = ?1 ORDER BY tenant_id",
            )?;
            let rows = stmt.query_map(params![key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut users = Vec::new();
            for row in rows {
                let (doc, etag) = row?;
                users.push(user_from(&doc, etag)?);
            }
            Ok(users)
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> flowgrid_domain::Result<Page<User>> {
        let tenant = tenant.clone();
        let cursor: Option<UserCursor> = continuation_token.map(decode_token).transpose()?;
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc, etag, id FROM users WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2)
                 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![tenant.as_str(), cursor.map(|c| c.i), i64::from(limit) + 1],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )?;
            let mut items = Vec::new();
            let mut last = None;
            for row in rows {
                let (doc, etag, id) = row?;
                if items.len() == limit as usize {
                    return Ok(Page {
                        items,
                        continuation_token: last.map(|i| encode_token(&UserCursor { i })),
                    });
                }
                items.push(user_from(&doc, etag)?);
                last = Some(id);
            }
            Ok(Page {
                items,
                continuation_token: None,
            })
        })
        .await
    }

    async fn replace(&self, user: &User, expected_etag: &str) -> flowgrid_domain::Result<User> {
        let mut user = user.clone();
        user.etag = new_etag();
        let expected = expected_etag.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_etag(&tx, "users", user.tenant_id.as_str(), &user.id.to_string(), &expected)?;
            tx.execute(
                "UPDATE users SET email_key = ?3, etag = ?4, doc = ?5 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    user.tenant_id.as_str(),
                    user.id.to_string(),
                    user.email.key(),
                    user.etag,
                    encode("user", &user)?
                ],
            )
            .map_err(email_taken)?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }
}

fn session_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, i64, i64, Option<i64>)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn session_from(row: (String, String, String, i64, i64, Option<i64>)) -> Result<Session> {
    let (tenant, id, user, created, expires, revoked) = row;
    Ok(Session {
        id,
        tenant_id: TenantId::parse(&tenant)
            .map_err(|_| Error::Internal("stored session has a bad tenant id".into()))?,
        user_id: UserId::parse(&user)
            .map_err(|_| Error::Internal("stored session has a bad user id".into()))?,
        created_at: time(created),
        expires_at: time(expires),
        revoked_at: revoked.map(time),
    })
}

const SESSION_COLUMNS: &str = "tenant_id, id, user_id, created_ms, expires_ms, revoked_ms";

fn load_session(conn: &Connection, tenant: &str, id: &str) -> Result<Option<Session>> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = ?1 AND id = ?2"
    ))?
    .query_row(params![tenant, id], session_row)
    .optional()?
    .map(session_from)
    .transpose()
}

fn insert_refresh(
    conn: &Connection,
    tenant: &str,
    session: &str,
    token: &RefreshToken,
    cap_ms: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO refresh_tokens (hash, tenant_id, session_id, issued_ms, expires_ms, used_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
        params![
            token.hash,
            tenant,
            session,
            ms(token.issued_at),
            ms(token.expires_at).min(cap_ms)
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict("refresh token hash collision".into())
        } else {
            DbError::from(e).into()
        }
    })?;
    Ok(())
}

#[async_trait::async_trait]
impl SessionStore for Sqlite {
    async fn create(&self, session: &Session, first: &RefreshToken) -> flowgrid_domain::Result<()> {
        let session = session.clone();
        let first = first.clone();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ),
                params![
                    session.tenant_id.as_str(),
                    session.id,
                    session.user_id.to_string(),
                    ms(session.created_at),
                    ms(session.expires_at),
                    session.revoked_at.map(ms)
                ],
            )?;
            insert_refresh(
                &tx,
                session.tenant_id.as_str(),
                &session.id,
                &first,
                ms(session.expires_at),
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> flowgrid_domain::Result<Session> {
        let tenant = tenant.clone();
        let id = id.to_owned();
        self.run(move |conn| {
            load_session(conn, tenant.as_str(), &id)?.ok_or(Error::NotFound.into())
        })
        .await
    }

    async fn rotate(
        &self,
        presented: &str,
        next: &RefreshToken,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> flowgrid_domain::Result<RefreshOutcome> {
        let presented = presented.to_owned();
        let next = next.clone();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<(String, String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT tenant_id, session_id, expires_ms, used_ms FROM refresh_tokens WHERE hash = ?1",
                    params![presented],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((tenant, sid, expires, used)) = found else {
                return Ok(RefreshOutcome::Invalid);
            };
            let Some(session) = load_session(&tx, &tenant, &sid)? else {
                return Ok(RefreshOutcome::Invalid);
            };
            let now_ms = ms(now);
            if session.revoked_at.is_some() || ms(session.expires_at) <= now_ms || expires <= now_ms {
                return Ok(RefreshOutcome::Invalid);
            }
            let outcome = match used {
                Some(used) if now_ms - used >= grace.num_milliseconds() => {
                    tx.execute(
                        "UPDATE sessions SET revoked_ms = ?3 WHERE tenant_id = ?1 AND id = ?2",
                        params![tenant, sid, now_ms],
                    )?;
                    RefreshOutcome::Reused(Session { revoked_at: Some(now), ..session })
                }
                Some(_) => {
                    insert_refresh(&tx, &tenant, &sid, &next, ms(session.expires_at))?;
                    RefreshOutcome::Rotated(session)
                }
                None => {
                    tx.execute(
                        "UPDATE refresh_tokens SET used_ms = ?2 WHERE hash = ?1",
                        params![presented, now_ms],
                    )?;
                    insert_refresh(&tx, &tenant, &sid, &next, ms(session.expires_at))?;
                    RefreshOutcome::Rotated(session)
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke(
        &self,
        tenant: &TenantId,
        id: &str,
        now: DateTime<Utc>,
    ) -> flowgrid_domain::Result<Session> {
        let tenant = tenant.clone();
        let id = id.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE sessions SET revoked_ms = ?3 WHERE tenant_id = ?1 AND id = ?2 AND revoked_ms IS NULL",
                params![tenant.as_str(), id, ms(now)],
            )?;
            let session = load_session(&tx, tenant.as_str(), &id)?.ok_or(Error::NotFound)?;
            tx.commit()?;
            Ok(session)
        })
        .await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> flowgrid_domain::Result<u64> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tokens = tx.execute(
                "DELETE FROM refresh_tokens WHERE expires_ms < ?1
                    OR session_id IN (SELECT id FROM sessions WHERE expires_ms < ?1)",
                params![ms(now)],
            )?;
            let sessions = tx.execute(
                "DELETE FROM sessions WHERE expires_ms < ?1",
                params![ms(now)],
            )?;
            tx.commit()?;
            Ok((tokens + sessions) as u64)
        })
        .await
    }

    async fn revoke_all_of_user(
        &self,
        tenant: &TenantId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> flowgrid_domain::Result<Vec<Session>> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let live = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions
                     WHERE tenant_id = ?1 AND user_id = ?2 AND revoked_ms IS NULL AND expires_ms > ?3"
                ))?;
                let rows = stmt.query_map(
                    params![tenant.as_str(), user.to_string(), ms(now)],
                    session_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.execute(
                "UPDATE sessions SET revoked_ms = ?3 WHERE tenant_id = ?1 AND user_id = ?2 AND revoked_ms IS NULL",
                params![tenant.as_str(), user.to_string(), ms(now)],
            )?;
            tx.commit()?;
            live.into_iter()
                .map(|row| session_from(row).map(|s| Session { revoked_at: Some(now), ..s }))
                .collect()
        })
        .await
    }
}

/// Every stored signing key, newest first (also used synchronously at start-up).
pub fn list_signing_keys(conn: &Connection) -> Result<Vec<StoredSigningKey>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kid, alg, public_jwk, encrypted_private, kek_id, created_ms, retired_ms
         FROM signing_keys ORDER BY created_ms DESC, kid DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredSigningKey {
            kid: r.get(0)?,
            alg: r.get(1)?,
            public_jwk: r.get(2)?,
            encrypted_private: r.get(3)?,
            kek_id: r.get(4)?,
            created_at: time(r.get(5)?),
            retired_at: r.get::<_, Option<i64>>(6)?.map(time),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Stores a signing key (also used synchronously at start-up).
pub fn insert_signing_key(conn: &Connection, key: &StoredSigningKey) -> Result<()> {
    conn.execute(
        "INSERT INTO signing_keys (kid, alg, public_jwk, encrypted_private, kek_id, created_ms, retired_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            key.kid,
            key.alg,
            key.public_jwk,
            key.encrypted_private,
            key.kek_id,
            ms(key.created_at),
            key.retired_at.map(ms)
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict("a signing key with this kid exists".into())
        } else {
            DbError::from(e).into()
        }
    })?;
    Ok(())
}

#[async_trait::async_trait]
impl SigningKeyStore for Sqlite {
    async fn insert(&self, key: &StoredSigningKey) -> flowgrid_domain::Result<()> {
        let key = key.clone();
        self.run(move |conn| insert_signing_key(conn, &key)).await
    }

    async fn list(&self) -> flowgrid_domain::Result<Vec<StoredSigningKey>> {
        self.run(|conn| list_signing_keys(conn)).await
    }

    async fn retire_all_except(
        &self,
        current: &str,
        now: DateTime<Utc>,
    ) -> flowgrid_domain::Result<()> {
        let current = current.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE signing_keys SET retired_ms = ?2 WHERE kid <> ?1 AND retired_ms IS NULL",
                params![current, ms(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_retired_before(&self, before: DateTime<Utc>) -> flowgrid_domain::Result<u64> {
        self.run(move |conn| {
            let n = conn.execute(
                "DELETE FROM signing_keys WHERE retired_ms IS NOT NULL AND retired_ms < ?1",
                params![ms(before)],
            )?;
            Ok(n as u64)
        })
        .await
    }
}

#[async_trait::async_trait]
impl RevocationStore for Sqlite {
    async fn revoke(&self, sid: &str, until: DateTime<Utc>) -> flowgrid_domain::Result<()> {
        let sid = sid.to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO revoked_sessions (sid, until_ms) VALUES (?1, ?2)
                 ON CONFLICT (sid) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
                params![sid, ms(until)],
            )?;
            Ok(())
        })
        .await
    }

    async fn is_revoked(&self, sid: &str) -> flowgrid_domain::Result<bool> {
        let sid = sid.to_owned();
        self.run(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM revoked_sessions WHERE sid = ?1")?
                .query_row(params![sid], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> flowgrid_domain::Result<u64> {
        self.run(move |conn| {
            let n = conn.execute(
                "DELETE FROM revoked_sessions WHERE until_ms < ?1",
                params![ms(now)],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
