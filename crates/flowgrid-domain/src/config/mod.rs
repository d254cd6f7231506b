//! Process configuration, read once from the environment.
//!
//! Every variable, with its default and meaning, is in [`SETTINGS`] (the same list is in
//! `local.settings.example.json`, which the infra tests check against it, and in the README).

use std::path::PathBuf;

use crate::{Error, Result};

mod settings;

pub use settings::{SETTINGS, Setting};

/// Which storage backend a process uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite in one file in the data folder.
    Sqlite,
    /// Azure Cosmos DB (NoSQL API).
    Cosmos(CosmosSettings),
}

/// A secret setting: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(***)")
    }
}

/// Where the Cosmos backend connects (`FLOWGRID_STORE=cosmos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosmosSettings {
    /// `COSMOS_ENDPOINT`.
    pub endpoint: String,
    /// `COSMOS_KEY`; `None`: managed identity.
    pub key: Option<SecretString>,
    /// `COSMOS_DATABASE`.
    pub database: String,
    /// `COSMOS_CREATE_CONTAINERS`.
    pub create_containers: bool,
    /// `AZURE_CLIENT_ID`: the user-assigned managed identity, when the key is unset.
    pub client_id: Option<String>,
}

/// Which blob backend a process uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobKind {
    /// A folder (`blobs` in the data folder).
    Fs,
    /// Azure Blob Storage.
    Azure(BlobSettings),
}

/// Where the Azure blob backend connects (`FLOWGRID_BLOBS=azure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSettings {
    /// `BLOB_ENDPOINT`: the service URL (for Azurite it ends with the account name).
    pub endpoint: url::Url,
    /// `BLOB_ACCOUNT_KEY`; `None`: managed identity.
    pub account_key: Option<SecretString>,
    /// `BLOB_CONTAINER`.
    pub container: String,
    /// `AZURE_CLIENT_ID`: the user-assigned managed identity, when the key is unset.
    pub client_id: Option<String>,
}

/// Settings shared by every Flowgrid process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `FLOWGRID_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `FLOWGRID_STORE` (with the `COSMOS_*` settings).
    pub store: StoreKind,
    /// `FLOWGRID_BLOBS` (with the `BLOB_*` settings).
    pub blobs: BlobKind,
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
            Some("cosmos") => StoreKind::Cosmos(cosmos_settings(&non_empty)?),
            Some(other) => {
                return Err(setting_error(
                    "FLOWGRID_STORE",
                    &format!("unknown backend {other:?} (expected sqlite or cosmos)"),
                ));
            }
        };
        let blobs = match non_empty("FLOWGRID_BLOBS").as_deref() {
            None | Some("fs") => BlobKind::Fs,
            Some("azure") => BlobKind::Azure(blob_settings(&non_empty)?),
            Some(other) => {
                return Err(setting_error(
                    "FLOWGRID_BLOBS",
                    &format!("unknown backend {other:?} (expected fs or azure)"),
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
                    &format!(
                        "not a JSON array of {{issuer, audience, tenantClaim, rolesClaim}}: {e}"
                    ),
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
            blobs,
            jwt_issuer,
            jwt_audience,
            jwt_jwks: non_empty("FLOWGRID_JWT_JWKS"),
        })
    }

    /// The embedded database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("flowgrid.db")
    }

    /// The folder of the `fs` blob backend.
    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }
}

fn cosmos_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<CosmosSettings> {
    let endpoint = get("COSMOS_ENDPOINT")
        .ok_or_else(|| setting_error("COSMOS_ENDPOINT", "required when FLOWGRID_STORE=cosmos"))?;
    let url = url::Url::parse(&endpoint)
        .map_err(|e| setting_error("COSMOS_ENDPOINT", &format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(setting_error(
            "COSMOS_ENDPOINT",
            "expected https://<account>.documents.azure.com:443/",
        ));
    }
    let database = get("COSMOS_DATABASE").unwrap_or_else(|| "flowgrid".to_owned());
    let database_ok = database.len() <= 255
        && !database.contains(['/', '\\', '?', '#'])
        && !database.ends_with(' ');
    if !database_ok {
        return Err(setting_error(
            "COSMOS_DATABASE",
            "at most 255 characters, none of / \\ ? #",
        ));
    }
    Ok(CosmosSettings {
        endpoint,
        key: get("COSMOS_KEY").map(SecretString::new),
        database,
        create_containers: flag(get, "COSMOS_CREATE_CONTAINERS", true)?,
        client_id: get("AZURE_CLIENT_ID"),
    })
}

fn blob_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<BlobSettings> {
    let raw = get("BLOB_ENDPOINT")
        .ok_or_else(|| setting_error("BLOB_ENDPOINT", "required when FLOWGRID_BLOBS=azure"))?;
    let endpoint = url::Url::parse(&raw)
        .map_err(|e| setting_error("BLOB_ENDPOINT", &format!("not a URL: {e}")))?;
    if !matches!(endpoint.scheme(), "https" | "http") || endpoint.host_str().is_none() {
        return Err(setting_error(
            "BLOB_ENDPOINT",
            "expected https://<account>.blob.core.windows.net",
        ));
    }
    let account_key = get("BLOB_ACCOUNT_KEY").map(SecretString::new);
    if let Some(key) = &account_key {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(key.expose())
            .map_err(|_| setting_error("BLOB_ACCOUNT_KEY", "not a base64 account key"))?;
    }
    let container = get("BLOB_CONTAINER").unwrap_or_else(|| "flowgrid".to_owned());
    let container_ok = (3..=63).contains(&container.len())
        && container
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !container.starts_with('-')
        && !container.ends_with('-')
        && !container.contains("--");
    if !container_ok {
        return Err(setting_error(
            "BLOB_CONTAINER",
            "3-63 characters of a-z, 0-9 and single hyphens",
        ));
    }
    Ok(BlobSettings {
        endpoint,
        account_key,
        container,
        client_id: get("AZURE_CLIENT_ID"),
    })
}

fn flag(get: &dyn Fn(&str) -> Option<String>, name: &str, default: bool) -> Result<bool> {
    match get(name).as_deref() {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(setting_error(
            name,
            &format!("{other:?} is not true or false"),
        )),
    }
}

/// A configuration error naming the variable.
pub fn setting_error(name: &str, problem: &str) -> Error {
    Error::Config(format!("setting {name}: {problem}"))
}

#[cfg(test)]
mod storage_settings_tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn names(e: Error, variable: &str) -> bool {
        e.to_string().contains(variable)
    }

    #[test]
    fn defaults_are_sqlite_and_a_folder() {
        let c = config(&[]).expect("config");
        assert_eq!(c.store, StoreKind::Sqlite);
        assert_eq!(c.blobs, BlobKind::Fs);
    }

    #[test]
    fn cosmos_settings_are_read_with_their_defaults() {
        let c = config(&[
            ("FLOWGRID_STORE", "cosmos"),
            ("COSMOS_ENDPOINT", "https://acct.documents.azure.com:443/"),
        ])
        .expect("config");
        let StoreKind::Cosmos(s) = c.store else {
            panic!("not cosmos")
        };
        assert_eq!(s.database, "flowgrid");
        assert!(s.key.is_none(), "no key: managed identity");
        assert!(s.create_containers);
    }

    #[test]
    fn the_cosmos_key_never_prints() {
        let c = config(&[
            ("FLOWGRID_STORE", "cosmos"),
            ("COSMOS_ENDPOINT", "http://127.0.0.1:8081/"),
            ("COSMOS_KEY", "super-secret"),
        ])
        .expect("config");
        assert!(!format!("{c:?}").contains("super-secret"));
    }

    #[test]
    fn missing_or_malformed_storage_settings_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("FLOWGRID_STORE", "cosmos")], "COSMOS_ENDPOINT"),
            (
                &[("FLOWGRID_STORE", "cosmos"), ("COSMOS_ENDPOINT", "nope")],
                "COSMOS_ENDPOINT",
            ),
            (
                &[
                    ("FLOWGRID_STORE", "cosmos"),
                    ("COSMOS_ENDPOINT", "https://a.documents.azure.com/"),
                    ("COSMOS_DATABASE", "a/b"),
                ],
                "COSMOS_DATABASE",
            ),
            (&[("FLOWGRID_BLOBS", "s3")], "FLOWGRID_BLOBS"),
            (&[("FLOWGRID_BLOBS", "azure")], "BLOB_ENDPOINT"),
            (
                &[
                    ("FLOWGRID_BLOBS", "azure"),
                    ("BLOB_ENDPOINT", "https://a.blob.core.windows.net"),
                    ("BLOB_ACCOUNT_KEY", "not base64!"),
                ],
                "BLOB_ACCOUNT_KEY",
            ),
            (
                &[
                    ("FLOWGRID_BLOBS", "azure"),
                    ("BLOB_ENDPOINT", "https://a.blob.core.windows.net"),
                    ("BLOB_CONTAINER", "Upper_Case"),
                ],
                "BLOB_CONTAINER",
            ),
        ];
        for (vars, variable) in cases {
            let e = config(vars).expect_err("should fail");
            assert!(names(e, variable), "{vars:?} should name {variable}");
        }
    }
}
