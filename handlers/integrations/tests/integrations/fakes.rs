//! The fakes we did not write, installed from `tools/integration-fakes/package-lock.json`
//! (`npm ci` on first use, one installer at a time) and started by the tests: `steady`
//! (`@stdy/cli`), a strict mock server that answers 400 for any request its OpenAPI
//! description does not allow, serving GitHub's description (`@octokit/openapi`) or Jira's
//! (`shared/specs/jira/platform-swagger.v3.json`); GitHub's recorded responses
//! (`@octokit/fixtures`); Atlassian's ADF JSON schema (`@atlaskit/adf-schema`). Anything
//! missing fails the test with what to do; nothing is skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowgrid_testkit::free_port;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The installed packages' folder (`tools/integration-fakes/node_modules`), installing them
/// from the lockfile when missing.
pub fn installed() -> PathBuf {
    let dir = root().join("tools/integration-fakes");
    flowgrid_testkit::tools::npm_ci(&dir, "the integration tests");
    dir.join("node_modules")
}

pub struct Steady {
    child: Child,
    pub url: String,
}

impl Drop for Steady {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts steady on `spec` and waits until it answers.
pub fn steady(spec: &Path) -> Steady {
    let modules = installed();
    assert!(spec.exists(), "{} is missing", spec.display());
    let port = free_port();
    let binary = flowgrid_testkit::tools::steady_binary(&modules);
    let mut child = Command::new(binary)
        .args(["-p", &port.to_string(), "--host", "127.0.0.1", "-q"])
        .arg(spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start steady ({e})"));
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "steady did not start on {}",
            spec.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Steady {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Steady serving GitHub's official description.
pub fn github() -> Steady {
    steady(&installed().join("@octokit/openapi/generated/api.github.com.json"))
}

/// Steady serving Jira Cloud's platform description.
pub fn jira() -> Steady {
    steady(&root().join("../shared/specs/jira/platform-swagger.v3.json"))
}

/// A JSON file of an installed package.
pub fn package_json(relative: &str) -> serde_json::Value {
    let path = installed().join(relative);
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}
