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
    /// (the start-up prefetch, say) uses its result instead of being refused by the interval.
    pub(super) generation: std::sync::atomic::AtomicU64,
}

/// How often an unknown `kid` may make a handler re-read the built-in issuer's stored keys.
pub const STORED_KEYS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How often an unknown `kid` may make a handler re-fetch an external issuer's JWKS.
pub const OIDC_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

impl KeyCache {
    pub(super) fn new(keys: KeyMap, source: KeySource, min_interval: Duration) -> Self {
        KeyCache {
            keys: RwLock::new(Arc::new(keys)),
            source,
            min_interval,
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
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
        let jwks = match &self.source {
            KeySource::Static => return Ok(false),
            KeySource::Store(store) => super::keyring::published_jwks(&store.list().await?, now),
            KeySource::Oidc(source) => source.fetch_jwks().await?,
        };
        let keys = key_map(&jwks, matches!(self.source, KeySource::Oidc(_)));
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
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
