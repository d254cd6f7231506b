//! Process configuration, read once from the environment.
//!
//! Every variable, with its default (the same list is in `local.settings.example.json` and the README):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FLOWGRID_DATA_DIR` | `.flowgrid` | folder for the embedded database and the local development signing key |
//! | `FLOWGRID_STORE` | `sqlite` | storage backend (`sqlite`) |
//! | `FLOWGRID_JWT_ISSUER` | `http://localhost:7071/api/auth` | the `iss` every access token must carry |
//! | `FLOWGRID_JWT_AUDIENCE` | `flowgrid` | the `aud` every access token must carry |
//! | `FLOWGRID_JWT_JWKS` | (unset) | a JWKS document (JSON) with the public keys that sign tokens; unset: the local development key in the data folder, created on first use |
//! | `FLOWGRID_KEY_ENCRYPTION_KEY` | (unset) | base64 of 32 random bytes: the AES-256-GCM key that encrypts the built-in issuer's signing keys in storage (a Key Vault reference in Azure); unset: `key-encryption-key.json` in the data folder, created on first use |
//! | `FLOWGRID_ACCESS_TOKEN_TTL_SECS` | `900` | lifetime of access tokens the Auth app issues (60–3600) |
//! | `FLOWGRID_REVOCATION_CACHE_SECS` | `5` | how long a handler trusts its cached answer to "is this session revoked?" (0–60); a revoked session fails everywhere within this many seconds |
//! | `FLOWGRID_OIDC_ISSUERS` | (unset) | JSON array of external OpenID Connect issuers whose access tokens are accepted: `[{"issuer","audience","tenantClaim","rolesClaim"}]` (`tenantClaim` defaults to `tid`, `rolesClaim` to `roles`) |
//! | `FLOWGRID_OIDC_ALLOW_HTTP` | `false` | `true` lets external issuers use plain `http://` on loopback (tests, local identity servers); otherwise only `https://` |
//! | `FLOWGRID_LOG` | `info` | log filter (`tracing` env-filter syntax) |
//! | `FUNCTIONS_CUSTOMHANDLER_PORT` | `0` | port to serve on (set by the Functions host) |

use std::path::PathBuf;

use crate::{Error, Result};

/// Which storage backend a process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite in one file in the data folder.
    Sqlite,
}

/// Settings shared by every Flowgrid process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `FLOWGRID_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `FLOWGRID_STORE`.
    pub store: StoreKind,
    /// `FLOWGRID_JWT_ISSUER`.
    pub jwt_issuer: String,
    /// `FLOWGRID_JWT_AUDIENCE`.
    pub jwt_audience: String,
    /// `FLOWGRID_JWT_JWKS`.
    pub jwt_jwks: Option<String>,
    /// `FLOWGRID_KEY_ENCRYPTION_KEY` (32 bytes), when set.
    pub key_encryption_key: Option<Secret>,
    /// `FLOWGRID_ACCESS_TOKEN_TTL_SECS`.
    pub access_token_ttl_secs: u64,
    /// `FLOWGRID_REVOCATION_CACHE_SECS`.
    pub revocation_cache_secs: u64,
    /// `FLOWGRID_OIDC_ISSUERS`.
    pub oidc_issuers: Vec<OidcIssuerConfig>,
    /// `FLOWGRID_OIDC_ALLOW_HTTP`.
    pub oidc_allow_http: bool,
}

/// A secret setting: never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One external OpenID Connect issuer (an entry of `FLOWGRID_OIDC_ISSUERS`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The issuer URL (`iss` of its tokens; discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The `aud` its access tokens must carry for Flowgrid.
    pub audience: String,
    /// The claim naming the Flowgrid tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// The claim listing the roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_tenant_claim() -> String {
    "tid".into()
}

fn default_roles_claim() -> String {
    "roles".into()
}

/// The default issuer of access tokens: the built-in Auth app behind the local host.
pub const DEFAULT_ISSUER: &str = "http://localhost:7071/api/auth";
/// The default audience of access tokens.
pub const DEFAULT_AUDIENCE: &str = "flowgrid";

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get` (for tests and for the CLI's `--data-dir`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let non_empty = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let store = match non_empty("FLOWGRID_STORE").as_deref() {
            None | Some("sqlite") => StoreKind::Sqlite,
            Some(other) => {
                return Err(setting_error(
                    "FLOWGRID_STORE",
                    &format!("unknown backend {other:?} (expected sqlite)"),
                ));
            }
        };
        let jwt_issuer =
            non_empty("FLOWGRID_JWT_ISSUER").unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        let jwt_audience =
            non_empty("FLOWGRID_JWT_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
        let key_encryption_key = non_empty("FLOWGRID_KEY_ENCRYPTION_KEY")
            .map(|v| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .ok()
                    .filter(|k| k.len() == 32)
                    .map(Secret)
                    .ok_or_else(|| {
                        setting_error(
                            "FLOWGRID_KEY_ENCRYPTION_KEY",
                            "must be base64 of exactly 32 bytes",
                        )
                    })
            })
            .transpose()?;
        let number = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| {
            match non_empty(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        setting_error(
                            name,
                            &format!(
                                "must be a whole number from {} to {}",
                                range.start(),
                                range.end()
                            ),
                        )
                    }),
            }
        };
        let oidc_issuers = match non_empty("FLOWGRID_OIDC_ISSUERS") {
            None => Vec::new(),
            Some(doc) => serde_json::from_str::<Vec<OidcIssuerConfig>>(&doc).map_err(|e| {
                setting_error(
                    "FLOWGRID_OIDC_ISSUERS",
                    &format!("not a JSON array of {{issuer, audience, tenantClaim, rolesClaim}}: {e}"),
                )
            })?,
        };
        let oidc_allow_http = match non_empty("FLOWGRID_OIDC_ALLOW_HTTP").as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => {
                return Err(setting_error(
                    "FLOWGRID_OIDC_ALLOW_HTTP",
                    "must be true or false",
                ));
            }
        };
        Ok(Config {
            key_encryption_key,
            access_token_ttl_secs: number("FLOWGRID_ACCESS_TOKEN_TTL_SECS", 900, 60..=3600)?,
            revocation_cache_secs: number("FLOWGRID_REVOCATION_CACHE_SECS", 5, 0..=60)?,
            oidc_issuers,
            oidc_allow_http,
            data_dir: non_empty("FLOWGRID_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".flowgrid")),
            store,
            jwt_issuer,
            jwt_audience,
            jwt_jwks: non_empty("FLOWGRID_JWT_JWKS"),
        })
    }

    /// The embedded database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("flowgrid.db")
    }
}

/// A configuration error naming the variable.
pub fn setting_error(name: &str, problem: &str) -> Error {
    Error::Config(format!("setting {name}: {problem}"))
}
