//! The Node.js + Express baseline (`tools/bench/node-baseline`): the same endpoint over the same
//! database file and keys, run as one process or one worker per core under Node's cluster module.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use flowgrid_domain::config::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};

use crate::{Server, free_port, wait_ready};

const DIR: &str = "tools/bench/node-baseline";

/// How the baseline is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One Express process: one core at most.
    Single,
    /// `workers` Express processes under Node's cluster module.
    Cluster { workers: usize },
}

impl Mode {
    pub(crate) fn label(self) -> String {
        match self {
            Mode::Single => "express x1".to_owned(),
            Mode::Cluster { workers } => format!("express x{workers}"),
        }
    }

    fn workers(self) -> usize {
        match self {
            Mode::Single => 1,
            Mode::Cluster { workers } => workers,
        }
    }
}

/// Installs the baseline from its lockfile (`npm ci`) when `node_modules` is missing.
pub(crate) fn install() -> anyhow::Result<()> {
    let dir = Path::new(DIR);
    if dir.join("node_modules").exists() {
        return Ok(());
    }
    println!("installing the Node.js baseline (npm ci)...");
    let ok = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .context("running npm (is Node.js installed?)")?
        .success();
    if !ok {
        bail!("npm ci in {DIR} failed");
    }
    Ok(())
}

/// Starts the baseline on `db` trusting `jwks`, waits until `GET /` answers and returns it with
/// the exec-to-ready time.
pub(crate) fn spawn(
    mode: Mode,
    token_cache: bool,
    db: &Path,
    jwks: &serde_json::Value,
) -> anyhow::Result<(Server, Duration)> {
    use std::os::unix::process::CommandExt;
    let port = free_port()?;
    let started = std::time::Instant::now();
    let mut child = Command::new("node")
        .arg("server.js")
        .current_dir(DIR)
        .env("PORT", port.to_string())
        .env("WORKERS", mode.workers().to_string())
        .env("TOKEN_CACHE", if token_cache { "1" } else { "0" })
        .env("DB_PATH", db)
        .env("JWKS", serde_json::to_string(jwks)?)
        .env("ISSUER", DEFAULT_ISSUER)
        .env("AUDIENCE", DEFAULT_AUDIENCE)
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning node (is Node.js installed?)")?;
    wait_ready(&mut child, port, Duration::from_secs(30))?;
    let ready = started.elapsed();
    Ok((
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        },
        ready,
    ))
}
