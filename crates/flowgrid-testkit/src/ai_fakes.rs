//! The AI provider fakes, none written here, all installed from pinned versions by the first
//! test that needs them and started and stopped by the tests:
//!
//! - `llmock` (PyPI, `tools/ai-fakes/requirements.txt`, in `tools/ai-fakes/.venv`): OpenAI Chat
//!   Completions and Responses at `/v1`, Anthropic Messages at `/anthropic/v1/messages`,
//!   scripted faults (`x-llmock-force-status`, `/_llmock/scenario`), every request recorded
//!   (`/_llmock/requests`) and a verdict on the client's retries (`/_llmock/verdict`);
//! - `steady` (`@stdy/cli`, npm, `tools/ai-fakes/package-lock.json`): serves OpenAI's own
//!   OpenAPI description strictly, so a request the description does not allow gets a 400;
//! - the `anthropic` SDK's request types (same venv), through `tools/ai-fakes/check_anthropic.py`.
//!
//! Anything missing (Python 3 with venv, Node.js, npm) fails the test saying what to install.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `tools/ai-fakes`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .join("tools/ai-fakes")
}

/// The vendor's OpenAI description (`../shared/specs/openai/openapi.yaml` beside the repository,
/// or `FLOWGRID_SPECS_DIR/openai/openapi.yaml`).
pub fn openai_spec() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("root");
    let specs = std::env::var_os("FLOWGRID_SPECS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/specs"));
    let spec = specs.join("openai/openapi.yaml");
    assert!(
        spec.exists(),
        "{} is missing: the OpenAI contract tests need the vendor's description (set FLOWGRID_SPECS_DIR)",
        spec.display()
    );
    spec
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.stdout(Stdio::null()).status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{what} failed ({s})"),
        Err(e) => panic!(
            "cannot run {what} ({e}): the AI provider tests need Python 3 (venv) and Node.js with npm"
        ),
    }
}

/// Installs the npm packages and the Python venv from their pinned versions.
pub fn ensure_installed() -> PathBuf {
    let d = dir();
    crate::tools::npm_ci(&d, "the AI provider tests");
    let marker = d.join(".venv/.installed");
    crate::tools::once(
        || marker.exists(),
        &d.join(".venv.lock"),
        "pip install",
        || {
            run(
                Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(d.join(".venv")),
                "`python3 -m venv tools/ai-fakes/.venv`",
            );
            run(
                Command::new(d.join(".venv/bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(d.join("requirements.txt")),
                "`pip install -r tools/ai-fakes/requirements.txt`",
            );
            std::fs::write(&marker, b"").expect("venv marker");
        },
    );
    d
}

/// A running fake, stopped on drop.
pub struct Fake {
    child: Mutex<Child>,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Fake {
    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn wait_for(child: Child, port: u16, what: &str, dir: Option<tempfile::TempDir>) -> Fake {
    let fake = Fake {
        child: Mutex::new(child),
        port,
        _dir: dir,
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = fake.child.lock().expect("child").try_wait() {
            panic!("{what} exited before listening ({status})");
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "{what} does not listen on {port} after {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    fake
}

/// Starts llmock (`--tool-mode off`; `latency_ms` before every answer).
pub fn llmock(latency_ms: u64) -> Fake {
    let d = ensure_installed();
    let port = free_port();
    let child = Command::new(d.join(".venv/bin/llmock"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
            "--tool-mode",
            "off",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--latency-ms",
            &latency_ms.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start llmock ({e})"));
    wait_for(child, port, "llmock", None)
}

/// Starts steady serving `spec` strictly.
pub fn steady_with(spec: &Path) -> Fake {
    let d = ensure_installed();
    let port = free_port();
    let binary = crate::tools::steady_binary(&d.join("node_modules"));
    let child = Command::new(binary)
        .args([
            "-p",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "-q",
            "--log-format",
            "text",
        ])
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start steady with node ({e})"));
    wait_for(child, port, "steady", None)
}

/// Steady serving OpenAI's description as Azure OpenAI's v1 API serves it: the same paths
/// under `/openai/v1` (written to a temporary copy of the description).
pub fn steady_azure_v1() -> Fake {
    let spec = std::fs::read_to_string(openai_spec()).expect("read the OpenAI description");
    let mut out = String::with_capacity(spec.len() + 10_000);
    let mut in_paths = false;
    for line in spec.lines() {
        if !line.is_empty() && !line.starts_with(' ') {
            in_paths = line.starts_with("paths:");
        }
        if in_paths && line.starts_with("  /") {
            out.push_str("  /openai/v1");
            out.push_str(&line[2..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("azure-openai-v1.yaml");
    std::fs::write(&path, out).expect("write the spec copy");
    let mut fake = steady_with(&path);
    fake._dir = Some(tmp);
    fake
}

/// Azure's own OpenAPI description of the Azure OpenAI inference API (stable 2024-10-21), kept
/// in `tools/ai-fakes/azure-openai/` as Microsoft publishes it (its README says where from).
pub fn azure_inference_spec() -> PathBuf {
    dir().join("azure-openai/inference.yaml")
}

/// Steady serving Azure's inference description: the deployment URL form
/// (`/openai/deployments/{deployment-id}/chat/completions?api-version=…`). The description's
/// server URL ends in `/openai`, its paths do not: the temporary copy served carries the paths
/// under `/openai`, as a resource endpoint serves them.
pub fn steady_azure_deployments() -> Fake {
    let spec = std::fs::read_to_string(azure_inference_spec())
        .expect("read tools/ai-fakes/azure-openai/inference.yaml");
    let mut out = String::with_capacity(spec.len() + 1_000);
    let mut in_paths = false;
    for line in spec.lines() {
        if !line.is_empty() && !line.starts_with(' ') {
            in_paths = line.starts_with("paths:");
        }
        if in_paths && line.starts_with("  /") {
            out.push_str("  /openai");
            out.push_str(&line[2..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("azure-openai-inference.yaml");
    std::fs::write(&path, out).expect("write the spec copy");
    let mut fake = steady_with(&path);
    fake._dir = Some(tmp);
    fake
}

/// Steady serving OpenAI's description.
pub fn steady() -> Fake {
    steady_with(&openai_spec())
}

/// Checks Anthropic request bodies against the `anthropic` SDK's request types; `Err` holds the
/// checker's report.
pub fn check_anthropic_bodies(bodies: &[serde_json::Value]) -> Result<String, String> {
    use std::io::Write;
    let d = ensure_installed();
    let mut child = Command::new(d.join(".venv/bin/python"))
        .arg(d.join("check_anthropic.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run check_anthropic.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(bodies).expect("json").as_bytes())
        .expect("write bodies");
    let out = child.wait_with_output().expect("checker output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}
