//! What the storage tests share: the backends on fresh databases.

use std::sync::Arc;

use flowgrid_domain::config::{CosmosSettings, SecretString};
use flowgrid_storage::cosmos::{Cosmos, EMULATOR_KEY};
use flowgrid_storage::sqlite::Sqlite;
use flowgrid_testkit::DataDir;
use flowgrid_testkit::conformance::identity::IdentityStores;
use flowgrid_testkit::emulators::{self, Emulator};

/// A database name of its own: `<prefix>-<uuid>`.
pub fn fresh_database(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The Cosmos backend on database `database` of the account at `endpoint` (the emulator's
/// key), creating the containers when `create_containers`.
pub async fn cosmos_at(endpoint: String, database: String, create_containers: bool) -> Cosmos {
    Cosmos::open(&CosmosSettings {
        endpoint,
        key: Some(SecretString::new(EMULATOR_KEY)),
        database,
        create_containers,
        client_id: None,
    })
    .await
    .expect("open cosmos")
}

/// The Cosmos backend on a database of its own, in the emulator this test process shares
/// (kept running while the returned handle lives).
pub async fn cosmos() -> (Arc<Cosmos>, Arc<Emulator>) {
    let emulator = emulators::cosmos();
    let store = cosmos_at(emulator.endpoint(), fresh_database("test"), true).await;
    (Arc::new(store), emulator)
}

/// SQLite in a fresh data folder (removed when the returned folder is dropped).
pub async fn sqlite() -> (Arc<Sqlite>, DataDir) {
    let dir = DataDir::new();
    let db = Sqlite::open(&dir.path().join("flowgrid.db"))
        .await
        .expect("open sqlite");
    (Arc::new(db), dir)
}

/// Every identity store of one backend.
pub fn identity_stores<B>(db: Arc<B>) -> IdentityStores
where
    B: flowgrid_domain::store::TenantStore
        + flowgrid_domain::store::UserStore
        + flowgrid_domain::store::SessionStore
        + flowgrid_domain::store::SigningKeyStore
        + flowgrid_domain::store::RevocationStore
        + 'static,
{
    IdentityStores {
        tenants: db.clone(),
        users: db.clone(),
        sessions: db.clone(),
        signing_keys: db.clone(),
        revocations: db,
    }
}
