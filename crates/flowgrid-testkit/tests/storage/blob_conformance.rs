//! The blob conformance suite against the folder backend and against Azurite (started by the
//! test itself) through the Azure Blob Storage backend.

mod folder {
    use std::sync::Arc;

    use flowgrid_domain::blob::BlobStore;
    use flowgrid_storage::blob::fs::FsBlobs;
    use flowgrid_testkit::DataDir;

    async fn folder_store() -> (Arc<dyn BlobStore>, DataDir) {
        let dir = DataDir::new();
        let store = FsBlobs::open(&dir.path().join("blobs")).expect("open folder");
        (Arc::new(store), dir)
    }

    flowgrid_testkit::blob_store_conformance!(folder_store());
}

mod azurite {
    use std::sync::Arc;

    use flowgrid_domain::blob::BlobStore;
    use flowgrid_domain::config::{BlobSettings, SecretString};
    use flowgrid_storage::blob::azure::AzureBlobs;
    use flowgrid_testkit::emulators::{self, AZURITE_KEY, Emulator};

    /// A store on a container of its own, in the Azurite this test process shares.
    async fn azurite_store() -> (Arc<dyn BlobStore>, Arc<Emulator>) {
        let emulator = emulators::azurite();
        let settings = BlobSettings {
            endpoint: emulator.endpoint().parse().expect("url"),
            account_key: Some(SecretString::new(AZURITE_KEY)),
            container: format!("t{}", uuid::Uuid::new_v4().simple()),
            client_id: None,
        };
        let store = AzureBlobs::open(&settings).expect("open azurite");
        (Arc::new(store), emulator)
    }

    flowgrid_testkit::blob_store_conformance!(azurite_store());
}
