//! A small OTLP/HTTP receiver for tests: `POST /v1/traces` and `POST /v1/metrics` with
//! `Content-Type: application/x-protobuf`, decoded with the generated types of the
//! `opentelemetry-proto` crate (`ExportTraceServiceRequest`, `ExportMetricsServiceRequest`), so
//! what Flowgrid's hand-written encoder sends is read by the OpenTelemetry project's own message
//! definitions, not by a reader we wrote to match it. A request that is not protobuf or does not
//! decode is answered 400/415 and kept in [`OtlpReceiver::rejected`], so a test can fail on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::Value;

pub use opentelemetry_proto::tonic::metrics::v1 as metrics_proto;

/// One span as received, with its resource's `service.name`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` of the process that sent it.
    pub service: String,
    /// Lower-case hex.
    pub trace_id: String,
    /// Lower-case hex.
    pub span_id: String,
    /// Lower-case hex; empty for a root.
    pub parent_span_id: String,
    /// The span name.
    pub name: String,
    /// OTLP `SpanKind` (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Attributes as JSON values (strings, integers, doubles, booleans).
    pub attributes: BTreeMap<String, Value>,
    /// Links as (trace id, span id), hex.
    pub links: Vec<(String, String)>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Start and end, nanoseconds since the epoch.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
}

impl ReceivedSpan {
    /// The string attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
}

#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    requests: usize,
    rejected: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Received> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running receiver on `127.0.0.1`; stopped when dropped.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:<port>`: the value of `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-protobuf"))
}

async fn traces(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = lock(&s);
    r.requests += 1;
    if !is_protobuf(&headers) {
        r.rejected.push(format!(
            "traces: content type {:?}",
            headers.get(header::CONTENT_TYPE)
        ));
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            r.traces.push(req);
            StatusCode::OK
        }
        Err(e) => {
            r.rejected.push(format!("traces: {e}"));
            StatusCode::BAD_REQUEST
        }
    }
}

async fn metrics(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = lock(&s);
    r.requests += 1;
    if !is_protobuf(&headers) {
        r.rejected.push(format!(
            "metrics: content type {:?}",
            headers.get(header::CONTENT_TYPE)
        ));
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    match ExportMetricsServiceRequest::decode(body) {
        Ok(req) => {
            r.metrics.push(req);
            StatusCode::OK
        }
        Err(e) => {
            r.rejected.push(format!("metrics: {e}"));
            StatusCode::BAD_REQUEST
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn json_of(v: Option<&AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Value::from(s.clone()),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(other) => Value::from(format!("{other:?}")),
        None => Value::Null,
    }
}

/// Attributes as a map of JSON values.
pub fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), json_of(kv.value.as_ref())))
        .collect()
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of `127.0.0.1`.
    pub async fn start() -> OtlpReceiver {
        let state = Shared::default();
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let port = listener.local_addr().expect("local address").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
            task,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let r = lock(&self.state);
        let mut out = Vec::new();
        for req in &r.traces {
            for rs in &req.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                let service = resource
                    .get("service.name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(ReceivedSpan {
                            service: service.clone(),
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            name: s.name.clone(),
                            kind: s.kind,
                            attributes: attributes(&s.attributes),
                            links: s
                                .links
                                .iter()
                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                .collect(),
                            status_code: s.status.as_ref().map_or(0, |st| st.code),
                            start_ns: s.start_time_unix_nano,
                            end_ns: s.end_time_unix_nano,
                        });
                    }
                }
            }
        }
        out
    }

    /// Every metrics export received so far, decoded.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        lock(&self.state).metrics.clone()
    }

    /// How many export requests arrived (decoded or not).
    pub fn requests(&self) -> usize {
        lock(&self.state).requests
    }

    /// What was refused (not protobuf, or not an OTLP message), with why.
    pub fn rejected(&self) -> Vec<String> {
        lock(&self.state).rejected.clone()
    }

    /// Polls until `done` holds for the spans received (every 100 ms, up to `timeout`); returns
    /// the spans either way.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
