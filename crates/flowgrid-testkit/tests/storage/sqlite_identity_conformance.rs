//! The identity-store conformance suite against the embedded SQLite backend.

use super::helpers;
use flowgrid_testkit::DataDir;
use flowgrid_testkit::conformance::identity::IdentityStores;

async fn sqlite_stores() -> (IdentityStores, DataDir) {
    let (db, dir) = helpers::sqlite().await;
    (helpers::identity_stores(db), dir)
}

flowgrid_testkit::identity_store_conformance!(sqlite_stores());
