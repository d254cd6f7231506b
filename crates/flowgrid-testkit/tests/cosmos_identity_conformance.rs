//! The identity-store conformance suite (tenants, users, sessions, signing keys, revocations)
//! against the Cosmos DB emulator (`@vercel/cosmosdb-server`, started by the test itself),
//! through the production Cosmos backend.

use std::sync::Arc;

use flowgrid_domain::config::{CosmosSettings, SecretString};
use flowgrid_storage::cosmos::{Cosmos, EMULATOR_KEY};
use flowgrid_testkit::conformance::identity::IdentityStores;
use flowgrid_testkit::emulators::{self, Emulator};

/// The stores on a database of their own, in the emulator this test process shares.
async fn cosmos_stores() -> (IdentityStores, Arc<Emulator>) {
    let emulator = emulators::cosmos();
    let settings = CosmosSettings {
        endpoint: emulator.endpoint(),
        key: Some(SecretString::new(EMULATOR_KEY)),
        database: format!("test-{}", uuid::Uuid::new_v4().simple()),
        create_containers: true,
        client_id: None,
    };
    let db = Arc::new(Cosmos::open(&settings).await.expect("open cosmos"));
    let stores = IdentityStores {
        tenants: db.clone(),
        users: db.clone(),
        sessions: db.clone(),
        signing_keys: db.clone(),
        revocations: db,
    };
    (stores, emulator)
}

flowgrid_testkit::identity_store_conformance!(cosmos_stores());
