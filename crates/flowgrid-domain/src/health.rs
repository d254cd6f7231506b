//! Reachability of a dependency (storage, blobs, queue), as readiness and deep health report it.

/// One dependency an app needs (storage, blobs, queue).
#[async_trait::async_trait]
pub trait HealthCheck: Send + Sync {
    /// The check's name in health bodies (`storage`, `blobs`, ...).
    fn name(&self) -> &'static str;
    /// Succeeds when the dependency answers.
    async fn check(&self) -> crate::Result<()>;
}
