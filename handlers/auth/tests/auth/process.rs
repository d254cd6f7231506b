//! The real executables, as the Functions host runs them: `flowgrid admin create-tenant`, then
//! `flowgrid-auth` and `flowgrid-agents` on one data folder; log in, call the Agents app, rotate
//! keys with `flowgrid admin rotate-keys`, log out.

use std::path::Path;
use std::time::{Duration, Instant};

use flowgrid_testkit::{DataDir, Handler, run_cli, workspace_bin};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_tenant_created_by_the_cli_logs_in_over_http_and_its_tokens_work_in_the_agents_app() {
    let dir = DataDir::new();
    let created: Value = serde_json::from_str(
        run_cli(
            dir.path(),
            &[
                "admin",
                "create-tenant",
                "--name",
                "Acme",
                "--admin-email",
                "ann@acme.test",
                "--json",
            ],
        )
        .trim(),
    )
    .expect("create-tenant --json prints JSON");
    let auth = Handler::spawn(
        Path::new(env!("CARGO_BIN_EXE_flowgrid-auth")),
        dir.path(),
        &[],
    );
    let agents = Handler::spawn(
        &workspace_bin("flowgrid-agents", "flowgrid-agents"),
        dir.path(),
        &[("FLOWGRID_REVOCATION_CACHE_SECS", "1")],
    );
    let client = reqwest::Client::new();
    let live = client
        .get(format!("{}/api/health/auth/live", auth.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    let login = |password: String| {
        let client = client.clone();
        let url = format!("{}/api/auth/login", auth.base_url());
        async move {
            client
                .post(url)
                .json(&json!({"email": "ann@acme.test", "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    let password = created["password"].as_str().unwrap().to_owned();
    let reply = login(password.clone()).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let tokens: Value = reply.json().await.unwrap();
    assert_eq!(tokens["tenantId"], created["tenantId"]);
    let old = tokens["accessToken"].as_str().unwrap().to_owned();
    let list = |token: String| {
        let client = client.clone();
        let url = format!("{}/api/agents", agents.base_url());
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(list(old.clone()).await, StatusCode::OK);

    // A development token from the CLI works in the Auth app too.
    let out = run_cli(
        dir.path(),
        &[
            "token",
            "--tenant",
            created["tenantId"].as_str().unwrap(),
            "--role",
            "viewer",
        ],
    );
    let dev = out.lines().last().unwrap().trim().to_owned();
    let me = client
        .get(format!("{}/api/auth/user", auth.base_url()))
        .bearer_auth(&dev)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    // Rotation: the running apps accept the new key's tokens and still the old ones.
    let rotated: Value =
        serde_json::from_str(run_cli(dir.path(), &["admin", "rotate-keys", "--json"]).trim())
            .unwrap();
    let new_tokens: Value = login(password).await.json().await.unwrap();
    let new = new_tokens["accessToken"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&new).unwrap();
    assert_eq!(header.kid.as_deref(), rotated["kid"].as_str());
    assert_eq!(list(new.clone()).await, StatusCode::OK);
    assert_eq!(list(old.clone()).await, StatusCode::OK);

    // Logout: the Agents process refuses the session within its revocation bound (1 s here).
    let logout = client
        .post(format!("{}/api/auth/logout", auth.base_url()))
        .bearer_auth(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let started = Instant::now();
    while list(new.clone()).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the Agents app still accepts a logged-out session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        list(old).await,
        StatusCode::OK,
        "another session is unaffected"
    );
}
