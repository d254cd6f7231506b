//! Test support shared by every crate's tests: [`TestApp`], any app in-process on a fresh data
//! folder with request helpers; temporary data folders with a development signing key, tokens,
//! spawning real binaries as the Functions host does, and the storage conformance suite every
//! backend runs; and [`bicep`], the offline analysis of the Azure deployment that the infra
//! tests use.

pub mod ai_fakes;
pub mod app;
pub mod bicep;
pub mod conformance;
pub mod emulators;
pub mod modules;
pub mod otlp;
mod process;
pub mod tools;

use std::path::{Path, PathBuf};

use flowgrid_domain::config::{Config, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use flowgrid_http::auth::{DevKey, Role, TokenRequest};

pub use app::{Client, Reply, TestApp, TestAppBuilder, eventually};
pub use process::{Handler, free_port, run_cli, run_cli_with, workspace_bin};

/// A temporary data folder (`FLOWGRID_DATA_DIR`), removed on drop.
pub struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    /// A fresh, empty data folder.
    pub fn new() -> DataDir {
        DataDir {
            dir: tempfile::Builder::new()
                .prefix("flowgrid-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its path, owned.
    pub fn path_buf(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The configuration of a process on this folder with `settings` and nothing else (the
    /// environment is not read).
    pub fn config(&self, settings: &[(&str, &str)]) -> Config {
        let path = self.path().to_string_lossy().into_owned();
        Config::from_lookup(|name| {
            if name == "FLOWGRID_DATA_DIR" {
                return Some(path.clone());
            }
            settings
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect("config")
    }

    /// A token for `tenant` with `role`, signed with this folder's development key (as
    /// `flowgrid token` would make it).
    pub fn token(&self, tenant: &str, role: Role) -> String {
        self.token_for(tenant, role, "test-user")
    }

    /// A token for `tenant` with `role` and subject `user`.
    pub fn token_for(&self, tenant: &str, role: Role, user: &str) -> String {
        let key = DevKey::load_or_create(self.path()).expect("development key");
        key.mint(&TokenRequest {
            tenant: tenant.into(),
            role,
            user: user.into(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            ttl_secs: 600,
        })
        .expect("mint token")
    }
}

impl Default for DataDir {
    fn default() -> Self {
        Self::new()
    }
}
