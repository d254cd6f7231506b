//! The built-in issuer: signs access tokens with its current key and publishes its keys.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flowgrid_core::Result;
use flowgrid_core::auth::AccessClaims;
use flowgrid_core::auth::keyring::{self, KeyEncryptionKey, SigningKey};
use flowgrid_core::config::Config;
use flowgrid_core::domain::User;
use flowgrid_core::store::SigningKeyStore;
use jsonwebtoken::jwk::JwkSet;

/// The built-in issuer of access tokens.
pub struct Issuer {
    store: Arc<dyn SigningKeyStore>,
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
    pub fn new(config: &Config, store: Arc<dyn SigningKeyStore>, kek: KeyEncryptionKey) -> Self {
        Issuer {
            store,
            kek,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl: Duration::from_secs(config.access_token_ttl_secs),
        }
    }

    /// The `iss` of its tokens (`<base>/api/auth`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key that signs now (made when there is none).
    pub async fn current_key(&self) -> Result<SigningKey> {
        keyring::current_signing_key(self.store.as_ref(), &self.kek).await
    }

    /// Makes a new key current; returns its id.
    pub async fn rotate(&self) -> Result<String> {
        keyring::rotate(self.store.as_ref(), &self.kek).await
    }

    /// The published keys: the current one and recently retired ones.
    pub async fn jwks(&self) -> Result<JwkSet> {
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
