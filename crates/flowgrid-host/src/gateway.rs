//! The HTTP gateway: every request gets a correlation id, is routed to a function, checked
//! against the body limit and the rate limit, sent to one of the app's instances (the app's
//! balancing strategy; an idempotent request whose instance died is retried on another), then
//! forwarded as is or wrapped in the invocation envelope; `GET /api/health` reports every app
//! and its instances. One access-log line per request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowgrid_domain::Error;
use flowgrid_http::ErrorResponse as _;
use flowgrid_http::{correlation, otel};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::canary::Version;
use crate::config::{FunctionDef, Trigger};
use crate::instances::{Lease, Pool};
use crate::invoke::{self, CallContext};
use crate::runtime::{AppRt, RouteEntry, Shared, call, send_all};
use crate::supervisor::{State as AppState, Status};

/// Every request: correlation id, routing, limits, then forwarding or the envelope; one access-log line.
pub(crate) async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let start = Instant::now();
    let correlation_id = correlation::from_headers(req.headers());
    // The gateway's server span (when traces are exported), a child of the client's
    // `traceparent`; the handler gets this span's as its parent.
    let mut span = if otel::enabled() {
        otel::Span::remote(
            req.method().as_str(),
            otel::Kind::Server,
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
        )
    } else {
        None
    };
    let traceparent = match &span {
        Some(span) => span.traceparent(),
        None => correlation::traceparent(req.headers()),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let ctx = CallContext::new(correlation_id.clone(), traceparent);
    let (mut response, target) = otel::within(
        &span,
        correlation::scope(correlation_id.clone(), serve(&sh, req, &ctx)),
    )
    .await;
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(correlation::HEADER, v);
    }
    let (app, function) = target.unwrap_or_default();
    if let Some(span) = &mut span {
        let route = route_of(&sh, &app, &function);
        let status = response.status().as_u16();
        span.rename(match &route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        });
        span.set("http.request.method", method.as_str());
        span.set("url.path", path.as_str());
        span.set("http.response.status_code", status);
        if let Some(route) = &route {
            span.set("http.route", route.as_str());
        }
        if !app.is_empty() {
            span.set("flowgrid.app", app.as_str());
            span.set("faas.name", function.as_str());
            span.set("faas.invocation_id", ctx.invocation_id.as_str());
        }
        span.set("flowgrid.correlation_id", correlation_id.as_str());
        if status >= 500 {
            span.set("error.type", status.to_string());
            span.fail(format!("HTTP {status}"));
        }
        otel::record_request(
            method.as_str(),
            route.as_deref().unwrap_or(""),
            status,
            start.elapsed().as_secs_f64(),
        );
    }
    // A request a handler answered is logged by the handler (with its tenant and error): the
    // host's line is then at debug level, so it is not shown twice.
    macro_rules! access {
        ($level:expr) => {
            tracing::event!(
                target: "access",
                $level,
                method = %method,
                path = %path,
                status = response.status().as_u16(),
                duration_ms = start.elapsed().as_secs_f64() * 1000.0,
                app = %app,
                function = %function,
                correlation_id = %correlation_id,
                invocation_id = %ctx.invocation_id,
                "{method} {path} {}",
                response.status().as_u16()
            )
        };
    }
    if response
        .extensions()
        .get::<crate::output::AnsweredByHandler>()
        .is_some()
    {
        access!(tracing::Level::DEBUG);
    } else {
        access!(tracing::Level::INFO);
    }
    response
}

/// The route template (`/api/agents/{id}`) of an HTTP function, for its spans and metrics.
fn route_of(sh: &Shared, app: &str, function: &str) -> Option<String> {
    let f = sh
        .apps
        .iter()
        .find(|a| a.name == app)?
        .functions
        .iter()
        .find(|f| f.name == function)?;
    match &f.trigger {
        Trigger::Http { route, .. } => {
            Some(format!("/{}/{route}", sh.config.host.route_prefix).replace("//", "/"))
        }
        _ => None,
    }
}

/// The response, and the (app, function) it went to, for the access log.
type Served = (Response, Option<(String, String)>);

async fn serve(sh: &Arc<Shared>, req: Request, ctx: &CallContext) -> Served {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The host's admin API, outside the route prefix (as the Functions host's `/admin`).
    if segments.first() == Some(&"admin") {
        let (parts, body) = req.into_parts();
        let answer =
            crate::admin::serve(sh, &segments[1..], &parts.method, &parts.headers, body).await;
        return (answer, Some(("host".into(), "admin".into())));
    }
    let Some(rest) = strip_route_prefix(&segments, &sh.config.host.route_prefix) else {
        return (Error::NotFound.into_response(), None);
    };
    if rest.len() == 1 && rest[0].eq_ignore_ascii_case("health") {
        return serve_health(sh, req.method(), ctx).await;
    }
    if let Some(answer) = crate::docs::serve(sh, rest, req.method(), ctx).await {
        return (answer, Some(("host".into(), "docs".into())));
    }
    let (route, params) = match find_route(&sh.routes, rest, req.method()) {
        Ok(found) => found,
        Err(allowed) => return (not_routed(allowed), None),
    };
    let app = &sh.apps[route.app];
    let f = &app.functions[route.function];
    let target = Some((app.name.clone(), f.name.clone()));
    let tenant = match check_limits(sh, req.headers()).await {
        Ok(tenant) => tenant,
        Err(refused) => return (refused, target),
    };
    let client = client_key(req.headers());
    // With a canary running: the version by the verified tenant's bucket (docs/scaling.md).
    let canary = match app.canary.active() {
        Some(c) => {
            let tenant = match tenant {
                Some(t) => Some(t),
                // Not looked up yet (the rate limit is off).
                None if !sh.limiter.enabled() => tenant_of(sh, req.headers()).await,
                None => None,
            };
            let version = c.route(tenant.as_deref());
            Some((c, version))
        }
        None => None,
    };
    let pool = match &canary {
        Some((c, Version::Canary)) => c.pool.clone(),
        _ => app.pool.clone(),
    };
    let started = Instant::now();
    let mut response = if f.forwarded {
        forward(sh, app, &pool, req, ctx, client.as_deref()).await
    } else {
        envelope_http(sh, app, &pool, f, req, params, ctx, client.as_deref()).await
    };
    if let Some((c, version)) = canary {
        c.stats(version)
            .record(response.status().as_u16(), started.elapsed());
        response.headers_mut().insert(
            "x-flowgrid-version",
            HeaderValue::from_static(version.name()),
        );
    }
    (response, target)
}

/// The path segments after the route prefix; `None` for a path outside it.
fn strip_route_prefix<'a, 'p>(segments: &'a [&'p str], prefix: &str) -> Option<&'a [&'p str]> {
    if prefix.is_empty() {
        Some(segments)
    } else if segments
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case(prefix))
    {
        Some(&segments[1..])
    } else {
        None
    }
}

async fn serve_health(sh: &Shared, method: &Method, ctx: &CallContext) -> Served {
    if method != Method::GET && method != Method::HEAD {
        return (allow(Error::MethodNotAllowed.into_response(), "GET"), None);
    }
    (
        health(sh, ctx).await,
        Some(("host".into(), "health".into())),
    )
}

/// The first route (in precedence order) matching the path and the method, with its route
/// values; otherwise the methods of the routes matching the path.
fn find_route<'r>(
    routes: &'r [RouteEntry],
    rest: &[&str],
    method: &Method,
) -> Result<(&'r RouteEntry, BTreeMap<String, String>), Vec<String>> {
    let mut allowed: Vec<String> = Vec::new();
    for r in routes {
        if let Some(values) = r.template.matches(rest) {
            match &r.methods {
                Some(ms) if !ms.iter().any(|m| m == method.as_str()) => {
                    allowed.extend(ms.iter().cloned())
                }
                _ => return Ok((r, values)),
            }
        }
    }
    Err(allowed)
}

/// The 404, or the 405 naming the methods the path allows.
fn not_routed(mut allowed: Vec<String>) -> Response {
    if allowed.is_empty() {
        return Error::NotFound.into_response();
    }
    allowed.sort();
    allowed.dedup();
    allow(Error::MethodNotAllowed.into_response(), &allowed.join(", "))
}

/// The body limit (on `Content-Length`), then the rate limit of the request's tenant; the
/// verified tenant when the rate limit looked it up.
async fn check_limits(sh: &Shared, headers: &HeaderMap) -> Result<Option<String>, Response> {
    if let Some(len) = content_length(headers)
        && len > sh.gateway.body_limit as u64
    {
        return Err(Error::PayloadTooLarge {
            limit_bytes: sh.gateway.body_limit,
        }
        .into_response());
    }
    let tenant = if sh.limiter.enabled() {
        tenant_of(sh, headers).await
    } else {
        None
    };
    if let Err(retry_after_secs) = sh
        .limiter
        .check(tenant.as_deref().unwrap_or(crate::ratelimit::ANONYMOUS))
    {
        return Err(Error::TooManyRequests { retry_after_secs }.into_response());
    }
    Ok(tenant)
}

/// Tries of one request: the first instance and at most two others.
const MAX_ATTEMPTS: usize = 3;

/// An instance of the app for this request once one is ready (the app's strategy chooses), or
/// the 503 when none gets ready in time (at once when every instance is restarting, stopped or
/// failed). `tried` are the (instance, process) pairs that already failed this request.
async fn lease(
    sh: &Shared,
    app: &AppRt,
    pool: &Pool,
    client: Option<&str>,
    tried: &[(usize, Option<u32>)],
) -> Result<Lease, Response> {
    let init = sh.config.host.initialization_timeout;
    let wait = if tried.is_empty() { init * 4 } else { init };
    match pool.lease(client, tried, wait).await {
        Ok(lease) => Ok(lease),
        Err(_) => {
            let s = pool.status();
            tracing::warn!(app = %app.name, "app is {:?}: {}", s.state, s.reason.unwrap_or_default());
            Err(Error::Unavailable(format!("app {} is not running", app.name)).into_response())
        }
    }
}

/// A request that may be sent twice: GET, HEAD, PUT, DELETE (idempotent by RFC 9110), or one
/// carrying an `Idempotency-Key`.
fn retryable(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// The client an IP-hash app keeps on one instance: the first `X-Forwarded-For` address, else
/// `X-Real-IP` (every local client is 127.0.0.1, so behind a proxy this is the client).
fn client_key(headers: &HeaderMap) -> Option<String> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    first("x-forwarded-for").or_else(|| first("x-real-ip"))
}

fn allow(mut r: Response, methods: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(methods) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The tenant of a verified bearer token, if any (keys are re-read on an unknown `kid`, as the
/// handlers do, so a key created after the host started is trusted).
async fn tenant_of(sh: &Shared, headers: &HeaderMap) -> Option<String> {
    let v = sh.verifier.as_ref()?;
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))?;
    v.authenticate(token.trim()).await.ok().map(|c| c.tid)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// Forwarding mode: same method, original path and query, all headers, the body only when
/// `Content-Length > 0`; the answer is returned as is. A transport failure counts against the
/// instance (`max_fails`); an idempotent request is then sent to another instance (its body was
/// kept for that), up to [`MAX_ATTEMPTS`] in all.
async fn forward(
    sh: &Shared,
    app: &AppRt,
    pool: &Pool,
    req: Request,
    ctx: &CallContext,
    client: Option<&str>,
) -> Response {
    let (parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let has_body = content_length(&parts.headers).is_some_and(|n| n > 0);
    let again = retryable(&parts.method, &parts.headers);
    let mut stream = Some(body);
    let kept = if again && has_body {
        match read_body(stream.take().unwrap_or_default(), sh.gateway.body_limit).await {
            Ok(b) => Some(b),
            Err(refused) => return refused,
        }
    } else {
        None
    };
    let mut tried = Vec::new();
    loop {
        let lease = match lease(sh, app, pool, client, &tried).await {
            Ok(l) => l,
            Err(refused) => return refused,
        };
        let mut builder = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(format!("http://127.0.0.1:{}{pq}", lease.port));
        if let Some(h) = builder.headers_mut() {
            forwarded_headers(h, &parts.headers, has_body, ctx);
        }
        let body = match (&kept, has_body) {
            (Some(b), _) => Body::from(b.clone()),
            (None, true) => stream.take().unwrap_or_default(),
            (None, false) => Body::empty(),
        };
        let Ok(out) = builder.body(body) else {
            return Error::BadRequest("the request cannot be forwarded".into()).into_response();
        };
        match sh.client.send(out).await {
            Ok(res) => {
                lease.instance.succeeded();
                let (mut parts, body) = res.into_parts();
                for h in HOP_BY_HOP {
                    parts.headers.remove(h);
                }
                parts.extensions.insert(crate::output::AnsweredByHandler);
                // In flight on its instance until the answer's body has been sent.
                let body = body.map_frame(move |frame| {
                    let _held = &lease;
                    frame
                });
                return Response::from_parts(parts, Body::new(body));
            }
            Err(e) => {
                lease.instance.failed(pool.fail_policy(), lease.pid);
                tried.push((lease.instance.ordinal, lease.pid));
                if !again || tried.len() >= MAX_ATTEMPTS {
                    return Error::Internal(format!("forwarding to the handler failed: {e}"))
                        .into_response();
                }
                tracing::warn!(app = %app.name, instance = lease.instance.ordinal,
                    "{} {pq}: {e}; idempotent, sent again to another instance", parts.method);
            }
        }
    }
}

/// The request's headers without the hop-by-hop ones (and without `Content-Length` when the body
/// is dropped), plus the host's invocation headers.
fn forwarded_headers(h: &mut HeaderMap, from: &HeaderMap, has_body: bool, ctx: &CallContext) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) && (has_body || name != header::CONTENT_LENGTH) {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(
        flowgrid_http::invocation::INVOCATION_ID_HEADER,
        header_value(&ctx.invocation_id),
    );
    h.insert(
        flowgrid_http::invocation::HOST_VERSION_HEADER,
        HeaderValue::from_static(invoke::HOST_VERSION),
    );
    h.insert(correlation::HEADER, header_value(&ctx.correlation_id));
    h.insert("traceparent", header_value(&ctx.traceparent));
    if !h.contains_key(header::USER_AGENT) {
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("Azure-Functions-Host/4.1037.0"),
        );
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Envelope mode for an HTTP-triggered function that also has other bindings.
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts and where it goes"
)]
async fn envelope_http(
    sh: &Shared,
    app: &AppRt,
    pool: &Pool,
    f: &FunctionDef,
    req: Request,
    params: BTreeMap<String, String>,
    ctx: &CallContext,
    client: Option<&str>,
) -> Response {
    let Trigger::Http { name: binding, .. } = &f.trigger else {
        return Error::Internal("not an http function".into()).into_response();
    };
    let (parts, body) = req.into_parts();
    let has_length = content_length(&parts.headers).is_some();
    let bytes = match read_body(body, sh.gateway.body_limit).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let input = invoke::HttpTriggerInput {
        url: request_url(&parts),
        method: parts.method.as_str(),
        query: parts.uri.query(),
        headers: &parts.headers,
        params: &params,
        body: has_length.then_some(&bytes[..]),
    };
    let envelope = invoke::http_envelope(&f.name, binding, &input);
    let again = retryable(&parts.method, &parts.headers);
    let mut tried = Vec::new();
    let answer = loop {
        let lease = match lease(sh, app, pool, client, &tried).await {
            Ok(l) => l,
            Err(refused) => return refused,
        };
        match call(sh, app, &lease.instance, lease.port, f, ctx, &envelope).await {
            Ok(a) => {
                lease.instance.succeeded();
                break a;
            }
            // An idempotent request whose instance died is invoked again on another.
            Err(e)
                if again
                    && tried.len() + 1 < MAX_ATTEMPTS
                    && !sh.client.probe(lease.port).await =>
            {
                lease.instance.failed(pool.fail_policy(), lease.pid);
                tried.push((lease.instance.ordinal, lease.pid));
                tracing::warn!(app = %app.name, function = %f.name, instance = lease.instance.ordinal,
                    "invocation failed: {e}; idempotent, invoked again on another instance");
            }
            Err(e) => {
                tracing::error!(app = %app.name, function = %f.name, invocation_id = %ctx.invocation_id, "invocation failed: {e}");
                return Error::Internal(format!("invocation failed: {e}")).into_response();
            }
        }
    };
    let writes = match invoke::writes(f, &answer) {
        Ok(w) => w,
        Err(e) => return Error::Internal(format!("invocation output: {e}")).into_response(),
    };
    // The handler answered the invocation and logged the request under its route.
    let mut response = http_answer(sh, writes).await;
    response
        .extensions_mut()
        .insert(crate::output::AnsweredByHandler);
    response
}

/// The whole body, or the 413 when it is over the limit.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(Error::PayloadTooLarge { limit_bytes: limit }.into_response()),
    }
}

/// The request's URL as the host gives it to the function (`http://<Host header><path?query>`).
fn request_url(parts: &axum::http::request::Parts) -> String {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!(
        "http://{host}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    )
}

/// Sends the output messages, then answers with the `http` output (200 without one).
async fn http_answer(sh: &Shared, writes: invoke::Writes) -> Response {
    if let Err(e) = send_all(sh, writes.messages).await {
        return Error::Internal(format!("output binding: {e}")).into_response();
    }
    match writes.http {
        Some(out) => {
            let mut r = (out.status, out.body).into_response();
            r.headers_mut().extend(out.headers);
            r
        }
        None => StatusCode::OK.into_response(),
    }
}

/// `GET /api/health`: every app's process state, restarts and deep health.
async fn health(sh: &Shared, ctx: &CallContext) -> Response {
    let mut apps = serde_json::Map::new();
    let mut healthy = true;
    for app in &sh.apps {
        let (ok, entry) = app_health(sh, app, ctx).await;
        healthy &= ok;
        apps.insert(app.name.clone(), entry);
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"status": if healthy { "healthy" } else { "unhealthy" }, "apps": apps})),
    )
        .into_response()
}

/// One app's entry of the health answer, and whether the app is healthy.
async fn app_health(sh: &Shared, app: &AppRt, ctx: &CallContext) -> (bool, Value) {
    let s = app.pool.status();
    let mut entry = json!({"state": s.state, "restarts": s.restarts, "reason": s.reason, "pid": s.pid,
            "crashesInARow": s.crashes, "backoffMs": s.backoff_ms});
    let deep = deep_health(sh, app, &s, ctx).await;
    let ok = s.state == AppState::Ready
        && deep
            .get("status")
            .and_then(Value::as_u64)
            .is_some_and(|c| (200..300).contains(&c));
    if let Some(obj) = entry.as_object_mut() {
        obj.insert("healthy".into(), Value::Bool(ok));
        obj.insert("health".into(), deep);
        obj.insert("instances".into(), app.pool.instances_json());
        obj.insert("scale".into(), app.pool.scale_json());
        obj.insert("canary".into(), app.canary.json(&app.pool.program()));
    }
    (ok, entry)
}

/// The answer of the app's own `health/<app>` function (null while the app is not ready).
async fn deep_health(sh: &Shared, app: &AppRt, s: &Status, ctx: &CallContext) -> Value {
    let prefix = &sh.config.host.route_prefix;
    let (AppState::Ready, Some(port)) = (s.state, s.port) else {
        return Value::Null;
    };
    let url = format!("http://127.0.0.1:{port}/{prefix}/health/{}", app.name);
    let req = hyper::Request::get(url)
        .header(correlation::HEADER, &ctx.correlation_id)
        .body(Body::empty());
    match req {
        Ok(req) => {
            match tokio::time::timeout(Duration::from_secs(3), sh.client.send_collect(req)).await {
                Ok(Ok((status, _, body))) => {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    json!({"status": status.as_u16(), "body": body})
                }
                Ok(Err(e)) => json!({"status": null, "error": e}),
                Err(_) => json!({"status": null, "error": "no answer within 3 s"}),
            }
        }
        Err(e) => json!({"status": null, "error": e.to_string()}),
    }
}
