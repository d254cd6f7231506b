//! Storage: one small async trait per aggregate, and the backends that implement them.
//!
//! Every call takes the tenant from the verified token (a [`TenantId`]) and every key includes
//! it, so no call can reach another tenant's data. Backends map their own failures to the domain
//! errors: missing → [`Error::NotFound`], stale ETag → [`Error::PreconditionFailed`], duplicate
//! → [`Error::Conflict`], unreachable → [`Error::Unavailable`].

mod agents;
pub mod cosmos;
mod identity;
pub mod jobs;
pub mod sqlite;

use std::sync::Arc;

pub use agents::{AgentQuery, AgentStore, AgentVersionSummary, update_agent};
pub use identity::{
    RevocationStore, SessionStore, SigningKeyStore, StoredSigningKey, TenantStore, UserStore,
};
pub use jobs::{Job, JobId, JobQuery, JobStatus, JobStore};

use crate::blob::BlobStore;
use crate::config::{Config, StoreKind};
use crate::http::health::HealthCheck;
use crate::{Error, Result};

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass back as `continuationToken` for the next page; absent on the last page.
    pub continuation_token: Option<String>,
}

/// Page size limits shared by every list endpoint.
pub mod paging {
    /// Page size when the caller gives none.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page size; larger requests are clamped.
    pub const MAX_LIMIT: u32 = 200;

    /// The page size for a requested `limit`: default when absent, clamped to 1..=MAX.
    pub fn limit(requested: Option<u32>) -> u32 {
        requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// Every store a process uses, behind its trait.
#[derive(Clone)]
pub struct Stores {
    /// Agents and their versions.
    pub agents: Arc<dyn AgentStore>,
    /// Tenants.
    pub tenants: Arc<dyn TenantStore>,
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Login sessions and refresh tokens.
    pub sessions: Arc<dyn SessionStore>,
    /// The built-in issuer's signing keys.
    pub signing_keys: Arc<dyn SigningKeyStore>,
    /// The session revocation denylist.
    pub revocations: Arc<dyn RevocationStore>,
    /// Jobs (runs of agents).
    pub jobs: Arc<dyn JobStore>,
    /// Reachability of the backend, for readiness and deep health.
    pub health: Arc<dyn HealthCheck>,
    /// Blobs (`FLOWGRID_BLOBS`).
    pub blobs: Arc<dyn BlobStore>,
    /// Reachability of the blob backend, for the apps that use blobs.
    pub blobs_health: Arc<dyn HealthCheck>,
}

impl Stores {
    /// Opens the backend the configuration names.
    pub async fn open(config: &Config) -> Result<Stores> {
        match &config.store {
            StoreKind::Sqlite => {
                let (blobs, blobs_health) = crate::blob::open(config).await?;
                let db = sqlite::Sqlite::open(&config.sqlite_path()).await?;
                Ok(Stores {
                    agents: Arc::new(db.clone()),
                    tenants: Arc::new(db.clone()),
                    users: Arc::new(db.clone()),
                    sessions: Arc::new(db.clone()),
                    signing_keys: Arc::new(db.clone()),
                    revocations: Arc::new(db.clone()),
                    jobs: Arc::new(db.clone()),
                    health: Arc::new(db),
                    blobs,
                    blobs_health,
                })
            }
            StoreKind::Cosmos(settings) => {
                // Every document store lives in Cosmos (docs/storage.md has the layout); nothing
                // is kept in the data folder, which in Azure is an instance's ephemeral disk.
                let cosmos = cosmos::Cosmos::open(settings).await?;
                let (blobs, blobs_health) = crate::blob::open(config).await?;
                Ok(Stores {
                    agents: Arc::new(cosmos.clone()),
                    tenants: Arc::new(cosmos.clone()),
                    users: Arc::new(cosmos.clone()),
                    sessions: Arc::new(cosmos.clone()),
                    signing_keys: Arc::new(cosmos.clone()),
                    revocations: Arc::new(cosmos.clone()),
                    jobs: Arc::new(cosmos.clone()),
                    health: Arc::new(cosmos),
                    blobs,
                    blobs_health,
                })
            }
        }
    }
}

/// Encodes an opaque continuation token.
pub(crate) fn encode_token<T: serde::Serialize>(position: &T) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Decodes a continuation token made by [`encode_token`]; a forged or garbled one is a 400.
pub(crate) fn decode_token<T: serde::de::DeserializeOwned>(token: &str) -> Result<T> {
    use base64::Engine;
    let bad = || Error::BadRequest("continuationToken is not a token this API issued".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}
