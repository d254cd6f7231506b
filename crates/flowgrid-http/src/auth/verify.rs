//! Verification of bearer access tokens: the built-in issuer's keys (from settings or storage),
//! external OpenID Connect issuers, and the session revocation denylist.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{
    KeyCache, KeySource, OIDC_REFRESH_INTERVAL, STORED_KEYS_REFRESH_INTERVAL, TrustedKey,
    checked_key_map, key_map, static_keys,
};
use super::lazy::LazyStores;
use super::oidc::OidcSource;
use super::revocation::RevocationCache;
use super::{ACCESS_TOKEN_TYPE, Caller, LEEWAY_SECS, Role};
use flowgrid_domain::TenantId;
use flowgrid_domain::config::{Config, OidcIssuerConfig, StoreKind};
use flowgrid_domain::store::{RevocationStore, SigningKeyStore};
use flowgrid_domain::{Error, Result};

/// The claims of a Flowgrid access token.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The OAuth client the token was issued to (RFC 9068 §2.2): [`super::LOGIN_CLIENT_ID`] for
    /// the built-in issuer's logins, [`super::CLI_CLIENT_ID`] for `flowgrid token`; an external
    /// issuer's `client_id`, `azp` or `appid`. Optional when verifying (older tokens lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
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

/// An external issuer's rules.
struct External {
    config: OidcIssuerConfig,
    keys: Arc<KeyCache>,
}

/// Verifies access tokens: signature by a known `kid` with that key's algorithm only, explicit
/// `typ`, issuer, audience and time claims, and (for tokens of a login session) that the session
/// is not revoked.
pub struct TokenVerifier {
    builtin: Arc<KeyCache>,
    issuer: String,
    audience: String,
    externals: Vec<External>,
    revocations: Option<RevocationCache>,
    verified: super::verified::VerifiedTokens,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("builtin_keys", &self.builtin.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "external_issuers",
                &self
                    .externals
                    .iter()
                    .map(|e| &e.config.issuer)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a token failed before any key was tried, or that its key is unknown (worth a refresh).
enum Failure {
    UnknownKid(Arc<KeyCache>, String),
    Rejected(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Rejected(e)
    }
}

fn reject(reason: impl Into<String>) -> Failure {
    Failure::Rejected(Error::Unauthorized(reason.into()))
}

impl TokenVerifier {
    /// The verifier a process builds from its configuration: the keys of `FLOWGRID_JWT_JWKS`,
    /// or else the built-in issuer's keys in the embedded database of the data folder (re-read
    /// on an unknown `kid`); the external issuers of `FLOWGRID_OIDC_ISSUERS`; and the session
    /// denylist of that database, cached for `FLOWGRID_REVOCATION_CACHE_SECS`.
    ///
    /// Storage is opened on first use; with the embedded backend the stored keys are also read
    /// here, synchronously, so that [`TokenVerifier::verify`] works from the start.
    pub fn from_config(config: &Config) -> Result<Self> {
        let lazy = Arc::new(LazyStores::new(config.clone()));
        let builtin = match &config.jwt_jwks {
            Some(doc) => static_keys(doc)?,
            None => {
                let initial = if matches!(config.store, StoreKind::Sqlite) {
                    let db =
                        flowgrid_storage::sqlite::Sqlite::open_blocking(&config.sqlite_path())?;
                    let stored =
                        db.run_blocking(|conn| flowgrid_storage::sqlite::list_signing_keys(conn))?;
                    key_map(
                        &super::keyring::published_jwks(&stored, chrono::Utc::now()),
                        false,
                    )
                } else {
                    HashMap::new()
                };
                KeyCache::new(
                    initial,
                    KeySource::Store(lazy.clone()),
                    STORED_KEYS_REFRESH_INTERVAL,
                )
            }
        };
        Self::assemble(config, builtin, Some(lazy))
    }

    /// Like [`TokenVerifier::from_config`], over already opened stores (any backend).
    pub async fn from_stores(
        config: &Config,
        signing_keys: Arc<dyn SigningKeyStore>,
        revocations: Arc<dyn RevocationStore>,
    ) -> Result<Self> {
        let builtin = match &config.jwt_jwks {
            Some(doc) => static_keys(doc)?,
            None => {
                let stored = signing_keys.list().await?;
                let jwks = super::keyring::published_jwks(&stored, chrono::Utc::now());
                KeyCache::new(
                    key_map(&jwks, false),
                    KeySource::Store(signing_keys),
                    STORED_KEYS_REFRESH_INTERVAL,
                )
            }
        };
        Self::assemble(config, builtin, Some(revocations))
    }

    fn assemble(
        config: &Config,
        builtin: KeyCache,
        revocations: Option<Arc<dyn RevocationStore>>,
    ) -> Result<Self> {
        let mut externals = Vec::new();
        for issuer in &config.oidc_issuers {
            let source = OidcSource::new(&issuer.issuer, config.oidc_allow_http)?;
            let keys = Arc::new(KeyCache::new(
                HashMap::new(),
                KeySource::Oidc(source),
                OIDC_REFRESH_INTERVAL,
            ));
            // Fetch once at start-up, off the request path, when a runtime is at hand.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let prefetch = keys.clone();
                let name = issuer.issuer.clone();
                runtime.spawn(async move {
                    if let Err(e) = prefetch.refresh(chrono::Utc::now()).await {
                        tracing::warn!(issuer = %name, error = %e, "fetching the issuer's keys failed");
                    }
                });
            }
            externals.push(External {
                config: issuer.clone(),
                keys,
            });
        }
        Ok(TokenVerifier {
            builtin: Arc::new(builtin),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            externals,
            revocations: revocations.map(|store| {
                RevocationCache::new(store, Duration::from_secs(config.revocation_cache_secs))
            }),
            verified: Default::default(),
        })
    }

    /// A verifier trusting the EdDSA and ES256 keys of `jwks` (each must carry a `kid`), with no
    /// external issuers and no revocation checks.
    pub fn new(jwks: &JwkSet, issuer: &str, audience: &str) -> Result<Self> {
        let builtin = KeyCache::new(checked_key_map(jwks)?, KeySource::Static, Duration::MAX);
        Ok(TokenVerifier {
            builtin: Arc::new(builtin),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            externals: Vec::new(),
            revocations: None,
            verified: Default::default(),
        })
    }

    /// Adds the session denylist `store`, whose answers are cached for `cache_for`.
    pub fn with_revocations(
        mut self,
        store: Arc<dyn RevocationStore>,
        cache_for: Duration,
    ) -> Self {
        self.revocations = Some(RevocationCache::new(store, cache_for));
        self
    }

    /// Tells the verifier that this process has just revoked session `sid` (after writing it to
    /// the denylist), so that its tokens fail here at once rather than after the cache time.
    pub fn note_revoked(&self, sid: &str) {
        if let Some(revocations) = &self.revocations {
            revocations.note_revoked(sid);
        }
    }

    /// How long a revoked session may still pass this verifier: the revocation cache time.
    pub fn revocation_bound(&self) -> Option<Duration> {
        self.revocations.as_ref().map(RevocationCache::ttl)
    }

    /// The claims of `token` if its signature, header and claims pass every check with the keys
    /// at hand; 401 otherwise (the reason is logged only). Neither fetches keys nor checks
    /// revocation: request handling uses [`TokenVerifier::authenticate`].
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        match self.check(token) {
            Ok(claims) => Ok(claims),
            Err(Failure::UnknownKid(_, kid)) => Err(Error::Unauthorized(format!(
                "the token's key (kid {kid:?}) is not trusted"
            ))),
            Err(Failure::Rejected(e)) => Err(e),
        }
    }

    /// Verifies `token` as [`TokenVerifier::verify`] does, re-reading its issuer's keys at once
    /// on an unknown `kid` (one read shared by concurrent requests; only a kid still unknown
    /// after a read is throttled, for its issuer's refresh interval), and refuses a token whose
    /// session is revoked.
    pub async fn authenticate(&self, token: &str) -> Result<AccessClaims> {
        let claims = match self
            .verified
            .get(token)
            .ok_or(())
            .or_else(|()| self.check(token))
        {
            Ok(claims) => claims,
            Err(Failure::Rejected(e)) => return Err(e),
            Err(Failure::UnknownKid(cache, kid)) => {
                match cache.refresh_for(&kid, chrono::Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(Error::Unauthorized(format!(
                            "the token's key (kid {kid:?}) is not trusted"
                        )));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "re-reading the issuer's keys failed");
                        return Err(Error::Unauthorized(format!(
                            "the token's key (kid {kid:?}) is not trusted (keys could not be refreshed)"
                        )));
                    }
                }
                self.verify(token)?
            }
        };
        // Remember a fresh verification only: a hit must not extend its own lifetime.
        self.verified.insert_if_absent(token, &claims);
        if let (Some(sid), Some(revocations)) = (&claims.sid, &self.revocations)
            && revocations.is_revoked(sid).await?
        {
            return Err(Error::Unauthorized("the token's session is revoked".into()));
        }
        Ok(claims)
    }

    fn check(&self, token: &str) -> Result<AccessClaims, Failure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| reject(format!("unreadable token header: {e}")))?;
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(reject("token header names its own key (jku/x5u/jwk/x5c)"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| reject("token has no kid"))?;
        let typ = header.typ.as_deref().map(str::to_ascii_lowercase);
        let issuer = unverified_issuer(token).ok_or_else(|| reject("token has no issuer"))?;
        if issuer == self.issuer {
            if typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
                return Err(reject(format!(
                    "token typ {:?} is not {ACCESS_TOKEN_TYPE}",
                    header.typ
                )));
            }
            let trusted = self
                .builtin
                .get(kid)
                .ok_or_else(|| Failure::UnknownKid(self.builtin.clone(), kid.to_owned()))?;
            let validation = validation(
                &trusted,
                header.alg,
                &self.issuer,
                &self.audience,
                &["exp", "nbf", "iss", "aud", "sub"],
            )?;
            return jsonwebtoken::decode::<AccessClaims>(token, &trusted.key, &validation)
                .map(|data| data.claims)
                .map_err(|e| reject(rejection(&e)));
        }
        let external = self
            .externals
            .iter()
            .find(|e| e.config.issuer == issuer)
            .ok_or_else(|| reject("token issuer is not trusted"))?;
        // Entra ID access tokens say `JWT`; RFC 9068 ones `at+jwt`. ID tokens are refused below.
        if !matches!(typ.as_deref(), Some(ACCESS_TOKEN_TYPE | "jwt")) {
            return Err(reject(format!(
                "token typ {:?} is not an access token type",
                header.typ
            )));
        }
        let trusted = external
            .keys
            .get(kid)
            .ok_or_else(|| Failure::UnknownKid(external.keys.clone(), kid.to_owned()))?;
        let validation = validation(
            &trusted,
            header.alg,
            &external.config.issuer,
            &external.config.audience,
            &["exp", "iss", "aud", "sub"],
        )?;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &trusted.key,
            &validation,
        )
        .map_err(|e| reject(rejection(&e)))?
        .claims;
        external_claims(&external.config, claims)
    }
}

fn validation(
    trusted: &TrustedKey,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
    required: &[&str],
) -> Result<Validation, Failure> {
    if alg != trusted.algorithm {
        return Err(reject(format!("token alg {alg:?} does not match its key")));
    }
    let mut validation = Validation::new(trusted.algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(required);
    Ok(validation)
}

/// Why jsonwebtoken refused a token, in words a developer reads in a dev 401.
fn rejection(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not trusted".into(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not this API".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        other => format!("token rejected: {other:?}"),
    }
}

/// The `iss` of a token before verification, to pick the keys to verify it with.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}

/// Claims only ID tokens carry (OpenID Connect Core §2, §3.1.3.6, §3.3.2.11).
const ID_TOKEN_CLAIMS: [&str; 3] = ["nonce", "at_hash", "c_hash"];

fn external_claims(
    config: &OidcIssuerConfig,
    claims: serde_json::Map<String, Value>,
) -> Result<AccessClaims, Failure> {
    if ID_TOKEN_CLAIMS.iter().any(|c| claims.contains_key(*c)) {
        return Err(reject("an ID token is not an access token"));
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let tid = text(&config.tenant_claim)
        .ok_or_else(|| reject(format!("token has no tenant claim {}", config.tenant_claim)))?;
    let roles = match claims.get(&config.roles_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => one.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let aud = match claims.get("aud") {
        Some(Value::String(a)) => a.clone(),
        _ => config.audience.clone(),
    };
    Ok(AccessClaims {
        iss: config.issuer.clone(),
        sub: text("sub").unwrap_or_default(),
        aud,
        tid,
        roles,
        jti: text("jti").or_else(|| text("uti")).unwrap_or_default(),
        sid: text("sid"),
        client_id: text("client_id")
            .or_else(|| text("azp"))
            .or_else(|| text("appid")),
        iat: number("iat").unwrap_or(0),
        nbf: number("nbf").unwrap_or(0),
        exp: number("exp").unwrap_or(0),
    })
}
