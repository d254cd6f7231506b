//! `flowgrid-bench execution`: enqueue-to-terminal latency of a one-step transform job and jobs/s,
//! through `flowgrid dev` (the local host: HTTP gateway, envelope submit, durable SQLite queue,
//! worker, SQLite job store), on this machine.
//!
//! Build the release binaries, then run from the repository root:
//! `cargo build --release -p flowgrid -p flowgrid-agents -p flowgrid-auth -p flowgrid-execution`
//! `cargo run --release -p flowgrid-bench -- execution [--jobs 200] [--concurrency 16]`
//!
//! Latency is the job record's own `finishedAt - createdAt` (server clock: from the commit of the
//! queued job, before its message is sent, to the commit of its terminal state), so the client's
//! polling does not blur it. Sequential runs give p50/p99; then `--jobs` submitted by
//! `--concurrency` clients give jobs/s (first `createdAt` to last `finishedAt`). All jobs belong to
//! one tenant, so at most `FLOWGRID_TENANT_MAX_RUNNING` (4 in the example settings) run at once.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowgrid_domain::config::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use flowgrid_http::auth::{DevKey, Role, TokenRequest};
use serde_json::{Value, json};

pub(crate) struct Dev {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the benchmark with the arguments after `execution`.
pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let mut jobs = 200usize;
    let mut concurrency = 16usize;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--jobs" => jobs = it.next().context("--jobs N")?.parse()?,
            "--concurrency" => concurrency = it.next().context("--concurrency N")?.parse()?,
            other => bail!(
                "unknown argument {other}; usage: flowgrid-bench execution [--jobs N] [--concurrency N]"
            ),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(jobs, concurrency.max(1)))
}

fn millis(job: &Value, field: &str) -> anyhow::Result<f64> {
    let text = job[field]
        .as_str()
        .with_context(|| format!("job without {field}: {job}"))?;
    let t = chrono::DateTime::parse_from_rfc3339(text)?;
    Ok(t.timestamp_micros() as f64 / 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(jobs: usize, concurrency: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bin_dir: PathBuf = exe.parent().context("binary folder")?.to_owned();
    let flowgrid = bin_dir.join("flowgrid");
    for name in [
        "flowgrid",
        "flowgrid-agents",
        "flowgrid-auth",
        "flowgrid-execution",
    ] {
        if !bin_dir.join(name).exists() {
            bail!(
                "{name} is not built in {}; build the release binaries first (see the module doc)",
                bin_dir.display()
            );
        }
    }
    let data = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(&flowgrid)
        .args(["dev", "--no-build", "--port", &port.to_string()])
        .env("FLOWGRID_DATA_DIR", data.path())
        .env("FLOWGRID_LOG", "warn")
        // The gateway's per-tenant rate limit would throttle the load generator's polling.
        .env("FLOWGRID_RATE_LIMIT_RPS", "0")
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
        if let Ok(r) = client.get(format!("{}/api/health", dev.url)).send().await
            && let Ok(v) = r.json::<Value>().await
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
        .json(&json!({"name": "bench", "definition": {"instructions": "x",
            "steps": [{"id": "t", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}}]}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let agent = agent["id"].as_str().context("agent id")?.to_owned();
    let submit = |client: reqwest::Client, token: String, url: String| async move {
        let r: Value = client
            .post(url)
            .bearer_auth(token)
            .json(&json!({"input": {"name": "bench"}}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::Ok(r["jobId"].as_str().context("job id")?.to_owned())
    };
    let wait = |client: reqwest::Client, token: String, url: String| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job: Value = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            if job["finishedAt"].is_string() {
                return anyhow::Ok(job);
            }
            if Instant::now() > deadline {
                bail!("job not finished in 120 s: {job}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let submit_url = format!("{}/api/execute/agent/{agent}", dev.url);
    let job_url = |id: &str| format!("{}/api/execute/jobs/{id}", dev.url);

    // Warm-up, then sequential latency.
    let sequential = jobs.clamp(10, 200);
    let mut latencies = Vec::new();
    for i in 0..sequential + 5 {
        let id = submit(client.clone(), token.clone(), submit_url.clone()).await?;
        let job = wait(client.clone(), token.clone(), job_url(&id)).await?;
        if job["status"] != "succeeded" {
            bail!("a job did not succeed: {job}");
        }
        if i >= 5 {
            latencies.push(millis(&job, "finishedAt")? - millis(&job, "createdAt")?);
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "enqueue-to-terminal, one-step transform, sequential ({} jobs): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    // Throughput: `jobs` submitted by `concurrency` clients.
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..concurrency {
        let (client, token, submit_url) = (client.clone(), token.clone(), submit_url.clone());
        let share = jobs / concurrency + usize::from(c < jobs % concurrency);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..share {
                ids.push(submit(client.clone(), token.clone(), submit_url.clone()).await?);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await??);
    }
    let mut finished = Vec::new();
    for id in &ids {
        finished.push(wait(client.clone(), token.clone(), job_url(id)).await?);
    }
    let wall = started.elapsed();
    let first = finished
        .iter()
        .map(|j| millis(j, "createdAt"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let last = finished
        .iter()
        .map(|j| millis(j, "finishedAt"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let span_ms = last.iter().copied().fold(f64::MIN, f64::max)
        - first.iter().copied().fold(f64::MAX, f64::min);
    let mut loaded: Vec<f64> = last.iter().zip(&first).map(|(l, f)| l - f).collect();
    loaded.sort_by(f64::total_cmp);
    let ok = finished
        .iter()
        .filter(|j| j["status"] == "succeeded")
        .count();
    println!(
        "throughput: {} jobs by {concurrency} clients: {:.0} jobs/s (server span {:.0} ms, wall {:.0} ms), {ok} succeeded; latency under load p50 {:.1} ms, p99 {:.1} ms",
        ids.len(),
        ids.len() as f64 / (span_ms / 1000.0),
        span_ms,
        wall.as_secs_f64() * 1000.0,
        percentile(&loaded, 0.5),
        percentile(&loaded, 0.99)
    );
    Ok(())
}
