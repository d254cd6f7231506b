//! OpenTelemetry traces and request metrics over OTLP/HTTP (protobuf), for every handler and the
//! local host.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set (or the signal-specific
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`), [`init`] starts
//! one exporter thread and [`Span`]s and [`record_request`] feed it; unset, [`init`] does
//! nothing, [`enabled`] is one atomic load that answers false, every [`Span`] constructor answers
//! `None` without allocating, and nothing is sent. The other variables read (OpenTelemetry's
//! standard names): `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`
//! (sent with every export, never logged), `OTEL_EXPORTER_OTLP_PROTOCOL` (only `http/protobuf`),
//! `OTEL_BSP_SCHEDULE_DELAY` (ms between span exports, default 5000),
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms between metric exports, default 60000) and
//! `OTEL_SDK_DISABLED`.
//!
//! The span of the work being done is a task-local ([`current`], [`within`]): a span started with
//! [`Span::child`] is its child, and an outbound call sends [`current_traceparent`] as its
//! `traceparent` header. It lives here, in the crate that calls out, because outbound calls (LLM
//! providers, connectors, `http` steps) are made here and below the HTTP kit; the kit re-exports
//! it as `flowgrid_http::otel`. See docs/observability.md.

mod export;
mod proto;

use std::cell::Cell;
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

pub use export::{flush, init, init_with_endpoint};

/// An attribute: a semantic-convention key and its value.
pub type Attr = (&'static str, Value);

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A signed integer.
    Int(i64),
    /// A double.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Str(v.clone())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// A W3C trace context: trace id, span id and trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl SpanContext {
    /// From a version-00-shaped W3C `traceparent` with non-zero ids; `None` for anything else.
    pub fn parse(traceparent: &str) -> Option<SpanContext> {
        let b = traceparent.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_byte(&b[0..2])?;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, out) in trace_id.iter_mut().enumerate() {
            *out = hex_byte(&b[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, out) in span_id.iter_mut().enumerate() {
            *out = hex_byte(&b[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&b[53..55])?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(SpanContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new root: fresh trace and span ids, sampled.
    pub fn root() -> SpanContext {
        SpanContext {
            trace_id: fresh_trace_id(),
            span_id: fresh_span_id(),
            flags: 1,
        }
    }

    /// The `traceparent` header of this context.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        a ^ b.rotate_left(32)
    });
}

/// The next 64 bits of this thread's generator (SplitMix64 seeded once from the OS): ids must
/// be unique, not secret.
fn random_u64() -> u64 {
    RNG.with(|state| {
        let x = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn fresh_span_id() -> [u8; 8] {
    random_u64().max(1).to_be_bytes()
}

fn fresh_trace_id() -> [u8; 16] {
    let id = (u128::from(random_u64()) << 64 | u128::from(random_u64())).max(1);
    id.to_be_bytes()
}

/// What a span stands for (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside a process (a run step).
    Internal,
    /// A request served.
    Server,
    /// An outbound call.
    Client,
    /// A message sent.
    Producer,
    /// A message or timer invocation processed.
    Consumer,
}

/// A finished span, as exported.
#[derive(Debug, Clone)]
pub(crate) struct SpanData {
    pub(crate) context: SpanContext,
    pub(crate) parent: Option<[u8; 8]>,
    pub(crate) remote_parent: bool,
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) attributes: Vec<Attr>,
    pub(crate) links: Vec<SpanContext>,
    pub(crate) error: Option<String>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A span being recorded; it is exported when dropped (or [`Span::end`]ed). Constructors answer
/// `None` when export is off, so untraced code pays one atomic load.
#[derive(Debug)]
pub struct Span(Box<SpanData>);

impl Span {
    fn new(name: String, kind: Kind, parent: Option<SpanContext>, remote: bool) -> Span {
        let context = match parent {
            Some(p) => SpanContext {
                trace_id: p.trace_id,
                span_id: fresh_span_id(),
                flags: p.flags,
            },
            None => SpanContext::root(),
        };
        Span(Box::new(SpanData {
            context,
            parent: parent.map(|p| p.span_id),
            remote_parent: remote && parent.is_some(),
            name,
            kind,
            start_ns: now_ns(),
            end_ns: 0,
            attributes: Vec::with_capacity(12),
            links: Vec::new(),
            error: None,
        }))
    }

    /// A span continuing the trace of `traceparent` (another process's: a request header or a
    /// message body), or a new trace when it is absent or malformed. `None` when export is off.
    pub fn remote(name: impl Into<String>, kind: Kind, traceparent: Option<&str>) -> Option<Span> {
        if !enabled() {
            return None;
        }
        let parent = traceparent.and_then(SpanContext::parse);
        Some(Span::new(name.into(), kind, parent, true))
    }

    /// A child of the [`current`] span (a new trace when there is none). `None` when export is
    /// off.
    pub fn child(name: impl Into<String>, kind: Kind) -> Option<Span> {
        if !enabled() {
            return None;
        }
        Some(Span::new(name.into(), kind, current(), false))
    }

    /// Sets attribute `key`.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        let value = value.into();
        match self.0.attributes.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.attributes.push((key, value)),
        }
    }

    /// Links this span to `context` (the invocation that delivered a message whose body named
    /// the parent).
    pub fn link(&mut self, context: SpanContext) {
        self.0.links.push(context);
    }

    /// Marks the span failed with `message` (status ERROR).
    pub fn fail(&mut self, message: impl Into<String>) {
        self.0.error = Some(message.into());
    }

    /// Renames the span (the route is known only after routing).
    pub fn rename(&mut self, name: impl Into<String>) {
        self.0.name = name.into();
    }

    /// This span's context.
    pub fn context(&self) -> SpanContext {
        self.0.context
    }

    /// The `traceparent` naming this span as the parent.
    pub fn traceparent(&self) -> String {
        self.0.context.traceparent()
    }

    /// Ends the span now.
    pub fn end(self) {
        drop(self);
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let d = &mut self.0;
        export::push(SpanData {
            context: d.context,
            parent: d.parent,
            remote_parent: d.remote_parent,
            name: std::mem::take(&mut d.name),
            kind: d.kind,
            start_ns: d.start_ns,
            end_ns: now_ns().max(d.start_ns),
            attributes: std::mem::take(&mut d.attributes),
            links: std::mem::take(&mut d.links),
            error: d.error.take(),
        });
    }
}

/// The client span of an outbound HTTP call, a child of the [`current`] span, named by its method
/// (HTTP semantic conventions); the URL is recorded without its query and credentials, which
/// may hold secrets. Send [`Span::traceparent`] as the call's `traceparent` header. `None` when
/// export is off.
pub fn http_client_span(method: &str, url: &url::Url) -> Option<Span> {
    let mut span = Span::child(method, Kind::Client)?;
    span.set("http.request.method", method);
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    span.set("url.full", shown.as_str());
    span.set("server.address", url.host_str().unwrap_or_default());
    if let Some(port) = url.port_or_known_default() {
        span.set("server.port", port);
    }
    Some(span)
}

/// Records the answer of an outbound call on its client span: the status (a 4xx or 5xx is an
/// error), or why there is none.
pub fn http_client_result(span: &mut Option<Span>, result: Result<u16, &reqwest::Error>) {
    let Some(span) = span else {
        return;
    };
    match result {
        Ok(status) => {
            span.set("http.response.status_code", status);
            if status >= 400 {
                span.set("error.type", status.to_string());
                span.fail(format!("HTTP {status}"));
            }
        }
        Err(e) => {
            span.set(
                "error.type",
                if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                },
            );
            span.fail(crate::outbound::describe(e));
        }
    }
}

/// Sets `key` on `span` when there is one.
pub fn set(span: &mut Option<Span>, key: &'static str, value: impl Into<Value>) {
    if let Some(s) = span {
        s.set(key, value);
    }
}

tokio::task_local! {
    static CURRENT: SpanContext;
}

/// The context of the span this task works under, if any.
pub fn current() -> Option<SpanContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// The `traceparent` of [`current`], for an outbound request or a message body.
pub fn current_traceparent() -> Option<String> {
    current().map(|c| c.traceparent())
}

/// Runs `f` under `span` (its children, outbound calls and messages name it as their parent);
/// without a span, just runs `f`.
pub async fn within<F: Future>(span: &Option<Span>, f: F) -> F::Output {
    within_context(span.as_ref().map(Span::context), f).await
}

/// [`within`] for a span context.
pub async fn within_context<F: Future>(context: Option<SpanContext>, f: F) -> F::Output {
    match context {
        Some(c) => CURRENT.scope(c, f).await,
        None => f.await,
    }
}

/// Whether spans and metrics are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set at [`init`]).
pub fn enabled() -> bool {
    export::enabled()
}

/// The bucket boundaries of request durations in seconds (the HTTP semantic conventions').
pub const DURATION_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// A cumulative histogram: one data point (attribute set) of one metric.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    pub(crate) name: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) description: &'static str,
    pub(crate) bounds: &'static [f64],
    pub(crate) attributes: Vec<Attr>,
    pub(crate) buckets: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Histogram {
    pub(crate) fn record(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i] += 1;
        if self.count == 0 {
            (self.min, self.max) = (value, value);
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
    }
}

/// Records one request served in `http.server.request.duration` (seconds), by method, route
/// and status, as the HTTP semantic conventions name them. Nothing when export is off.
pub fn record_request(method: &str, route: &str, status: u16, seconds: f64) {
    if !enabled() {
        return;
    }
    export::record(
        "http.server.request.duration",
        "s",
        "Duration of HTTP server requests.",
        DURATION_BOUNDS,
        vec![
            ("http.request.method", Value::from(method)),
            ("http.route", Value::from(route)),
            ("http.response.status_code", Value::from(status)),
        ],
        seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips_and_junk_is_refused() {
        let ctx = SpanContext::parse(TP).expect("valid");
        assert_eq!(ctx.traceparent(), TP);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad:?}");
        }
        // A later version may append fields after a dash.
        assert!(SpanContext::parse(&format!("01{}-xyz", &TP[2..])).is_some());
    }

    #[test]
    fn nothing_is_recorded_or_allocated_when_export_is_off() {
        assert!(!enabled());
        assert!(Span::remote("x", Kind::Server, Some(TP)).is_none());
        assert!(Span::child("x", Kind::Internal).is_none());
        record_request("GET", "/", 200, 0.001);
    }

    #[test]
    fn a_histogram_counts_each_value_in_the_first_bucket_whose_bound_holds_it() {
        let mut h = Histogram {
            name: "d",
            unit: "s",
            description: "",
            bounds: &[0.1, 1.0],
            attributes: Vec::new(),
            buckets: vec![0; 3],
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
        };
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.record(v);
        }
        assert_eq!(h.buckets, vec![2, 1, 1]);
        assert_eq!((h.count, h.min, h.max), (4, 0.05, 3.0));
        assert!((h.sum - 3.65).abs() < 1e-9);
    }
}
