//! The session denylist as every app reads it: a short in-process cache over the
//! [`RevocationStore`].
//!
//! The bound: a session revoked at time T is refused by every app from T + the cache time
//! (`FLOWGRID_REVOCATION_CACHE_SECS`, default 5 s) at the latest. A "revoked" answer is kept
//! for good (revocation is final); a "not revoked" answer is trusted for the cache time only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowgrid_domain::Result;
use flowgrid_domain::store::RevocationStore;

/// Most session ids remembered per process; past it, stale entries go first, then all.
const MAX_ENTRIES: usize = 10_000;

pub(crate) struct RevocationCache {
    store: Arc<dyn RevocationStore>,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    checked: Instant,
    revoked: bool,
}

impl RevocationCache {
    pub(crate) fn new(store: Arc<dyn RevocationStore>, ttl: Duration) -> Self {
        RevocationCache {
            store,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn cached(&self, sid: &str) -> Option<bool> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(sid)?;
        (entry.revoked || entry.checked.elapsed() < self.ttl).then_some(entry.revoked)
    }

    /// Records that this process revoked `sid`, so it is refused here at once.
    pub(crate) fn note_revoked(&self, sid: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                sid.to_owned(),
                Entry {
                    checked: Instant::now(),
                    revoked: true,
                },
            );
        }
    }

    /// Whether session `sid` is revoked, from the cache when fresh, else from the store.
    pub(crate) async fn is_revoked(&self, sid: &str) -> Result<bool> {
        if let Some(revoked) = self.cached(sid) {
            return Ok(revoked);
        }
        let revoked = self.store.is_revoked(sid).await?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                entries.retain(|_, e| e.revoked || e.checked.elapsed() < ttl);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(
                sid.to_owned(),
                Entry {
                    checked: Instant::now(),
                    revoked,
                },
            );
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use chrono::{DateTime, Utc};

    use super::*;

    #[derive(Default)]
    struct FakeStore {
        revoked: AtomicBool,
        reads: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl RevocationStore for FakeStore {
        async fn revoke(&self, _sid: &str, _until: DateTime<Utc>) -> Result<()> {
            self.revoked.store(true, Ordering::SeqCst);
            Ok(())
        }
        async fn is_revoked(&self, _sid: &str) -> Result<bool> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.revoked.load(Ordering::SeqCst))
        }
        async fn purge_expired(&self, _now: DateTime<Utc>) -> Result<u64> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_not_revoked_answer_is_trusted_for_the_cache_time_only() {
        let store = Arc::new(FakeStore::default());
        let cache = RevocationCache::new(store.clone(), Duration::from_secs(3600));
        assert!(!cache.is_revoked("s1").await.unwrap());
        store.revoke("s1", Utc::now()).await.unwrap();
        // Within the cache time the stale answer stands: this is the bound.
        assert!(!cache.is_revoked("s1").await.unwrap());
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
        // With no cache time every check reads the store.
        let fresh = RevocationCache::new(store.clone(), Duration::ZERO);
        assert!(fresh.is_revoked("s1").await.unwrap());
    }

    #[tokio::test]
    async fn a_revoked_answer_is_kept_without_reading_the_store_again() {
        let store = Arc::new(FakeStore::default());
        store.revoke("s1", Utc::now()).await.unwrap();
        let cache = RevocationCache::new(store.clone(), Duration::ZERO);
        assert!(cache.is_revoked("s1").await.unwrap());
        assert!(cache.is_revoked("s1").await.unwrap());
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_session_this_process_revoked_is_refused_at_once() {
        let store = Arc::new(FakeStore::default());
        let cache = RevocationCache::new(store.clone(), Duration::from_secs(3600));
        assert!(!cache.is_revoked("s1").await.unwrap());
        cache.note_revoked("s1");
        assert!(cache.is_revoked("s1").await.unwrap());
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    }
}
