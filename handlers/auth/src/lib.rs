//! The Auth app: login with refresh-token rotation, logout and revocation, token validation,
//! the built-in issuer's discovery document and JWKS, and user management within a tenant,
//! served as an Azure Functions custom handler (HTTP forwarding mode).
//!
//! `router(state)` is what both `main` and the tests serve. [`admin`] holds what the
//! `flowgrid admin` commands run without HTTP.
//!
//! Settings of this app only (the shared ones are in `flowgrid_domain::config`) are in
//! [`SETTINGS`].

pub mod admin;
mod issuer;
pub mod password;
mod routes;
mod sessions;
pub mod throttle;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use flowgrid_domain::config::{Config, Setting};
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{
    RevocationStore, SessionStore, SigningKeyStore, TenantStore, UserStore,
};
use flowgrid_http::auth::TokenVerifier;
use flowgrid_http::auth::keyring::KeyEncryptionKey;
use flowgrid_storage::Backend;

pub use issuer::{Issuer, SIGNING_KEYS_SETTING, settings_keys};
pub use password::{Params as PasswordParams, Passwords};
use throttle::{Policy, Throttle};

/// The app's name: its folder under `functions/`, its binary `flowgrid-auth`.
pub const APP: &str = "auth";

/// The Auth app's own settings: what [`settings_keys`] reads.
pub const SETTINGS: &[Setting] = &[Setting {
    name: SIGNING_KEYS_SETTING,
    default: "(unset)",
    meaning: "the issuer's private keys from settings instead of storage (a Key Vault reference in Azure): JSON `[{\"kid\",\"privateKey\"}]`, `privateKey` = base64 of an Ed25519 PKCS#8 DER key, newest (signing) first; all are published; every app then needs `FLOWGRID_JWT_JWKS` with their public halves",
}];

/// Session and token lifetimes.
#[derive(Debug, Clone)]
pub struct Lifetimes {
    /// Access tokens (`FLOWGRID_ACCESS_TOKEN_TTL_SECS`, 15 minutes by default).
    pub access: Duration,
    /// A refresh token unused for this long stops working (idle lifetime).
    pub refresh_idle: Duration,
    /// No refresh extends a session past this (absolute lifetime).
    pub session: Duration,
    /// A used refresh token presented again within this window is a concurrent refresh, not a
    /// reuse: it gets a new refresh token too.
    pub reuse_grace: Duration,
}

impl Lifetimes {
    /// The lifetimes for `config`.
    pub fn from_config(config: &Config) -> Self {
        Lifetimes {
            access: Duration::from_secs(config.access_token_ttl_secs),
            refresh_idle: Duration::from_secs(14 * 24 * 3600),
            session: Duration::from_secs(30 * 24 * 3600),
            reuse_grace: Duration::from_secs(10),
        }
    }
}

/// Failed-login throttles.
pub struct Throttles {
    /// Per account (lower-cased email).
    pub account: Throttle,
    /// Per caller (client address).
    pub caller: Throttle,
}

/// The stores the Auth app uses: the identity aggregates.
#[derive(Clone)]
pub struct Stores {
    /// Tenants.
    pub tenants: Arc<dyn TenantStore>,
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Login sessions and refresh tokens.
    pub sessions: Arc<dyn SessionStore>,
    /// The built-in issuer's signing keys.
    pub signing_keys: Arc<dyn SigningKeyStore>,
    /// The session revocation denylist.
    pub revocations: Arc<dyn RevocationStore>,
    /// Reachability of the backend.
    pub health: Arc<dyn HealthCheck>,
    /// Pending API request counts of this app's instances (the kit writes and publishes them).
    pub api_request_counts: Arc<dyn flowgrid_domain::store::ApiRequestCountStore>,
}

impl Stores {
    /// The Auth app's stores of `backend`.
    pub fn of(backend: &Backend) -> Self {
        Stores {
            tenants: backend.tenants(),
            users: backend.users(),
            sessions: backend.sessions(),
            signing_keys: backend.signing_keys(),
            revocations: backend.revocations(),
            health: backend.health(),
            api_request_counts: backend.api_request_counts(),
        }
    }

    /// Opens the configured backend and takes the Auth app's stores.
    pub async fn open(config: &Config) -> flowgrid_domain::Result<Self> {
        Ok(Stores::of(&Backend::open(config).await?))
    }
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub stores: Stores,
    /// Bearer token verification (also for `/validate`).
    pub verifier: Arc<TokenVerifier>,
    /// The built-in issuer.
    pub issuer: Arc<Issuer>,
    /// Password hashing.
    pub passwords: Passwords,
    /// Failed-login throttles.
    pub throttles: Arc<Throttles>,
    /// Token and session lifetimes.
    pub lifetimes: Lifetimes,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    /// Opens storage, loads keys and prepares the production password hasher.
    pub async fn from_config(config: &Config) -> flowgrid_domain::Result<AppState> {
        let keys = settings_keys(|name| std::env::var(name).ok())?;
        let stores = Stores::open(config).await?;
        Self::new(
            config,
            stores,
            PasswordParams::PRODUCTION,
            Policy::ACCOUNT,
            Policy::CALLER,
        )
        .await?
        .with_signing_keys(config, keys)
    }

    /// The same state signing with keys from settings (see [`SIGNING_KEYS_SETTING`]).
    pub fn with_signing_keys(
        mut self,
        config: &Config,
        keys: Vec<flowgrid_http::auth::keyring::SigningKey>,
    ) -> flowgrid_domain::Result<AppState> {
        if keys.is_empty() {
            return Ok(self);
        }
        let kek = KeyEncryptionKey::from_config(config)?;
        self.issuer = Arc::new(Issuer::new(
            config,
            self.stores.signing_keys.clone(),
            kek,
            keys,
        )?);
        Ok(self)
    }

    /// The state over `stores` with the given password cost and throttle policies (tests use
    /// cheap parameters).
    pub async fn new(
        config: &Config,
        stores: Stores,
        password_params: PasswordParams,
        account: Policy,
        caller: Policy,
    ) -> flowgrid_domain::Result<AppState> {
        let kek = KeyEncryptionKey::from_config(config)?;
        let issuer = Issuer::new(config, stores.signing_keys.clone(), kek, Vec::new())?;
        // The first key is made now, so the JWKS is never empty.
        issuer.current_key().await?;
        let verifier = Arc::new(
            TokenVerifier::from_stores(
                config,
                stores.signing_keys.clone(),
                stores.revocations.clone(),
            )
            .await?,
        );
        let passwords = tokio::task::spawn_blocking(move || Passwords::new(password_params))
            .await
            .map_err(|e| flowgrid_domain::Error::Internal(e.to_string()))??;
        Ok(AppState {
            stores,
            verifier,
            issuer: Arc::new(issuer),
            passwords,
            throttles: Arc::new(Throttles {
                account: Throttle::new(account),
                caller: Throttle::new(caller),
            }),
            lifetimes: Lifetimes::from_config(config),
        })
    }
}

pub use routes::app;

/// Every route of the app, with health routes and the common layers.
pub fn router(state: AppState) -> Router {
    let checks = vec![state.stores.health.clone()];
    app()
        .api_request_counts(state.stores.api_request_counts.clone())
        .router(state, checks)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn settings_lists_exactly_what_the_app_reads() {
        let asked = RefCell::new(BTreeSet::new());
        let keys = settings_keys(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .expect("no keys");
        assert!(keys.is_empty());
        let listed: BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(listed.len(), SETTINGS.len(), "a setting is listed twice");
        assert_eq!(
            asked.into_inner(),
            listed,
            "SETTINGS must list exactly what settings_keys reads"
        );
    }
}

#[cfg(test)]
mod function_json_tests {
    use super::*;

    #[test]
    fn every_function_is_declared_the_same_in_code_and_in_function_json() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../functions")
            .join(APP);
        assert_eq!(
            flowgrid_http::app::differences(app().functions(), &dir),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_http_function_is_documented_in_the_openapi_document() {
        assert_eq!(app().undocumented(), Vec::<String>::new());
    }
}
