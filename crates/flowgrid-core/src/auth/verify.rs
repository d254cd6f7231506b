//! Verification of bearer access tokens against a key set.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::{ACCESS_TOKEN_TYPE, Caller, DevKey, LEEWAY_SECS, Role};
use crate::config::Config;
use crate::domain::TenantId;
use crate::{Error, Result};

/// The claims of a Flowgrid access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user (or service) id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Tenant id.
    pub tid: String,
    /// Role names (`viewer`, `editor`, `admin`, `owner`); unknown names are ignored.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Token id.
    pub jti: String,
    /// Session id, when the token belongs to a login session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not before (seconds since the epoch).
    pub nbf: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
}

impl AccessClaims {
    /// The caller these claims identify. A token whose tenant id is malformed is refused.
    pub fn into_caller(self) -> Result<Caller> {
        let tenant = TenantId::parse(&self.tid)
            .map_err(|_| Error::Unauthorized("token tenant id is malformed".into()))?;
        let role = self.roles.iter().filter_map(|r| Role::parse(r)).max();
        Ok(Caller {
            tenant,
            subject: self.sub,
            role,
            session_id: self.sid,
        })
    }
}

struct TrustedKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies access tokens: signature by a known `kid` with that key's algorithm only, explicit
/// `typ`, issuer, audience and time claims.
pub struct TokenVerifier {
    keys: HashMap<String, TrustedKey>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl TokenVerifier {
    /// The verifier a process builds from its configuration: the keys of `FLOWGRID_JWT_JWKS`,
    /// or else the local development key in the data folder (created on first use).
    pub fn from_config(config: &Config) -> Result<Self> {
        let jwks = match &config.jwt_jwks {
            Some(doc) => serde_json::from_str::<JwkSet>(doc).map_err(|e| {
                crate::config::setting_error(
                    "FLOWGRID_JWT_JWKS",
                    &format!("not a JWKS document: {e}"),
                )
            })?,
            None => DevKey::load_or_create(&config.data_dir)?.jwks(),
        };
        Self::new(&jwks, &config.jwt_issuer, &config.jwt_audience)
    }

    /// A verifier trusting the EdDSA and ES256 keys of `jwks` (each must carry a `kid`).
    pub fn new(jwks: &JwkSet, issuer: &str, audience: &str) -> Result<Self> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let kid = jwk.common.key_id.clone().ok_or_else(|| {
                crate::config::setting_error("FLOWGRID_JWT_JWKS", "every key needs a kid")
            })?;
            let algorithm = algorithm_of(jwk).ok_or_else(|| {
                crate::config::setting_error(
                    "FLOWGRID_JWT_JWKS",
                    &format!("key {kid}: only Ed25519 (EdDSA) and P-256 (ES256) keys are accepted"),
                )
            })?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                crate::config::setting_error("FLOWGRID_JWT_JWKS", &format!("key {kid}: {e}"))
            })?;
            keys.insert(kid, TrustedKey { algorithm, key });
        }
        if keys.is_empty() {
            return Err(crate::config::setting_error(
                "FLOWGRID_JWT_JWKS",
                "the key set is empty",
            ));
        }
        Ok(TokenVerifier {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The claims of `token` if it passes every check; 401 otherwise (the reason is logged only).
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Error::Unauthorized(format!("unreadable token header: {e}")))?;
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(Error::Unauthorized(
                "token header names its own key (jku/x5u/jwk/x5c)".into(),
            ));
        }
        if header
            .typ
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some(ACCESS_TOKEN_TYPE)
        {
            return Err(Error::Unauthorized(format!(
                "token typ {:?} is not {ACCESS_TOKEN_TYPE}",
                header.typ
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| Error::Unauthorized("token has no kid".into()))?;
        let trusted = self
            .keys
            .get(kid)
            .ok_or_else(|| Error::Unauthorized("token kid is not trusted".into()))?;
        if header.alg != trusted.algorithm {
            return Err(Error::Unauthorized(format!(
                "token alg {:?} does not match its key",
                header.alg
            )));
        }
        let mut validation = Validation::new(trusted.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, &trusted.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| Error::Unauthorized(format!("token rejected: {e}")))
    }
}

fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        _ => None,
    }
}
