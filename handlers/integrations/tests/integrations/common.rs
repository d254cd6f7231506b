//! The Integrations app in-process on a fresh data folder, with fast connector settings and the
//! loopback allowed by the outbound guard (the fakes listen there).

use std::time::Duration;

use axum::http::StatusCode;
use flowgrid_http::auth::Role;
use flowgrid_integrations::{AppState, router};
use flowgrid_providers::integrations::CallSettings;
use flowgrid_providers::outbound::OutboundPolicy;
use flowgrid_testkit::{Client, TestApp};
use serde_json::{Value, json};

/// Connector settings for tests: short timeouts and waits.
pub fn settings() -> CallSettings {
    CallSettings {
        attempt_timeout: Duration::from_millis(800),
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_rate_limit_wait: Duration::from_secs(5),
        circuit_threshold: 2,
        circuit_open_for: Duration::from_secs(60),
        max_body_bytes: 1 << 20,
    }
}

/// The app with the loopback allow-listed.
pub async fn start() -> TestApp<AppState> {
    start_with(settings()).await
}

/// The app with `settings`.
pub async fn start_with(settings: CallSettings) -> TestApp<AppState> {
    TestApp::start(
        async move |config| {
            AppState::build(
                config,
                OutboundPolicy::parse("127.0.0.1").expect("policy"),
                settings,
            )
            .await
        },
        router,
    )
    .await
}

/// A second instance of the app over the same data folder and store (another process's view).
pub async fn second_instance(app: &TestApp<AppState>) -> Client {
    let state = AppState::build(
        app.config(),
        OutboundPolicy::parse("127.0.0.1").expect("policy"),
        settings(),
    )
    .await
    .expect("state");
    Client::new(router(state))
}

/// Creates a connection as an admin of `tenant`; asserts 201.
pub async fn create_connection(app: &TestApp<AppState>, tenant: &str, body: Value) -> Value {
    let admin = app.token(tenant, Role::Admin);
    let reply = app
        .post_json("/api/integrations/connections", &admin, body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body
}

/// A ServiceNow basic-auth connection `name` to `base`.
pub fn servicenow(name: &str, base: &str, password: &str) -> Value {
    json!({
        "name": name, "kind": "servicenow", "auth": "basic",
        "config": {"instanceUrl": base, "username": "admin"},
        "secret": password,
    })
}
