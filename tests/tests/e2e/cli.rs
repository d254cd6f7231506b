//! The everyday loop through the `flowgrid` CLI against `flowgrid dev` started as a user starts
//! it (stdout and stderr kept): agents apply and list, `run --watch` (steps as they finish, exit
//! code by outcome), jobs list/show/cancel; the dev host's guards (a second host on the same data
//! folder, the banner's token hint run as printed, the issuer following `--port`) and its log
//! (each request once, no idle timer ticks, a malformed queue message at warn).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowgrid_testkit::{free_port, workspace_bin};
use serde_json::{Value, json};

/// `flowgrid dev --no-build --port P --log-format json` with stdout and stderr in files.
struct Host {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
}

fn root() -> PathBuf {
    flowgrid_e2e::workspace_root()
}

fn flowgrid_bin() -> PathBuf {
    workspace_bin("flowgrid", "flowgrid")
}

fn spawn_dev(data: &Path, port: u16, logs: &Path) -> Child {
    Command::new(flowgrid_bin())
        .current_dir(root())
        .args([
            "dev",
            "--no-build",
            "--log-format",
            "json",
            "--port",
            &port.to_string(),
        ])
        .env("FLOWGRID_DATA_DIR", data)
        .env("FLOWGRID_LOG", "info")
        .env_remove("FLOWGRID_JWT_JWKS")
        .env_remove("FLOWGRID_JWT_ISSUER")
        .stdout(Stdio::from(
            std::fs::File::create(logs.join("stdout")).expect("stdout file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(logs.join("stderr")).expect("stderr file"),
        ))
        .spawn()
        .expect("spawning flowgrid dev")
}

impl Host {
    async fn start() -> Host {
        // Every app under functions/ (flowgrid dev starts them all).
        let apps = std::fs::read_dir(root().join("functions")).expect("functions/");
        for app in apps.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            let name = format!("flowgrid-{}", app.file_name().to_string_lossy());
            workspace_bin(&name, &name);
        }
        let data = tempfile::tempdir().expect("data");
        let logs = tempfile::tempdir().expect("logs");
        let port = free_port();
        let child = spawn_dev(data.path(), port, logs.path());
        let host = Host {
            child,
            port,
            data,
            logs,
        };
        // The banner comes once every app has settled (60 s at most).
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/api/health", host.url())).await
                && let Ok(h) = r.json::<Value>().await
                && ["agents", "auth", "execution"]
                    .iter()
                    .all(|a| h["apps"][*a]["state"] == "ready")
                && host.stderr().contains("Stop with Ctrl-C")
            {
                return host;
            }
            assert!(
                Instant::now() < deadline,
                "flowgrid dev not ready within 90 s: {}",
                host.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// `flowgrid --data-dir <data> args...` (no --url: the CLI finds the running host).
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(flowgrid_bin())
            .current_dir(root())
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env_remove("FLOWGRID_JWT_JWKS")
            .env_remove("FLOWGRID_JWT_ISSUER")
            .env_remove("FLOWGRID_TOKEN")
            .env_remove("FLOWGRID_URL")
            .env_remove("FLOWGRID_DATA_DIR")
            .output()
            .expect("running flowgrid")
    }

    /// The JSON log lines on stdout.
    fn log_lines(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        flowgrid_e2e::stop(&mut self.child);
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn the_everyday_loop_through_the_cli_and_each_event_logged_once() {
    let host = Host::start().await;
    let work = tempfile::tempdir().expect("work");
    let file = work.path().join("agent.json");
    let agent = |greeting: &str| {
        json!({"name": "Greeter", "definition": {"instructions": "Greet.", "steps": [
            {"id": "greet", "kind": "transform", "output": {"greeting": format!("{greeting} {{{{ input.name }}}}")}},
            {"id": "shout", "kind": "transform", "output": {"loud": "{{ steps.greet.output.greeting }}!"}}]}})
    };
    std::fs::write(&file, agent("hello").to_string()).expect("write");
    let file_arg = file.display().to_string();

    // apply: created, then updated by name (a new version), never a second agent.
    let created = host.cli(&["agents", "apply", "-f", &file_arg]);
    assert!(created.status.success(), "{}", err(&created));
    assert!(
        out(&created).starts_with("created agent Greeter"),
        "{}",
        out(&created)
    );
    std::fs::write(&file, agent("hi").to_string()).expect("write");
    let updated = host.cli(&["agents", "apply", "-f", &file_arg]);
    assert!(updated.status.success(), "{}", err(&updated));
    assert!(
        out(&updated).starts_with("updated agent Greeter") && out(&updated).contains("version 2"),
        "{}",
        out(&updated)
    );
    let listed = host.cli(&["agents", "list", "--json"]);
    let items: Value = serde_json::from_str(&out(&listed)).expect("json list");
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    assert_eq!(items[0]["version"], 2);

    // A field error is reported with its field and a non-zero exit.
    std::fs::write(
        &file,
        json!({"name": "Broken", "definition": {}}).to_string(),
    )
    .expect("write");
    let refused = host.cli(&["agents", "apply", "-f", &file_arg]);
    assert!(!refused.status.success());
    assert!(
        err(&refused).contains("422") && err(&refused).contains("instructions"),
        "{}",
        err(&refused)
    );

    // run --watch: each step as it finishes, then the output; exit 0.
    let run = host.cli(&["run", "Greeter", "--input", r#"{"name":"Ada"}"#, "--watch"]);
    assert!(run.status.success(), "{}", err(&run));
    let text = out(&run);
    let greet = text.find("greet").expect("greet step shown");
    let shout = text.find("shout").expect("shout step shown");
    assert!(greet < shout, "{text}");
    assert!(text.contains("\"loud\": \"hi Ada!\""), "{text}");

    // A run that fails exits non-zero with the reason, which names the setting that allows it.
    std::fs::write(
        &file,
        json!({"name": "Caller", "definition": {"instructions": "Call.", "steps": [
            {"id": "call", "kind": "http", "url": "http://example.invalid/"}]}})
        .to_string(),
    )
    .expect("write");
    assert!(
        host.cli(&["agents", "apply", "-f", &file_arg])
            .status
            .success()
    );
    let failed = host.cli(&["run", "Caller", "--watch"]);
    assert!(!failed.status.success(), "{}", out(&failed));
    assert!(
        err(&failed).contains("failed") && out(&failed).contains("FLOWGRID_OUTBOUND_ALLOWLIST"),
        "stdout: {}\nstderr: {}",
        out(&failed),
        err(&failed)
    );

    // jobs list / show / cancel.
    let jobs: Value =
        serde_json::from_str(&out(&host.cli(&["jobs", "list", "--json"]))).expect("jobs json");
    let jobs = jobs.as_array().expect("array").clone();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let statuses: Vec<&str> = jobs.iter().filter_map(|j| j["status"].as_str()).collect();
    assert_eq!(statuses, ["failed", "succeeded"], "newest first");
    let id = jobs[1]["id"].as_str().expect("id");
    let shown = host.cli(&["jobs", "show", id]);
    assert!(
        out(&shown).contains("succeeded") && out(&shown).contains("hi Ada!"),
        "{}",
        out(&shown)
    );
    let only = host.cli(&["jobs", "list", "--agent", "Caller", "--json"]);
    let only: Value = serde_json::from_str(&out(&only)).expect("json");
    assert_eq!(only.as_array().map(Vec::len), Some(1));
    let cancel = host.cli(&["jobs", "cancel", id]);
    assert!(
        !cancel.status.success(),
        "a finished job cannot be cancelled"
    );
    assert!(err(&cancel).contains("409"), "{}", err(&cancel));

    // A malformed queue message is a warning.
    let sent = host.cli(&["queue", "send", "executions", "not json"]);
    assert!(sent.status.success(), "{}", err(&sent));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = host.log_lines();
        if lines
            .iter()
            .any(|l| l["level"] == "WARN" && l["message"] == "message completed unread")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no warning for the malformed message: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reaper ticks every 10 s: an idle tick is not shown.
    tokio::time::sleep(Duration::from_secs(11)).await;

    let lines = host.log_lines();
    let text = host.stdout();
    assert!(
        !text.contains("re-enqueued"),
        "idle timer ticks shown: {text}"
    );
    assert!(!text.contains("listening on "), "{text}");
    assert!(
        !text.contains("/ReapJobs") && !text.contains("/ExecuteJob"),
        "invocation request lines shown: {text}"
    );
    // Each request once: every correlation id of an info line about a request appears once.
    let mut seen = std::collections::BTreeMap::new();
    for l in &lines {
        if let Some(c) = l["correlation_id"].as_str()
            && (l.get("http.status").is_some() || l.get("method").is_some())
        {
            *seen.entry(c.to_owned()).or_insert(0) += 1;
        }
    }
    assert!(seen.len() >= 10, "{text}");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let dup: Vec<String> = lines
        .iter()
        .filter(|l| {
            l["correlation_id"]
                .as_str()
                .is_some_and(|c| twice.iter().any(|(t, _)| t.as_str() == c))
        })
        .map(Value::to_string)
        .collect();
    assert!(twice.is_empty(), "logged twice:\n{}", dup.join("\n"));
}

#[tokio::test]
async fn a_second_dev_on_the_same_folder_is_refused_and_the_banner_hint_works_as_printed() {
    let host = Host::start().await;

    let second_logs = tempfile::tempdir().expect("logs");
    let mut second = spawn_dev(host.data.path(), free_port(), second_logs.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the second flowgrid dev kept running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let said = std::fs::read_to_string(second_logs.path().join("stderr")).expect("stderr");
    assert!(
        said.contains("another `flowgrid dev` is already running on the data folder")
            && said.contains(&host.url()),
        "{said}"
    );
    let health: Value = reqwest::get(format!("{}/api/health", host.url()))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(
        health["apps"]["agents"]["state"], "ready",
        "the first one still serves"
    );

    // The banner's hint, run as printed (with the built binary for `cargo run -q -p flowgrid --`).
    let banner = host.stderr();
    let hint = banner
        .lines()
        .find_map(|l| l.strip_prefix("Get a token:"))
        .expect("a token hint")
        .trim()
        .to_owned();
    assert!(
        hint.starts_with("TOKEN=$(") && hint.contains(&host.data.path().display().to_string()),
        "{hint}"
    );
    let command = hint.replace(
        "cargo run -q -p flowgrid --",
        &flowgrid_bin().display().to_string(),
    );
    let script = format!("{command}\nprintf %s \"$TOKEN\"");
    let ran = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(std::env::temp_dir())
        .env_remove("FLOWGRID_DATA_DIR")
        .env_remove("FLOWGRID_JWT_ISSUER")
        .output()
        .expect("sh");
    let token = out(&ran);
    let agents = reqwest::Client::new()
        .get(format!("{}/api/agents", host.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("agents");
    assert_eq!(agents.status(), 200, "{script}\n{}", err(&ran));

    // The built-in issuer and its discovery document follow --port.
    let doc: Value = reqwest::get(format!(
        "{}/api/auth/.well-known/openid-configuration",
        host.url()
    ))
    .await
    .expect("discovery")
    .json()
    .await
    .expect("json");
    assert_eq!(doc["issuer"], format!("{}/api/auth", host.url()));
}
