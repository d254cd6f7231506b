//! End-to-end through `flowgrid dev` with the real Auth and Agents apps: a tenant made by
//! `flowgrid admin create-tenant`, login through the host's one port, the token used against the
//! Agents app, refresh, and logout refused by the Agents app within the revocation bound.

use std::time::{Duration, Instant};

use flowgrid_e2e::Dev;
use serde_json::{Value, json};

#[tokio::test]
async fn a_user_logs_in_through_flowgrid_dev_uses_the_agents_app_and_logout_is_honoured_everywhere()
{
    let dev = Dev::start(
        &["agents", "auth"],
        &[("FLOWGRID_REVOCATION_CACHE_SECS", "1")],
    )
    .await;
    let created = flowgrid_e2e::create_tenant(dev.data.path(), "Acme", "ann@acme.test");
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{}/api/auth/login", dev.url))
        .json(&json!({"email": "ann@acme.test", "password": created["password"]}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let tokens: Value = login.json().await.expect("json");
    let access = tokens["accessToken"]
        .as_str()
        .expect("access token")
        .to_owned();

    let list = |token: String| {
        let client = client.clone();
        let url = format!("{}/api/agents", dev.url);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("list")
                .status()
        }
    };
    assert_eq!(list(access.clone()).await, 200);

    let refreshed = client
        .post(format!("{}/api/auth/refresh", dev.url))
        .json(&json!({"refreshToken": tokens["refreshToken"]}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 200);
    let jwks: Value = client
        .get(format!("{}/api/auth/.well-known/jwks.json", dev.url))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert!(!jwks["keys"].as_array().expect("keys").is_empty());

    let logout = client
        .post(format!("{}/api/auth/logout", dev.url))
        .bearer_auth(&access)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    let started = Instant::now();
    while list(access.clone()).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the Agents app still accepts a logged-out session through flowgrid dev"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
