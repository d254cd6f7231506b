//! The real `flowgrid-integrations` executable, spawned as the Functions host spawns it (a free
//! port in `FUNCTIONS_CUSTOMHANDLER_PORT`, readiness on `GET /`), twice over one data folder:
//! a circuit opened through one process is seen by the other, and no secret appears in any
//! answer or in any log line either process wrote (debug level).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowgrid_http::auth::Role;
use flowgrid_testkit::DataDir;
use serde_json::{Value, json};

use crate::snow_fake::{PASSWORD, SnowFake};

struct Process {
    child: Child,
    base: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Process {
    fn spawn(dir: &Path) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("test fixture")
            .local_addr()
            .expect("test fixture")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowgrid-integrations"))
            .current_dir(dir)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FLOWGRID_DATA_DIR", dir)
            .env("FLOWGRID_LOG", "debug")
            .env("FLOWGRID_OUTBOUND_ALLOWLIST", "127.0.0.1")
            .env("FLOWGRID_INTEGRATION_TIMEOUT_MS", "800")
            .env("FLOWGRID_INTEGRATION_MAX_ATTEMPTS", "2")
            .env("FLOWGRID_INTEGRATION_BACKOFF_MS", "10")
            .env("FLOWGRID_INTEGRATION_CIRCUIT_THRESHOLD", "1")
            .env_remove("FLOWGRID_JWT_JWKS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flowgrid-integrations");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for mut pipe in [
            Box::new(child.stdout.take().expect("test fixture")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("test fixture")),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .expect("test fixture")
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "flowgrid-integrations did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Process {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Stops the process and returns everything it wrote.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        String::from_utf8_lossy(&self.log.lock().expect("test fixture")).into_owned()
    }
}

async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_circuit_opened_in_one_process_is_seen_by_another_and_no_secret_is_ever_written() {
    let fake = SnowFake::start().await;
    let dir = DataDir::new();
    let admin = dir.token("t1", Role::Admin);
    let one = Process::spawn(dir.path());
    let two = Process::spawn(dir.path());
    let mut answers = Vec::new();
    let created = call(
        reqwest::Method::POST,
        format!("{}/api/integrations/connections", one.base),
        &admin,
        Some(
            json!({"name": "snow", "kind": "servicenow", "auth": "basic",
                    "config": {"instanceUrl": fake.url, "username": "admin"}, "secret": PASSWORD}),
        ),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    answers.push(created.1);
    let test = call(
        reqwest::Method::POST,
        format!("{}/api/integrations/snow/test", one.base),
        &admin,
        Some(json!({})),
    )
    .await;
    assert!(test.1.contains("\"ok\":true"), "{}", test.1);
    answers.push(test.1);
    // One failing call (threshold 1) opens the circuit, through process one.
    fake.always_fail();
    let failed = call(
        reqwest::Method::POST,
        format!("{}/api/integrations/servicenow/incident", one.base),
        &admin,
        Some(json!({"shortDescription": "x"})),
    )
    .await;
    assert_eq!(failed.0, 502, "{}", failed.1);
    answers.push(failed.1);
    let before = fake.seen().len();
    let refused = call(
        reqwest::Method::POST,
        format!("{}/api/integrations/servicenow/incident", two.base),
        &admin,
        Some(json!({"shortDescription": "x"})),
    )
    .await;
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert!(refused.1.contains("circuit-open"), "{}", refused.1);
    assert_eq!(
        fake.seen().len(),
        before,
        "process two sent nothing upstream"
    );
    answers.push(refused.1);
    for uri in [
        "/api/integrations/connections",
        "/api/integrations/connections/snow",
        "/api/integrations/snow/status",
    ] {
        let read = call(
            reqwest::Method::GET,
            format!("{}{uri}", two.base),
            &admin,
            None,
        )
        .await;
        assert_eq!(read.0, 200, "{uri}: {}", read.1);
        answers.push(read.1);
    }
    let logs = one.stop() + &two.stop();
    assert!(
        logs.contains("/api/integrations/servicenow/incident"),
        "debug logs were written: {logs}"
    );
    for text in answers.iter().chain([&logs]) {
        assert!(!text.contains(PASSWORD), "the secret leaked: {text}");
        assert!(
            !text.contains("YWRtaW46czNjcmV0"),
            "the basic credential leaked: {text}"
        );
    }
}
