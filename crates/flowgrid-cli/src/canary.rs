//! `flowgrid canary`: start, re-weight, promote, roll back and show the canaries of the running
//! `flowgrid dev` (docs/scaling.md, "Canary and cutover"). The host is found through the data
//! folder's dev state, and called on its admin endpoints with the host admin key it wrote to the
//! data folder (`host-admin.key`, never printed).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use flowgrid_host::devstate::{ADMIN_KEY_HEADER, DevState, read_admin_key};
use reqwest::Method;
use serde_json::{Value, json};

/// The canary subcommands.
#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Run another binary of an app beside the current one, with a share of its HTTP traffic
    /// (sticky per tenant). It answers once the canary's instances are ready.
    Start {
        /// The app (a folder name under functions/).
        app: String,
        /// The canary's handler binary (e.g. a newer build of target/release/flowgrid-<app>).
        binary: PathBuf,
        /// Percent of the app's tenants sent to the canary, 0–100.
        #[arg(long)]
        weight: u8,
    },
    /// Change the canary's share (raising it only moves more tenants to the canary).
    Weight {
        /// The app.
        app: String,
        /// Percent, 0–100.
        weight: u8,
    },
    /// Make the canary's binary the app's: new instances replace the current ones without
    /// dropping a request; queue and timer work moves to it.
    Promote {
        /// The app.
        app: String,
    },
    /// Send all traffic back to the current binary and stop the canary.
    Rollback {
        /// The app.
        app: String,
    },
    /// Every app's canary: weight, binaries, and per version requests, errors and latency.
    Status {
        /// Print the JSON the host answers.
        #[arg(long)]
        json: bool,
    },
}

/// `flowgrid canary ...`.
pub fn run(data_dir: &Path, command: &CanaryCommand) -> Result<()> {
    run_to(data_dir, command, &mut std::io::stdout().lock())
}

/// `flowgrid canary ...`, printing to `out`.
pub fn run_to(
    data_dir: &Path,
    command: &CanaryCommand,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let state = DevState::read(data_dir).ok_or_else(|| {
        anyhow!(
            "no `flowgrid dev` is running on the data folder {} (start it, or pass the --data-dir it uses)",
            data_dir.display()
        )
    })?;
    let key = read_admin_key(data_dir)?;
    let (method, path, body) = match command {
        CanaryCommand::Start {
            app,
            binary,
            weight,
        } => {
            let binary =
                std::path::absolute(binary).with_context(|| format!("{}", binary.display()))?;
            (
                Method::POST,
                format!("canary/{app}"),
                Some(json!({"binary": binary.display().to_string(), "weight": weight})),
            )
        }
        CanaryCommand::Weight { app, weight } => (
            Method::PUT,
            format!("canary/{app}/weight"),
            Some(json!({ "weight": weight })),
        ),
        CanaryCommand::Promote { app } => (Method::POST, format!("canary/{app}/promote"), None),
        CanaryCommand::Rollback { app } => (Method::POST, format!("canary/{app}/rollback"), None),
        CanaryCommand::Status { .. } => (Method::GET, "canary".to_owned(), None),
    };
    let answer = call(&state.url, &key, method, &path, body.as_ref())?;
    match command {
        CanaryCommand::Status { json: true } => writeln!(out, "{answer:#}")?,
        CanaryCommand::Status { json: false } => {
            let apps = answer
                .get("apps")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (app, c) in apps {
                describe(out, &app, &c)?;
            }
        }
        CanaryCommand::Start { app, .. }
        | CanaryCommand::Weight { app, .. }
        | CanaryCommand::Promote { app }
        | CanaryCommand::Rollback { app } => describe(out, app, &answer)?,
    }
    Ok(())
}

/// Calls the host's admin endpoint `path`; a problem answer becomes an error with its detail.
fn call(base: &str, key: &str, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
    let url = format!("{}/admin/{path}", base.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            // A promotion waits for the new instances to get ready.
            .timeout(std::time::Duration::from_secs(600))
            .build()
            .context("building the HTTP client")?;
        let mut req = http
            .request(method.clone(), &url)
            .header(ADMIN_KEY_HEADER, key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot reach `flowgrid dev` at {base}: is it still running?")
            } else {
                anyhow!("{method} {url}: {e}")
            }
        })?;
        let status = res.status();
        let bytes = res.bytes().await.context("reading the answer")?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = value
                .get("detail")
                .or_else(|| value.get("title"))
                .and_then(Value::as_str)
                .map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_owned,
                );
            let what = if status == reqwest::StatusCode::NOT_FOUND {
                format!("not found (is {path:?} an app of this host?)")
            } else {
                detail
            };
            bail!("{method} /admin/{path}: {}: {what}", status.as_u16());
        }
        Ok(value)
    })
}

/// One app's canary, readable.
fn describe(out: &mut dyn std::io::Write, app: &str, c: &Value) -> Result<()> {
    let current = c["current"]["binary"].as_str().unwrap_or("?");
    if c["active"] != Value::Bool(true) {
        writeln!(out, "{app}: no canary; current binary {current}")?;
    } else {
        writeln!(
            out,
            "{app}: canary at {} %{}",
            c["weight"],
            if c["promoting"] == Value::Bool(true) {
                " (being promoted)"
            } else {
                ""
            }
        )?;
        for version in ["current", "canary"] {
            let v = &c[version];
            let ms = |q: &str| {
                v["latencyMs"][q]
                    .as_f64()
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.1} ms"))
            };
            writeln!(
                out,
                "  {version:<8} {}: {} requests, {} errors ({:.2} %), p50 {}, p99 {}",
                v["binary"].as_str().unwrap_or("?"),
                v["requests"],
                v["errors"],
                v["errorRate"].as_f64().unwrap_or(0.0) * 100.0,
                ms("p50"),
                ms("p99"),
            )?;
        }
    }
    if let Some(last) = c["history"].as_array().and_then(|h| h.last()) {
        writeln!(
            out,
            "  last change: {} {} {}",
            last["at"].as_str().unwrap_or(""),
            last["change"].as_str().unwrap_or(""),
            last["detail"]
        )?;
    }
    Ok(())
}
