//! Shared by the in-process tests: an app on a fresh data folder, and request helpers.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use flowgrid_agents::{AppState, router};
use flowgrid_domain::config::Config;
use flowgrid_http::auth::Role;
use flowgrid_testkit::DataDir;
use serde_json::Value;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub dir: DataDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .expect("etag header")
            .to_str()
            .expect("ascii")
            .to_owned()
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        flowgrid_http::telemetry::init_for_tests();
        let dir = DataDir::new();
        let path = dir.path_buf();
        let config = Config::from_lookup(|name| match name {
            "FLOWGRID_DATA_DIR" => Some(path.to_string_lossy().into_owned()),
            _ => None,
        })
        .expect("config");
        let state = AppState::from_config(&config).await.expect("state");
        TestApp {
            router: router(state),
            dir,
        }
    }

    pub fn token(&self, tenant: &str, role: Role) -> String {
        self.dir.token(tenant, role)
    }

    /// Sends a request; `token` may be empty for none; a `Some` body is sent as JSON.
    pub async fn send(&self, method: &str, uri: &str, token: &str, body: Option<Value>) -> Reply {
        self.send_with(method, uri, token, body, &[]).await
    }

    pub async fn send_with(
        &self,
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
        self.raw(request).await
    }

    pub async fn raw(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Creates an agent named `name` as an editor of `tenant`; returns the reply.
    pub async fn create(&self, tenant: &str, name: &str) -> Reply {
        let token = self.token(tenant, Role::Editor);
        let reply = self
            .send(
                "POST",
                "/api/agents",
                &token,
                Some(serde_json::json!({"name": name, "definition": {"instructions": "help"}})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply
    }
}
