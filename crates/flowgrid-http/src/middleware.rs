//! The request middleware shared by every app: correlation id and traceparent, the Functions
//! invocation id, body limit, problem+json for unmatched routes, and one access-log line per
//! request, where each failure is logged once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;

use super::correlation;
use crate::error::LoggedError;
use crate::otel;
use crate::{ApiError, Error};

/// Per-request facts filled in while the request is served, read by the access log.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    tenant: Arc<OnceLock<String>>,
}

impl RequestContext {
    /// Records the tenant the request was authenticated for.
    pub fn set_tenant(&self, tenant: &str) {
        let _ = self.tenant.set(tenant.to_owned());
    }
}

/// Wraps an app's router with the layers every app has: the body limit, problem+json for
/// unknown routes and methods, correlation ids and the access log. `app` names the app in logs.
pub fn with_common_layers(router: Router, app: &'static str) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(super::body_limit_bytes()))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            observe(app, req, next)
        }))
}

/// The function name of each (app, method, axum route), for the `faas.name` of spans.
type FunctionNames = HashMap<(&'static str, String, String), String>;
static FUNCTIONS: OnceLock<Mutex<FunctionNames>> = OnceLock::new();

/// Records the names of `app`'s HTTP functions, so its request spans carry `faas.name`.
pub fn register_functions(app: &'static str, functions: &[crate::function::Function]) {
    let names = FUNCTIONS.get_or_init(Mutex::default);
    let mut names = names.lock().unwrap_or_else(PoisonError::into_inner);
    for f in functions {
        if let crate::function::Trigger::ServiceBus(entity) = &f.trigger {
            ENTITIES
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((app, f.name.clone()), entity.clone());
            continue;
        }
        let (crate::function::Trigger::Http { method, route }
        | crate::function::Trigger::HttpEnvelope { method, route }) = &f.trigger
        else {
            continue;
        };
        names.insert(
            (
                app,
                method.to_ascii_uppercase(),
                crate::function::axum_path(route),
            ),
            f.name.clone(),
        );
    }
}

fn function_of(app: &'static str, method: &str, route: &str) -> Option<String> {
    let names = FUNCTIONS
        .get()?
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    names
        .get(&(app, method.to_owned(), route.to_owned()))
        .cloned()
}

/// The route template the request matched, or its path when none did.
enum Route {
    Matched(MatchedPath),
    Unmatched(String),
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Matched(matched) => matched.as_str(),
            Route::Unmatched(path) => path,
        }
    }
}

async fn not_found() -> ApiError {
    ApiError(Error::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError(Error::MethodNotAllowed)
}

async fn observe(app: &'static str, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let correlation_id = correlation::from_headers(req.headers());
    let invocation_id = req.headers().get("x-azure-functions-invocationid").cloned();
    let method = req.method().clone();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(matched) => Route::Matched(matched.clone()),
        None => Route::Unmatched(req.uri().path().to_owned()),
    };
    let route = route.as_str();
    let context = RequestContext::default();
    req.extensions_mut().insert(context.clone());
    let probe = method == Method::GET && route == "/";

    // The server span (when traces are exported): a child of the caller's `traceparent`; the
    // request goes on carrying this span's, so what the handler sends (a job message, events)
    // names it as the parent.
    let mut span = if probe || !otel::enabled() {
        None
    } else {
        otel::Span::remote(
            "",
            otel::Kind::Server,
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
        )
    };
    let traceparent = match &span {
        Some(span) => {
            let traceparent = span.traceparent();
            if let Ok(v) = HeaderValue::from_str(&traceparent) {
                req.headers_mut().insert("traceparent", v);
            }
            traceparent
        }
        None => correlation::traceparent(req.headers()),
    };

    let served = correlation::scope(correlation_id.clone(), next.run(req));
    let mut response = match &span {
        // Boxed, so that the request's future is no larger when export is off.
        Some(s) => Box::pin(otel::within_context(Some(s.context()), served)).await,
        None => served.await,
    };

    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        headers.insert(correlation::HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&traceparent) {
        headers.insert("traceparent", v);
    }
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let tenant = context.tenant.get().map(String::as_str).unwrap_or("");
    let invocation_id = invocation_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let trace_id = traceparent.get(3..35).unwrap_or("");
    let (method, correlation_id) = (method.as_str(), correlation_id.as_str());
    let error = response
        .extensions()
        .get::<LoggedError>()
        .map(|e| e.0.as_str());
    if probe {
        // The host's readiness and latency probe: frequent and uninteresting.
        return response;
    }
    crate::api_requests::record(app, tenant, method, route, status);
    if let Some(span) = &mut span {
        span.rename(format!("{method} {route}"));
        span.set("http.request.method", method);
        span.set("http.route", route);
        span.set("http.response.status_code", status);
        span.set("flowgrid.app", app);
        if let Some(function) = function_of(app, method, route) {
            span.set("faas.name", function);
        }
        span.set("faas.trigger", "http");
        if !tenant.is_empty() {
            span.set("flowgrid.tenant", tenant);
        }
        span.set("flowgrid.correlation_id", correlation_id);
        if !invocation_id.is_empty() {
            span.set("faas.invocation_id", invocation_id);
        }
        if status >= 500 {
            span.set("error.type", status.to_string());
            span.fail(error.unwrap_or("server error"));
        }
        otel::record_request(method, route, status, duration_ms / 1000.0);
    }
    match error {
        Some(error) if status >= 500 => tracing::error!(
            app,
            http.method = method,
            http.route = route,
            http.status = status,
            duration_ms,
            tenant,
            correlation_id,
            trace_id,
            invocation_id,
            error,
            "request failed"
        ),
        Some(error) => tracing::info!(
            app,
            http.method = method,
            http.route = route,
            http.status = status,
            duration_ms,
            tenant,
            correlation_id,
            trace_id,
            invocation_id,
            error,
            "request rejected"
        ),
        None => tracing::info!(
            app,
            http.method = method,
            http.route = route,
            http.status = status,
            duration_ms,
            tenant,
            correlation_id,
            trace_id,
            invocation_id,
            "request served"
        ),
    }
    response
}

/// The Service Bus entity of each (app, function) with a Service Bus trigger.
static ENTITIES: OnceLock<Mutex<HashMap<(&'static str, String), String>>> = OnceLock::new();

/// Wraps `app`'s Service Bus and timer functions (`POST /{Function}`): when traces are
/// exported, each invocation is a span (`process <queue>`, consumer; a timer's, server) with
/// the function, trigger, invocation id, correlation id and tenant. A message whose body
/// carries a `traceparent` (a job message, a CloudEvent) continues that trace, linked to the
/// host's invocation; otherwise the host's `traceparent` is the parent. The invocation goes on
/// under the span, so its steps, calls and messages are its children. Off, it only passes the
/// request on. Envelope-mode HTTP functions are not wrapped (their request gets the request
/// span inside).
pub fn invocation_spans(router: Router, app: &'static str) -> Router {
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        invocation(app, req, next)
    }))
}

async fn invocation(app: &'static str, req: Request, next: Next) -> Response {
    if !otel::enabled() {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, crate::invocation_body_limit()).await {
        Ok(b) => b,
        Err(_) => {
            return axum::response::IntoResponse::into_response(ApiError(Error::PayloadTooLarge {
                limit_bytes: crate::invocation_body_limit(),
            }));
        }
    };
    let function = parts.uri.path().trim_start_matches('/').to_owned();
    let envelope = serde_json::from_slice::<crate::invocation::InvokeRequest>(&bytes).ok();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let host_parent = header("traceparent");
    let mut span = match &envelope {
        Some(e) if e.data.contains_key(crate::trigger::MESSAGE_BINDING) => {
            let message = crate::trigger::trigger_bytes(e, crate::trigger::MESSAGE_BINDING)
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .unwrap_or_default();
            let entity = ENTITIES.get().and_then(|m| {
                m.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&(app, function.clone()))
                    .cloned()
            });
            let queue = entity.clone().unwrap_or_else(|| function.clone());
            let body_parent = message["traceparent"]
                .as_str()
                .filter(|tp| otel::SpanContext::parse(tp).is_some());
            let parent = body_parent.or(host_parent.as_deref());
            let Some(mut span) = otel::Span::remote(
                format!("process {}", queue.split('/').next().unwrap_or(&queue)),
                otel::Kind::Consumer,
                parent,
            ) else {
                return next.run(Request::from_parts(parts, bytes.into())).await;
            };
            if body_parent.is_some()
                && let Some(host) = host_parent.as_deref().and_then(otel::SpanContext::parse)
            {
                span.link(host);
            }
            span.set("faas.trigger", "pubsub");
            span.set("messaging.system", "servicebus");
            span.set("messaging.operation.name", "process");
            span.set("messaging.operation.type", "process");
            if let Some(entity) = entity {
                match entity.split_once('/') {
                    Some((topic, subscription)) => {
                        span.set("messaging.destination.name", topic);
                        span.set("messaging.destination.subscription.name", subscription);
                    }
                    None => span.set("messaging.destination.name", entity),
                }
            }
            if let Some(id) = e
                .metadata
                .get("MessageId")
                .and_then(crate::invocation::decode_string)
            {
                span.set("messaging.message.id", id);
            }
            if let Some(n) = e
                .metadata
                .get("DeliveryCount")
                .and_then(crate::invocation::decode_u64)
            {
                span.set("messaging.servicebus.message.delivery_count", n);
            }
            let text = |k: &str| message[k].as_str().map(str::to_owned);
            if let Some(tenant) = text("tenantId").or_else(|| text("tenantid")) {
                span.set("flowgrid.tenant", tenant);
            }
            if let Some(job) = text("jobId") {
                span.set("flowgrid.job.id", job);
            }
            let correlation = text("correlationId")
                .filter(|c| correlation::is_sane(c))
                .or_else(|| header(correlation::HEADER));
            if let Some(c) = correlation {
                span.set("flowgrid.correlation_id", c);
            }
            span
        }
        Some(e) if e.data.contains_key(crate::trigger::TIMER_BINDING) => {
            let Some(mut span) =
                otel::Span::remote(function.clone(), otel::Kind::Server, host_parent.as_deref())
            else {
                return next.run(Request::from_parts(parts, bytes.into())).await;
            };
            span.set("faas.trigger", "timer");
            if let Some(c) = header(correlation::HEADER) {
                span.set("flowgrid.correlation_id", c);
            }
            span
        }
        _ => return next.run(Request::from_parts(parts, bytes.into())).await,
    };
    span.set("faas.name", function.as_str());
    span.set("flowgrid.app", app);
    if let Some(id) = header(crate::invocation::INVOCATION_ID_HEADER) {
        span.set("faas.invocation_id", id);
    }
    if let Ok(v) = HeaderValue::from_str(&span.traceparent()) {
        parts.headers.insert("traceparent", v);
    }
    let response = otel::within_context(
        Some(span.context()),
        next.run(Request::from_parts(parts, bytes.into())),
    )
    .await;
    let status = response.status().as_u16();
    if status >= 500 {
        span.set("error.type", status.to_string());
        span.fail(format!("the invocation failed ({status})"));
    }
    response
}
