//! The session denylist on SQLite: table `revoked_sessions` (migration 2), one row per
//! revoked session id with the time until which it stays denied.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::Sqlite;
use crate::codec::ms;
use flowgrid_domain::store::RevocationStore;

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
