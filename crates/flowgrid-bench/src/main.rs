//! `flowgrid-bench agents`: measures the Agents handler as the Functions host runs it, and the
//! same endpoint written in Node.js + Express, on this machine, and prints the figures.
//!
//! Run it in release mode from the repository root:
//! `cargo run --release -p flowgrid-bench -- agents [--seconds 5] [--concurrency 1,8,32,64] [--no-node]`
//!
//! Figures: exec-to-ready time of the handler (spawn until `GET /` answers, median of 10 starts),
//! idle RSS, authenticated `GET /api/agents/{id}` throughput and p50/p99 latency per concurrency
//! level, RSS under load; then the Node.js baseline under the same load. The load generator runs on
//! the same machine and takes its share of the cores, the same for both servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowgrid_domain::config::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use flowgrid_http::auth::{DevKey, Role, TokenRequest};

struct Options {
    seconds: u64,
    concurrency: Vec<usize>,
    node: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        seconds: 5,
        concurrency: vec![1, 8, 32, 64],
        node: true,
    };
    match args.next().as_deref() {
        Some("agents") => {}
        _ => bail!("usage: flowgrid-bench agents [--seconds N] [--concurrency 1,8,32] [--no-node]"),
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => options.seconds = args.next().context("--seconds N")?.parse()?,
            "--concurrency" => {
                options.concurrency = args
                    .next()
                    .context("--concurrency 1,8,32")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--no-node" => options.node = false,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(options)
}

mod execution;

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("execution") {
        return execution::main(std::env::args().skip(2).collect());
    }
    let options = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

/// A child process killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(child: &mut Child, port: u16, deadline: Duration) -> anyhow::Result<Duration> {
    use std::io::{Read, Write};
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("server exited before it was ready: {status}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut head = [0u8; 8];
            if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > deadline {
            bail!("server not ready within {deadline:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn spawn_handler(binary: &Path, data_dir: &Path) -> anyhow::Result<(Server, Duration)> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FLOWGRID_DATA_DIR", data_dir)
        .env("FLOWGRID_LOG", "warn")
        .env_remove("FLOWGRID_JWT_JWKS")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
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

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn target_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release --bins`",
            path.display()
        );
    }
    Ok(path)
}

struct LoadResult {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn load(
    url: &str,
    token: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<LoadResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, auth) = (client.clone(), url.to_owned(), format!("Bearer {token}"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.get(&url).header("authorization", &auth).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(LoadResult {
        requests: all.len(),
        errors,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

fn print_row(label: &str, c: usize, r: &LoadResult, rss: Option<u64>) {
    let rps = r.requests as f64 / r.elapsed.as_secs_f64();
    println!(
        "{label:<8} c={c:<3} {rps:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}  rss {} MiB",
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.errors,
        rss.map(|k| format!("{:.1}", k as f64 / 1024.0))
            .unwrap_or_else(|| "?".into())
    );
}

async fn run(options: Options) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let binary = target_bin("flowgrid-agents")?;
    println!(
        "flowgrid-bench agents: {} s per level, concurrency {:?}",
        options.seconds, options.concurrency
    );

    // Exec-to-ready: ten cold starts on a fresh data folder each time after the first.
    let mut readies = Vec::new();
    for _ in 0..10 {
        let (server, ready) = spawn_handler(&binary, data.path())?;
        readies.push(ready);
        drop(server);
    }
    readies.sort();
    println!(
        "exec-to-ready (spawn until GET / answers): median {:.1} ms, max {:.1} ms",
        readies[readies.len() / 2].as_secs_f64() * 1e3,
        readies[readies.len() - 1].as_secs_f64() * 1e3
    );

    let (server, _) = spawn_handler(&binary, data.path())?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "idle RSS: {:.1} MiB",
        rss_kib(pid).unwrap_or(0) as f64 / 1024.0
    );

    let key = DevKey::load_or_create(data.path())?;
    let token = key.mint(&TokenRequest {
        tenant: "bench".into(),
        role: Role::Admin,
        user: "bench".into(),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        ttl_secs: 3600,
    })?;
    let client = reqwest::Client::new();
    for i in 0..50 {
        let r = client
            .post(format!("{}/api/agents", server.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": format!("bench-{i}"), "definition": {"instructions": "Answer incident questions using the runbook.", "capabilities": ["search", "summarize"]}}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating an agent failed: {}", r.status());
        }
    }
    let agent: serde_json::Value = client
        .post(format!("{}/api/agents", server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "bench-target", "definition": {"instructions": "Answer incident questions using the runbook.", "capabilities": ["search", "summarize"]}}))
        .send()
        .await?
        .json()
        .await?;
    let id = agent["id"].as_str().context("agent id")?.to_owned();
    let url = format!("{}/api/agents/{id}", server.base);
    let _ = load(&url, &token, 8, 1).await?; // warm-up
    let mut rust_rps = Vec::new();
    for &c in &options.concurrency {
        let r = load(&url, &token, c, options.seconds).await?;
        rust_rps.push(r.requests as f64 / r.elapsed.as_secs_f64());
        print_row("rust", c, &r, rss_kib(pid));
    }
    drop(server);

    if !options.node {
        return Ok(());
    }
    let node_dir = Path::new("tools/bench/node-baseline");
    if !node_dir.join("node_modules").exists() {
        println!("installing the Node.js baseline (npm ci)...");
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(node_dir)
            .status()?
            .success();
        if !ok {
            bail!("npm ci in {} failed", node_dir.display());
        }
    }
    let port = free_port()?;
    let mut child = Command::new("node")
        .arg("server.js")
        .current_dir(node_dir)
        .env("PORT", port.to_string())
        .env("DB_PATH", data.path().join("flowgrid.db"))
        .env("JWKS", serde_json::to_string(&key.jwks())?)
        .env("ISSUER", DEFAULT_ISSUER)
        .env("AUDIENCE", DEFAULT_AUDIENCE)
        .stdout(Stdio::null())
        .spawn()
        .context("spawning node (is Node.js installed?)")?;
    wait_ready(&mut child, port, Duration::from_secs(30))?;
    let node = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let node_pid = node.child.id();
    let url = format!("{}/api/agents/{id}", node.base);
    let check = client.get(&url).bearer_auth(&token).send().await?;
    if !check.status().is_success() {
        bail!("the Node.js baseline answered {}", check.status());
    }
    println!(
        "node idle RSS: {:.1} MiB",
        rss_kib(node_pid).unwrap_or(0) as f64 / 1024.0
    );
    let _ = load(&url, &token, 8, 1).await?;
    for (i, &c) in options.concurrency.iter().enumerate() {
        let r = load(&url, &token, c, options.seconds).await?;
        print_row("node", c, &r, rss_kib(node_pid));
        let node_rps = r.requests as f64 / r.elapsed.as_secs_f64();
        println!(
            "         ratio rust/node at c={c}: {:.1}x",
            rust_rps[i] / node_rps
        );
    }
    Ok(())
}
