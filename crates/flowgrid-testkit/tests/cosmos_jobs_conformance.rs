//! The jobs-store conformance suite against the Cosmos DB emulator (`@vercel/cosmosdb-server`,
//! started by the test itself), through the production Cosmos backend.

use std::sync::Arc;

use flowgrid_domain::config::{CosmosSettings, SecretString};
use flowgrid_domain::store::JobStore;
use flowgrid_storage::cosmos::{Cosmos, EMULATOR_KEY};
use flowgrid_testkit::emulators::{self, Emulator};

/// A store on a database of its own, in the emulator this test process shares.
async fn cosmos_store() -> (Arc<dyn JobStore>, Arc<Emulator>) {
    let emulator = emulators::cosmos();
    let settings = CosmosSettings {
        endpoint: emulator.endpoint(),
        key: Some(SecretString::new(EMULATOR_KEY)),
        database: format!("test-{}", uuid::Uuid::new_v4().simple()),
        create_containers: true,
        client_id: None,
    };
    let store = Cosmos::open(&settings).await.expect("open cosmos");
    (Arc::new(store), emulator)
}

flowgrid_testkit::job_store_conformance!(cosmos_store());
