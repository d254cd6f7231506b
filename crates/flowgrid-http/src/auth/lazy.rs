//! The process's stores behind the verifier, opened on first use (a verifier is built
//! synchronously, before the runtime serves).

use flowgrid_domain::Result;
use flowgrid_domain::config::Config;
use flowgrid_domain::store::{RevocationStore, SigningKeyStore};

/// The process's stores, opened on first use (the verifier is built synchronously).
pub(super) struct LazyStores {
    config: Config,
    stores: tokio::sync::OnceCell<flowgrid_storage::Backend>,
}

impl LazyStores {
    pub(super) fn new(config: Config) -> Self {
        LazyStores {
            config,
            stores: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&flowgrid_storage::Backend> {
        self.stores
            .get_or_try_init(|| flowgrid_storage::Backend::open(&self.config))
            .await
    }
}

#[async_trait::async_trait]
impl SigningKeyStore for LazyStores {
    async fn insert(&self, key: &flowgrid_domain::store::StoredSigningKey) -> Result<()> {
        self.get().await?.signing_keys().insert(key).await
    }
    async fn list(&self) -> Result<Vec<flowgrid_domain::store::StoredSigningKey>> {
        self.get().await?.signing_keys().list().await
    }
    async fn retire_all_except(
        &self,
        current: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        self.get()
            .await?
            .signing_keys()
            .retire_all_except(current, now)
            .await
    }
    async fn delete_retired_before(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        self.get()
            .await?
            .signing_keys()
            .delete_retired_before(before)
            .await
    }
}

#[async_trait::async_trait]
impl RevocationStore for LazyStores {
    async fn revoke(&self, sid: &str, until: chrono::DateTime<chrono::Utc>) -> Result<()> {
        self.get().await?.revocations().revoke(sid, until).await
    }
    async fn is_revoked(&self, sid: &str) -> Result<bool> {
        self.get().await?.revocations().is_revoked(sid).await
    }
    async fn purge_expired(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        self.get().await?.revocations().purge_expired(now).await
    }
}
