//! Non-forwarded invocations: the `{Data, Metadata}` envelope posted to `/{FunctionName}`, the
//! `{Outputs, Logs, ReturnValue}` answer, and the output bindings (the `res` HTTP response, Service
//! Bus messages, the base64 rule).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use flowgrid_http::invocation::{self, InvokeRequest, InvokeResponse};
use flowgrid_http::otel;
use serde_json::{Map, Value, json};

use crate::bus::{Outgoing, Target};
use crate::config::{FunctionDef, OutputKind};

/// The call context of an invocation that no HTTP request started (a message, a timer).
pub(crate) fn background_context(correlation_id: String) -> CallContext {
    CallContext::new(
        correlation_id,
        flowgrid_http::correlation::traceparent(&HeaderMap::new()),
    )
}

/// The host version the local host reports.
pub const HOST_VERSION: &str = "4.1037.0";

/// Context sent along with every invocation.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// `X-Azure-Functions-InvocationId`.
    pub invocation_id: String,
    /// The gateway's correlation id.
    pub correlation_id: String,
    /// W3C `traceparent`.
    pub traceparent: String,
}

impl CallContext {
    /// A fresh context.
    pub fn new(correlation_id: String, traceparent: String) -> Self {
        Self {
            invocation_id: uuid::Uuid::new_v4().to_string(),
            correlation_id,
            traceparent,
        }
    }
}

/// The context of a Service Bus invocation of `function` for message `m` from `entity`, and its
/// span when traces are exported: a consumer span continuing the message's application
/// properties' `traceparent` (or the `Diagnostic-Id` the Azure SDKs set), else a new trace, as
/// the Functions host does. Output bindings set only the body, so Flowgrid's own messages carry
/// their trace context there, and the handler's span continues it (linked to this one).
pub fn message_context(
    correlation_id: String,
    m: &crate::bus::Message,
    function: &str,
    entity: &str,
) -> (CallContext, Option<otel::Span>) {
    let property = |k: &str| {
        m.application_properties
            .get(k)
            .and_then(Value::as_str)
            .filter(|tp| otel::SpanContext::parse(tp).is_some())
    };
    let parent = property("traceparent").or_else(|| property("Diagnostic-Id"));
    let queue = entity.split('/').next().unwrap_or(entity);
    let Some(mut span) =
        otel::Span::remote(format!("process {queue}"), otel::Kind::Consumer, parent)
    else {
        let ctx = match parent {
            Some(tp) => CallContext::new(correlation_id, tp.to_owned()),
            None => background_context(correlation_id),
        };
        return (ctx, None);
    };
    let ctx = CallContext::new(correlation_id, span.traceparent());
    span.set("faas.name", function);
    span.set("faas.trigger", "pubsub");
    span.set("faas.invocation_id", ctx.invocation_id.as_str());
    span.set("messaging.system", "servicebus");
    span.set("messaging.operation.name", "process");
    span.set("messaging.destination.name", queue);
    span.set("messaging.message.id", m.message_id.as_str());
    span.set(
        "messaging.servicebus.message.delivery_count",
        u64::from(m.delivery_count),
    );
    span.set("flowgrid.correlation_id", ctx.correlation_id.as_str());
    (ctx, Some(span))
}

/// The context of a timer invocation of `function`, and its span when traces are exported (a
/// new trace per tick).
pub fn timer_context(function: &str) -> (CallContext, Option<otel::Span>) {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let Some(mut span) = otel::Span::remote(function, otel::Kind::Server, None) else {
        return (background_context(correlation_id), None);
    };
    let ctx = CallContext::new(correlation_id, span.traceparent());
    span.set("faas.name", function);
    span.set("faas.trigger", "timer");
    span.set("faas.invocation_id", ctx.invocation_id.as_str());
    span.set("flowgrid.correlation_id", ctx.correlation_id.as_str());
    (ctx, Some(span))
}

/// The `sys` metadata entry.
pub fn sys(function: &str) -> Value {
    json!({
        "MethodName": function,
        "UtcNow": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        "RandGuid": uuid::Uuid::new_v4().to_string(),
    })
}

/// Adds each top-level property of a JSON object body to `metadata`, encoded per the table.
pub fn add_body_properties(metadata: &mut Map<String, Value>, body: &[u8]) {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) {
        for (k, v) in obj {
            if v.is_null()
                || k.to_ascii_lowercase().ends_with("trigger")
                || metadata.contains_key(&k)
            {
                continue;
            }
            metadata.insert(k, invocation::encode_scalar(&v));
        }
    }
}

/// The `req` object of an HTTP trigger as `HttpRequestExtensions.GetRequestAsJObject` builds it.
pub struct HttpTriggerInput<'a> {
    /// Absolute URL as the caller used it.
    pub url: String,
    /// Method.
    pub method: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Route values.
    pub params: &'a BTreeMap<String, String>,
    /// Body, when the request had a `Content-Length`.
    pub body: Option<&'a [u8]>,
}

/// Builds the envelope for an HTTP-triggered, non-forwarded function.
pub fn http_envelope(function: &str, binding: &str, input: &HttpTriggerInput<'_>) -> InvokeRequest {
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in input
        .query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = crate::route::percent_decode(&k.replace('+', " "));
        let v = crate::route::percent_decode(&v.replace('+', " "));
        query.entry(k).or_default().push(v);
    }
    let query: Map<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v.join(","))))
        .collect();
    let mut headers_arrays: Map<String, Value> = Map::new();
    let mut headers_joined: Map<String, Value> = Map::new();
    for name in input.headers.keys() {
        let values: Vec<String> = input
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let display = canonical_header(name);
        headers_joined.insert(display.clone(), Value::String(values.join(",")));
        headers_arrays.insert(
            display,
            Value::Array(values.into_iter().map(Value::String).collect()),
        );
    }
    let params: Map<String, Value> = input
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut req = json!({
        "Url": input.url,
        "Method": input.method,
        "Query": query,
        "Headers": headers_arrays,
        "Params": params,
        "Identities": [{
            "AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true, "Actor": null, "BootstrapContext": null,
            "Claims": [{"Issuer": "LOCAL AUTHORITY", "OriginalIssuer": "LOCAL AUTHORITY", "Properties": {},
                "Type": "http://schemas.microsoft.com/2017/07/functions/claims/authlevel", "Value": "Admin",
                "ValueType": "http://www.w3.org/2001/XMLSchema#string"}],
            "Label": null, "Name": null,
            "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
        }],
    });
    if let (Some(body), Some(obj)) = (input.body, req.as_object_mut()) {
        let ct = input
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let text = if ct.starts_with("application/octet-stream") || ct.starts_with("multipart/") {
            invocation::encode_bytes(body)
        } else {
            match std::str::from_utf8(body) {
                Ok(s) => Value::String(s.to_owned()),
                Err(_) => invocation::encode_bytes(body),
            }
        };
        obj.insert("Body".to_owned(), text);
    }
    let mut metadata = Map::new();
    metadata.insert("Params".to_owned(), Value::Object(params.clone()));
    metadata.insert("Query".to_owned(), Value::Object(query));
    metadata.insert("Headers".to_owned(), Value::Object(headers_joined));
    for (k, v) in input.params {
        metadata.insert(k.clone(), invocation::encode_string(v));
    }
    if let Some(body) = input.body {
        add_body_properties(&mut metadata, body);
    }
    metadata.insert("sys".to_owned(), sys(function));
    let mut data = Map::new();
    data.insert(binding.to_owned(), req);
    InvokeRequest { data, metadata }
}

fn canonical_header(name: &HeaderName) -> String {
    name.as_str()
        .split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Builds the envelope for a Service Bus-triggered function.
pub fn service_bus_envelope(
    function: &str,
    binding: &str,
    binary: bool,
    m: &crate::bus::Message,
) -> InvokeRequest {
    let value = if binary {
        invocation::encode_bytes(&m.body)
    } else {
        match std::str::from_utf8(&m.body) {
            Ok(s) => invocation::encode_string(s),
            Err(_) => invocation::encode_bytes(&m.body),
        }
    };
    let utc =
        |t: chrono::DateTime<Utc>| Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string());
    let offset = |t: chrono::DateTime<Utc>| {
        Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f+00:00").to_string())
    };
    let mut md = Map::new();
    md.insert(
        "DeliveryCount".into(),
        Value::String(m.delivery_count.to_string()),
    );
    if let Some(t) = &m.lock_token {
        md.insert("LockToken".into(), invocation::encode_string(t));
    }
    md.insert(
        "ExpiresAtUtc".into(),
        Value::String("9999-12-31T23:59:59.9999999".into()),
    );
    md.insert(
        "ExpiresAt".into(),
        Value::String("9999-12-31T23:59:59.9999999+00:00".into()),
    );
    md.insert("EnqueuedTimeUtc".into(), utc(m.enqueued_time));
    md.insert("EnqueuedTime".into(), offset(m.enqueued_time));
    md.insert("MessageId".into(), invocation::encode_string(&m.message_id));
    for (key, v) in [
        ("ContentType", &m.content_type),
        ("CorrelationId", &m.correlation_id),
        ("DeadLetterSource", &m.dead_letter_source),
    ] {
        if let Some(v) = v {
            md.insert(key.into(), invocation::encode_string(v));
        }
    }
    if let Some(s) = &m.subject {
        md.insert("Subject".into(), invocation::encode_string(s));
        md.insert("Label".into(), invocation::encode_string(s));
    }
    md.insert(
        "SequenceNumber".into(),
        Value::String(m.sequence_number.to_string()),
    );
    md.insert(
        "ApplicationProperties".into(),
        Value::Object(m.application_properties.clone()),
    );
    md.insert(
        "UserProperties".into(),
        Value::Object(m.application_properties.clone()),
    );
    for key in [
        "MessageReceiver",
        "MessageSession",
        "MessageActions",
        "SessionActions",
        "ReceiveActions",
    ] {
        md.insert(key.into(), json!({}));
    }
    md.insert("Client".into(), json!({"FullyQualifiedNamespace": "localhost", "IsClosed": false, "TransportType": 0, "Identifier": "flowgrid-dev"}));
    add_body_properties(&mut md, &m.body);
    md.insert("sys".into(), sys(function));
    let mut data = Map::new();
    data.insert(binding.to_owned(), value);
    InvokeRequest { data, metadata: md }
}

/// Builds the envelope for a timer-triggered function.
pub fn timer_envelope(
    function: &str,
    binding: &str,
    status: Option<&crate::bus::TimerStatus>,
    past_due: bool,
) -> InvokeRequest {
    let fmt = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let schedule_status = status.map_or(
        Value::Null,
        |s| json!({"Last": fmt(s.last), "Next": fmt(s.next), "LastUpdated": fmt(s.last_updated)}),
    );
    let mut data = Map::new();
    data.insert(binding.to_owned(), json!({"Schedule": {"AdjustForDST": true}, "ScheduleStatus": schedule_status, "IsPastDue": past_due}));
    let mut metadata = Map::new();
    metadata.insert("sys".into(), sys(function));
    InvokeRequest { data, metadata }
}

/// The request posted to the handler for an invocation.
pub fn invocation_request(
    port: u16,
    function: &str,
    ctx: &CallContext,
    envelope: &InvokeRequest,
) -> Result<hyper::Request<Body>, String> {
    let body = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
    hyper::Request::post(format!("http://127.0.0.1:{port}/{function}"))
        .header("content-type", "application/json; charset=utf-8")
        .header(invocation::INVOCATION_ID_HEADER, &ctx.invocation_id)
        .header(invocation::HOST_VERSION_HEADER, HOST_VERSION)
        .header("user-agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
        .header(flowgrid_http::correlation::HEADER, &ctx.correlation_id)
        .header("traceparent", &ctx.traceparent)
        .body(Body::from(body))
        .map_err(|e| e.to_string())
}

/// Reads a handler's answer: non-2xx or invalid JSON is a failed invocation (the body is then ignored).
pub fn read_answer(status: StatusCode, body: &Bytes) -> Result<InvokeResponse, String> {
    if !status.is_success() {
        let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
        return Err(format!("the handler answered {status}: {snippet}"));
    }
    serde_json::from_slice(body)
        .map_err(|e| format!("the handler's answer is not an invocation response: {e}"))
}

/// The HTTP response an `http` output describes.
#[derive(Debug)]
pub struct HttpOut {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

/// Reads a `res` output: `{statusCode|status, headers, body}`, keys case-insensitive.
pub fn http_output(v: &Value) -> Result<HttpOut, String> {
    let Value::Object(obj) = v else {
        return Err("the http output is not an object".into());
    };
    let get = |k: &str| {
        obj.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    };
    let status = match get("statusCode").or_else(|| get("status")) {
        None | Some(Value::Null) => StatusCode::OK,
        Some(v) => invocation::decode_u64(v)
            .and_then(|n| u16::try_from(n).ok())
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or_else(|| format!("the http output's status {v} is not an HTTP status"))?,
    };
    let mut headers = HeaderMap::new();
    if let Some(Value::Object(h)) = get("headers") {
        for (k, v) in h {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(value),
            ) {
                headers.append(name, value);
            }
        }
    }
    let body = match get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other @ (Value::Object(_) | Value::Array(_))) => {
            if !headers.contains_key("content-type") {
                headers.insert(
                    "content-type",
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            }
            other.to_string().into_bytes()
        }
        Some(other) => other.to_string().into_bytes(),
    };
    Ok(HttpOut {
        status,
        headers,
        body,
    })
}

/// The bytes of one non-HTTP output value, applying the host's base64 rule: without
/// `dataType: binary`, a string that is valid base64 is decoded (`"test"` becomes three bytes).
pub fn output_bytes(v: &Value, binary: bool) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) if !binary => {
            Some(invocation::base64_decode_lenient(s).unwrap_or_else(|| s.clone().into_bytes()))
        }
        Value::String(s) => Some(s.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

/// Everything an answer asks the host to write.
#[derive(Debug, Default)]
pub struct Writes {
    /// The HTTP response, for HTTP-triggered functions.
    pub http: Option<HttpOut>,
    /// Messages to send.
    pub messages: Vec<(Target, Outgoing)>,
}

/// Maps an answer onto the function's output bindings.
pub fn writes(f: &FunctionDef, answer: &InvokeResponse) -> Result<Writes, String> {
    let mut w = Writes::default();
    for out in &f.outputs {
        let value = if out.name == "$return" {
            answer.return_value.as_ref()
        } else {
            answer.outputs.get(&out.name)
        };
        match &out.kind {
            OutputKind::Http => {
                w.http = Some(match value {
                    Some(v) if !v.is_null() => http_output(v)?,
                    _ => HttpOut {
                        status: StatusCode::OK,
                        headers: HeaderMap::new(),
                        body: Vec::new(),
                    },
                });
            }
            OutputKind::Queue(_) | OutputKind::Topic(_) => {
                let target = match &out.kind {
                    OutputKind::Queue(q) => Target::Queue(q.clone()),
                    OutputKind::Topic(t) => Target::Topic(t.clone()),
                    OutputKind::Http => continue,
                };
                let items: Vec<&Value> = match value {
                    None => Vec::new(),
                    Some(Value::Array(a)) => a.iter().collect(),
                    Some(v) => vec![v],
                };
                for item in items {
                    if let Some(body) = output_bytes(item, out.binary) {
                        w.messages.push((
                            target.clone(),
                            Outgoing {
                                body,
                                ..Outgoing::default()
                            },
                        ));
                    }
                }
            }
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base64_string_output_is_decoded_unless_the_binding_is_binary() {
        assert_eq!(output_bytes(&json!("test"), false).unwrap().len(), 3);
        assert_eq!(output_bytes(&json!("test"), true).unwrap(), b"test");
        assert_eq!(
            output_bytes(&json!("{\"a\": 1}"), false).unwrap(),
            b"{\"a\": 1}"
        );
        assert_eq!(output_bytes(&json!({"a": 1}), false).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn the_res_output_reads_status_headers_and_body_case_insensitively() {
        let out = http_output(
            &json!({"StatusCode": "201", "Headers": {"Location": "/x"}, "Body": {"ok": true}}),
        )
        .unwrap();
        assert_eq!(out.status, StatusCode::CREATED);
        assert_eq!(out.headers["location"], "/x");
        assert_eq!(
            out.headers["content-type"],
            "application/json; charset=utf-8"
        );
        assert_eq!(out.body, b"{\"ok\":true}");
        assert!(http_output(&json!({"statusCode": "abc"})).is_err());
    }

    #[test]
    fn service_bus_metadata_follows_the_encoding_table() {
        let m = crate::bus::Message {
            sequence_number: 42,
            entity: "q".into(),
            message_id: "abc".into(),
            body: br#"{"orderId":7,"name":"x"}"#.to_vec(),
            body_text: String::new(),
            content_type: Some("application/json".into()),
            correlation_id: None,
            subject: None,
            application_properties: serde_json::from_value(json!({"tenant": "a"})).unwrap(),
            enqueued_time: Utc::now(),
            scheduled_enqueue_time: None,
            delivery_count: 1,
            lock_token: Some("tok".into()),
            dead_letter_reason: None,
            dead_letter_description: None,
            dead_letter_source: None,
        };
        let env = service_bus_envelope("Work", "msg", false, &m);
        assert_eq!(
            env.data["msg"],
            json!("\"{\\\"orderId\\\":7,\\\"name\\\":\\\"x\\\"}\"")
        );
        assert_eq!(env.metadata["DeliveryCount"], json!("1"));
        assert_eq!(env.metadata["SequenceNumber"], json!("42"));
        assert_eq!(env.metadata["MessageId"], json!("\"abc\""));
        assert_eq!(env.metadata["orderId"], json!("7"));
        assert_eq!(env.metadata["name"], json!("\"x\""));
        assert_eq!(
            env.metadata["ApplicationProperties"],
            json!({"tenant": "a"})
        );
        assert!(!env.metadata.contains_key("CorrelationId"));
        let bin = service_bus_envelope("Work", "msg", true, &m);
        assert_eq!(invocation::decode_bytes(&bin.data["msg"], true), m.body);
    }
}
