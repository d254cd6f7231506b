//! Integration connections on SQLite: tables `connections` and `connection_health`
//! (migration 4), both keyed by tenant and connection name.

use rusqlite::{TransactionBehavior, params};

use super::{Sqlite, if_taken, load_doc, new_etag, require_etag};
use crate::codec::{from_doc, to_doc};
use crate::keyset::{self, ById};
use flowgrid_domain::store::{Connection, ConnectionHealth, ConnectionStore, Page};
use flowgrid_domain::{Error, TenantId};

fn connection_from(doc: &str, etag: String) -> flowgrid_domain::Result<Connection> {
    Ok(Connection {
        etag,
        ..from_doc("connection", doc)?
    })
}

#[async_trait::async_trait]
impl ConnectionStore for Sqlite {
    async fn insert(&self, connection: &Connection) -> flowgrid_domain::Result<Connection> {
        let mut c = connection.clone();
        c.etag = new_etag();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO connections (tenant_id, id, etag, doc) VALUES (?1, ?2, ?3, ?4)",
                params![
                    c.tenant_id.as_str(),
                    c.name,
                    c.etag,
                    to_doc("connection", &c)?
                ],
            )
            .map_err(|e| {
                if_taken(
                    e,
                    Error::Conflict("A connection with this name exists in the tenant.".into()),
                )
            })?;
            Ok(c)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, name: &str) -> flowgrid_domain::Result<Connection> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        self.run(move |conn| {
            let (doc, etag) =
                load_doc(conn, "connections", tenant.as_str(), &name)?.ok_or(Error::NotFound)?;
            Ok(connection_from(&doc, etag)?)
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> flowgrid_domain::Result<Page<Connection>> {
        let tenant = tenant.clone();
        let cursor: Option<ById> = keyset::after(continuation_token)?;
        self.run(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT doc, etag, id FROM connections WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2)
                     ORDER BY id LIMIT ?3",
                )?
                .query_map(
                    params![tenant.as_str(), cursor.map(|c| c.i), i64::from(limit) + 1],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keyset::page(
                rows,
                limit as usize,
                |(_, _, id)| ById { i: id.clone() },
                |(doc, etag, _)| connection_from(&doc, etag),
            )?)
        })
        .await
    }

    async fn replace(
        &self,
        connection: &Connection,
        expected_etag: &str,
    ) -> flowgrid_domain::Result<Connection> {
        let mut c = connection.clone();
        c.etag = new_etag();
        let expected = expected_etag.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_etag(&tx, "connections", c.tenant_id.as_str(), &c.name, &expected)?;
            tx.execute(
                "UPDATE connections SET etag = ?3, doc = ?4 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    c.tenant_id.as_str(),
                    c.name,
                    c.etag,
                    to_doc("connection", &c)?
                ],
            )?;
            tx.commit()?;
            Ok(c)
        })
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        name: &str,
        expected_etag: Option<&str>,
    ) -> flowgrid_domain::Result<()> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        let expected = expected_etag.map(str::to_owned);
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match &expected {
                Some(etag) => require_etag(&tx, "connections", tenant.as_str(), &name, etag)?,
                None => {
                    super::current_etag(&tx, "connections", tenant.as_str(), &name)?;
                }
            }
            tx.execute(
                "DELETE FROM connections WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), name],
            )?;
            tx.execute(
                "DELETE FROM connection_health WHERE tenant_id = ?1 AND id = ?2",
                params![tenant.as_str(), name],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn health(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> flowgrid_domain::Result<Option<ConnectionHealth>> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        self.run(move |conn| {
            let Some((doc, etag)) = load_doc(conn, "connection_health", tenant.as_str(), &name)?
            else {
                return Ok(None);
            };
            let health: ConnectionHealth = from_doc("connection health", &doc)?;
            Ok(Some(ConnectionHealth { etag, ..health }))
        })
        .await
    }

    async fn save_health(
        &self,
        health: &ConnectionHealth,
        expected_etag: Option<&str>,
    ) -> flowgrid_domain::Result<ConnectionHealth> {
        let mut h = health.clone();
        h.etag = new_etag();
        let expected = expected_etag.map(str::to_owned);
        self.run(move |conn| {
            let doc = to_doc("connection health", &h)?;
            match &expected {
                None => {
                    conn.execute(
                        "INSERT INTO connection_health (tenant_id, id, etag, doc) VALUES (?1, ?2, ?3, ?4)",
                        params![h.tenant_id.as_str(), h.name, h.etag, doc],
                    )
                    .map_err(|e| if_taken(e, Error::Conflict("the health record exists".into())))?;
                }
                Some(etag) => {
                    let n = conn.execute(
                        "UPDATE connection_health SET etag = ?3, doc = ?4
                         WHERE tenant_id = ?1 AND id = ?2 AND etag = ?5",
                        params![h.tenant_id.as_str(), h.name, h.etag, doc, etag],
                    )?;
                    if n == 0 {
                        return Err(Error::PreconditionFailed.into());
                    }
                }
            }
            Ok(h)
        })
        .await
    }
}
