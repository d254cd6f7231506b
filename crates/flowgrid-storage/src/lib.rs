//! Flowgrid's storage backends, one module per aggregate per backend: SQLite (embedded, the
//! local default) and Azure Cosmos DB, and blobs in a folder or Azure Blob Storage. Each
//! implements the store traits of `flowgrid_domain::store`; apps see only the traits. Both
//! document backends share one codec ([`codec`]: documents as JSON, times as milliseconds) and
//! one way of paging ([`keyset`]).

pub mod blob;
mod codec;
pub mod cosmos;
mod keyset;
pub mod sqlite;

use std::sync::Arc;

use flowgrid_domain::Result;
use flowgrid_domain::config::{Config, StoreKind};
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{
    AgentStore, AnalyticsStore, ApiRequestCountStore, ConnectionStore, JobStore, RevocationStore,
    SessionStore, SigningKeyStore, SpendStore, TenantStore, UserStore,
};

/// The document backend the configuration names. An app opens it once and takes only the
/// stores it uses (each accessor is a cheap handle on the same connection pool or client);
/// blobs are opened separately ([`blob::open`]) by the apps that use them.
#[derive(Clone)]
pub enum Backend {
    /// SQLite in one file in the data folder.
    Sqlite(sqlite::Sqlite),
    /// Azure Cosmos DB: every container (docs/storage.md has the layout); nothing is kept in the
    /// data folder, which in Azure is an instance's ephemeral disk.
    Cosmos(cosmos::Cosmos),
}

macro_rules! accessor {
    ($(#[$doc:meta])* $name:ident: $trait:ident) => {
        $(#[$doc])*
        pub fn $name(&self) -> Arc<dyn $trait> {
            match self {
                Backend::Sqlite(db) => Arc::new(db.clone()),
                Backend::Cosmos(db) => Arc::new(db.clone()),
            }
        }
    };
}

impl Backend {
    /// Opens the backend the configuration names.
    pub async fn open(config: &Config) -> Result<Backend> {
        Ok(match &config.store {
            StoreKind::Sqlite => {
                Backend::Sqlite(sqlite::Sqlite::open(&config.sqlite_path()).await?)
            }
            StoreKind::Cosmos(settings) => Backend::Cosmos(cosmos::Cosmos::open(settings).await?),
        })
    }

    accessor!(/// Agents and their versions.
        agents: AgentStore);
    accessor!(/// Tenants.
        tenants: TenantStore);
    accessor!(/// Users.
        users: UserStore);
    accessor!(/// Login sessions and refresh tokens.
        sessions: SessionStore);
    accessor!(/// The built-in issuer's signing keys.
        signing_keys: SigningKeyStore);
    accessor!(/// The session revocation denylist.
        revocations: RevocationStore);
    accessor!(/// Jobs (runs of agents).
        jobs: JobStore);
    accessor!(/// Integration connections and their health.
        connections: ConnectionStore);
    accessor!(/// Analytics: raw events, stale hours and rollups.
        analytics: AnalyticsStore);
    accessor!(/// The AI spend ledger (per tenant and month).
        spend: SpendStore);
    accessor!(/// Pending API request counts of the apps' instances.
        api_request_counts: ApiRequestCountStore);
    accessor!(/// Reachability of the backend, for readiness and deep health.
        health: HealthCheck);
}
