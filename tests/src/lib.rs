//! The end-to-end harness: `flowgrid dev` started as a user starts it, from the workspace root,
//! on a free port with a fresh data folder. The tests live in `tests/tests/e2e/`, one binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowgrid_testkit::{free_port, run_cli_with, workspace_bin};
use serde_json::Value;

/// A running `flowgrid dev`, stopped with SIGTERM (so that it stops its handlers) on drop.
pub struct Dev {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its data folder.
    pub data: tempfile::TempDir,
    /// The environment it was started with (the CLI gets the same).
    envs: Vec<(String, String)>,
}

/// The workspace root (where `host.json` and `functions/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Every app under `functions/`.
fn apps() -> Vec<String> {
    let mut apps: Vec<String> = std::fs::read_dir(workspace_root().join("functions"))
        .expect("functions/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    apps.sort();
    apps
}

impl Dev {
    /// Starts `flowgrid dev --no-build` with `envs` added to its environment (which overrides
    /// the settings file), after building the CLI and every app's handler, and waits (60 s at
    /// most) until each app in `ready` reports ready on `GET /api/health`.
    pub async fn start(ready: &[&str], envs: &[(&str, &str)]) -> Dev {
        let flowgrid = workspace_bin("flowgrid", "flowgrid");
        for app in apps() {
            let name = format!("flowgrid-{app}");
            workspace_bin(&name, &name);
        }
        let data = tempfile::tempdir().expect("data dir");
        let port = free_port();
        let mut cmd = Command::new(flowgrid);
        cmd.current_dir(workspace_root())
            .args(["dev", "--no-build", "--port", &port.to_string()])
            .env("FLOWGRID_DATA_DIR", data.path())
            .env("FLOWGRID_LOG", "warn")
            .env_remove("FLOWGRID_JWT_JWKS")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning flowgrid dev");
        let envs = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dev = Dev {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data,
            envs,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(health) = dev.health().await
                && ready
                    .iter()
                    .all(|app| health["apps"][*app]["state"] == "ready")
            {
                return dev;
            }
            assert!(
                Instant::now() < deadline,
                "flowgrid dev did not serve {ready:?} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/health`: every app's process state, restarts and deep health.
    pub async fn health(&self) -> reqwest::Result<Value> {
        reqwest::get(format!("{}/api/health", self.url))
            .await?
            .json()
            .await
    }

    /// A token from `flowgrid token` for this data folder (its last line of output).
    pub fn token(&self, tenant: &str, role: &str) -> String {
        let out = run_cli_with(
            self.data.path(),
            &["token", "--tenant", tenant, "--role", role],
            &self.envs,
        );
        out.lines().last().expect("a token line").trim().to_owned()
    }

    /// `POST /api/agents` with `body` (name and definition) as `token`'s tenant; answers the new
    /// agent's id.
    pub async fn create_agent(&self, token: &str, body: &Value) -> String {
        let created: Value = reqwest::Client::new()
            .post(format!("{}/api/agents", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("create agent")
            .json()
            .await
            .expect("json");
        created["id"].as_str().expect("an agent id").to_owned()
    }

    /// Submits a run of `agent` with `input` (`POST /api/execute/agent/{agent}`), which must be
    /// accepted (202); answers the job id.
    pub async fn submit(&self, token: &str, agent: &str, input: Value) -> String {
        self.submit_with_headers(token, agent, input, &[]).await
    }

    /// [`Dev::submit`] with request headers added (trace context, correlation id, …).
    pub async fn submit_with_headers(
        &self,
        token: &str,
        agent: &str,
        input: Value,
        headers: &[(&str, &str)],
    ) -> String {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/execute/agent/{agent}", self.url))
            .bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request
            .json(&serde_json::json!({"input": input}))
            .send()
            .await
            .expect("submit");
        assert_eq!(reply.status(), 202);
        let body: Value = reply.json().await.expect("json");
        body["jobId"].as_str().expect("a job id").to_owned()
    }

    /// The job record's text as `GET /api/execute/jobs/{job}` answers it.
    pub async fn job_text(&self, token: &str, job: &str) -> String {
        reqwest::Client::new()
            .get(format!("{}/api/execute/jobs/{job}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("get job")
            .text()
            .await
            .expect("text")
    }

    /// Polls the job record every 50 ms until `done` holds of it, failing once `within` has
    /// passed; answers that record.
    pub async fn wait_job(
        &self,
        token: &str,
        job: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let body: Value = serde_json::from_str(&self.job_text(token, job).await).expect("json");
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on job {job}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Dev::wait_job`] until the job is terminal (it has `finishedAt`).
    pub async fn wait_finished(&self, token: &str, job: &str, within: Duration) -> Value {
        self.wait_job(token, job, within, finished).await
    }
}

/// `flowgrid admin create-tenant --name <name> --admin-email <email> --json` on the data folder
/// `data`: what it prints (the tenant, its owner and the owner's first password).
pub fn create_tenant(data: &Path, name: &str, email: &str) -> Value {
    serde_json::from_str(
        flowgrid_testkit::run_cli(
            data,
            &[
                "admin",
                "create-tenant",
                "--name",
                name,
                "--admin-email",
                email,
                "--json",
            ],
        )
        .trim(),
    )
    .expect("create-tenant --json prints JSON")
}

/// Whether a job record is terminal (it has `finishedAt`).
pub fn finished(job: &Value) -> bool {
    job["finishedAt"].is_string()
}

impl Drop for Dev {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a `flowgrid dev` process as Ctrl-C would (SIGTERM, so that it stops its handlers),
/// killing it if it has not exited within 10 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
