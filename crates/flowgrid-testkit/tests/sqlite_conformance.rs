//! The storage conformance suite against the embedded SQLite backend.

use std::sync::Arc;

use flowgrid_domain::store::AgentStore;
use flowgrid_storage::sqlite::Sqlite;
use flowgrid_testkit::DataDir;

async fn sqlite_store() -> (Arc<dyn AgentStore>, DataDir) {
    let dir = DataDir::new();
    let db = Sqlite::open(&dir.path().join("flowgrid.db"))
        .await
        .expect("open sqlite");
    (Arc::new(db), dir)
}

flowgrid_testkit::agent_store_conformance!(sqlite_store());
