//! The built-in issuer's signing keys on SQLite: table `signing_keys` (migration 2). The two
//! functions on a connection are public: start-up code reads and stores keys synchronously.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{Result, Sqlite, if_taken};
use crate::codec::{ms, time};
use flowgrid_domain::Error;
use flowgrid_domain::store::{SigningKeyStore, StoredSigningKey};

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
    .map_err(|e| if_taken(e, Error::Conflict("a signing key with this kid exists".into())))?;
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
