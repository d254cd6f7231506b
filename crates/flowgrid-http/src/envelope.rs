//! HTTP functions that cannot use forwarding (they have output bindings besides `res`, such as
//! a Service Bus output) receive the HTTP request inside the invocation envelope. This adapter
//! turns that envelope back into an `http::Request`, runs the very same axum router the
//! forwarded routes use, and turns the response into `Outputs`: `res` (status, headers, JSON
//! body) plus the output-binding values the handler attached with [`OutputBindings`].
//!
//! The `res` body is sent as a JSON value when the response is JSON (objects pass through the
//! host untouched); other bodies are sent as text, which the host's base64 rule would only
//! alter if the text happened to be valid base64 — Flowgrid's APIs answer JSON or nothing.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::response::Response;
use axum::routing::{MethodRouter, post};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::invocation::{self, InvokeRequest, InvokeResponse};

/// Output-binding values a handler attaches to its response as an extension, keyed by binding
/// name; a binding given several values sends one message per value.
#[derive(Debug, Clone, Default)]
pub struct OutputBindings(pub Map<String, Value>);

impl OutputBindings {
    /// Adds `value` to the binding `name`.
    pub fn push(&mut self, name: &str, value: Value) {
        match self.0.get_mut(name) {
            Some(Value::Array(items)) => items.push(value),
            _ => {
                self.0.insert(name.to_owned(), Value::Array(vec![value]));
            }
        }
    }
}

/// Marks a response whose [`OutputBindings`] are written even though it is no success: facts
/// that happened whatever the answer says (the Design app's model calls, charged and published
/// also when the answer is a problem).
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputsOnFailure;

/// The `http::Request` an HTTP-trigger envelope describes (`Data[trigger]`).
pub fn request_from_envelope(
    envelope: &InvokeRequest,
    trigger: &str,
) -> flowgrid_domain::Result<Request<Body>> {
    let bad =
        |what: &str| crate::Error::BadRequest(format!("the invocation's HTTP request {what}"));
    let req = envelope
        .data
        .get(trigger)
        .map(invocation::decode_json)
        .ok_or_else(|| bad("is missing"))?;
    let get = |k: &str| {
        req.as_object()
            .and_then(|o| o.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)))
            .map(|(_, v)| v.clone())
    };
    let method = get("Method")
        .and_then(|m| m.as_str().map(str::to_owned))
        .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        .ok_or_else(|| bad("has no method"))?;
    let url = get("Url")
        .and_then(|u| u.as_str().map(str::to_owned))
        .ok_or_else(|| bad("has no URL"))?;
    let uri = match url::Url::parse(&url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        },
        Err(_) if url.starts_with('/') => url,
        Err(_) => return Err(bad("has a URL that cannot be read")),
    };
    let mut builder = Request::builder().method(method).uri(uri);
    let mut content_type = String::new();
    if let Some(Value::Object(headers)) = get("Headers") {
        for (name, values) in headers {
            let values: Vec<String> = match values {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            let Ok(name) = HeaderName::try_from(name.as_str()) else {
                continue;
            };
            if name == axum::http::header::CONTENT_LENGTH {
                continue;
            }
            for v in values {
                if name == axum::http::header::CONTENT_TYPE {
                    content_type = v.to_ascii_lowercase();
                }
                if let Ok(v) = HeaderValue::try_from(v) {
                    builder = builder.header(name.clone(), v);
                }
            }
        }
    }
    let body = match get("Body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s))
            if content_type.starts_with("application/octet-stream")
                || content_type.starts_with("multipart/") =>
        {
            invocation::base64_decode_lenient(&s).unwrap_or_else(|| s.into_bytes())
        }
        Some(Value::String(s)) => s.into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    builder
        .body(Body::from(body))
        .map_err(|e| bad(&format!("cannot be rebuilt: {e}")))
}

/// The `Outputs` for `response`: `res` plus the attached [`OutputBindings`].
pub async fn response_to_outputs(response: Response, res: &str) -> InvokeResponse {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        if name == axum::http::header::CONTENT_LENGTH {
            continue;
        }
        headers.insert(
            name.as_str().to_owned(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
            _ => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        }
    };
    let mut answer = InvokeResponse::new().output(
        res,
        json!({"statusCode": parts.status.as_u16(), "headers": headers, "body": body}),
    );
    // Output bindings other than `res` are written by the host only for a successful answer;
    // an error response carries none, unless its handler marked them as written anyway.
    if (parts.status.is_success() || parts.extensions.get::<OutputsOnFailure>().is_some())
        && let Some(OutputBindings(bindings)) = parts.extensions.get::<OutputBindings>()
    {
        for (name, value) in bindings {
            answer.outputs.insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Runs `router` on the request inside `envelope` and answers the invocation.
pub async fn invoke_http(
    router: Router,
    envelope: InvokeRequest,
    trigger: &str,
    res: &str,
) -> InvokeResponse {
    invoke_http_from(
        router,
        envelope,
        trigger,
        res,
        &axum::http::HeaderMap::new(),
    )
    .await
}

/// The headers of the invocation request itself that the request inside the envelope takes
/// over: the host's correlation id and trace context win over the client's (the host kept the
/// client's when they were sane, and made new ones otherwise, which it answers with), and the
/// invocation id is the invocation's.
const FROM_INVOCATION: [&str; 3] = [
    crate::correlation::HEADER,
    "traceparent",
    crate::invocation::INVOCATION_ID_HEADER,
];

/// [`invoke_http`] for an invocation that came with `invocation_headers`: the request inside
/// the envelope carries the invocation's correlation id, `traceparent` and invocation id
/// (see [`FROM_INVOCATION`]), so the app logs and answers the same ids the host does.
pub async fn invoke_http_from(
    router: Router,
    envelope: InvokeRequest,
    trigger: &str,
    res: &str,
    invocation_headers: &axum::http::HeaderMap,
) -> InvokeResponse {
    let request = request_from_envelope(&envelope, trigger).map(|mut request| {
        for name in FROM_INVOCATION {
            if let Some(value) = invocation_headers.get(name) {
                request.headers_mut().insert(name, value.clone());
            }
        }
        request
    });
    let response = match request {
        Ok(request) => match router.oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
        Err(e) => axum::response::IntoResponse::into_response(crate::ApiError(e)),
    };
    response_to_outputs(response, res).await
}

/// The `POST /{FunctionName}` route of an envelope-mode HTTP function served by `router`.
pub fn http_function(router: Router, trigger: &'static str, res: &'static str) -> MethodRouter {
    post(
        move |headers: axum::http::HeaderMap, axum::Json(envelope): axum::Json<InvokeRequest>| {
            let router = router.clone();
            async move { axum::Json(invoke_http_from(router, envelope, trigger, res, &headers).await) }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;

    fn app() -> Router {
        Router::new().route(
            "/api/echo/{id}",
            post(|axum::extract::Path(id): axum::extract::Path<String>, headers: axum::http::HeaderMap, body: String| async move {
                let mut response = axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(json!({"id": id, "auth": headers.get("authorization").and_then(|v| v.to_str().ok()), "body": body})),
                ));
                let mut out = OutputBindings::default();
                out.push("msg", json!({"jobId": id}));
                response.extensions_mut().insert(out);
                response
            }),
        )
    }

    #[tokio::test]
    async fn an_envelope_request_runs_the_router_and_answers_res_and_output_bindings() {
        let envelope: InvokeRequest = serde_json::from_value(json!({
            "Data": {"req": {"Url": "http://localhost:7071/api/echo/42?x=1", "Method": "POST",
                "Headers": {"Authorization": ["Bearer abc"], "Content-Type": ["application/json"]},
                "Body": "{\"a\":1}"}},
            "Metadata": {}
        }))
        .unwrap();
        let answer = invoke_http(app(), envelope, "req", "res").await;
        let res = &answer.outputs["res"];
        assert_eq!(res["statusCode"], 202);
        assert_eq!(res["body"]["id"], "42");
        assert_eq!(res["body"]["auth"], "Bearer abc");
        assert_eq!(res["body"]["body"], "{\"a\":1}");
        assert_eq!(answer.outputs["msg"], json!([{"jobId": "42"}]));
    }

    #[tokio::test]
    async fn the_request_inside_takes_the_invocations_correlation_and_invocation_ids() {
        let router = crate::with_common_layers(Router::new(), "test");
        let envelope: InvokeRequest = serde_json::from_value(json!({
            "Data": {"req": {"Url": "http://localhost/api/nowhere", "Method": "GET",
                "Headers": {"X-Correlation-Id": ["not sane!"]}}}
        }))
        .unwrap();
        let mut invocation = axum::http::HeaderMap::new();
        invocation.insert(crate::correlation::HEADER, "host-made-id".parse().unwrap());
        invocation.insert(
            crate::invocation::INVOCATION_ID_HEADER,
            "inv-1".parse().unwrap(),
        );
        let answer = invoke_http_from(router, envelope, "req", "res", &invocation).await;
        let res = &answer.outputs["res"];
        assert_eq!(res["statusCode"], 404);
        assert_eq!(res["body"]["correlationId"], "host-made-id");
        assert_eq!(res["headers"]["x-correlation-id"], "host-made-id");
    }

    #[tokio::test]
    async fn an_error_response_carries_no_output_bindings() {
        let envelope: InvokeRequest = serde_json::from_value(json!({
            "Data": {"req": {"Url": "http://localhost/api/nowhere", "Method": "GET", "Headers": {}}}
        }))
        .unwrap();
        let answer = invoke_http(app(), envelope, "req", "res").await;
        assert_eq!(answer.outputs["res"]["statusCode"], 404);
        assert!(!answer.outputs.contains_key("msg"));
    }
}
