//! `flowgrid-bench scale`: independent scaling, shown (issue 15, item 7). Through `flowgrid dev`
//! with the Agents and Execution apps each allowed 1..4 instances:
//!
//! 1. the Agents app's `GET /api/agents/{id}` latency unloaded (p50/p99);
//! 2. a flood of queued runs loads the Execution app: its instance count (sampled from
//!    `/api/health` every 200 ms) and the Agents app's, while the same Agents latency is measured
//!    again, while runs are being submitted through the gateway and again once every run is
//!    submitted and Execution works off its queued backlog;
//! 3. every Execution instance is SIGKILLed, again and again, while the Agents app is called:
//!    the share it answered.
//!
//! Then it prints a table. Build the release binaries, then from the repository root:
//! `cargo build --release -p flowgrid -p flowgrid-agents -p flowgrid-auth -p flowgrid-execution`
//! (and the other apps `flowgrid dev` starts: `cargo build --release --bins`), then
//! `cargo run --release -p flowgrid-bench -- scale [--runs 3000] [--requests 400] [--kill-secs 5]`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::execution::Dev;
use anyhow::{Context, bail};
use flowgrid_domain::config::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use flowgrid_http::auth::{DevKey, Role, TokenRequest};
use serde_json::{Value, json};

/// Runs the benchmark with the arguments after `scale`.
pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let mut runs = 3000usize;
    let mut requests = 400usize;
    let mut kill_secs = 5u64;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--requests" => requests = it.next().context("--requests N")?.parse()?,
            "--kill-secs" => kill_secs = it.next().context("--kill-secs N")?.parse()?,
            other => bail!(
                "unknown argument {other}; usage: flowgrid-bench scale [--runs N] [--requests N] [--kill-secs N]"
            ),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(runs, requests.max(10), kill_secs))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sequential `GET`s: (p50, p99) in ms.
async fn latency(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(url).bearer_auth(token).send().await?;
        if r.status() != 200 {
            bail!("GET {url}: {}", r.status());
        }
        r.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

async fn health(client: &reqwest::Client, url: &str) -> Option<Value> {
    client
        .get(format!("{url}/api/health"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Messages waiting in Execution's `executions` queue, from the scale controller's latest reason.
async fn queued(client: &reqwest::Client, url: &str) -> u64 {
    let reason = health(client, url).await.map(|h| {
        h["apps"]["execution"]["scale"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    reason
        .as_deref()
        .and_then(|r| r.split("executions ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn instances(h: &Value, app: &str) -> u64 {
    h["apps"][app]["scale"]["instances"].as_u64().unwrap_or(0)
}

async fn run(runs: usize, requests: usize, kill_secs: u64) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bin_dir: PathBuf = exe.parent().context("binary folder")?.to_owned();
    for name in ["flowgrid", "flowgrid-agents", "flowgrid-execution"] {
        if !bin_dir.join(name).exists() {
            bail!(
                "{name} is not built in {}; build the release binaries first (see the module doc)",
                bin_dir.display()
            );
        }
    }
    let data = tempfile::tempdir()?;
    let port = crate::free_port()?;
    let child = Command::new(bin_dir.join("flowgrid"))
        .args(["dev", "--no-build", "--port", &port.to_string()])
        .args([
            "--instances",
            "agents=1..4",
            "--instances",
            "execution=1..4",
        ])
        .env("FLOWGRID_DATA_DIR", data.path())
        .env("FLOWGRID_LOG", "warn")
        .env("FLOWGRID_RATE_LIMIT_RPS", "0")
        // The tokens below are minted for the default issuer (it would follow --port otherwise).
        .env("FLOWGRID_JWT_ISSUER", DEFAULT_ISSUER)
        // One tenant floods: let its runs all run, so the queue is what scales Execution.
        .env("FLOWGRID_TENANT_MAX_RUNNING", "1000")
        .env("FLOWGRID_SCALE_INTERVAL_MS", "500")
        .env("FLOWGRID_SCALE_IN_AFTER_MS", "5000")
        .env_remove("FLOWGRID_JWT_JWKS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning flowgrid dev")?;
    let dev = Dev {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = health(&client, &dev.url).await
            && v["apps"]["execution"]["state"] == "ready"
            && v["apps"]["agents"]["state"] == "ready"
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("flowgrid dev did not get ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = DevKey::load_or_create(data.path())?;
    let token = key.mint(&TokenRequest {
        tenant: "bench".into(),
        role: Role::Admin,
        user: "bench".into(),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        ttl_secs: 3600,
    })?;
    let agent: Value = client
        .post(format!("{}/api/agents", dev.url))
        .bearer_auth(&token)
        .json(&json!({"name": "scale", "definition": {"instructions": "x",
            "steps": [{"id": "t", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}}]}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let agent = agent["id"].as_str().context("agent id")?.to_owned();
    let read_url = format!("{}/api/agents/{agent}", dev.url);

    // 1. Unloaded.
    latency(&client, &read_url, &token, requests / 4).await?; // warm-up
    let (p50_idle, p99_idle) = latency(&client, &read_url, &token, requests).await?;

    // 2. A flood of queued runs loads Execution; instance counts sampled meanwhile.
    let sampling = Arc::new(AtomicBool::new(true));
    let max_exec = Arc::new(AtomicU64::new(0));
    let max_agents = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (client, url) = (client.clone(), dev.url.clone());
        let (on, me, ma) = (sampling.clone(), max_exec.clone(), max_agents.clone());
        tokio::spawn(async move {
            while on.load(Ordering::SeqCst) {
                if let Some(h) = health(&client, &url).await {
                    me.fetch_max(instances(&h, "execution"), Ordering::SeqCst);
                    ma.fetch_max(instances(&h, "agents"), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let submit_url = format!("{}/api/execute/agent/{agent}", dev.url);
    let flood = {
        let (client, token) = (client.clone(), token.clone());
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for c in 0..8 {
                let (client, token, url) = (client.clone(), token.clone(), submit_url.clone());
                let share = runs / 8 + usize::from(c < runs % 8);
                handles.push(tokio::spawn(async move {
                    for _ in 0..share {
                        let _ = client
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"input": {"name": "flood"}}))
                            .send()
                            .await;
                    }
                }));
            }
            for h in handles {
                let _ = h.await;
            }
        })
    };
    // Measure once the queue has built up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (p50_loaded, p99_loaded) = latency(&client, &read_url, &token, requests).await?;
    let _ = flood.await;
    // Every run is submitted: Execution works off its queued backlog while the gateway only
    // serves the measured reads. The backlog left (the scale target's queue part) at both ends.
    let backlog_before = queued(&client, &dev.url).await;
    let (p50_drain, p99_drain) = latency(&client, &read_url, &token, requests).await?;
    let backlog_after = queued(&client, &dev.url).await;
    // Let the backlog drain while sampling.
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let backlog = health(&client, &dev.url)
            .await
            .map(|h| {
                h["apps"]["execution"]["scale"]["target"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if backlog <= 1 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
    let decisions = health(&client, &dev.url)
        .await
        .map(|h| h["apps"]["execution"]["scale"]["decisions"].clone())
        .unwrap_or(Value::Null);

    // 3. Every Execution instance killed, again and again, while Agents is called.
    let killing = Arc::new(AtomicBool::new(true));
    let kills = Arc::new(AtomicU64::new(0));
    let killer = {
        let (client, url, on, kills) = (
            client.clone(),
            dev.url.clone(),
            killing.clone(),
            kills.clone(),
        );
        tokio::spawn(async move {
            while on.load(Ordering::SeqCst) {
                if let Some(h) = health(&client, &url).await {
                    for i in h["apps"]["execution"]["instances"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if let Some(pid) = i["pid"].as_u64()
                            && Command::new("kill")
                                .args(["-KILL", &pid.to_string()])
                                .status()
                                .is_ok_and(|s| s.success())
                        {
                            kills.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(kill_secs);
    let (mut sent, mut ok) = (0u64, 0u64);
    while Instant::now() < until {
        sent += 1;
        if let Ok(r) = client.get(&read_url).bearer_auth(&token).send().await
            && r.status() == 200
        {
            ok += 1;
        }
    }
    killing.store(false, Ordering::SeqCst);
    let _ = killer.await;

    println!("| measure | agents | execution |");
    println!("|---|---|---|");
    println!("| instances (min..max allowed) | 1..4 | 1..4 |");
    println!(
        "| most instances seen while Execution was flooded ({runs} queued runs) | {} | {} |",
        max_agents.load(Ordering::SeqCst),
        max_exec.load(Ordering::SeqCst)
    );
    println!(
        "| GET /api/agents/{{id}} p50 / p99 unloaded ({requests} requests) | {p50_idle:.2} / {p99_idle:.2} ms | |"
    );
    println!(
        "| the same while Execution is flooded | {p50_loaded:.2} / {p99_loaded:.2} ms (p99 {:+.0} %) | |",
        (p99_loaded / p99_idle - 1.0) * 100.0
    );
    println!(
        "| the same while Execution works off its backlog, every run submitted ({backlog_before} → {backlog_after} messages queued) | {p50_drain:.2} / {p99_drain:.2} ms (p99 {:+.0} %) | |",
        (p99_drain / p99_idle - 1.0) * 100.0
    );
    println!(
        "| every Execution instance SIGKILLed for {kill_secs} s ({} kills) | answered {ok} of {sent} ({:.2} %) | |",
        kills.load(Ordering::SeqCst),
        ok as f64 * 100.0 / sent.max(1) as f64
    );
    println!("\nExecution's scale decisions: {decisions:#}");
    Ok(())
}
