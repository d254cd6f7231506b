//! Tenants on Cosmos: the `tenants` container, one `tenant` document per tenant (`id` =
//! `tenantId` = the tenant id); point reads only.

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::document::{charge, document, map_error, read_doc, span, timed, units_of};
use super::{Cosmos, TENANTS};
use flowgrid_domain::store::TenantStore;
use flowgrid_domain::{Error, Result};
use flowgrid_domain::{Tenant, TenantId};

const TYPE_TENANT: &str = "tenant";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TenantDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    tenant: Tenant,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(TenantDoc, TYPE_TENANT, "tenant");

#[async_trait::async_trait]
impl TenantStore for Cosmos {
    async fn insert(&self, tenant: &Tenant) -> Result<()> {
        let id = tenant.id.as_str();
        timed("insert tenant", self.limit(), async {
            let c = &self.containers().await?.tenants;
            let doc = TenantDoc {
                id: id.to_owned(),
                tenant_id: id.to_owned(),
                kind: TYPE_TENANT.into(),
                tenant: tenant.clone(),
                etag: String::new(),
            };
            let response = c
                .create_item(id.to_owned(), id, doc, None)
                .await
                .map_err(|e| match map_error(e, "creating a tenant") {
                    Error::Conflict(_) => Error::Conflict("The tenant exists.".into()),
                    other => other,
                })?;
            charge(units_of(response.headers()));
            Ok(())
        })
        .instrument(span("insert", TENANTS, id))
        .await
    }

    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        timed("get tenant", self.limit(), async {
            let c = &self.containers().await?.tenants;
            let doc: TenantDoc = read_doc(c, id.as_str(), id.as_str())
                .await?
                .ok_or(Error::NotFound)?;
            Ok(doc.tenant)
        })
        .instrument(span("get", TENANTS, id.as_str()))
        .await
    }
}
