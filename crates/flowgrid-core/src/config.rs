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
        Ok(Config {
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
