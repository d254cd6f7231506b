//! The Agents app in-process on a fresh data folder ([`TestApp`] of the test kit), and what only
//! its tests need.

use axum::http::StatusCode;
use flowgrid_agents::{AppState, router};
use flowgrid_domain::agent::OfferedProviders;
use flowgrid_http::auth::Role;
use flowgrid_testkit::{Reply, TestApp};

/// The Agents app on a fresh data folder with default settings.
pub async fn start_app() -> TestApp<AppState> {
    TestApp::start(AppState::from_config, router).await
}

/// The Agents app on a fresh data folder with `FLOWGRID_AI_PROVIDERS` set to `providers`.
pub async fn start_offering(providers: &str) -> TestApp<AppState> {
    let builder = TestApp::builder().setting("FLOWGRID_AI_PROVIDERS", providers);
    let offered = OfferedProviders::from_lookup(|n| builder.get(n)).expect("providers setting");
    builder
        .start(
            async |config| AppState::with_providers(config, offered).await,
            router,
        )
        .await
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
