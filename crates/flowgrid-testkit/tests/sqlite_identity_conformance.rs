//! The identity-store conformance suite against the embedded SQLite backend.

use std::sync::Arc;

use flowgrid_storage::sqlite::Sqlite;
use flowgrid_testkit::DataDir;
use flowgrid_testkit::conformance::identity::IdentityStores;

async fn sqlite_stores() -> (IdentityStores, DataDir) {
    let dir = DataDir::new();
    let db = Arc::new(
        Sqlite::open(&dir.path().join("flowgrid.db"))
            .await
            .expect("open sqlite"),
    );
    let stores = IdentityStores {
        tenants: db.clone(),
        users: db.clone(),
        sessions: db.clone(),
        signing_keys: db.clone(),
        revocations: db,
    };
    (stores, dir)
}

flowgrid_testkit::identity_store_conformance!(sqlite_stores());
