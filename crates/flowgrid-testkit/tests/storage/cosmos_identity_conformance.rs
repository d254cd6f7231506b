//! The identity-store conformance suite (tenants, users, sessions, signing keys, revocations)
//! against the Cosmos DB emulator (`@vercel/cosmosdb-server`, started by the test itself),
//! through the production Cosmos backend, one database per test.

use std::sync::Arc;

use super::helpers;
use flowgrid_testkit::conformance::identity::IdentityStores;
use flowgrid_testkit::emulators::Emulator;

/// The stores on a database of their own, in the emulator this test process shares.
async fn cosmos_stores() -> (IdentityStores, Arc<Emulator>) {
    let (db, emulator) = helpers::cosmos().await;
    (helpers::identity_stores(db), emulator)
}

flowgrid_testkit::identity_store_conformance!(cosmos_stores());
