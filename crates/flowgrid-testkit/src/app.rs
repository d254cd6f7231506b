//! An app in-process, as every app's tests use it: its router over a fresh data folder with the
//! settings a test names, development tokens for any tenant and role, and requests sent with
//! `oneshot` whose replies come back as status, headers and JSON.
//!
//! The test kit knows no app: a test passes the app's state constructor and its `router`.
//!
//! ```ignore
//! let app = TestApp::start(AppState::from_config, router).await;
//! let token = app.token("acme", Role::Editor);
//! let created = app.post_json("/api/agents", &token, json!({"name": "x"})).await;
//! assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use flowgrid_domain::config::Config;
use flowgrid_http::auth::Role;
use serde_json::Value;
use tower::ServiceExt;

use crate::DataDir;

/// A reply to a request sent in-process.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON: `null` when empty, a JSON string holding the text when it is not JSON.
    pub body: Value,
    /// The body as text (lossy UTF-8), for messages and for checking what a reply must not say.
    pub text: String,
}

impl Reply {
    /// The value of header `name`, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `ETag` header; panics when there is none.
    pub fn etag(&self) -> String {
        self.header("etag").expect("etag header").to_owned()
    }
}

/// Sends requests to a router with `oneshot`. [`TestApp`] sends through one; make another for a
/// second app on the same data folder, or for a router built from a modified state.
#[derive(Clone)]
pub struct Client {
    router: Router,
}

impl Client {
    /// A client of `router`.
    pub fn new(router: Router) -> Client {
        Client { router }
    }

    /// The router requests go to.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// `GET uri`; `token` may be empty for none.
    pub async fn get(&self, uri: &str, token: &str) -> Reply {
        self.send("GET", uri, token, None).await
    }

    /// `POST uri` with a JSON body.
    pub async fn post_json(&self, uri: &str, token: &str, body: Value) -> Reply {
        self.send("POST", uri, token, Some(body)).await
    }

    /// `PUT uri` with a JSON body.
    pub async fn put_json(&self, uri: &str, token: &str, body: Value) -> Reply {
        self.send("PUT", uri, token, Some(body)).await
    }

    /// `DELETE uri`.
    pub async fn delete(&self, uri: &str, token: &str) -> Reply {
        self.send("DELETE", uri, token, None).await
    }

    /// Any method; `token` may be empty for none; a `Some` body is sent as JSON.
    pub async fn send(&self, method: &str, uri: &str, token: &str, body: Option<Value>) -> Reply {
        self.send_with(method, uri, token, body, &[]).await
    }

    /// [`Client::send`] with extra request headers.
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
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = match body {
            Some(json) => builder
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&json).expect("json"))),
            None => builder.body(Body::empty()),
        }
        .expect("request");
        self.request(request).await
    }

    /// Sends `request` as it is (raw bodies, odd content types).
    pub async fn request(&self, request: Request<Body>) -> Reply {
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
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Reply {
            status,
            headers,
            body,
            text,
        }
    }
}

/// An app in-process on its own data folder: its router, its state `S`, its configuration.
pub struct TestApp<S = ()> {
    client: Client,
    state: S,
    config: Config,
    dir: DataDir,
}

impl TestApp {
    /// A fresh data folder and no settings but `FLOWGRID_DATA_DIR`; add settings, then
    /// [`TestAppBuilder::start`].
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            dir: DataDir::new(),
            settings: Vec::new(),
        }
    }

    /// The app on a fresh data folder with default settings: `state` builds the app's state
    /// from the configuration, `router` serves it.
    pub async fn start<S, E>(
        state: impl AsyncFnOnce(&Config) -> Result<S, E>,
        router: impl FnOnce(S) -> Router,
    ) -> TestApp<S>
    where
        S: Clone,
        E: Debug,
    {
        TestApp::builder().start(state, router).await
    }
}

impl<S> TestApp<S> {
    /// The app's state, as its router got it.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The configuration the state was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The data folder.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The client requests go through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The app's router.
    pub fn router(&self) -> &Router {
        self.client.router()
    }

    /// A development token for `tenant` with `role`, which the app accepts.
    pub fn token(&self, tenant: &str, role: Role) -> String {
        self.dir.token(tenant, role)
    }

    /// [`TestApp::token`] with subject `user`.
    pub fn token_for(&self, tenant: &str, role: Role, user: &str) -> String {
        self.dir.token_for(tenant, role, user)
    }

    /// See [`Client::get`].
    pub async fn get(&self, uri: &str, token: &str) -> Reply {
        self.client.get(uri, token).await
    }

    /// See [`Client::post_json`].
    pub async fn post_json(&self, uri: &str, token: &str, body: Value) -> Reply {
        self.client.post_json(uri, token, body).await
    }

    /// See [`Client::put_json`].
    pub async fn put_json(&self, uri: &str, token: &str, body: Value) -> Reply {
        self.client.put_json(uri, token, body).await
    }

    /// See [`Client::delete`].
    pub async fn delete(&self, uri: &str, token: &str) -> Reply {
        self.client.delete(uri, token).await
    }

    /// See [`Client::send`].
    pub async fn send(&self, method: &str, uri: &str, token: &str, body: Option<Value>) -> Reply {
        self.client.send(method, uri, token, body).await
    }

    /// See [`Client::send_with`].
    pub async fn send_with(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.client
            .send_with(method, uri, token, body, headers)
            .await
    }

    /// See [`Client::request`].
    pub async fn request(&self, request: Request<Body>) -> Reply {
        self.client.request(request).await
    }
}

/// A [`TestApp`] before it starts: its data folder and settings.
pub struct TestAppBuilder {
    dir: DataDir,
    settings: Vec<(String, String)>,
}

impl TestAppBuilder {
    /// Sets `name` to `value` (a later value replaces an earlier one).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.retain(|(k, _)| k != name);
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets each of `settings`, in order.
    pub fn settings(self, settings: &[(&str, &str)]) -> Self {
        settings
            .iter()
            .fold(self, |builder, (name, value)| builder.setting(name, value))
    }

    /// The value of setting `name`: the data folder for `FLOWGRID_DATA_DIR`, else what was set.
    /// An app's own settings read through this (`Settings::from_lookup(|n| builder.get(n))`).
    pub fn get(&self, name: &str) -> Option<String> {
        if name == "FLOWGRID_DATA_DIR" {
            return Some(self.dir.path().to_string_lossy().into_owned());
        }
        self.settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The data folder.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Builds the configuration, the state (`state`) and the router (`router`), with quiet
    /// test telemetry.
    pub async fn start<S, E>(
        self,
        state: impl AsyncFnOnce(&Config) -> Result<S, E>,
        router: impl FnOnce(S) -> Router,
    ) -> TestApp<S>
    where
        S: Clone,
        E: Debug,
    {
        flowgrid_http::telemetry::init_for_tests();
        let config = Config::from_lookup(|name| self.get(name)).expect("config");
        let state = state(&config).await.expect("app state");
        TestApp {
            client: Client::new(router(state.clone())),
            state,
            config,
            dir: self.dir,
        }
    }
}

/// Polls `check` (every 50 ms) until it holds or `deadline` passes; returns how long it took,
/// `None` when it never held.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < deadline {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use serde_json::json;

    use super::*;

    /// A stand-in app: its "state" is the configuration's data folder.
    fn router(dir: String) -> Router {
        Router::new()
            .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
            .route("/text", get(|| async { "plain words" }))
            .route(
                "/dir",
                get(move || async move { axum::Json(json!({"dir": dir})) }),
            )
            .route(
                "/echo",
                axum::routing::any(|request: Request<Body>| async move {
                    let (parts, body) = request.into_parts();
                    let header = |name: &str| {
                        parts
                            .headers
                            .get(name)
                            .map(|v| v.to_str().expect("ascii").to_owned())
                    };
                    let seen = json!({
                        "method": parts.method.as_str(),
                        "authorization": header("authorization"),
                        "contentType": header("content-type"),
                        "extra": header("x-extra"),
                    });
                    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    axum::Json(json!({"request": seen, "body": body}))
                }),
            )
    }

    async fn app() -> TestApp<String> {
        TestApp::builder()
            .setting("FLOWGRID_ACCESS_TOKEN_TTL_SECS", "60")
            .settings(&[("FLOWGRID_ACCESS_TOKEN_TTL_SECS", "120")])
            .start(
                async |config: &Config| {
                    Ok::<_, std::convert::Infallible>(config.data_dir.display().to_string())
                },
                router,
            )
            .await
    }

    #[tokio::test]
    async fn the_app_gets_the_data_folder_and_the_last_value_of_each_setting() {
        let app = app().await;
        assert_eq!(app.state(), &app.dir().path().display().to_string());
        assert_eq!(app.config().access_token_ttl_secs, 120);
        let reply = app.get("/dir", "").await;
        assert_eq!(reply.body["dir"], app.state().as_str());
    }

    #[tokio::test]
    async fn replies_carry_json_text_or_null_and_the_raw_text() {
        let app = app().await;
        let empty = app.get("/empty", "").await;
        assert_eq!(
            (empty.status, &empty.body),
            (StatusCode::NO_CONTENT, &Value::Null)
        );
        let text = app.get("/text", "").await;
        assert_eq!(text.body, json!("plain words"));
        assert_eq!(text.text, "plain words");
        let json = app.get("/dir", "").await;
        assert!(json.body.is_object() && json.text.starts_with('{'));
        assert_eq!(app.get("/nowhere", "").await.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn helpers_send_their_method_token_json_body_and_headers() {
        let app = app().await;
        let token = app.token("acme", Role::Viewer);
        let body = json!({"a": 1});
        let replies = [
            ("GET", app.get("/echo", &token).await, Value::Null),
            (
                "POST",
                app.post_json("/echo", &token, body.clone()).await,
                body.clone(),
            ),
            (
                "PUT",
                app.put_json("/echo", &token, body.clone()).await,
                body.clone(),
            ),
            ("DELETE", app.delete("/echo", &token).await, Value::Null),
        ];
        for (method, reply, sent) in replies {
            assert_eq!(reply.body["request"]["method"], method);
            assert_eq!(
                reply.body["request"]["authorization"],
                format!("Bearer {token}")
            );
            assert_eq!(reply.body["body"], sent, "{method}");
            let content_type = if sent.is_null() {
                Value::Null
            } else {
                json!("application/json")
            };
            assert_eq!(
                reply.body["request"]["contentType"], content_type,
                "{method}"
            );
        }
        let anonymous = app
            .send_with("PATCH", "/echo", "", None, &[("x-extra", "yes")])
            .await;
        assert_eq!(anonymous.body["request"]["method"], "PATCH");
        assert_eq!(anonymous.body["request"]["authorization"], Value::Null);
        assert_eq!(anonymous.body["request"]["extra"], "yes");
    }

    #[tokio::test]
    async fn eventually_reports_success_and_gives_up_at_the_deadline() {
        let mut calls = 0;
        let took = eventually(Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 2;
            async move { done }
        })
        .await;
        assert!(took.is_some());
        assert_eq!(calls, 2);
        assert_eq!(
            eventually(Duration::from_millis(120), || async { false }).await,
            None
        );
    }
}
