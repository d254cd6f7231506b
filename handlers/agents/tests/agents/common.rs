//! The Agents app in-process on a fresh data folder ([`TestApp`] of the test kit), and what only
//! its tests need.

use axum::http::StatusCode;
use flowgrid_agents::{AppState, router};
use flowgrid_http::auth::Role;
use flowgrid_testkit::{Reply, TestApp};

/// The Agents app on a fresh data folder with default settings.
pub async fn start_app() -> TestApp<AppState> {
    TestApp::start(AppState::from_config, router).await
}

/// Creates an agent named `name` as an editor of `tenant`; returns the reply.
pub async fn create(app: &TestApp<AppState>, tenant: &str, name: &str) -> Reply {
    let token = app.token(tenant, Role::Editor);
    let reply = app
        .post_json(
            "/api/agents",
            &token,
            serde_json::json!({"name": name, "definition": {"instructions": "help"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply
}
