//! The real executables with `FLOWGRID_STORE=cosmos`, against the Cosmos DB emulator this test
//! starts: `flowgrid admin create-tenant`, then `flowgrid-auth` and `flowgrid-agents` on data
//! folders of their own, so that everything they share (tenant, user, signing keys, sessions,
//! the denylist) can only go through Cosmos. Log in, call the Agents app, refresh, reuse a spent
//! refresh token, log out.

use std::process::Command;
use std::time::{Duration, Instant};

use flowgrid_storage::cosmos::EMULATOR_KEY;
use flowgrid_testkit::emulators;
use flowgrid_testkit::{DataDir, Handler, workspace_bin};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::fresh_database;

#[tokio::test]
async fn login_refresh_and_logout_work_across_apps_that_share_only_cosmos() {
    let emulator = emulators::cosmos();
    let endpoint = emulator.endpoint();
    let database = fresh_database("e2e");
    let cosmos: [(&str, &str); 4] = [
        ("FLOWGRID_STORE", "cosmos"),
        ("COSMOS_ENDPOINT", &endpoint),
        ("COSMOS_KEY", EMULATOR_KEY),
        ("COSMOS_DATABASE", &database),
    ];
    // The Auth app's folder holds its key-encryption key (a setting in Azure); the CLI shares
    // it, since the signing keys it may make are encrypted with it. The Agents app has a folder
    // of its own.
    let auth_dir = DataDir::new();
    let agents_dir = DataDir::new();

    let output = Command::new(workspace_bin("flowgrid", "flowgrid"))
        .args([
            "admin",
            "create-tenant",
            "--name",
            "Acme",
            "--admin-email",
            "ann@acme.test",
            "--json",
        ])
        .env("FLOWGRID_DATA_DIR", auth_dir.path())
        .env_remove("FLOWGRID_JWT_JWKS")
        .envs(cosmos)
        .output()
        .expect("running flowgrid");
    assert!(
        output.status.success(),
        "create-tenant failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value =
        serde_json::from_slice(&output.stdout).expect("create-tenant --json prints JSON");

    let auth = Handler::spawn(
        &workspace_bin("flowgrid-auth", "flowgrid-auth"),
        auth_dir.path(),
        &cosmos,
    );
    let mut agents_env = cosmos.to_vec();
    agents_env.push(("FLOWGRID_REVOCATION_CACHE_SECS", "1"));
    let agents = Handler::spawn(
        &workspace_bin("flowgrid-agents", "flowgrid-agents"),
        agents_dir.path(),
        &agents_env,
    );
    let client = reqwest::Client::new();

    let reply = client
        .post(format!("{}/api/auth/login", auth.base_url()))
        .json(&json!({
            "email": "ann@acme.test",
            "password": created["password"].as_str().expect("password"),
        }))
        .send()
        .await
        .expect("login");
    assert_eq!(reply.status(), StatusCode::OK);
    let tokens: Value = reply.json().await.expect("tokens");
    assert_eq!(tokens["tenantId"], created["tenantId"]);

    let list = |token: String| {
        let client = client.clone();
        let url = format!("{}/api/agents", agents.base_url());
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("list agents")
                .status()
        }
    };
    // The Agents app knows the issuer's key only from Cosmos.
    let access = tokens["accessToken"].as_str().expect("access").to_owned();
    assert_eq!(list(access.clone()).await, StatusCode::OK);

    let refresh = |token: String| {
        let client = client.clone();
        let url = format!("{}/api/auth/refresh", auth.base_url());
        async move {
            client
                .post(url)
                .json(&json!({ "refreshToken": token }))
                .send()
                .await
                .expect("refresh")
        }
    };
    let first_refresh = tokens["refreshToken"].as_str().expect("refresh").to_owned();
    let reply = refresh(first_refresh.clone()).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let next: Value = reply.json().await.expect("tokens");
    let next_access = next["accessToken"].as_str().expect("access").to_owned();
    assert_ne!(next["refreshToken"], tokens["refreshToken"]);
    assert_eq!(list(next_access.clone()).await, StatusCode::OK);

    // Logout: the Agents app, reading the denylist from Cosmos, refuses the session within its
    // revocation bound (1 s here).
    let logout = client
        .post(format!("{}/api/auth/logout", auth.base_url()))
        .bearer_auth(&next_access)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let started = Instant::now();
    while list(next_access.clone()).await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the Agents app still accepts a logged-out session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The logged-out session's refresh tokens no longer work.
    let next_refresh = next["refreshToken"].as_str().expect("refresh").to_owned();
    assert_eq!(
        refresh(next_refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Nothing went to the data folders.
    for dir in [&auth_dir, &agents_dir] {
        assert!(
            !dir.path().join("flowgrid.db").exists(),
            "{} holds an embedded database",
            dir.path().display()
        );
    }
}
