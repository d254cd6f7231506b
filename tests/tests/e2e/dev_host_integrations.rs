//! End-to-end through `flowgrid dev` with the real Integrations, Agents and Execution apps: a
//! connection made and tested through the host, then used by a run's `integration` step (the
//! connector in-process in the Execution app, with the same store and key-encryption key): the
//! upstream gets the credential and the step's idempotency key, the job record gets the output
//! and never the secret.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use flowgrid_e2e::Dev;
use serde_json::{Value, json};

const SECRET: &str = "e2e-secret-token-7777";

type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

async fn record(
    State(seen): State<Seen>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> axum::Json<Value> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    seen.lock().expect("lock").push((
        uri.path().to_owned(),
        header("authorization"),
        header("idempotency-key"),
    ));
    axum::Json(json!({"received": true}))
}

async fn upstream() -> (Seen, String) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/ping", get(record))
        .route("/hook", post(record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (seen, addr)
}

#[tokio::test]
async fn a_connection_made_through_flowgrid_dev_serves_a_runs_integration_step_without_leaking_its_secret()
 {
    let (seen, addr) = upstream().await;
    let dev = Dev::start(
        &["agents", "execution", "integrations"],
        &[("FLOWGRID_OUTBOUND_ALLOWLIST", &addr)],
    )
    .await;
    let client = reqwest::Client::new();
    let admin = dev.token("acme", "admin");
    let created = client
        .post(format!("{}/api/integrations/connections", dev.url))
        .bearer_auth(&admin)
        .json(&json!({"name": "hook", "kind": "http", "auth": "bearer",
                      "config": {"baseUrl": format!("http://{addr}"), "testPath": "/ping"}, "secret": SECRET}))
        .send()
        .await
        .expect("create connection");
    assert_eq!(created.status(), 201);
    let text = created.text().await.expect("text");
    assert!(
        text.contains("••••7777") && !text.contains(SECRET),
        "{text}"
    );
    let tested: Value = client
        .post(format!("{}/api/integrations/hook/test", dev.url))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .expect("test")
        .json()
        .await
        .expect("json");
    assert_eq!(tested["ok"], true, "{tested}");

    let agent: Value = client
        .post(format!("{}/api/agents", dev.url))
        .bearer_auth(&admin)
        .json(&json!({"name": "notifier", "definition": {"instructions": "notify", "integrations": ["hook"], "steps": [
            {"id": "notify", "kind": "integration", "connection": "hook", "action": "request",
             "input": {"method": "POST", "path": "/hook", "body": {"n": "{{ input.n }}"}}}
        ]}}))
        .send()
        .await
        .expect("agent")
        .json()
        .await
        .expect("json");
    let agent = agent["id"].as_str().expect("agent id");
    let submitted: Value = client
        .post(format!("{}/api/execute/agent/{agent}", dev.url))
        .bearer_auth(&admin)
        .json(&json!({"input": {"n": 7}}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let job = submitted["jobId"].as_str().expect("job id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (done, raw) = loop {
        let raw = client
            .get(format!("{}/api/execute/jobs/{job}", dev.url))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("job")
            .text()
            .await
            .expect("text");
        let body: Value = serde_json::from_str(&raw).expect("json");
        if body["finishedAt"].is_string() {
            break (body, raw);
        }
        assert!(Instant::now() < deadline, "job did not finish: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["steps"][0]["output"]["status"], 200, "{done}");
    assert_eq!(done["steps"][0]["output"]["body"]["received"], true);
    assert!(
        !raw.contains(SECRET),
        "the job record holds no secret: {raw}"
    );
    let calls = seen.lock().expect("lock").clone();
    let hook: Vec<_> = calls.iter().filter(|(p, _, _)| p == "/hook").collect();
    assert_eq!(hook.len(), 1, "{calls:?}");
    assert_eq!(hook[0].1, format!("Bearer {SECRET}"));
    assert_eq!(hook[0].2, format!("{job}:notify"));
    let status: Value = client
        .get(format!("{}/api/integrations/hook/status", dev.url))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["circuit"], "closed");
    assert_eq!(status["recentCalls"][0]["action"], "request", "{status}");
}
