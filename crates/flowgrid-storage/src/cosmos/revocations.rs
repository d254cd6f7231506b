//! The session denylist on Cosmos: `revokedSession` documents in the fixed partition
//! `_revoked` of the `tokens` container (`id` = `sid-<sha256 of the sid>`, `ttl` = until its
//! end plus a margin). Small (the sessions revoked within an access token's lifetime), so one
//! logical partition is enough, and `is_revoked`, which every app calls, is a point read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::document::{
    DocKey, delete_all, document, hashed_id, query_of, query_partition, read_doc, span, timed,
    ttl_until, update_with_retry,
};
use super::{Cosmos, TOKENS};
use crate::codec::ms;
use flowgrid_domain::Result;
use flowgrid_domain::store::RevocationStore;

const TYPE_REVOKED: &str = "revokedSession";

/// The partition of the denylist in `tokens`.
const REVOKED_PARTITION: &str = "_revoked";

/// The id of the denylist entry of session `sid`.
pub(super) fn revoked_id(sid: &str) -> String {
    hashed_id("sid", sid)
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct RevokedDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    sid: String,
    until_ms: i64,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(RevokedDoc, TYPE_REVOKED, "revoked session");

#[async_trait::async_trait]
impl RevocationStore for Cosmos {
    async fn revoke(&self, sid: &str, until: DateTime<Utc>) -> Result<()> {
        timed("deny a session", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let id = revoked_id(sid);
            let wanted = RevokedDoc {
                id: id.clone(),
                tenant_id: REVOKED_PARTITION.into(),
                kind: TYPE_REVOKED.into(),
                sid: sid.to_owned(),
                until_ms: ms(until),
                ttl: ttl_until(until),
                etag: String::new(),
            };
            // Already denied at least that long: keep the later end.
            update_with_retry(
                c,
                REVOKED_PARTITION,
                &id,
                None,
                |existing: Option<&RevokedDoc>| {
                    Ok(match existing {
                        Some(e) if e.until_ms >= wanted.until_ms => None,
                        _ => Some(wanted.clone()),
                    })
                },
            )
            .await?;
            Ok(())
        })
        .instrument(span("revoke", TOKENS, REVOKED_PARTITION))
        .await
    }

    async fn is_revoked(&self, sid: &str) -> Result<bool> {
        timed("check the denylist", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let doc: Option<RevokedDoc> = read_doc(c, REVOKED_PARTITION, &revoked_id(sid)).await?;
            Ok(doc.is_some_and(|d| d.sid == sid))
        })
        .instrument(span("is_revoked", TOKENS, REVOKED_PARTITION))
        .await
    }

    /// TTL removes entries on real Cosmos (`ttl` = their end plus a margin); this removes the
    /// ended ones at once.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        timed("purge the denylist", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let q = query_of(
                "SELECT c.id, c.tenantId FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND c.untilMs < @now",
                vec![
                    ("@tenant", json!(REVOKED_PARTITION)),
                    ("@type", json!(TYPE_REVOKED)),
                    ("@now", json!(ms(now))),
                ],
            )?;
            let ended: Vec<DocKey> = query_partition(c, q, REVOKED_PARTITION, usize::MAX).await?;
            delete_all(c, ended).await
        })
        .instrument(span("purge_expired", TOKENS, REVOKED_PARTITION))
        .await
    }
}
