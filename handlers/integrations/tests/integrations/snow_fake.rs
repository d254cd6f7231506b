//! A ServiceNow Table API fake, in-process, built from the request and response examples of
//! ServiceNow's Table API documentation (`POST /api/now/table/{tableName}` answers 201 with the
//! record in `result`; `GET /api/now/table/{tableName}` answers `{"result": [...]}` filtered by
//! `sysparm_query` and cut by `sysparm_limit`; a missing or wrong basic auth answers 401 with
//! `{"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth
//! information"}, "status": "failure"}`). Scripted faults: create-then-hang, 429 with
//! `Retry-After`, 500.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// A scripted fault for the next creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Store the record, then answer nothing for this long (the client times out).
    CreateThenHang(Duration),
    /// 429 with `Retry-After: <secs>`, nothing stored.
    TooMany(u64),
    /// 500, nothing stored.
    ServerError,
}

/// One request the fake saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct Inner {
    pub records: Vec<Value>,
    pub seen: Vec<Seen>,
    pub faults: Vec<Fault>,
    pub always_fail: bool,
}

/// The fake, listening on 127.0.0.1 until dropped.
#[derive(Clone)]
pub struct SnowFake {
    pub url: String,
    pub inner: Arc<Mutex<Inner>>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

pub const PASSWORD: &str = "s3cret-P4ssword-9876";

/// The OAuth client the fake knows (auth mode `oauth`).
pub const CLIENT_ID: &str = "3e57bb02663102004d010ee8f561307a";
/// The access token `oauth_token.do` issues.
const ACCESS_TOKEN: &str = "JnjwfKY8aWBcNvFl7e5oLXzgLhX1kw";

fn authorized(headers: &HeaderMap) -> bool {
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"))
    );
    let bearer = format!("Bearer {ACCESS_TOKEN}");
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    given == Some(basic.as_str()) || given == Some(bearer.as_str())
}

/// `POST /oauth_token.do` (client credentials), answered as ServiceNow documents it:
/// `{"access_token", "refresh_token", "scope", "token_type": "Bearer", "expires_in"}`; a wrong
/// client is 401 `{"error": "access_denied", ...}`.
async fn oauth_token(State(fake): State<Arc<Mutex<Inner>>>, body: String) -> Response {
    record(
        &mut fake.lock().expect("lock"),
        "POST",
        "/oauth_token.do",
        "",
    );
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(PASSWORD);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error_description": "access_denied", "error": "server_error"})),
        )
            .into_response();
    }
    axum::Json(json!({"access_token": ACCESS_TOKEN, "refresh_token": "w599voG89897rGVDmdp12WA681r9E5B", "scope": "useraccount", "token_type": "Bearer", "expires_in": 1799})).into_response()
}

fn unauthenticated() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"})),
    )
        .into_response()
}

fn record(inner: &mut Inner, method: &str, path: &str, query: &str) {
    inner.seen.push(Seen {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        at: Instant::now(),
    });
}

async fn create(
    State(fake): State<Arc<Mutex<Inner>>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = {
        let mut inner = fake.lock().expect("test fixture");
        record(&mut inner, "POST", &format!("/api/now/table/{table}"), "");
        if !authorized(&headers) {
            return unauthenticated();
        }
        if inner.always_fail {
            Some(Fault::ServerError)
        } else if inner.faults.is_empty() {
            None
        } else {
            Some(inner.faults.remove(0))
        }
    };
    match fault {
        Some(Fault::TooMany(secs)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                axum::Json(json!({"error": {"message": "Rate limit exceeded", "detail": ""}, "status": "failure"})),
            )
                .into_response();
        }
        Some(Fault::ServerError) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "Internal error", "detail": ""}, "status": "failure"})),
            )
                .into_response();
        }
        _ => {}
    }
    let stored = {
        let mut inner = fake.lock().expect("test fixture");
        let n = inner.records.len() + 10_001;
        let mut rec = json!({
            "sys_id": format!("{:032x}", 0x09d3_8501_7c61_1228_000f_03f8_e2b0_ae00_u128 + n as u128),
            "number": format!("INC00{n}"),
            "state": "1",
            "sys_created_by": "admin",
            "active": "true",
        });
        if let Value::Object(fields) = &body {
            for (k, v) in fields {
                rec[k] = v.clone();
            }
        }
        inner.records.push(rec.clone());
        rec
    };
    if let Some(Fault::CreateThenHang(wait)) = fault {
        tokio::time::sleep(wait).await;
    }
    (StatusCode::CREATED, axum::Json(json!({"result": stored}))).into_response()
}

async fn list(
    State(fake): State<Arc<Mutex<Inner>>>,
    Path(table): Path<String>,
    Query(params): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = fake.lock().expect("test fixture");
    let query = serde_urlencoded_like(&params);
    record(
        &mut inner,
        "GET",
        &format!("/api/now/table/{table}"),
        &query,
    );
    if !authorized(&headers) {
        return unauthenticated();
    }
    let limit: usize = params
        .get("sysparm_limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10_000);
    let rows: Vec<Value> = match table.as_str() {
        "sys_user" => vec![json!({"sys_id": "6816f79cc0a8016401c5a33be04be441"})],
        _ => inner
            .records
            .iter()
            .filter(|r| match params.get("sysparm_query") {
                Some(q) => q.split('^').all(|cond| match cond.split_once('=') {
                    Some((field, value)) => r[field].as_str() == Some(value),
                    None => false,
                }),
                None => true,
            })
            .take(limit)
            .cloned()
            .collect(),
    };
    axum::Json(json!({"result": rows})).into_response()
}

async fn read(
    State(fake): State<Arc<Mutex<Inner>>>,
    Path((table, sys_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut inner = fake.lock().expect("test fixture");
    record(
        &mut inner,
        "GET",
        &format!("/api/now/table/{table}/{sys_id}"),
        "",
    );
    if !authorized(&headers) {
        return unauthenticated();
    }
    match inner.records.iter().find(|r| r["sys_id"] == sys_id.as_str()) {
        Some(r) => axum::Json(json!({"result": r})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record retrieval"}, "status": "failure"})),
        )
            .into_response(),
    }
}

fn serde_urlencoded_like(params: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join("&")
}

impl SnowFake {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> SnowFake {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/api/now/table/{table}", get(list).post(create))
            .route("/api/now/table/{table}/{sys_id}", get(read))
            .route("/oauth_token.do", axum::routing::post(oauth_token))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test fixture");
        let url = format!("http://{}", listener.local_addr().expect("test fixture"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        SnowFake {
            url,
            inner,
            _stop: Arc::new(tx),
        }
    }

    /// Queues faults for the next creates.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner
            .lock()
            .expect("test fixture")
            .faults
            .extend_from_slice(faults);
    }

    /// Every create fails with 500 from now on.
    pub fn always_fail(&self) {
        self.inner.lock().expect("test fixture").always_fail = true;
    }

    /// The incidents stored.
    pub fn records(&self) -> Vec<Value> {
        self.inner.lock().expect("test fixture").records.clone()
    }

    /// The requests seen.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().expect("test fixture").seen.clone()
    }
}
