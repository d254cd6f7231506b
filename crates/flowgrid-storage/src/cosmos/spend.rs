//! The AI spend ledger on Cosmos: in the `tenants` container (partition = the tenant), one
//! `aiSpend` document per month (`id` = `ai-spend:YYYY-MM`). Every change is a compare-and-swap
//! on the document's ETag (a create when it is absent), retried when another writer got in
//! between, so a reservation's check and its addition happen on the same version.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::document::{document, read_doc, span, timed, update_with_retry};
use super::{Cosmos, TENANTS};
use flowgrid_domain::store::SpendStore;
use flowgrid_domain::{Error, Result, TenantId};

const TYPE_SPEND: &str = "aiSpend";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpendDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    month: String,
    micro_usd: u64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(SpendDoc, TYPE_SPEND, "AI spend record");

fn doc_id(month: &str) -> String {
    format!("ai-spend:{month}")
}

impl Cosmos {
    /// Changes the month's spend by `change` (given the current total; `None`: no change),
    /// retrying lost races a while longer than one `update_with_retry` does, since many calls
    /// of one tenant may settle at once.
    async fn change_spend(
        &self,
        tenant: &TenantId,
        month: &str,
        mut change: impl FnMut(u64) -> Option<u64>,
    ) -> Result<(u64, bool)> {
        let c = &self.containers().await?.tenants;
        let id = doc_id(month);
        for round in 0..8u64 {
            let mut changed = false;
            let result = update_with_retry(
                c,
                tenant.as_str(),
                &id,
                None,
                |current: Option<&SpendDoc>| {
                    let now = current.map_or(0, |d| d.micro_usd);
                    changed = false;
                    Ok(change(now).map(|next| {
                        changed = true;
                        SpendDoc {
                            id: id.clone(),
                            tenant_id: tenant.as_str().to_owned(),
                            kind: TYPE_SPEND.into(),
                            month: month.to_owned(),
                            micro_usd: next,
                            etag: String::new(),
                        }
                    }))
                },
            )
            .await;
            match result {
                Ok(doc) => return Ok((doc.map_or(0, |d| d.micro_usd), changed)),
                Err(Error::Unavailable(m)) if m.contains("kept changing") => {
                    tokio::time::sleep(Duration::from_millis(5 * (round + 1))).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(
            "cosmos: the AI spend record kept changing".into(),
        ))
    }
}

#[async_trait::async_trait]
impl SpendStore for Cosmos {
    async fn spent(&self, tenant: &TenantId, month: &str) -> Result<u64> {
        timed("read AI spend", self.limit(), async {
            let c = &self.containers().await?.tenants;
            let doc: Option<SpendDoc> = read_doc(c, tenant.as_str(), &doc_id(month)).await?;
            Ok(doc.map_or(0, |d| d.micro_usd))
        })
        .instrument(span("read", TENANTS, tenant.as_str()))
        .await
    }

    async fn reserve(
        &self,
        tenant: &TenantId,
        month: &str,
        amount: u64,
        budget: u64,
    ) -> Result<Option<u64>> {
        timed("reserve AI spend", self.limit(), async {
            let (total, changed) = self
                .change_spend(tenant, month, |now| {
                    (now < budget).then(|| now.saturating_add(amount))
                })
                .await?;
            Ok(changed.then_some(total))
        })
        .instrument(span("reserve", TENANTS, tenant.as_str()))
        .await
    }

    async fn adjust(&self, tenant: &TenantId, month: &str, delta: i64) -> Result<u64> {
        timed("adjust AI spend", self.limit(), async {
            let (total, _) = self
                .change_spend(tenant, month, |now| Some(now.saturating_add_signed(delta)))
                .await?;
            Ok(total)
        })
        .instrument(span("adjust", TENANTS, tenant.as_str()))
        .await
    }
}
