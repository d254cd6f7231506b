//! Blob backends: a local folder ([`fs::FsBlobs`]) and Azure Blob Storage ([`azure::AzureBlobs`]).

pub mod azure;
pub mod fs;

use std::sync::Arc;

use flowgrid_domain::Result;
use flowgrid_domain::blob::BlobStore;
use flowgrid_domain::config::{BlobKind, Config};
use flowgrid_domain::health::HealthCheck;

/// The blob backend the configuration names, and its health check.
pub async fn open(config: &Config) -> Result<(Arc<dyn BlobStore>, Arc<dyn HealthCheck>)> {
    match &config.blobs {
        BlobKind::Fs => {
            let store = fs::FsBlobs::open(&config.blob_dir())?;
            Ok((Arc::new(store.clone()), Arc::new(store)))
        }
        BlobKind::Azure(settings) => {
            let store = azure::AzureBlobs::open(settings)?;
            Ok((Arc::new(store.clone()), Arc::new(store)))
        }
    }
}
