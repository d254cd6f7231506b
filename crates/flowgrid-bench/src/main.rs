//! `flowgrid-bench`: rerunnable benchmarks that print their figures.
//!
//! Run them in release mode from the repository root:
//!
//! - `cargo run --release -p flowgrid-bench -- agents [--seconds 5] [--concurrency 1,8,32,64]
//!   [--no-node] [--node-single] [--node-token-cache] [--log info] [--load wrk|builtin]
//!   [--handler PATH]`: the Agents
//!   handler as the Functions host runs it against the same endpoint in Node.js + Express with one
//!   worker per core (see [`agents`]).
//! - `cargo run --release -p flowgrid-bench -- profile [--requests 5000] [--concurrency 1]
//!   [--handler PATH]`: instructions per authenticated `GET /api/agents/{id}` under callgrind, and
//!   where they go (see [`profile`]).
//! - `cargo run --release -p flowgrid-bench -- execution [--jobs 200] [--concurrency 16]`:
//!   enqueue-to-terminal through `flowgrid dev` (see [`execution`]).
//! - `cargo run --release -p flowgrid-bench -- ai [--calls 200]`: the provider layer's overhead
//!   per model call over llmock's own latency, and the Design app's prompt-preview and compile
//!   latency (see [`ai`]).
//! - `cargo run --release -p flowgrid-bench -- analytics [--events 20000] [--workers 4]
//!   [--seed 1000000] [--requests 300]`: Analytics' ingestion through the local queue and its
//!   usage and dashboard latency over rollups of a million events (see [`analytics`]).
//! - `cargo run --release -p flowgrid-bench -- scale [--runs 3000] [--requests 400]
//!   [--kill-secs 5]`: independent scaling through `flowgrid dev`: a flood of queued runs scales
//!   Execution out while Agents stays at its minimum and keeps its latency, and Agents answers
//!   while every Execution instance is killed (see [`scale`]).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod agents;
mod ai;
mod analytics;
mod execution;
mod load;
mod node;
mod profile;
mod scale;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    match command.as_deref() {
        Some("agents") => agents::main(rest),
        Some("profile") => profile::main(rest),
        Some("execution") => execution::main(rest),
        Some("ai") => ai::main(rest),
        Some("analytics") => analytics::main(rest),
        Some("scale") => scale::main(rest),
        _ => {
            bail!(
                "usage: flowgrid-bench agents|profile|execution|ai|analytics|scale [options] (see the crate doc)"
            )
        }
    }
}

/// A child process (and its process group, for servers that fork workers) killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Every server is spawned as the leader of its own process group: kill the group, so
        // forked workers (Node's cluster) go with it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `GET /` on `port` gets any HTTP answer, as the Functions host does.
pub(crate) fn wait_ready(
    child: &mut Child,
    port: u16,
    deadline: Duration,
) -> anyhow::Result<Duration> {
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

/// Reads a handler's stdout as the Functions host does (every line, as it comes) and counts the
/// access-log lines among them.
#[derive(Clone, Default)]
pub(crate) struct LogDrain {
    served: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
}

impl LogDrain {
    fn start(&self, stdout: std::process::ChildStdout) {
        let (served, lines) = (self.served.clone(), self.lines.clone());
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::with_capacity(64 * 1024, stdout);
            let mut line = Vec::with_capacity(1024);
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                lines.fetch_add(1, Ordering::Relaxed);
                if memchr(&line, b"\"request served\"") {
                    served.fetch_add(1, Ordering::Relaxed);
                }
                line.clear();
            }
        });
    }

    /// Access-log lines (`request served`) read so far.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// How to start the Agents handler.
pub(crate) struct HandlerSpec<'a> {
    pub(crate) binary: &'a Path,
    pub(crate) data_dir: &'a Path,
    /// `FLOWGRID_LOG`.
    pub(crate) log: &'a str,
    /// A command to run the handler under (`valgrind --tool=callgrind ...`), if any.
    pub(crate) wrapper: &'a [String],
    pub(crate) ready_within: Duration,
}

/// Spawns the handler as the Functions host does (port in `FUNCTIONS_CUSTOMHANDLER_PORT`, stdout
/// read line by line) and waits until it answers `GET /`.
pub(crate) fn spawn_handler(
    spec: &HandlerSpec<'_>,
) -> anyhow::Result<(Server, Duration, LogDrain)> {
    use std::os::unix::process::CommandExt;
    let port = free_port()?;
    let started = Instant::now();
    let mut command = match spec.wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(spec.binary);
            c
        }
        None => Command::new(spec.binary),
    };
    let mut child = command
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FLOWGRID_DATA_DIR", spec.data_dir)
        .env("FLOWGRID_LOG", spec.log)
        .env_remove("FLOWGRID_JWT_JWKS")
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawning {}", spec.binary.display()))?;
    let drain = LogDrain::default();
    if let Some(stdout) = child.stdout.take() {
        drain.start(stdout);
    }
    wait_ready(&mut child, port, spec.ready_within)?;
    let ready = started.elapsed();
    Ok((
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        },
        ready,
        drain,
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

/// The resident memory of `pid` and every process descended from it (Node's cluster workers), MiB.
pub(crate) fn tree_rss_mib(pid: u32) -> Option<f64> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    let kib: u64 = tree.iter().filter_map(|p| rss_kib(*p)).sum();
    (kib > 0).then(|| kib as f64 / 1024.0)
}

/// A binary next to this one in the target folder.
pub(crate) fn target_bin(name: &str) -> anyhow::Result<PathBuf> {
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

/// Median of `values` (sorted in place); zero when empty.
pub(crate) fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
