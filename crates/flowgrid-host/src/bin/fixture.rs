//! A tiny custom handler used by the host's tests and benchmark, started as `flowgrid-<app>`
//! through a symlink (the app name is read from argv[0]).
//!
//! - `GET /` answers (readiness); `GET /api/health/{app}[/live|/ready]` answers 200 JSON.
//! - `ANY /api/echo/{*rest}` (forwarded) answers JSON describing the request it received; the
//!   `x-fixture-status` request header picks the status, `x-fixture-sleep-ms` waits first, and
//!   `x-fixture-die-instance: 0,2` makes those instances (`FLOWGRID_INSTANCE`) exit mid-request
//!   (logged as `died instance=<n>`); `program` is the path it was started as (which build
//!   answered, for the canary tests).
//! - `POST /Inspect` answers `res` with the envelope and headers it received.
//! - `POST /Outputs` answers outputs exercising the base64 rule.
//! - `POST /Enqueue` sends the JSON array in the request body to output `out`.
//! - `POST /Work` (Service Bus): body `fail` → 500, `crash` → exits on the first delivery,
//!   `slow:<ms>` → waits, `lat:<unix µs>` → logs the enqueue-to-handler latency; every call is
//!   appended to `FIXTURE_LOG`.
//! - at start, the app's name is appended to `FIXTURE_STARTED` (when set).
//! - `POST /Tick` (timer) appends `tick past_due=<bool> status=<bool>` to `FIXTURE_LOG`.
//!
//! `FIXTURE_EXIT_APPS=a,b`: those apps exit with code `FIXTURE_EXIT_CODE` (default 1) at start;
//! `FIXTURE_SILENT_APPS=a,b`: those apps never listen.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use flowgrid_http::invocation::{self, InvokeRequest};
use serde_json::{Value, json};

#[derive(Default)]
struct Fx {
    app: String,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

fn record(line: &str) {
    if let Ok(path) = std::env::var("FIXTURE_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write of the whole line: fixtures of several apps append to the same file, and
        // `writeln!` would write the line and its newline separately, so two lines could mix.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in h {
        m.insert(
            k.as_str().to_owned(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    Value::Object(m)
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let instance = std::env::var("FLOWGRID_INSTANCE").unwrap_or_default();
    if let Some(dying) = headers
        .get("x-fixture-die-instance")
        .and_then(|v| v.to_str().ok())
        && dying.split(',').any(|i| i.trim() == instance)
    {
        record(&format!("died instance={instance}"));
        std::process::exit(9);
    }
    if let Some(ms) = headers
        .get("x-fixture-sleep-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = headers
        .get("x-fixture-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::OK);
    let env: serde_json::Map<String, Value> = [
        "FUNCTIONS_CUSTOMHANDLER_PORT",
        "FUNCTIONS_HTTPWORKER_PORT",
        "FUNCTIONS_CUSTOMHANDLER_WORKER_ID",
        "FUNCTIONS_HTTPWORKER_ID",
        "FUNCTIONS_APP_ROOT_PATH",
        "FLOWGRID_DATA_DIR",
        "FLOWGRID_JWT_ISSUER",
        "FLOWGRID_INSTANCE",
        "CUSTOM_SETTING",
    ]
    .iter()
    .map(|k| ((*k).to_owned(), json!(std::env::var(k).ok())))
    .collect();
    let mut r = (
        status,
        axum::Json(json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "headers": headers_json(&headers),
            "body": String::from_utf8_lossy(&body),
            "env": env,
            "program": program(),
        })),
    )
        .into_response();
    r.headers_mut().insert(
        "x-fixture",
        "echo"
            .parse()
            .unwrap_or_else(|_| axum::http::HeaderValue::from_static("x")),
    );
    if status.is_redirection() {
        r.headers_mut().insert(
            "location",
            axum::http::HeaderValue::from_static("/api/echo/redirected"),
        );
    }
    r
}

async fn invoke(
    State(fx): State<Arc<Fx>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<InvokeRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "not an envelope").into_response();
    };
    let answer = match function.as_str() {
        "Inspect" => json!({
            "Outputs": {"res": {"statusCode": 200, "body": {"envelope": req, "headers": headers_json(&headers)}}},
            "Logs": ["inspected"],
        }),
        "Outputs" => json!({
            "Outputs": {
                "res": {"StatusCode": "201", "Headers": {"X-Kind": "outputs"}, "Body": "plain text"},
                "out": ["test", "{\"a\": 1}", {"b": 2}],
                "outBin": "test",
            },
            "ReturnValue": null,
        }),
        "Enqueue" => {
            let bodies = req
                .data
                .get("req")
                .and_then(|r| r.get("Body"))
                .map(invocation::decode_json)
                .unwrap_or(Value::Null);
            json!({"Outputs": {"out": bodies, "res": {"statusCode": 202}}})
        }
        "Work" => {
            let now = fx.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            fx.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let msg = req
                .data
                .get("msg")
                .map(|v| String::from_utf8_lossy(&invocation::decode_bytes(v, false)).into_owned())
                .unwrap_or_default();
            let count = req
                .metadata
                .get("DeliveryCount")
                .and_then(invocation::decode_u64)
                .unwrap_or(0);
            let id = req
                .metadata
                .get("MessageId")
                .and_then(invocation::decode_string)
                .unwrap_or_default();
            let props = req
                .metadata
                .get("ApplicationProperties")
                .cloned()
                .unwrap_or(Value::Null);
            let outcome = if msg == "fail" {
                StatusCode::INTERNAL_SERVER_ERROR
            } else if msg == "crash" && count == 1 {
                record(&format!("{} {msg} count={count} id={id} crashing", fx.app));
                std::process::exit(3);
            } else if let Some(ms) = msg
                .strip_prefix("slow:")
                .and_then(|v| v.parse::<u64>().ok())
            {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                StatusCode::OK
            } else {
                StatusCode::OK
            };
            if let Some(sent) = msg.strip_prefix("lat:").and_then(|v| v.parse::<i64>().ok()) {
                let now = chrono::Utc::now().timestamp_micros();
                record(&format!("latency_us={}", now - sent));
            } else {
                record(&format!(
                    "{} {msg} count={count} id={id} props={props} max_in_flight={} at_ms={} program={} instance={}",
                    fx.app,
                    fx.max_in_flight.load(Ordering::SeqCst),
                    chrono::Utc::now().timestamp_millis(),
                    program(),
                    std::env::var("FLOWGRID_INSTANCE").unwrap_or_default()
                ));
            }
            fx.in_flight.fetch_sub(1, Ordering::SeqCst);
            if outcome.is_success() {
                json!({"Outputs": {}, "Logs": ["handled"]})
            } else {
                return (outcome, axum::Json(json!({"Logs": ["ignored on failure"]})))
                    .into_response();
            }
        }
        "Tick" => {
            let t = req.data.get("timer").cloned().unwrap_or(Value::Null);
            record(&format!(
                "tick past_due={} status={}",
                t.get("IsPastDue").and_then(Value::as_bool).unwrap_or(false),
                !t.get("ScheduleStatus").is_none_or(Value::is_null)
            ));
            json!({"Outputs": {}})
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    axum::Json(answer).into_response()
}

/// The path this process was started as (argv[0]).
fn program() -> String {
    std::env::args().next().unwrap_or_default()
}

async fn health(Path(app): Path<String>) -> Response {
    axum::Json(json!({"status": "healthy", "app": app})).into_response()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let app = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
        .trim_start_matches("flowgrid-")
        .to_owned();
    if let Ok(path) = std::env::var("FIXTURE_STARTED")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{app}");
    }
    if std::env::var("FIXTURE_EXIT_APPS")
        .unwrap_or_default()
        .split(',')
        .any(|a| a == app)
    {
        let code = std::env::var("FIXTURE_EXIT_CODE")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        eprintln!("fixture app {app} exits with {code} as asked");
        std::process::exit(code);
    }
    if std::env::var("FIXTURE_SILENT_APPS")
        .unwrap_or_default()
        .split(',')
        .any(|a| a == app)
    {
        // Never answers: the host's initialization timeout applies.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let fx = Arc::new(Fx {
        app,
        ..Fx::default()
    });
    let router = Router::new()
        .route("/", get(|| async { "fixture" }))
        .route("/api/echo/{*rest}", any(echo))
        .route("/api/health/{app}", get(health))
        .route("/api/health/{app}/live", get(health))
        .route("/api/health/{app}/ready", get(health))
        .route("/{function}", post(invoke))
        .with_state(fx);
    let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await else {
        eprintln!("cannot bind port {port}");
        std::process::exit(2);
    };
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("serve failed: {e}");
        std::process::exit(2);
    }
}
