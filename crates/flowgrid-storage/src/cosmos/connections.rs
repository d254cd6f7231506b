//! Integration connections on Cosmos: the `connections` container, partition `/tenantId`.
//!
//! Two document types share the tenant's partition: `connection` (`id` = the connection's
//! name, which the domain limits to `a-z 0-9 _ -`, all valid in Cosmos ids) and
//! `connectionHealth` (`id` = `health-<name>`), so that calls updating the health (from any
//! instance) and admins editing the connection never contend for one ETag.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::document::{
    bare, charge, delete_doc, document, map_error, query_of, query_partition, read_doc,
    require_etag, span, timed, units_of, write_if_match,
};
use super::{CONNECTIONS, Cosmos};
use crate::keyset::{self, ById};
use flowgrid_domain::store::{Connection, ConnectionHealth, ConnectionStore, Page};
use flowgrid_domain::{Error, Result, TenantId};

const TYPE_CONNECTION: &str = "connection";
const TYPE_HEALTH: &str = "connectionHealth";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    connection: Connection,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(ConnectionDoc, TYPE_CONNECTION, "connection");

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    health: ConnectionHealth,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(HealthDoc, TYPE_HEALTH, "connection health");

fn health_id(name: &str) -> String {
    format!("health-{name}")
}

fn connection_doc(c: &Connection) -> ConnectionDoc {
    ConnectionDoc {
        id: c.name.clone(),
        tenant_id: c.tenant_id.as_str().to_owned(),
        kind: TYPE_CONNECTION.into(),
        connection: c.clone(),
        etag: String::new(),
    }
}

fn into_connection(doc: ConnectionDoc) -> Connection {
    Connection {
        etag: bare(&doc.etag),
        ..doc.connection
    }
}

/// The bare ETag of a write's response.
macro_rules! etag_of {
    ($response:expr) => {
        $response
            .headers()
            .etag()
            .map(|e| bare(e.as_ref()))
            .ok_or_else(|| Error::Internal("the write returned no ETag".into()))
    };
}

impl Cosmos {
    async fn read_connection(&self, tenant: &TenantId, name: &str) -> Result<ConnectionDoc> {
        let c = &self.containers().await?.connections;
        read_doc(c, tenant.as_str(), name)
            .await?
            .ok_or(Error::NotFound)
    }
}

#[async_trait::async_trait]
impl ConnectionStore for Cosmos {
    async fn insert(&self, connection: &Connection) -> Result<Connection> {
        let tenant = connection.tenant_id.as_str();
        timed("insert connection", self.limit(), async {
            let c = &self.containers().await?.connections;
            let response = c
                .create_item(
                    tenant.to_owned(),
                    &connection.name,
                    connection_doc(connection),
                    None,
                )
                .await
                .map_err(|e| match map_error(e, "creating a connection") {
                    Error::Conflict(_) => {
                        Error::Conflict("A connection with this name exists in the tenant.".into())
                    }
                    other => other,
                })?;
            charge(units_of(response.headers()));
            Ok(Connection {
                etag: etag_of!(response)?,
                ..connection.clone()
            })
        })
        .instrument(span("insert", CONNECTIONS, tenant))
        .await
    }

    async fn get(&self, tenant: &TenantId, name: &str) -> Result<Connection> {
        timed("get connection", self.limit(), async {
            Ok(into_connection(self.read_connection(tenant, name).await?))
        })
        .instrument(span("get", CONNECTIONS, tenant.as_str()))
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<Connection>> {
        let cursor: Option<ById> = keyset::after(continuation_token)?;
        let limit = limit as usize;
        timed("list connections", self.limit(), async {
            let mut text =
                String::from("SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type");
            let mut params = vec![
                ("@tenant", json!(tenant.as_str())),
                ("@type", json!(TYPE_CONNECTION)),
            ];
            if let Some(c) = &cursor {
                text.push_str(" AND c.id > @after");
                params.push(("@after", json!(c.i)));
            }
            text.push_str(" ORDER BY c.id ASC");
            let c = &self.containers().await?.connections;
            let docs: Vec<ConnectionDoc> =
                query_partition(c, query_of(text, params)?, tenant.as_str(), limit + 1).await?;
            keyset::page(
                docs,
                limit,
                |d| ById { i: d.id.clone() },
                |d| Ok(into_connection(d)),
            )
        })
        .instrument(span("list", CONNECTIONS, tenant.as_str()))
        .await
    }

    async fn replace(&self, connection: &Connection, expected_etag: &str) -> Result<Connection> {
        let tenant = &connection.tenant_id;
        timed("replace connection", self.limit(), async {
            let current = self.read_connection(tenant, &connection.name).await?;
            require_etag(&current, expected_etag)?;
            let c = &self.containers().await?.connections;
            let response = c
                .replace_item(
                    tenant.as_str().to_owned(),
                    &connection.name,
                    connection_doc(connection),
                    write_if_match(&current.etag),
                )
                .await
                .map_err(|e| map_error(e, "replacing a connection"))?;
            charge(units_of(response.headers()));
            Ok(Connection {
                etag: etag_of!(response)?,
                ..connection.clone()
            })
        })
        .instrument(span("replace", CONNECTIONS, tenant.as_str()))
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        name: &str,
        expected_etag: Option<&str>,
    ) -> Result<()> {
        timed("delete connection", self.limit(), async {
            let current = self.read_connection(tenant, name).await?;
            if let Some(expected) = expected_etag {
                require_etag(&current, expected)?;
            }
            let c = &self.containers().await?.connections;
            let response = c
                .delete_item(
                    tenant.as_str().to_owned(),
                    name,
                    write_if_match(&current.etag),
                )
                .await
                .map_err(|e| map_error(e, "deleting a connection"))?;
            charge(units_of(response.headers()));
            delete_doc(c, tenant.as_str(), &health_id(name)).await?;
            Ok(())
        })
        .instrument(span("delete", CONNECTIONS, tenant.as_str()))
        .await
    }

    async fn health(&self, tenant: &TenantId, name: &str) -> Result<Option<ConnectionHealth>> {
        timed("get connection health", self.limit(), async {
            let c = &self.containers().await?.connections;
            let doc: Option<HealthDoc> = read_doc(c, tenant.as_str(), &health_id(name)).await?;
            Ok(doc.map(|d| ConnectionHealth {
                etag: bare(&d.etag),
                ..d.health
            }))
        })
        .instrument(span("health", CONNECTIONS, tenant.as_str()))
        .await
    }

    async fn save_health(
        &self,
        health: &ConnectionHealth,
        expected_etag: Option<&str>,
    ) -> Result<ConnectionHealth> {
        let tenant = health.tenant_id.as_str();
        timed("save connection health", self.limit(), async {
            let c = &self.containers().await?.connections;
            let id = health_id(&health.name);
            let doc = HealthDoc {
                id: id.clone(),
                tenant_id: tenant.to_owned(),
                kind: TYPE_HEALTH.into(),
                health: health.clone(),
                etag: String::new(),
            };
            let written = match expected_etag {
                None => c.create_item(tenant.to_owned(), &id, doc, None).await,
                Some(etag) => {
                    // The caller holds the bare ETag; the emulator and Cosmos compare what they
                    // issued, so read the raw one back first.
                    let current: HealthDoc = read_doc(c, tenant, &id)
                        .await?
                        .ok_or(Error::PreconditionFailed)?;
                    require_etag(&current, etag)?;
                    c.replace_item(tenant.to_owned(), &id, doc, write_if_match(&current.etag))
                        .await
                }
            };
            let response = written.map_err(|e| map_error(e, "writing a connection's health"))?;
            charge(units_of(response.headers()));
            Ok(ConnectionHealth {
                etag: etag_of!(response)?,
                ..health.clone()
            })
        })
        .instrument(span("save_health", CONNECTIONS, tenant))
        .await
    }
}
