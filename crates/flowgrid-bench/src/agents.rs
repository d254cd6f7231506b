//! `flowgrid-bench agents`: the Agents handler as the Functions host runs it, against the same
//! endpoint in Node.js + Express with one worker per core, on this machine, in one run.
//!
//! `cargo run --release -p flowgrid-bench -- agents [--seconds 5] [--concurrency 1,8,32,64]
//! [--no-node] [--node-single] [--node-token-cache] [--log info] [--load wrk|builtin]
//! [--handler PATH]`
//!
//! Figures: exec-to-ready time (spawn until `GET /` answers, median of 10 starts for the handler
//! and of 5 for each Node.js baseline), idle RSS, then per concurrency level an authenticated
//! `GET /api/agents/{id}` on each server in turn (the handler, Express with one worker per core,
//! and with `--node-single` one Express process): throughput, p50/p99 latency, RSS under load
//! (the whole process tree for Node's cluster), and the ratios against the cluster baseline.
//!
//! The handler logs as in production (`FLOWGRID_LOG=info`: one access-log line per request on
//! stdout) and its stdout is read line by line as the Functions host does; the access-log lines
//! are counted against the requests served. The Express baseline writes no access log, and
//! verifies the token's signature on every request unless `--node-token-cache` makes it remember
//! verified tokens as Flowgrid's verifier does. The load generator (`wrk` when installed) runs
//! on the same cores, the same for every server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use flowgrid_domain::config::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use flowgrid_http::auth::{DevKey, Role, TokenRequest};

use crate::load::{self, Generator, LoadResult};
use crate::node::{self, Mode};
use crate::{HandlerSpec, Server, median, spawn_handler, target_bin, tree_rss_mib};

struct Options {
    seconds: u64,
    concurrency: Vec<usize>,
    node: bool,
    node_single: bool,
    node_token_cache: bool,
    log: String,
    generator: Generator,
    handler: Option<PathBuf>,
}

const USAGE: &str = "usage: flowgrid-bench agents [--seconds N] [--concurrency 1,8,32,64] [--no-node] [--node-single] [--node-token-cache] [--log LEVEL] [--load wrk|builtin] [--handler PATH]";

fn parse_args(args: Vec<String>) -> anyhow::Result<Options> {
    let mut args = args.into_iter();
    let mut options = Options {
        seconds: 5,
        concurrency: vec![1, 8, 32, 64],
        node: true,
        node_single: false,
        node_token_cache: false,
        log: "info".to_owned(),
        generator: Generator::detect(),
        handler: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds")?.parse()?,
            "--concurrency" => {
                options.concurrency = value("--concurrency")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--no-node" => options.node = false,
            "--node-single" => options.node_single = true,
            "--node-token-cache" => options.node_token_cache = true,
            "--log" => options.log = value("--log")?,
            "--load" => {
                options.generator = match value("--load")?.as_str() {
                    "wrk" => Generator::Wrk,
                    "builtin" => Generator::Builtin,
                    other => bail!("--load wrk|builtin, not {other}"),
                }
            }
            "--handler" => options.handler = Some(value("--handler")?.into()),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(options)
}

/// Runs the benchmark with the arguments after `agents`.
pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

/// A token for tenant `bench` signed with the data folder's development key, and that key.
pub(crate) fn bench_token(data_dir: &std::path::Path) -> anyhow::Result<(DevKey, String)> {
    let key = DevKey::load_or_create(data_dir)?;
    let token = key.mint(&TokenRequest {
        tenant: "bench".into(),
        role: Role::Admin,
        user: "bench".into(),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        ttl_secs: 3600,
    })?;
    Ok((key, token))
}

/// Creates 50 agents and the one the benchmark reads; returns that one's id.
pub(crate) async fn seed(base: &str, token: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let body = |name: &str| serde_json::json!({"name": name, "definition": {"instructions": "Answer incident questions using the runbook.", "capabilities": ["search", "summarize"]}});
    for i in 0..50 {
        client
            .post(format!("{base}/api/agents"))
            .bearer_auth(token)
            .json(&body(&format!("bench-{i}")))
            .send()
            .await?
            .error_for_status()
            .context("creating an agent")?;
    }
    let agent: serde_json::Value = client
        .post(format!("{base}/api/agents"))
        .bearer_auth(token)
        .json(&body("bench-target"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(agent["id"].as_str().context("agent id")?.to_owned())
}

/// One server under test.
struct Subject {
    label: String,
    server: Server,
    ready: Duration,
    idle_rss: Option<f64>,
    results: Vec<(usize, LoadResult, Option<f64>)>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"))
}

fn print_row(label: &str, c: usize, r: &LoadResult, rss: Option<f64>, extra: &str) {
    println!(
        "  {label:<12} c={c:<3} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {:<3} rss {:>6} MiB{extra}",
        r.rps,
        ms(r.p50),
        ms(r.p99),
        r.errors,
        mib(rss),
    );
}

async fn run(options: Options) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let binary = match &options.handler {
        Some(path) => path.clone(),
        None => target_bin("flowgrid-agents")?,
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "flowgrid-bench agents: {} s per level, concurrency {:?}, load by {}, {cores} cores, handler log level {}, Express token cache {}",
        options.seconds,
        options.concurrency,
        options.generator.name(),
        options.log,
        if options.node_token_cache {
            "on"
        } else {
            "off"
        }
    );
    let spec = HandlerSpec {
        binary: &binary,
        data_dir: data.path(),
        log: &options.log,
        wrapper: &[],
        ready_within: Duration::from_secs(30),
    };

    // Exec-to-ready: ten starts; the first one creates the database.
    let mut readies = Vec::new();
    for _ in 0..10 {
        let (server, ready, _) = spawn_handler(&spec)?;
        readies.push(ready);
        drop(server);
    }
    let (server, _, drain) = spawn_handler(&spec)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (key, token) = bench_token(data.path())?;
    let id = seed(&server.base, &token).await?;
    let mut subjects = vec![Subject {
        label: "flowgrid".to_owned(),
        idle_rss: tree_rss_mib(server.child.id()),
        ready: median(&mut readies),
        server,
        results: Vec::new(),
    }];

    if options.node {
        node::install()?;
        let db = data.path().join("flowgrid.db");
        let jwks = serde_json::to_value(key.jwks())?;
        let mut modes = vec![Mode::Cluster { workers: cores }];
        if options.node_single {
            modes.push(Mode::Single);
        }
        for mode in modes {
            let mut readies = Vec::new();
            for _ in 0..5 {
                let (server, ready) = node::spawn(mode, options.node_token_cache, &db, &jwks)?;
                readies.push(ready);
                drop(server);
            }
            let (server, _) = node::spawn(mode, options.node_token_cache, &db, &jwks)?;
            // Let every cluster worker come up before the first measurement.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let check = reqwest::Client::new()
                .get(format!("{}/api/agents/{id}", server.base))
                .bearer_auth(&token)
                .send()
                .await?;
            if !check.status().is_success() {
                bail!("the Node.js baseline answered {}", check.status());
            }
            subjects.push(Subject {
                label: mode.label(),
                idle_rss: tree_rss_mib(server.child.id()),
                ready: median(&mut readies),
                server,
                results: Vec::new(),
            });
        }
    }

    for s in &subjects {
        println!(
            "{:<12} exec-to-ready median {:>6.1} ms   idle RSS {:>6} MiB",
            s.label,
            ms(s.ready),
            mib(s.idle_rss)
        );
    }
    for s in &subjects {
        let url = format!("{}/api/agents/{id}", s.server.base);
        load::run(options.generator, &url, &token, 8, 1).await?; // warm-up
    }

    // Each level on each server in turn, so drifting background load hits all alike.
    for &c in &options.concurrency {
        for s in &mut subjects {
            let url = format!("{}/api/agents/{id}", s.server.base);
            let logged_before = drain.served();
            let r = load::run(options.generator, &url, &token, c, options.seconds).await?;
            let rss = tree_rss_mib(s.server.child.id());
            let extra = if s.label == "flowgrid" {
                // Lines of requests still in flight when the generator stopped arrive just after.
                tokio::time::sleep(Duration::from_millis(200)).await;
                format!(
                    "  access-log lines {} for {} requests",
                    drain.served() - logged_before,
                    r.requests
                )
            } else {
                String::new()
            };
            print_row(&s.label, c, &r, rss, &extra);
            s.results.push((c, r, rss));
        }
    }

    if subjects.len() > 1 {
        summary(&subjects);
    }
    Ok(())
}

fn summary(subjects: &[Subject]) {
    let flowgrid = &subjects[0];
    let cluster = &subjects[1];
    println!();
    println!(
        "flowgrid vs {} (one worker per core): throughput ratio, and flowgrid's p99 as a fraction of Express's",
        cluster.label
    );
    for ((c, f, _), (_, n, _)) in flowgrid.results.iter().zip(&cluster.results) {
        println!(
            "  c={c:<3} {:>5.2}x throughput   p99 {:>6.3} / {:>7.3} ms = {:.2}",
            f.rps / n.rps,
            ms(f.p99),
            ms(n.p99),
            f.p99.as_secs_f64() / n.p99.as_secs_f64()
        );
    }
    if let Some(((_, f, _), (_, n, _))) = flowgrid
        .results
        .iter()
        .zip(&cluster.results)
        .find(|((c, _, _), _)| *c == 32)
    {
        let ratio = f.rps / n.rps;
        let tail = f.p99.as_secs_f64() / n.p99.as_secs_f64();
        println!(
            "goal at c=32 (DESIGN.md): >= 5x throughput: {ratio:.2}x {}; p99 <= 1/4 of Express's: {tail:.2} {}",
            if ratio >= 5.0 { "met" } else { "NOT met" },
            if tail <= 0.25 { "met" } else { "NOT met" },
        );
    }
    if let Some(single) = subjects.get(2) {
        for ((c, f, _), (_, n, _)) in flowgrid.results.iter().zip(&single.results) {
            println!(
                "  for reference, vs {} at c={c}: {:.2}x",
                single.label,
                f.rps / n.rps
            );
        }
    }
}
