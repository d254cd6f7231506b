//! Sessions and their refresh tokens on SQLite: tables `sessions` and `refresh_tokens`
//! (migration 2). A rotation is one transaction: the presented token marked used, its successor
//! stored, or the whole session revoked when a spent token comes back after the grace window.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Result, Sqlite, if_taken};
use crate::codec::{ms, time};
use flowgrid_domain::Error;
use flowgrid_domain::store::SessionStore;
use flowgrid_domain::{RefreshOutcome, RefreshToken, Session, TenantId, UserId};

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
    .map_err(|e| if_taken(e, Error::Conflict("refresh token hash collision".into())))?;
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
