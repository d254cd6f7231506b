//! One handler process per app, started and restarted as the Functions host does
//! (`HttpWorkerProcess`, `HttpFunctionInvocationDispatcher`):
//!
//! - a free port in `FUNCTIONS_CUSTOMHANDLER_PORT` (and `FUNCTIONS_HTTPWORKER_PORT`), a worker id
//!   in `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`/`FUNCTIONS_HTTPWORKER_ID`, `FUNCTIONS_APP_ROOT_PATH`,
//!   and every app setting as environment;
//! - readiness: `GET http://127.0.0.1:{port}/` every 25 ms; any HTTP answer means ready; the
//!   initialization timeout (default 30 s) counts as an error;
//! - exit code 0: not restarted (the app is `stopped`); exit 200: restarted; any other exit or an
//!   initialization timeout: an error, restarted. The real host stops after its third error
//!   within 30 minutes and the platform recycles it; here the app is never abandoned: the first
//!   error after a stable run restarts it at once, and errors in a row wait a capped exponential
//!   backoff first ([`backoff`]: 250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s each), in state
//!   `restarting`, with the reason, while every other app keeps serving. A handler that stays
//!   ready for [`STABLE_AFTER`] clears the count. Only a handler that cannot be spawned at all
//!   (no executable, no free port) is marked `failed`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::client::HttpClient;

/// The lifecycle state of an app's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Spawned, waiting for readiness.
    Starting,
    /// Answering on its port.
    Ready,
    /// Exited with code 0: not restarted, as the real host.
    Stopped,
    /// Waiting out the backoff after errors in a row; started again when it ends.
    Restarting,
    /// Given up on: it cannot be spawned at all (no executable, no free port).
    Failed,
}

/// What everyone else sees of an app's handler.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Current state.
    pub state: State,
    /// Port of the running process (when starting or ready).
    pub port: Option<u16>,
    /// Process id.
    pub pid: Option<u32>,
    /// How many times it was restarted.
    pub restarts: u32,
    /// Why it last exited or failed.
    pub reason: Option<String>,
    /// Errors in a row (exits and initialization timeouts without a stable run between them).
    pub crashes: u32,
    /// The backoff before the current (or coming) start, in milliseconds.
    pub backoff_ms: u64,
}

/// How to start one app's handler.
#[derive(Debug, Clone)]
pub struct Launch {
    /// App name.
    pub app: String,
    /// Executable.
    pub program: PathBuf,
    /// Arguments (already expanded).
    pub args: Vec<String>,
    /// App root (working directory and `FUNCTIONS_APP_ROOT_PATH`).
    pub root: PathBuf,
    /// Environment (app settings plus host variables).
    pub env: BTreeMap<String, String>,
    /// Initialization timeout.
    pub init_timeout: Duration,
    /// The `http.route` of the invocations the host makes (`/{Function}`): the handler's request
    /// lines for them are shown at debug level only (see `output`).
    pub quiet_routes: Vec<String>,
}

/// A handler ready for this long before it exits has its errors in a row cleared: its next
/// error is an isolated one, restarted at once.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// The longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait before restarting after `crashes` errors in a row: none for the first, then 250 ms
/// doubling up to [`MAX_BACKOFF`].
pub fn backoff(crashes: u32) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    let ms = 250u64.saturating_mul(1u64 << (crashes - 2).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Runs the supervision loop of one app until `shutdown` turns true (the child is then killed).
pub async fn supervise(
    launch: Launch,
    client: HttpClient,
    status: watch::Sender<Status>,
    mut shutdown: watch::Receiver<bool>,
    restart: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut crashes = 0u32;
    let mut restarts = 0u32;
    loop {
        let port = match free_port() {
            Ok(p) => p,
            Err(e) => {
                mark(
                    &status,
                    State::Failed,
                    None,
                    None,
                    restarts,
                    Some(format!("no free port: {e}")),
                );
                return;
            }
        };
        let worker_id = uuid::Uuid::new_v4().to_string();
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args)
            .current_dir(&launch.root)
            // The Functions Core Tools' convention for a local run (a setting may override it):
            // handlers then explain a 401 (flowgrid_http::is_development).
            .env("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
            .envs(&launch.env)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
            .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
            .env("FUNCTIONS_APP_ROOT_PATH", &launch.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let reason = format!(
                    "cannot start {}: {e} (build it with `cargo build --bins`, or run `flowgrid dev` without --no-build)",
                    launch.program.display()
                );
                tracing::error!(app = %launch.app, "{reason}");
                mark(&status, State::Failed, None, None, restarts, Some(reason));
                return;
            }
        };
        let pid = child.id();
        pipe_output(&launch, child.stdout.take(), false);
        pipe_output(&launch, child.stderr.take(), true);
        let previous_reason = status.borrow().reason.clone();
        mark(
            &status,
            State::Starting,
            Some(port),
            pid,
            restarts,
            previous_reason,
        );
        set_crashes(&status, crashes, backoff(crashes));

        // Readiness: poll GET / every 25 ms until any HTTP answer, the child exits, or the timeout.
        let deadline = Instant::now() + launch.init_timeout;
        let mut ready = false;
        let mut exit = None;
        while Instant::now() < deadline {
            if client.probe(port).await {
                ready = true;
                break;
            }
            if let Ok(Some(code)) = child.try_wait() {
                exit = Some(code);
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                _ = shutdown.changed() => { let _ = child.kill().await; return; }
            }
        }
        let mut ready_at = None;
        let outcome = if ready {
            tracing::info!(app = %launch.app, port, restarts, "handler ready");
            ready_at = Some(Instant::now());
            // The reason of the last restart stays shown (health, console) while it serves.
            let last = status.borrow().reason.clone();
            mark(&status, State::Ready, Some(port), pid, restarts, last);
            set_crashes(&status, crashes, backoff(crashes));
            tokio::select! {
                r = child.wait() => r.ok(),
                _ = shutdown.changed() => { let _ = child.kill().await; return; }
                () = restart.notified() => {
                    // A function timed out: the host kills and restarts the handler, failing
                    // every invocation in flight (not counted as a handler error).
                    let _ = child.kill().await;
                    let reason = "restarted after a function timeout".to_owned();
                    tracing::warn!(app = %launch.app, "{reason}");
                    restarts += 1;
                    set_crashes(&status, crashes, Duration::ZERO);
                    mark(&status, State::Starting, None, None, restarts, Some(reason));
                    continue;
                }
            }
        } else if let Some(code) = exit {
            Some(code)
        } else {
            let _ = child.kill().await;
            None
        };
        let (code, reason) = match outcome {
            Some(s) => (s.code(), describe_exit(s)),
            None if ready => (None, "the handler process was lost".to_owned()),
            None => (
                None,
                format!(
                    "the handler did not answer GET / within {} s (initialization timeout)",
                    launch.init_timeout.as_secs()
                ),
            ),
        };
        if *shutdown.borrow() {
            return;
        }
        match code {
            Some(0) => {
                let reason =
                    format!("{reason}; exit code 0 is not restarted (as the Functions host does)");
                tracing::warn!(app = %launch.app, "{reason}");
                mark(&status, State::Stopped, None, None, restarts, Some(reason));
                return;
            }
            Some(200) => {
                tracing::info!(app = %launch.app, "handler asked for a restart (exit 200)");
            }
            _ => {
                if ready_at.is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                    crashes = 0;
                }
                crashes += 1;
                let wait = backoff(crashes);
                let reason = if wait.is_zero() {
                    format!("{reason}; restarted at once")
                } else {
                    format!(
                        "{reason}; {crashes} errors in a row: restarting in {} ms",
                        wait.as_millis()
                    )
                };
                tracing::warn!(app = %launch.app, crashes, backoff_ms = wait.as_millis() as u64, "{reason}");
                if !wait.is_zero() {
                    restarts += 1;
                    set_crashes(&status, crashes, wait);
                    mark(
                        &status,
                        State::Restarting,
                        None,
                        None,
                        restarts,
                        Some(reason),
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
            }
        }
        restarts += 1;
        set_crashes(&status, crashes, Duration::ZERO);
        mark(&status, State::Starting, None, None, restarts, Some(reason));
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("the handler exited with code {c}"),
        None => format!("the handler was killed ({s})"),
    }
}

fn mark(
    status: &watch::Sender<Status>,
    state: State,
    port: Option<u16>,
    pid: Option<u32>,
    restarts: u32,
    reason: Option<String>,
) {
    let (crashes, backoff_ms) = {
        let s = status.borrow();
        (s.crashes, s.backoff_ms)
    };
    status.send_replace(Status {
        state,
        port,
        pid,
        restarts,
        reason,
        crashes,
        backoff_ms,
    });
}

fn set_crashes(status: &watch::Sender<Status>, crashes: u32, backoff: Duration) {
    status.send_modify(|s| {
        s.crashes = crashes;
        s.backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
    });
}

fn pipe_output<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    launch: &Launch,
    stream: Option<R>,
    stderr: bool,
) {
    let Some(stream) = stream else { return };
    let app = launch.app.clone();
    let quiet = launch.quiet_routes.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if !stderr {
                // Handlers log one JSON object per line: shown once, with the app added.
                crate::output::handler_line(&app, &line, &quiet);
            } else if line.to_ascii_lowercase().contains("warn") {
                tracing::warn!(target: "handler", app = %app, "{line}");
            } else {
                tracing::error!(target: "handler", app = %app, "{line}");
            }
        }
    });
}

/// Waits until the app is ready (returns its port), or `None` when it is stopped, failed or
/// waiting out a restart backoff (a crash loop answers 503 at once), or the wait exceeds
/// `timeout`.
pub async fn wait_ready(status: &mut watch::Receiver<Status>, timeout: Duration) -> Option<u16> {
    let fut = async {
        loop {
            {
                let s = status.borrow_and_update();
                match s.state {
                    State::Ready => return s.port,
                    State::Stopped | State::Failed | State::Restarting => return None,
                    State::Starting => {}
                }
            }
            if status.changed().await.is_err() {
                return None;
            }
        }
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}
