//! Tenants on SQLite: table `tenants` (migration 2), one document per tenant.

use rusqlite::params;

use super::{Sqlite, if_taken};
use crate::codec::{from_doc, to_doc};
use flowgrid_domain::Error;
use flowgrid_domain::store::TenantStore;
use flowgrid_domain::{Tenant, TenantId};

#[async_trait::async_trait]
impl TenantStore for Sqlite {
    async fn insert(&self, tenant: &Tenant) -> flowgrid_domain::Result<()> {
        let doc = to_doc("tenant", tenant)?;
        let id = tenant.id.as_str().to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO tenants (id, doc) VALUES (?1, ?2)",
                params![id, doc],
            )
            .map_err(|e| if_taken(e, Error::Conflict("The tenant exists.".into())))?;
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
            Ok(from_doc("tenant", &doc)?)
        })
        .await
    }
}
