//! The request middleware shared by every app: correlation id and traceparent, the Functions
//! invocation id, body limit, problem+json for unmatched routes, and one access-log line per
//! request, where each failure is logged once.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;

use super::correlation;
use crate::error::LoggedError;
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
        .layer(DefaultBodyLimit::max(super::BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            observe(app, req, next)
        }))
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
    let traceparent = correlation::traceparent(req.headers());
    let invocation_id = req.headers().get("x-azure-functions-invocationid").cloned();
    let method = req.method().clone();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(matched) => Route::Matched(matched.clone()),
        None => Route::Unmatched(req.uri().path().to_owned()),
    };
    let route = route.as_str();
    let context = RequestContext::default();
    req.extensions_mut().insert(context.clone());

    let mut response = correlation::scope(correlation_id.clone(), next.run(req)).await;

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
    if method == Method::GET.as_str() && route == "/" {
        // The host's readiness and latency probe: frequent and uninteresting.
        return response;
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
