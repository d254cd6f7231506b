//! `flowgrid-bench profile`: instructions per authenticated `GET /api/agents/{id}`, counted by
//! callgrind (stable on a noisy machine, unlike times), and where they go.
//!
//! `cargo run --release -p flowgrid-bench -- profile [--requests 5000] [--concurrency 1]
//! [--warmup 500] [--top 30] [--handler PATH]`
//!
//! The handler runs under `valgrind --tool=callgrind` with its production log level, its stdout
//! read as the host does. After the warm-up the counters are zeroed, `--requests` requests are
//! sent by `--concurrency` keep-alive connections, and the counters are dumped: the total divided
//! by the requests is the figure. Kernel time (syscalls) is not counted. For function names, build
//! the handler with symbols into another target folder and pass it with `--handler`:
//!
//! ```sh
//! CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
//!   CARGO_TARGET_DIR=target/profiling cargo build --release -p flowgrid-agents
//! cargo run --release -p flowgrid-bench -- profile --handler target/profiling/release/flowgrid-agents
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::agents::{bench_token, seed};
use crate::{HandlerSpec, spawn_handler, target_bin};

struct Options {
    requests: usize,
    concurrency: usize,
    warmup: usize,
    top: usize,
    handler: Option<PathBuf>,
}

const USAGE: &str = "usage: flowgrid-bench profile [--requests N] [--concurrency C] [--warmup N] [--top N] [--handler PATH]";

/// Runs the profile with the arguments after `profile`.
pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let mut options = Options {
        requests: 5000,
        concurrency: 1,
        warmup: 500,
        top: 30,
        handler: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--requests" => options.requests = value("--requests")?.parse()?,
            "--concurrency" => options.concurrency = value("--concurrency")?.parse()?,
            "--warmup" => options.warmup = value("--warmup")?.parse()?,
            "--top" => options.top = value("--top")?.parse()?,
            "--handler" => options.handler = Some(value("--handler")?.into()),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

/// Sends `total` GETs over `concurrency` keep-alive connections; fails on any non-2xx.
async fn send(url: &str, token: &str, total: usize, concurrency: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let share = total / concurrency + usize::from(i < total % concurrency);
        let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn callgrind_control(args: &[&str], pid: u32) -> anyhow::Result<()> {
    let ok = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running callgrind_control (is valgrind installed?)")?
        .success();
    if !ok {
        bail!("callgrind_control {args:?} failed");
    }
    Ok(())
}

/// The `totals:` (or `summary:`) line of a callgrind dump.
fn total_instructions(dump: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(dump)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .context("no totals in the dump")?
        .parse()
        .context("totals is not a number")
}

async fn run(options: Options) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let binary = match &options.handler {
        Some(path) => path.clone(),
        None => target_bin("flowgrid-agents")?,
    };
    let out = data.path().join("callgrind.out");
    let wrapper = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        "--quiet".to_owned(),
    ];
    let spec = HandlerSpec {
        binary: &binary,
        data_dir: data.path(),
        log: "info",
        wrapper: &wrapper,
        ready_within: Duration::from_secs(180),
    };
    let (server, ready, drain) = spawn_handler(&spec)?;
    println!("handler up under callgrind in {:.1} s", ready.as_secs_f64());
    let (_, token) = bench_token(data.path())?;
    let id = seed(&server.base, &token).await?;
    let url = format!("{}/api/agents/{id}", server.base);
    send(&url, &token, options.warmup, options.concurrency).await?;

    let pid = server.child.id();
    callgrind_control(&["--zero"], pid)?;
    let logged = drain.served();
    let started = Instant::now();
    send(&url, &token, options.requests, options.concurrency).await?;
    let elapsed = started.elapsed();
    callgrind_control(&["--dump=measured"], pid)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = drain.served() - logged;
    drop(server);

    let dump = std::fs::read_dir(data.path())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("callgrind.out.") || n == "callgrind.out")
        })
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("Trigger: dump measured")))
        .max()
        .context("callgrind wrote no dump for the measured window")?;
    let total = total_instructions(&dump)?;
    let per_request = total as f64 / options.requests as f64;
    println!(
        "{} requests over {} connection(s) in {:.1} s under callgrind; {logged} access-log lines",
        options.requests,
        options.concurrency,
        elapsed.as_secs_f64()
    );
    println!("instructions per request: {per_request:.0} (total {total})");

    let kept = std::env::temp_dir().join(format!("flowgrid-callgrind.{}", std::process::id()));
    std::fs::copy(&dump, &kept)?;
    let (exclusive, inclusive) = costs(&kept)?;
    println!();
    println!("by area (self cost, instructions per request):");
    let mut areas: Vec<(&str, u64)> = Vec::new();
    for (ir, name) in &exclusive {
        let area = area_of(name);
        match areas.iter_mut().find(|(a, _)| *a == area) {
            Some((_, sum)) => *sum += ir,
            None => areas.push((area, *ir)),
        }
    }
    areas.sort_by_key(|a| std::cmp::Reverse(a.1));
    for (area, ir) in &areas {
        println!(
            "  {:>8.0}  {:>5.1}%  {area}",
            *ir as f64 / options.requests as f64,
            100.0 * *ir as f64 / total as f64
        );
    }
    println!();
    println!("top functions (self cost, instructions per request):");
    for (ir, name) in exclusive.iter().take(options.top) {
        println!(
            "  {:>8.0}  {:>5.1}%  {}",
            *ir as f64 / options.requests as f64,
            100.0 * *ir as f64 / total as f64,
            shorten(name)
        );
    }
    println!();
    println!("parts of the request (inclusive cost, instructions per request):");
    for (label, patterns) in PARTS {
        let ir: u64 = patterns
            .iter()
            .map(|pattern| {
                inclusive
                    .iter()
                    .filter(|(_, name)| name.contains(pattern))
                    .map(|(ir, _)| *ir)
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        if ir > 0 {
            println!(
                "  {:>8.0}  {:>5.1}%  {label}",
                ir as f64 / options.requests as f64,
                100.0 * ir as f64 / total as f64
            );
        }
    }
    println!();
    println!(
        "dump kept at {} (callgrind_annotate, kcachegrind)",
        kept.display()
    );
    Ok(())
}

/// `(instructions, "function [object]")` rows, largest first.
type Costs = Vec<(u64, String)>;

/// The cost of every function in a callgrind dump, largest first, as `(instructions,
/// "function [object]")`: its own (self) and with what it calls (inclusive). Read from the file
/// itself: the cost line after `calls=` is the callee's inclusive cost, the caller's inclusive
/// but not its own (`callgrind_annotate` 3.19 mixes the two in functions with inlined code from
/// other files, and splits a function's inclusive cost by source file).
fn costs(dump: &Path) -> anyhow::Result<(Costs, Costs)> {
    use std::collections::HashMap;
    let text = std::fs::read_to_string(dump)?;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut objects: HashMap<String, String> = HashMap::new();
    // `(id) name` defines id; `(id)` refers to it.
    let resolve = |table: &mut HashMap<String, String>, value: &str| -> String {
        match value.strip_prefix('(').and_then(|v| v.split_once(')')) {
            Some((id, rest)) if !rest.trim().is_empty() => {
                table.insert(id.to_owned(), rest.trim().to_owned());
                rest.trim().to_owned()
            }
            Some((id, _)) => table.get(id).cloned().unwrap_or_default(),
            None => value.to_owned(),
        }
    };
    let mut own: HashMap<(String, String), u64> = HashMap::new();
    let mut inclusive: HashMap<(String, String), u64> = HashMap::new();
    let (mut function, mut object) = (String::new(), String::new());
    let mut after_calls = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("fn=") {
            function = resolve(&mut names, v);
        } else if let Some(v) = line.strip_prefix("cfn=") {
            resolve(&mut names, v);
        } else if let Some(v) = line.strip_prefix("ob=") {
            object = resolve(&mut objects, v);
        } else if let Some(v) = line.strip_prefix("cob=") {
            resolve(&mut objects, v);
        } else if line.starts_with("calls=") {
            after_calls = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '*')) {
            let Some(ir) = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            let key = (function.clone(), object.clone());
            *inclusive.entry(key.clone()).or_default() += ir;
            if after_calls {
                after_calls = false;
            } else {
                *own.entry(key).or_default() += ir;
            }
        }
    }
    let sorted = |map: HashMap<(String, String), u64>| {
        let mut rows: Vec<(u64, String)> = map
            .into_iter()
            .map(|((f, o), ir)| (ir, format!("{f} [{o}]")))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        rows
    };
    Ok((sorted(own), sorted(inclusive)))
}

/// Parts of the request path worth following from one change to the next: a label and the
/// functions whose inclusive costs add up to it.
const PARTS: [(&str, &[&str]); 10] = [
    (
        "storage call on a blocking thread (hop, read, decode)",
        &["sqlite::Inner::with_connection"],
    ),
    (
        "SQLite point read",
        &["sqlite::load_doc", "sqlite::agents::load"],
    ),
    ("decoding the stored agent", &["sqlite::agents::agent_from"]),
    (
        "encoding the response (Json)",
        &[
            "flowgrid_http::json::Json<T> as axum_core::response::into_response::IntoResponse>::into_response",
        ],
    ),
    (
        "access-log line (tracing event)",
        &["as tracing_core::subscriber::Subscriber>::event"],
    ),
    (
        "caller: bearer token, verified-token cache, claims",
        &[
            "auth::caller::Caller as axum_core::extract::FromRequestParts<S>>::from_request_parts::{{closure}}",
        ],
    ),
    (
        "correlation id and traceparent",
        &["correlation::from_headers", "correlation::traceparent"],
    ),
    (
        "HTTP/1 request parsing (hyper)",
        &["hyper::proto::h1::Http1Transaction>::parse"],
    ),
    (
        "HTTP/1 response head (hyper)",
        &["hyper::proto::h1::Http1Transaction>::encode"],
    ),
    ("ETag header", &["flowgrid_http::etag::header_value"]),
];

/// The function name without the file and the object (`[/usr/lib/...]`), and without hashes.
fn shorten(name: &str) -> String {
    let name = name.split(" [").next().unwrap_or(name);
    // `callgrind_annotate` writes `file:function`; a file has a `/` or a `.` before the colon.
    let name = match name.split_once(':') {
        Some((file, f)) if !f.starts_with(':') && (file.contains('/') || file.contains('.')) => f,
        _ => name,
    };
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    // Drop `::h0123456789abcdef` symbol hashes.
    while let Some(i) = rest.find("::h") {
        let hash = &rest[i + 3..];
        let len = hash.chars().take_while(char::is_ascii_hexdigit).count();
        out.push_str(&rest[..i]);
        if len == 16 {
            rest = &hash[16..];
        } else {
            out.push_str("::h");
            rest = hash;
        }
    }
    out.push_str(rest);
    out.chars().take(160).collect()
}

/// A rough owner of a function, for the by-area table.
fn area_of(name: &str) -> &'static str {
    let f = name.split(" [").next().unwrap_or(name);
    let object = name.split(" [").nth(1).unwrap_or("");
    const AREAS: [(&str, &str); 24] = [
        ("sqlite3", "SQLite"),
        ("rusqlite", "SQLite"),
        ("jsonwebtoken", "token verification"),
        ("ed25519", "token verification"),
        ("curve25519", "token verification"),
        ("ring::", "token verification"),
        ("flowgrid_http::auth", "token verification"),
        ("tracing_subscriber", "access log (tracing)"),
        ("tracing_core", "access log (tracing)"),
        ("tracing::", "access log (tracing)"),
        ("flowgrid_http::telemetry", "access log (tracing)"),
        ("serde_json", "JSON (serde_json)"),
        ("hyper", "HTTP (hyper)"),
        ("httparse", "HTTP (hyper)"),
        ("http::", "HTTP (hyper)"),
        ("axum", "routing (axum, tower)"),
        ("matchit", "routing (axum, tower)"),
        ("tower", "routing (axum, tower)"),
        ("tokio", "runtime (tokio)"),
        ("mio", "runtime (tokio)"),
        ("uuid", "ids (uuid, getrandom)"),
        ("getrandom", "ids (uuid, getrandom)"),
        ("chrono", "time (chrono)"),
        ("flowgrid", "flowgrid code"),
    ];
    if let Some((_, area)) = AREAS.iter().find(|(needle, _)| f.contains(needle)) {
        return area;
    }
    if f.contains("malloc")
        || f.contains("free")
        || f.contains("realloc")
        || f.contains("alloc::")
        || f.contains("_int_")
    {
        return "allocator (malloc/free)";
    }
    if f.contains("mem") || f.contains("str") || f.contains("core::") {
        return "memcpy, strings, core";
    }
    if object.contains("libc") || object.contains("ld-linux") {
        return "libc (other)";
    }
    "other"
}
