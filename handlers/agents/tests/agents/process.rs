//! The real `flowgrid-agents` executable, spawned as the Functions host spawns it: a free port in
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, readiness on `GET /`, tokens from the `flowgrid` CLI.

use std::path::Path;

use flowgrid_testkit::{DataDir, Handler, run_cli};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn handler(dir: &Path) -> Handler {
    Handler::spawn(Path::new(env!("CARGO_BIN_EXE_flowgrid-agents")), dir, &[])
}

fn cli_token(dir: &Path, tenant: &str, role: &str) -> String {
    let out = run_cli(dir, &["token", "--tenant", tenant, "--role", role]);
    out.lines().last().expect("a token line").trim().to_owned()
}

async fn create(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/agents"))
        .bearer_auth(token)
        .json(&json!({"name": name, "definition": {"instructions": "help"}}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn the_handler_serves_crud_with_a_token_from_the_cli() {
    let dir = DataDir::new();
    let token = cli_token(dir.path(), "acme", "admin");
    let handler = handler(dir.path());
    let base = handler.base_url();
    let client = reqwest::Client::new();

    let created = create(&client, &base, &token, "from-cli").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let agent: Value = created.json().await.unwrap();

    let read = client
        .get(format!("{base}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let etag = read.headers()["etag"].to_str().unwrap().to_owned();

    let put = client
        .put(format!("{base}{location}"))
        .bearer_auth(&token)
        .header("if-match", &etag)
        .json(&json!({"name": "renamed", "definition": {"instructions": "help more"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(put.json::<Value>().await.unwrap()["version"], 2);

    let list: Value = client
        .get(format!("{base}/api/agents"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["id"], agent["id"]);

    let delete = client
        .delete(format!("{base}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let gone = client
        .get(format!("{base}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(gone.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn several_handler_processes_share_one_database_safely() {
    let dir = DataDir::new();
    let token = cli_token(dir.path(), "acme", "editor");
    let handlers: Vec<Handler> = (0..3).map(|_| handler(dir.path())).collect();
    let client = reqwest::Client::new();

    // 60 distinct agents written through three processes at once.
    let mut writes = Vec::new();
    for i in 0..60 {
        let base = handlers[i % 3].base_url();
        let (client, token) = (client.clone(), token.clone());
        writes.push(tokio::spawn(async move {
            create(&client, &base, &token, &format!("agent-{i}"))
                .await
                .status()
        }));
    }
    for w in writes {
        assert_eq!(w.await.unwrap(), StatusCode::CREATED);
    }
    // The same name through every process at once: exactly one wins.
    let mut races = Vec::new();
    for h in &handlers {
        let (client, token, base) = (client.clone(), token.clone(), h.base_url());
        races.push(tokio::spawn(async move {
            create(&client, &base, &token, "contested").await.status()
        }));
    }
    let mut statuses = Vec::new();
    for r in races {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        2,
        "{statuses:?}"
    );

    for h in &handlers {
        let list: Value = client
            .get(format!("{}/api/agents?limit=200", h.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            61,
            "every process sees every write"
        );
    }
}

#[tokio::test]
async fn an_accepted_write_survives_the_handler_being_killed() {
    let dir = DataDir::new();
    let token = cli_token(dir.path(), "acme", "editor");
    let client = reqwest::Client::new();
    let first = handler(dir.path());
    for i in 0..20 {
        assert_eq!(
            create(&client, &first.base_url(), &token, &format!("durable-{i}"))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let pid = first.pid();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(first);

    let second = handler(dir.path());
    let list: Value = client
        .get(format!("{}/api/agents?limit=200", second.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn the_handler_answers_the_host_probe_and_reports_health() {
    let dir = DataDir::new();
    let handler = handler(dir.path());
    let client = reqwest::Client::new();
    let probe = client
        .get(format!("{}/", handler.base_url()))
        .send()
        .await
        .unwrap();
    assert!(probe.status().is_success());
    let deep: Value = client
        .get(format!("{}/api/health/agents", handler.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deep["status"], "ok");
    assert_eq!(deep["checks"]["storage"]["status"], "ok");
}

#[tokio::test]
async fn an_unusable_data_folder_stops_the_handler_with_a_message() {
    let dir = DataDir::new();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flowgrid-agents"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("FLOWGRID_DATA_DIR", blocker.join("data"))
        .env_remove("FLOWGRID_JWT_JWKS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not-a-folder"),
        "the message names the path: {stderr}"
    );
}
