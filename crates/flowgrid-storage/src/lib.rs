//! Flowgrid's storage backends, one module per aggregate per backend: SQLite (embedded, the
//! local default) and Azure Cosmos DB, and blobs in a folder or Azure Blob Storage. Each
//! implements the store traits of `flowgrid_domain::store`; apps see only the traits.

pub mod blob;
pub mod cosmos;
pub mod sqlite;

use std::sync::Arc;

use flowgrid_domain::Result;
use flowgrid_domain::blob::BlobStore;
use flowgrid_domain::config::{Config, StoreKind};
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{
    AgentStore, JobStore, RevocationStore, SessionStore, SigningKeyStore, TenantStore, UserStore,
};

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
