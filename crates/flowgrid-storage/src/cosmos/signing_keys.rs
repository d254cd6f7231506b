//! The built-in issuer's signing keys on Cosmos: `signingKey` documents in the fixed partition
//! `_issuer` of the `tokens` container (`id` = `kid-<sha256 of the kid>`). No tenant document
//! is ever written to `tokens`, so no tenant id can meet this partition. A handful of keys: the
//! current one and the retired ones still published.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::document::{
    charge, delete_doc, document, hashed_id, map_error, query_of, query_partition, span, timed,
    units_of, update_with_retry,
};
use super::{Cosmos, TOKENS};
use crate::codec::{ms, time};
use flowgrid_domain::store::{SigningKeyStore, StoredSigningKey};
use flowgrid_domain::{Error, Result};

const TYPE_KEY: &str = "signingKey";

/// The partition of the signing keys in `tokens`.
const ISSUER_PARTITION: &str = "_issuer";

/// The id of the document of key `kid`.
pub(super) fn key_id(kid: &str) -> String {
    hashed_id("kid", kid)
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct KeyDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    kid: String,
    alg: String,
    public_jwk: String,
    encrypted_private: String,
    kek_id: String,
    created_ms: i64,
    /// 0 while current.
    retired_ms: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(KeyDoc, TYPE_KEY, "signing key");

fn key_doc(k: &StoredSigningKey) -> KeyDoc {
    KeyDoc {
        id: key_id(&k.kid),
        tenant_id: ISSUER_PARTITION.into(),
        kind: TYPE_KEY.into(),
        kid: k.kid.clone(),
        alg: k.alg.clone(),
        public_jwk: k.public_jwk.clone(),
        encrypted_private: k.encrypted_private.clone(),
        kek_id: k.kek_id.clone(),
        created_ms: ms(k.created_at),
        retired_ms: k.retired_at.map_or(0, ms),
        etag: String::new(),
    }
}

fn key_from(d: KeyDoc) -> StoredSigningKey {
    StoredSigningKey {
        kid: d.kid,
        alg: d.alg,
        public_jwk: d.public_jwk,
        encrypted_private: d.encrypted_private,
        kek_id: d.kek_id,
        created_at: time(d.created_ms),
        retired_at: (d.retired_ms != 0).then(|| time(d.retired_ms)),
    }
}

impl Cosmos {
    /// Every key document, newest first (a handful: the current key and the retired ones
    /// still published).
    async fn key_docs(&self) -> Result<Vec<KeyDoc>> {
        let c = &self.containers().await?.tokens;
        let q = query_of(
            "SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type",
            vec![
                ("@tenant", json!(ISSUER_PARTITION)),
                ("@type", json!(TYPE_KEY)),
            ],
        )?;
        let mut docs: Vec<KeyDoc> = query_partition(c, q, ISSUER_PARTITION, usize::MAX).await?;
        docs.sort_by(|a, b| (b.created_ms, &b.kid).cmp(&(a.created_ms, &a.kid)));
        Ok(docs)
    }
}

#[async_trait::async_trait]
impl SigningKeyStore for Cosmos {
    async fn insert(&self, key: &StoredSigningKey) -> Result<()> {
        timed("insert signing key", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let doc = key_doc(key);
            let response = c
                .create_item(ISSUER_PARTITION.to_owned(), &doc.id.clone(), doc, None)
                .await
                .map_err(|e| match map_error(e, "storing a signing key") {
                    Error::Conflict(_) => {
                        Error::Conflict("a signing key with this kid exists".into())
                    }
                    other => other,
                })?;
            charge(units_of(response.headers()));
            Ok(())
        })
        .instrument(span("insert", TOKENS, ISSUER_PARTITION))
        .await
    }

    async fn list(&self) -> Result<Vec<StoredSigningKey>> {
        timed("list signing keys", self.limit(), async {
            Ok(self.key_docs().await?.into_iter().map(key_from).collect())
        })
        .instrument(span("list", TOKENS, ISSUER_PARTITION))
        .await
    }

    async fn retire_all_except(&self, current: &str, now: DateTime<Utc>) -> Result<()> {
        timed("retire signing keys", self.limit(), async {
            let c = &self.containers().await?.tokens;
            for doc in self.key_docs().await? {
                let id = doc.id.clone();
                // Conditioned on the copy just listed; a key another instance's rotation changed
                // or deleted meanwhile is read again, and left as it is once retired or gone.
                update_with_retry(c, ISSUER_PARTITION, &id, Some(doc), |stored| {
                    Ok(stored
                        .filter(|d| d.kid != current && d.retired_ms == 0)
                        .map(|d| KeyDoc {
                            retired_ms: ms(now),
                            ..d.clone()
                        }))
                })
                .await?;
            }
            Ok(())
        })
        .instrument(span("retire_all_except", TOKENS, ISSUER_PARTITION))
        .await
    }

    async fn delete_retired_before(&self, before: DateTime<Utc>) -> Result<u64> {
        timed("delete retired signing keys", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let mut n = 0;
            for doc in self.key_docs().await? {
                if doc.retired_ms != 0
                    && doc.retired_ms < ms(before)
                    && delete_doc(c, ISSUER_PARTITION, &doc.id).await?
                {
                    n += 1;
                }
            }
            Ok(n)
        })
        .instrument(span("delete_retired_before", TOKENS, ISSUER_PARTITION))
        .await
    }
}
