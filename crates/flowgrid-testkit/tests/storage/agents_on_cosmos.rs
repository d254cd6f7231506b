//! The real `flowgrid-agents` executable with `FLOWGRID_STORE=cosmos`, against the Cosmos DB
//! emulator this test starts: the whole app on Cosmos, an unreachable Cosmos answered with 503,
//! and a wrong setting stopping the handler at start with a message naming it.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flowgrid_domain::store::AgentStore;
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_http::auth::{DevKey, Role};
use flowgrid_storage::cosmos::EMULATOR_KEY;
use flowgrid_testkit::emulators::{self, Emulator};
use flowgrid_testkit::{DataDir, Handler, free_port, workspace_bin};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{cosmos_at, fresh_database};

/// The handler on Cosmos. With `FLOWGRID_STORE=cosmos` the issuer's signing keys are in Cosmos,
/// not in the folder, so the folder's development key (which signs the tests' tokens) is
/// trusted through `FLOWGRID_JWT_JWKS`, as the apps in Azure trust a published key set.
fn agents_on(emulator_endpoint: &str, database: &str, dir: &DataDir) -> Handler {
    let jwks = serde_json::to_string(
        &DevKey::load_or_create(dir.path())
            .expect("development key")
            .jwks(),
    )
    .expect("jwks");
    Handler::spawn(
        &workspace_bin("flowgrid-agents", "flowgrid-agents"),
        dir.path(),
        &[
            ("FLOWGRID_STORE", "cosmos"),
            ("COSMOS_ENDPOINT", emulator_endpoint),
            ("COSMOS_KEY", EMULATOR_KEY),
            ("COSMOS_DATABASE", database),
            ("FLOWGRID_JWT_JWKS", &jwks),
        ],
    )
}

/// Waits (bounded) until the handler reports ready: its first use of Cosmos is done.
async fn wait_ready(base: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = reqwest::get(format!("{base}/api/health/agents/ready"))
            .await
            .map(|r| r.status());
        if matches!(status, Ok(StatusCode::OK)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready within 60 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn database() -> String {
    fresh_database("e2e")
}

#[tokio::test]
async fn the_agents_app_serves_its_api_from_cosmos() {
    let emulator: Arc<Emulator> = emulators::cosmos();
    let db = database();
    let dir = DataDir::new();
    let token = dir.token("acme", Role::Admin);
    let other = dir.token("globex", Role::Admin);
    let handler = agents_on(&emulator.endpoint(), &db, &dir);
    let base = handler.base_url();
    let client = reqwest::Client::new();

    wait_ready(&base).await;

    let created = client
        .post(format!("{base}/api/agents"))
        .bearer_auth(&token)
        .json(&json!({"name": "Triage", "definition": {"instructions": "sort tickets"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let etag = created.headers()["etag"].to_str().expect("etag").to_owned();
    let agent: Value = created.json().await.expect("json");

    // Stored in Cosmos, not in the embedded database.
    let id = AgentId::parse(agent["id"].as_str().expect("id")).expect("agent id");
    let stored = cosmos_at(emulator.endpoint(), db.clone(), false)
        .await
        .get(&TenantId::parse("acme").expect("tenant"), id)
        .await
        .expect("the agent is in Cosmos");
    assert_eq!(stored.name, "Triage");

    let duplicate = client
        .post(format!("{base}/api/agents"))
        .bearer_auth(&token)
        .json(&json!({"name": "triage", "definition": {"instructions": "again"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);

    let updated = client
        .put(format!("{base}{location}"))
        .bearer_auth(&token)
        .header("if-match", &etag)
        .json(&json!({"name": "Triage v2", "definition": {"instructions": "sort faster"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(updated.json::<Value>().await.expect("json")["version"], 2);

    let stale = client
        .put(format!("{base}{location}"))
        .bearer_auth(&token)
        .header("if-match", &etag)
        .json(&json!({"name": "lost update", "definition": {"instructions": "x"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.headers()["content-type"], "application/problem+json");

    let versions: Value = client
        .get(format!("{base}{location}/versions"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("versions")
        .json()
        .await
        .expect("json");
    let numbers: Vec<u64> = versions["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(numbers, [2, 1]);

    let theirs = client
        .get(format!("{base}{location}"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("get");
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    let list: Value = client
        .get(format!("{base}/api/agents"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"].as_array().expect("items").len(), 1);

    let deleted = client
        .delete(format!("{base}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = client
        .get(format!("{base}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unreachable_cosmos_turns_readiness_and_requests_into_503() {
    // An emulator of its own, so stopping it affects no other test.
    let emulator = emulators::cosmos_private();
    let dir = DataDir::new();
    let token = dir.token("acme", Role::Admin);
    let handler = agents_on(&emulator.endpoint(), &database(), &dir);
    let base = handler.base_url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    wait_ready(&base).await;

    let created = client
        .post(format!("{base}/api/agents"))
        .bearer_auth(&token)
        .json(&json!({"name": "before", "definition": {"instructions": "x"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);

    emulator.stop();

    let ready = client
        .get(format!("{base}/api/health/agents/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let deep: Value = client
        .get(format!("{base}/api/health/agents"))
        .send()
        .await
        .expect("deep health")
        .json()
        .await
        .expect("json");
    assert_eq!(deep["checks"]["storage"]["status"], "failing");

    for request in [
        client.get(format!("{base}/api/agents")),
        client
            .post(format!("{base}/api/agents"))
            .json(&json!({"name": "after", "definition": {"instructions": "x"}})),
    ] {
        let response = request.bearer_auth(&token).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["type"], "urn:flowgrid:problem:unavailable");
        assert_eq!(problem["status"], 503);
    }
}

#[tokio::test]
async fn a_handler_started_while_cosmos_is_unreachable_starts_and_reports_503() {
    let dir = DataDir::new();
    let nowhere = format!("http://127.0.0.1:{}/", free_port());
    let handler = agents_on(&nowhere, &database(), &dir);
    let ready = reqwest::get(format!("{}/api/health/agents/ready", handler.base_url()))
        .await
        .expect("ready");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn a_missing_or_wrong_cosmos_setting_stops_the_handler_naming_it() {
    let binary = workspace_bin("flowgrid-agents", "flowgrid-agents");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("FLOWGRID_STORE", "cosmos")], "COSMOS_ENDPOINT"),
        (
            &[
                ("FLOWGRID_STORE", "cosmos"),
                ("COSMOS_ENDPOINT", "not a url"),
            ],
            "COSMOS_ENDPOINT",
        ),
        (
            &[
                ("FLOWGRID_STORE", "cosmos"),
                ("COSMOS_ENDPOINT", "http://127.0.0.1:1/"),
                ("COSMOS_CREATE_CONTAINERS", "maybe"),
            ],
            "COSMOS_CREATE_CONTAINERS",
        ),
        (&[("FLOWGRID_STORE", "mongo")], "FLOWGRID_STORE"),
    ];
    for (envs, named) in cases {
        let dir = DataDir::new();
        let mut command = Command::new(&binary);
        command
            .current_dir(dir.path())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", free_port().to_string())
            .env("FLOWGRID_DATA_DIR", dir.path())
            .env_remove("FLOWGRID_JWT_JWKS");
        for (k, v) in envs {
            command.env(k, v);
        }
        let output = command.output().expect("run flowgrid-agents");
        assert!(!output.status.success(), "{envs:?} should stop the handler");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{envs:?}: {stderr}");
    }
}
