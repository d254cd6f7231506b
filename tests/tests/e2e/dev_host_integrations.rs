//! End-to-end through `flowgrid dev` with the real Integrations, Agents and Execution apps: a
//! connection made and tested through the host, then used by a run's `integration` step (the
//! connector in-process in the Execution app, with the same store and key-encryption key): the
//! upstream gets the credential and the step's idempotency key, the job record gets the output
//! and never the secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use flowgrid_e2e::Dev;
use serde_json::{Value, json};

use crate::upstream;

const SECRET: &str = "e2e-secret-token-7777";

type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

async fn record(
    State(seen): State<Seen>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> axum::Json<Value> {
    seen.lock().expect("lock").push((
        uri.path().to_owned(),
        upstream::header(&headers, "authorization"),
        upstream::header(&headers, "idempotency-key"),
    ));
    axum::Json(json!({"received": true}))
}

async fn upstream() -> (Seen, String) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/ping", get(record))
        .route("/hook", post(record))
        .with_state(seen.clone());
    (seen, upstream::serve(app).await)
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

    let agent = dev
        .create_agent(
            &admin,
            &json!({"name": "notifier", "definition": {"instructions": "notify", "integrations": ["hook"], "steps": [
                {"id": "notify", "kind": "integration", "connection": "hook", "action": "request",
                 "input": {"method": "POST", "path": "/hook", "body": {"n": "{{ input.n }}"}}}
            ]}}),
        )
        .await;
    let job = dev.submit(&admin, &agent, json!({"n": 7})).await;
    let done = dev
        .wait_finished(&admin, &job, Duration::from_secs(30))
        .await;
    // The finished record as the route answers it, to the letter.
    let raw = dev.job_text(&admin, &job).await;
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
