//! Local development tokens: signed with the built-in issuer's current key from the data
//! folder's embedded database (created on first use), so that tokens minted by `flowgrid token`
//! verify in every handler started from the same folder, exactly like tokens from
//! `POST /api/auth/login`. In Azure, handlers trust `FLOWGRID_JWT_JWKS` or the stored keys instead.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;

use super::keyring::{
    KeyEncryptionKey, SigningKey, current_signing_key, current_signing_key_blocking,
};
use super::{AccessClaims, Role};
use flowgrid_domain::Result;
use flowgrid_domain::config::Config;

/// The built-in issuer's current signing key, as local development tools use it.
pub struct DevKey {
    key: SigningKey,
}

/// What a development token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Tenant id (`tid`).
    pub tenant: String,
    /// Role granted.
    pub role: Role,
    /// Subject (`sub`).
    pub user: String,
    /// Issuer (`iss`).
    pub issuer: String,
    /// Audience (`aud`).
    pub audience: String,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
}

impl DevKey {
    /// The issuer's current key in `data_dir` (the other settings from the environment),
    /// created when there is none yet.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let config = Config::from_lookup(|name| {
            if name == "FLOWGRID_DATA_DIR" {
                Some(data_dir.display().to_string())
            } else {
                std::env::var(name).ok()
            }
        })?;
        Self::from_config(&config)
    }

    /// The issuer's current key for `config`, created when there is none yet.
    pub fn from_config(config: &Config) -> Result<Self> {
        Ok(DevKey {
            key: current_signing_key_blocking(config)?,
        })
    }

    /// The issuer's current key in the store `config` names (the data folder's SQLite, or Cosmos
    /// DB under `FLOWGRID_STORE=cosmos`), created when there is none yet: the key every handler
    /// with the same settings trusts.
    pub async fn from_configured_store(config: &Config) -> Result<Self> {
        match config.store {
            flowgrid_domain::config::StoreKind::Sqlite => Self::from_config(config),
            _ => {
                let backend = flowgrid_storage::Backend::open(config).await?;
                let kek = KeyEncryptionKey::from_config(config)?;
                Ok(DevKey {
                    key: current_signing_key(backend.signing_keys().as_ref(), &kek).await?,
                })
            }
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> JwkSet {
        self.key.jwks()
    }

    /// Signs `claims` as an access token.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        self.key.sign(claims)
    }

    /// A development access token as `request` describes (no session: it cannot be revoked,
    /// only expire).
    pub fn mint(&self, request: &TokenRequest) -> Result<String> {
        let now = chrono::Utc::now().timestamp().max(0).cast_unsigned();
        self.sign(&AccessClaims {
            iss: request.issuer.clone(),
            sub: request.user.clone(),
            aud: request.audience.clone(),
            tid: request.tenant.clone(),
            roles: vec![request.role.as_str().to_owned()],
            jti: uuid::Uuid::new_v4().to_string(),
            sid: None,
            client_id: Some(super::CLI_CLIENT_ID.to_owned()),
            iat: now,
            nbf: now,
            exp: now + request.ttl_secs,
        })
    }
}
