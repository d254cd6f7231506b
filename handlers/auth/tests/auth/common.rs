//! Shared by the in-process tests: the Auth app and the Agents app on one fresh data folder,
//! a tenant with users, and request helpers.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use flowgrid_auth::Stores;
use flowgrid_auth::throttle::Policy;
use flowgrid_auth::{AppState, PasswordParams, admin, router};
use flowgrid_domain::config::Config;
use flowgrid_testkit::DataDir;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const PASSWORD: &str = "a long enough password";

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: String,
}

pub struct TestApp {
    pub auth: Router,
    pub agents: Router,
    pub state: AppState,
    pub config: Config,
    pub dir: DataDir,
    pub tenant: String,
    pub owner_email: String,
    pub owner_password: String,
}

pub fn config(dir: &DataDir, extra: &[(&str, &str)]) -> Config {
    let path = dir.path().to_string_lossy().into_owned();
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| {
        if name == "FLOWGRID_DATA_DIR" {
            return Some(path.clone());
        }
        extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("config")
}

/// Throttles loose enough never to trip unless a test means them to.
pub const LOOSE: Policy = Policy {
    max_failures: 1000,
    window: Duration::from_secs(60),
};

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with(&[], LOOSE, LOOSE).await
    }

    pub async fn with(settings: &[(&str, &str)], account: Policy, caller: Policy) -> TestApp {
        flowgrid_http::telemetry::init_for_tests();
        let dir = DataDir::new();
        let config = config(&dir, settings);
        let stores = Stores::open(&config).await.expect("stores");
        let state = AppState::new(
            &config,
            stores.clone(),
            PasswordParams::TEST,
            account,
            caller,
        )
        .await
        .expect("state");
        let created =
            admin::create_tenant_with(&stores, "Acme", "owner@acme.test", PasswordParams::TEST)
                .await
                .expect("tenant");
        let agents = flowgrid_agents::AppState::from_config(&config)
            .await
            .expect("agents state");
        TestApp {
            auth: router(state.clone()),
            agents: flowgrid_agents::router(agents),
            state,
            config,
            dir,
            tenant: created.tenant_id,
            owner_email: created.email,
            owner_password: created.password,
        }
    }

    pub async fn send(&self, method: &str, uri: &str, token: &str, body: Option<Value>) -> Reply {
        send(&self.auth, method, uri, token, body, &[]).await
    }

    pub async fn agents(&self, method: &str, uri: &str, token: &str, body: Option<Value>) -> Reply {
        send(&self.agents, method, uri, token, body, &[]).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.send(
            "POST",
            "/api/auth/login",
            "",
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    /// Logs in as the owner; returns the token response.
    pub async fn owner(&self) -> Value {
        let reply = self.login(&self.owner_email, &self.owner_password).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
        reply.body
    }

    /// Creates a user with `role` and the shared test password as the owner; returns its id.
    pub async fn user(&self, email: &str, role: &str) -> String {
        let owner = self.owner().await;
        let token = owner["accessToken"].as_str().expect("token");
        let reply = self
            .send(
                "POST",
                "/api/auth/users",
                token,
                Some(json!({"email": email, "role": role, "password": PASSWORD})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.raw);
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// Logs in as `email` with the shared test password; returns the token response.
    pub async fn session(&self, email: &str) -> Value {
        let reply = self.login(email, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.raw);
        reply.body
    }
}

pub fn access(tokens: &Value) -> String {
    tokens["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned()
}

pub fn refresh_token(tokens: &Value) -> String {
    tokens["refreshToken"]
        .as_str()
        .expect("refreshToken")
        .to_owned()
}

pub async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::builder().method(method).uri(uri);
    if !token.is_empty() {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = match body {
        Some(json) => builder
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&json).expect("json"))),
        None => builder.body(Body::empty()),
    }
    .expect("request");
    raw(router, request).await
}

pub async fn raw(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        raw,
    }
}

/// Polls `check` until it is true or `deadline` passes; returns the time it took.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < deadline {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
