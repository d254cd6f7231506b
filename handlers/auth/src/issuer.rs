//! The built-in issuer: signs access tokens with its current key and publishes its keys.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flowgrid_domain::Result;
use flowgrid_domain::User;
use flowgrid_domain::config::Config;
use flowgrid_domain::store::SigningKeyStore;
use flowgrid_http::auth::AccessClaims;
use flowgrid_http::auth::keyring::{self, KeyEncryptionKey, SigningKey};
use jsonwebtoken::jwk::JwkSet;

/// The setting with the issuer's private keys, when they come from settings.
pub const SIGNING_KEYS_SETTING: &str = "FLOWGRID_JWT_SIGNING_KEYS";

/// The issuer's keys from [`SIGNING_KEYS_SETTING`] read through `get`; empty when unset.
pub fn settings_keys(get: impl Fn(&str) -> Option<String>) -> Result<Vec<SigningKey>> {
    match get(SIGNING_KEYS_SETTING).filter(|v| !v.trim().is_empty()) {
        Some(doc) => keyring::parse_signing_keys(SIGNING_KEYS_SETTING, &doc),
        None => Ok(Vec::new()),
    }
}

/// The built-in issuer of access tokens.
pub struct Issuer {
    store: Arc<dyn SigningKeyStore>,
    /// Keys from `FLOWGRID_JWT_SIGNING_KEYS`, newest first; empty: the stored keys.
    settings_keys: Vec<SigningKey>,
    kek: KeyEncryptionKey,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// A freshly signed access token.
pub struct AccessToken {
    /// The compact JWS.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl Issuer {
    /// The issuer of `config` over the key store.
    pub fn new(
        config: &Config,
        store: Arc<dyn SigningKeyStore>,
        kek: KeyEncryptionKey,
        settings_keys: Vec<SigningKey>,
    ) -> Result<Self> {
        if let Some(first) = settings_keys.first() {
            let trusted = config.jwt_jwks.as_deref().is_some_and(|doc| {
                serde_json::from_str::<JwkSet>(doc).is_ok_and(|set| set.find(first.kid()).is_some())
            });
            if !trusted {
                return Err(flowgrid_domain::config::setting_error(
                    SIGNING_KEYS_SETTING,
                    &format!(
                        "with keys from settings every app (this one too) needs FLOWGRID_JWT_JWKS \
                         with their public halves, including the signing key {}",
                        first.kid()
                    ),
                ));
            }
        }
        Ok(Issuer {
            settings_keys,
            store,
            kek,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl: Duration::from_secs(config.access_token_ttl_secs),
        })
    }

    /// The `iss` of its tokens (`<base>/api/auth`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key that signs now (made when there is none).
    pub async fn current_key(&self) -> Result<SigningKey> {
        if let Some(first) = self.settings_keys.first() {
            return Ok(first.clone());
        }
        keyring::current_signing_key(self.store.as_ref(), &self.kek).await
    }

    /// The published keys: the current one and recently retired ones.
    pub async fn jwks(&self) -> Result<JwkSet> {
        if !self.settings_keys.is_empty() {
            return Ok(keyring::public_jwks(&self.settings_keys));
        }
        Ok(keyring::published_jwks(
            &self.store.list().await?,
            Utc::now(),
        ))
    }

    /// An access token for `user` in session `sid`.
    pub async fn access_token(&self, user: &User, sid: &str) -> Result<AccessToken> {
        let key = self.current_key().await?;
        let now = Utc::now().timestamp().max(0).cast_unsigned();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: user.id.to_string(),
            aud: self.audience.clone(),
            tid: user.tenant_id.as_str().to_owned(),
            roles: user.roles.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: Some(sid.to_owned()),
            client_id: Some(flowgrid_http::auth::LOGIN_CLIENT_ID.to_owned()),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
        };
        Ok(AccessToken {
            token: key.sign(&claims)?,
            expires_in: self.ttl.as_secs(),
        })
    }
}
