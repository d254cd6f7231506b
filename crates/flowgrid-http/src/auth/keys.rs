//! The key sets a verifier trusts: fixed keys, the built-in issuer's stored keys, an external
//! issuer's JWKS; each with its refresh policy on an unknown `kid`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use flowgrid_domain::Result;
use flowgrid_domain::store::SigningKeyStore;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::oidc::OidcSource;

pub(super) struct TrustedKey {
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

pub(super) type KeyMap = HashMap<String, Arc<TrustedKey>>;

/// Where a key set comes from and how often it may be fetched again on an unknown `kid`.
pub(super) enum KeySource {
    /// Fixed keys (`FLOWGRID_JWT_JWKS`, tests).
    Static,
    /// The built-in issuer's keys in storage.
    Store(Arc<dyn SigningKeyStore>),
    /// An external issuer's JWKS, found through its discovery document.
    Oidc(OidcSource),
}

/// A key set with its refresh policy.
pub(super) struct KeyCache {
    pub(super) keys: RwLock<Arc<KeyMap>>,
    pub(super) source: KeySource,
    /// Least time between two fetches.
    pub(super) min_interval: Duration,
    pub(super) last_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time.
    pub(super) fetching: tokio::sync::Mutex<()>,
    /// Bumped each time the keys are replaced, so a caller that waited for someone else's fetch
    /// (the start-up prefetch, say) uses its result instead of fetching again.
    pub(super) generation: std::sync::atomic::AtomicU64,
    /// Kids still unknown after a fetch, and when: the same kid again within `min_interval`
    /// does not fetch (at most [`MAX_REMEMBERED_MISSES`] are remembered).
    misses: Mutex<HashMap<String, Instant>>,
    /// Least time between two fetches for different unknown kids; a caller waits it out
    /// (holding the fetch slot, so concurrent callers share the one fetch that follows).
    min_gap: Duration,
}

/// How many unknown kids a key set remembers (beyond that, the oldest are forgotten).
const MAX_REMEMBERED_MISSES: usize = 1024;

/// How often the same unknown `kid` may make a handler re-read the built-in issuer's stored
/// keys. A kid not seen unknown before re-reads them at once (one read shared by concurrent
/// requests), so a token signed right after `flowgrid admin rotate-keys` works everywhere.
pub const STORED_KEYS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the same unknown `kid` may make a handler re-fetch an external issuer's JWKS.
pub const OIDC_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between two fetches of an external issuer's JWKS for different unknown kids.
pub const OIDC_MIN_GAP: Duration = Duration::from_secs(1);

impl KeyCache {
    pub(super) fn new(keys: KeyMap, source: KeySource, min_interval: Duration) -> Self {
        let min_gap = match source {
            KeySource::Oidc(_) => OIDC_MIN_GAP,
            KeySource::Static | KeySource::Store(_) => Duration::ZERO,
        };
        KeyCache {
            keys: RwLock::new(Arc::new(keys)),
            source,
            min_interval,
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            misses: Mutex::new(HashMap::new()),
            min_gap,
        }
    }

    /// Whether `kid` was still unknown after a fetch less than `min_interval` ago.
    fn recently_missed(&self, kid: &str) -> bool {
        self.misses
            .lock()
            .ok()
            .and_then(|m| m.get(kid).map(|at| at.elapsed() < self.min_interval))
            .unwrap_or(false)
    }

    fn remember_miss(&self, kid: &str) {
        let Ok(mut misses) = self.misses.lock() else {
            return;
        };
        if misses.len() >= MAX_REMEMBERED_MISSES {
            misses.retain(|_, at| at.elapsed() < self.min_interval);
            if misses.len() >= MAX_REMEMBERED_MISSES {
                misses.clear();
            }
        }
        misses.insert(kid.to_owned(), Instant::now());
    }

    /// Makes `kid` known if its issuer now publishes it: fetches the key set at once, unless
    /// `kid` was still unknown after a fetch within `min_interval` (then nothing is fetched and
    /// the answer is false). Concurrent callers share one fetch; different unknown kids fetch
    /// at most once per `min_gap` (a caller waits the rest of the gap). True when the keys were
    /// fetched (by this caller or one it waited for).
    pub(super) async fn refresh_for(
        &self,
        kid: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        use std::sync::atomic::Ordering;
        if matches!(self.source, KeySource::Static) || self.recently_missed(kid) {
            return Ok(false);
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let _one = self.fetching.lock().await;
        if self.generation.load(Ordering::SeqCst) == seen {
            if let Some(wait) = self.rest_of_gap() {
                tokio::time::sleep(wait).await;
            }
            if let Ok(mut last) = self.last_fetch.lock() {
                *last = Some(Instant::now());
            }
            self.fetch(now).await?;
        }
        if self.get(kid).is_none() {
            self.remember_miss(kid);
        }
        Ok(true)
    }

    /// How long until `min_gap` has passed since the last fetch.
    fn rest_of_gap(&self) -> Option<Duration> {
        let last = (*self.last_fetch.lock().ok()?)?;
        self.min_gap
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    pub(super) fn get(&self, kid: &str) -> Option<Arc<TrustedKey>> {
        self.keys
            .read()
            .ok()
            .and_then(|keys| keys.get(kid).cloned())
    }

    pub(super) fn len(&self) -> usize {
        self.keys.read().map(|k| k.len()).unwrap_or(0)
    }

    /// Whether a fetch is allowed now (and claims the slot if so).
    pub(super) fn claim_fetch(&self) -> bool {
        let Ok(mut last) = self.last_fetch.lock() else {
            return false;
        };
        match *last {
            Some(at) if at.elapsed() < self.min_interval => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    /// Fetches the key set again if the refresh policy allows it; true when it was fetched.
    pub(super) async fn refresh(&self, now: chrono::DateTime<chrono::Utc>) -> Result<bool> {
        use std::sync::atomic::Ordering;
        let seen = self.generation.load(Ordering::SeqCst);
        let _one = self.fetching.lock().await;
        if self.generation.load(Ordering::SeqCst) != seen {
            return Ok(true);
        }
        if !self.claim_fetch() {
            return Ok(false);
        }
        self.fetch(now).await?;
        Ok(true)
    }

    /// Reads the key set from its source and replaces the keys.
    async fn fetch(&self, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let jwks = match &self.source {
            KeySource::Static => return Ok(()),
            KeySource::Store(store) => super::keyring::published_jwks(&store.list().await?, now),
            KeySource::Oidc(source) => source.fetch_jwks().await?,
        };
        let keys = key_map(&jwks, matches!(self.source, KeySource::Oidc(_)));
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

pub(super) fn static_keys(doc: &str) -> Result<KeyCache> {
    let jwks = serde_json::from_str::<JwkSet>(doc).map_err(|e| {
        flowgrid_domain::config::setting_error(
            "FLOWGRID_JWT_JWKS",
            &format!("not a JWKS document: {e}"),
        )
    })?;
    Ok(KeyCache::new(
        checked_key_map(&jwks)?,
        KeySource::Static,
        Duration::MAX,
    ))
}

/// The keys of a configured JWKS: every key must be usable, and there must be one.
pub(super) fn checked_key_map(jwks: &JwkSet) -> Result<KeyMap> {
    let mut keys = HashMap::new();
    for jwk in &jwks.keys {
        let kid = jwk.common.key_id.clone().ok_or_else(|| {
            flowgrid_domain::config::setting_error("FLOWGRID_JWT_JWKS", "every key needs a kid")
        })?;
        let algorithm = algorithm_of(jwk, false).ok_or_else(|| {
            flowgrid_domain::config::setting_error(
                "FLOWGRID_JWT_JWKS",
                &format!("key {kid}: only Ed25519 (EdDSA) and P-256 (ES256) keys are accepted"),
            )
        })?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            flowgrid_domain::config::setting_error("FLOWGRID_JWT_JWKS", &format!("key {kid}: {e}"))
        })?;
        keys.insert(kid, Arc::new(TrustedKey { algorithm, key }));
    }
    if keys.is_empty() {
        return Err(flowgrid_domain::config::setting_error(
            "FLOWGRID_JWT_JWKS",
            "the key set is empty",
        ));
    }
    Ok(keys)
}

/// The usable signing keys of a fetched or stored JWKS; others are skipped.
pub(super) fn key_map(jwks: &JwkSet, allow_rsa: bool) -> KeyMap {
    jwks.keys
        .iter()
        .filter(|jwk| {
            !matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            )
        })
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = algorithm_of(jwk, allow_rsa)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, Arc::new(TrustedKey { algorithm, key })))
        })
        .collect()
}

/// The one algorithm a key may verify: never HMAC, never `none`; RSA only for external issuers.
pub(super) fn algorithm_of(jwk: &Jwk, allow_rsa: bool) -> Option<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::RSA(_) if allow_rsa => Some(Algorithm::RS256),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::auth::keyring::{KeyEncryptionKey, SigningKey};
    use flowgrid_domain::store::StoredSigningKey;

    /// A key store that counts its reads and takes a little time over each.
    struct CountingStore {
        keys: Mutex<Vec<StoredSigningKey>>,
        reads: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SigningKeyStore for CountingStore {
        async fn insert(&self, key: &StoredSigningKey) -> Result<()> {
            self.keys.lock().unwrap().insert(0, key.clone());
            Ok(())
        }
        async fn list(&self) -> Result<Vec<StoredSigningKey>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(self.keys.lock().unwrap().clone())
        }
        async fn retire_all_except(&self, _: &str, _: chrono::DateTime<chrono::Utc>) -> Result<()> {
            Ok(())
        }
        async fn delete_retired_before(&self, _: chrono::DateTime<chrono::Utc>) -> Result<u64> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_new_kid_is_fetched_at_once_by_one_read_and_only_a_repeated_unknown_kid_is_throttled()
    {
        let store = Arc::new(CountingStore {
            keys: Mutex::new(Vec::new()),
            reads: AtomicUsize::new(0),
        });
        let cache = Arc::new(KeyCache::new(
            HashMap::new(),
            KeySource::Store(store.clone()),
            STORED_KEYS_REFRESH_INTERVAL,
        ));
        // A fetch just happened (an unknown kid), as before a rotation.
        assert!(cache.refresh_for("gone", chrono::Utc::now()).await.unwrap());
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);

        // The rotation: a new key, whose tokens arrive at once, many at a time.
        let kek = KeyEncryptionKey::from_bytes(&[7; 32]).unwrap();
        let (key, stored) = SigningKey::generate(&kek, chrono::Utc::now()).unwrap();
        store.insert(&stored).await.unwrap();
        let kid = key.kid().to_owned();
        let refreshes = (0..20).map(|_| {
            let (cache, kid) = (cache.clone(), kid.clone());
            tokio::spawn(async move { cache.refresh_for(&kid, chrono::Utc::now()).await })
        });
        for refresh in futures::future::join_all(refreshes).await {
            assert!(refresh.unwrap().unwrap());
        }
        assert!(cache.get(&kid).is_some(), "the new key is trusted at once");
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            2,
            "concurrent requests share one read"
        );

        // The kid seen unknown after a read is not read for again within the interval...
        assert!(!cache.refresh_for("gone", chrono::Utc::now()).await.unwrap());
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
        // ...while another unknown kid is.
        assert!(
            cache
                .refresh_for("other", chrono::Utc::now())
                .await
                .unwrap()
        );
        assert_eq!(store.reads.load(Ordering::SeqCst), 3);
    }
}
