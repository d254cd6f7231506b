//! The running host: one listener serving every app's routes, one supervised handler per app,
//! the Service Bus pumps and the timers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use flowgrid_domain::Error;
use flowgrid_http::ErrorResponse as _;
use flowgrid_http::auth::TokenVerifier;
use flowgrid_http::correlation;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::bus::{Bus, BusSettings, Target, TimerStatus};
use crate::client::HttpClient;
use crate::config::{Config, FunctionDef, OutputKind, Trigger};
use crate::invoke::{self, CallContext};
use crate::ratelimit::RateLimiter;
use crate::supervisor::{self, Launch, State as AppState, Status};
use crate::timer::Schedule;

/// How to run a host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The app root: `host.json`, `local.settings*.json`, `functions/`.
    pub root: PathBuf,
    /// Where the handler binaries `flowgrid-<app>` are.
    pub bin_dir: PathBuf,
    /// The data folder (`servicebus.db`, and `FLOWGRID_DATA_DIR` for the handlers).
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
}

/// One app at run time.
struct AppRt {
    name: String,
    status: watch::Receiver<Status>,
    /// Asks the supervisor to kill and restart the handler (after a function timeout).
    restart: Arc<tokio::sync::Notify>,
    calls: Arc<Semaphore>,
    functions: Vec<FunctionDef>,
}

struct RouteEntry {
    app: usize,
    function: usize,
    methods: Option<Vec<String>>,
    template: crate::route::RouteTemplate,
}

/// Limits and gateway settings read from the app settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `FLOWGRID_RATE_LIMIT_RPS` (default 100): tokens added per second per tenant.
    pub rate_limit_rps: f64,
    /// `FLOWGRID_RATE_LIMIT_BURST` (default 200): bucket size.
    pub rate_limit_burst: f64,
    /// `FLOWGRID_BODY_LIMIT_BYTES` (default 1 MiB).
    pub body_limit: usize,
}

struct Shared {
    config: Config,
    apps: Vec<AppRt>,
    routes: Vec<RouteEntry>,
    client: HttpClient,
    bus: Arc<Bus>,
    limiter: RateLimiter,
    verifier: Option<TokenVerifier>,
    gateway: GatewaySettings,
    shutdown: watch::Receiver<bool>,
}

/// A running host. Dropping it without [`Host::shutdown`] kills the handlers too.
pub struct Host {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn parse_setting<T: std::str::FromStr>(config: &Config, name: &str, default: T) -> Result<T> {
    match config.setting(name) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("setting {name}: {v:?} is not a valid number")),
    }
}

impl Host {
    /// Loads the configuration, opens the bus, starts every handler and the listener.
    /// `notice` receives one-line progress and notices.
    pub async fn start(opts: HostOptions, notice: &mut dyn FnMut(String)) -> Result<Host> {
        let config = Config::load(&opts.root, notice)?;
        let data_dir = absolute(&opts.data_dir)?;
        let bus_settings = BusSettings {
            lock_duration: Duration::from_secs(
                parse_setting(&config, "FLOWGRID_SB_LOCK_DURATION_SECS", 60u64)?.max(1),
            ),
            max_delivery_count: parse_setting(&config, "FLOWGRID_SB_MAX_DELIVERY_COUNT", 10u32)?
                .max(1),
            duplicate_window: Duration::from_secs(parse_setting(
                &config,
                "FLOWGRID_SB_DUPLICATE_DETECTION_WINDOW_SECS",
                600u64,
            )?),
        };
        let gateway = GatewaySettings {
            rate_limit_rps: parse_setting(&config, "FLOWGRID_RATE_LIMIT_RPS", 100.0f64)?,
            rate_limit_burst: parse_setting(&config, "FLOWGRID_RATE_LIMIT_BURST", 200.0f64)?,
            body_limit: parse_setting(
                &config,
                "FLOWGRID_BODY_LIMIT_BYTES",
                flowgrid_http::BODY_LIMIT_BYTES,
            )?,
        };
        let bus = Arc::new(Bus::open(&data_dir.join("servicebus.db"), bus_settings)?);
        declare_entities(&bus, &config)?;
        let released = bus.release_all_locks()?;
        if released > 0 {
            notice(format!(
                "released {released} message lock(s) held by an earlier run; those messages are delivered again"
            ));
        }

        // The token verifier keys the rate limit on a verified tenant; without one every
        // request shares the anonymous bucket.
        let mut lookup_settings = config.settings.clone();
        lookup_settings.insert("FLOWGRID_DATA_DIR".into(), data_dir.display().to_string());
        let core_config = flowgrid_domain::config::Config::from_lookup(|name| {
            if name == "FLOWGRID_DATA_DIR" {
                lookup_settings.get(name).cloned()
            } else {
                config.setting(name)
            }
        })
        .ok();
        let verifier = core_config
            .as_ref()
            .and_then(|c| match TokenVerifier::from_config(c) {
                Ok(v) => Some(v),
                Err(e) => {
                    notice(format!(
                        "rate limits are not per tenant: cannot build the token verifier ({e})"
                    ));
                    None
                }
            });

        let timeout = config
            .host
            .function_timeout
            .map(|t| t + Duration::from_secs(60));
        let client = HttpClient::new(timeout);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut apps = Vec::new();
        for app in &config.apps {
            // Handlers inherit the host's environment; a setting from the settings file is added
            // only where that environment does not set the variable (environment wins, as the
            // docs say), so `FLOWGRID_STORE=cosmos flowgrid dev` works without editing files.
            let mut env: BTreeMap<String, String> = config
                .settings
                .iter()
                .filter(|(k, _)| std::env::var_os(k.as_str()).is_none())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            env.insert("FLOWGRID_DATA_DIR".into(), data_dir.display().to_string());
            env.entry("FUNCTIONS_WORKER_RUNTIME".into())
                .or_insert_with(|| "custom".into());
            env.insert(
                "AzureWebJobsScriptRoot".into(),
                opts.root.display().to_string(),
            );
            let args = config
                .host
                .arguments
                .iter()
                .map(|a| {
                    crate::config::expand(a, &config.settings).map_err(|e| {
                        anyhow::anyhow!("host.json: customHandler.description.arguments: {e}")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let launch = Launch {
                app: app.name.clone(),
                program: opts.bin_dir.join(format!("flowgrid-{}", app.name)),
                args,
                root: absolute(&opts.root)?,
                env,
                init_timeout: config.host.initialization_timeout,
            };
            let (tx, rx) = watch::channel(Status {
                state: AppState::Starting,
                port: None,
                pid: None,
                restarts: 0,
                reason: None,
            });
            notice(format!(
                "starting app {} ({})",
                app.name,
                launch.program.display()
            ));
            let restart = Arc::new(tokio::sync::Notify::new());
            tasks.push(tokio::spawn(supervisor::supervise(
                launch,
                client.clone(),
                tx,
                shutdown_rx.clone(),
                restart.clone(),
            )));
            apps.push(AppRt {
                name: app.name.clone(),
                status: rx,
                restart,
                calls: Arc::new(Semaphore::new(config.host.max_concurrent_calls)),
                functions: app.functions.clone(),
            });
        }
        let mut routes = Vec::new();
        for (ai, app) in apps.iter().enumerate() {
            for (fi, f) in app.functions.iter().enumerate() {
                if let Trigger::Http { methods, route, .. } = &f.trigger {
                    routes.push(RouteEntry {
                        app: ai,
                        function: fi,
                        methods: methods.clone(),
                        template: route.clone(),
                    });
                }
            }
        }
        routes.sort_by_key(|r| r.template.precedence());

        let shared = Arc::new(Shared {
            config,
            apps,
            routes,
            client,
            bus,
            limiter: RateLimiter::new(gateway.rate_limit_rps, gateway.rate_limit_burst),
            verifier,
            gateway,
            shutdown: shutdown_rx.clone(),
        });

        for (ai, app) in shared.apps.iter().enumerate() {
            for (fi, f) in app.functions.iter().enumerate() {
                match &f.trigger {
                    Trigger::ServiceBus { .. } => {
                        tasks.push(tokio::spawn(pump(shared.clone(), ai, fi)))
                    }
                    Trigger::Timer { .. } => {
                        tasks.push(tokio::spawn(timer_loop(shared.clone(), ai, fi)))
                    }
                    Trigger::Http { .. } => {}
                }
            }
        }

        let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| {
            format!("cannot listen on {} (is another `flowgrid dev` running? choose another port with --port)", opts.listen)
        })?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let graceful = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(graceful)
                .await
            {
                tracing::error!("the listener failed: {e}");
            }
        }));
        Ok(Host {
            addr,
            shared,
            shutdown: shutdown_tx,
            tasks,
        })
    }

    /// The address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL (`http://127.0.0.1:7071`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Service Bus namespace.
    pub fn bus(&self) -> Arc<Bus> {
        self.shared.bus.clone()
    }

    /// App names with their current status.
    pub fn statuses(&self) -> Vec<(String, Status)> {
        self.shared
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.status.borrow().clone()))
            .collect()
    }

    /// The HTTP routes, for the start-up banner: (app, methods, path).
    pub fn routes(&self) -> Vec<(String, String, String)> {
        let prefix = &self.shared.config.host.route_prefix;
        let mut routes = self
            .shared
            .routes
            .iter()
            .map(|r| {
                let methods = r
                    .methods
                    .as_ref()
                    .map_or_else(|| "ANY".to_owned(), |m| m.join(","));
                let path = if prefix.is_empty() {
                    format!("/{}", r.template)
                } else {
                    format!("/{prefix}/{}", r.template)
                };
                (self.shared.apps[r.app].name.clone(), methods, path)
            })
            .collect::<Vec<_>>();
        routes.sort_by(|a, b| (&a.2, &a.1).cmp(&(&b.2, &b.1)));
        routes
    }

    /// Waits until every app is ready, stopped or failed (or `timeout` passes).
    pub async fn settle(&self, timeout: Duration) {
        for app in &self.shared.apps {
            let mut rx = app.status.clone();
            let _ =
                tokio::time::timeout(timeout, rx.wait_for(|s| s.state != AppState::Starting)).await;
        }
    }

    /// Stops the listener, the pumps and timers, and kills every handler.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

fn declare_entities(bus: &Bus, config: &Config) -> Result<()> {
    for app in &config.apps {
        for f in &app.functions {
            if let Trigger::ServiceBus { entity, .. } = &f.trigger {
                match entity.split_once("/Subscriptions/") {
                    Some((t, s)) => bus.ensure_subscription(t, s)?,
                    None => bus.ensure_queue(entity)?,
                }
            }
            for o in &f.outputs {
                match &o.kind {
                    OutputKind::Queue(q) => bus.ensure_queue(q)?,
                    OutputKind::Topic(t) => bus.ensure_topic(t)?,
                    OutputKind::Http => {}
                }
            }
        }
    }
    Ok(())
}

/// Every request: correlation id, routing, limits, then forwarding or the envelope; one access-log line.
async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let start = Instant::now();
    let correlation_id = correlation::from_headers(req.headers());
    let traceparent = correlation::traceparent(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let ctx = CallContext::new(correlation_id.clone(), traceparent);
    let (mut response, target) =
        correlation::scope(correlation_id.clone(), serve(&sh, req, &ctx)).await;
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(correlation::HEADER, v);
    }
    let (app, function) = target.unwrap_or_default();
    tracing::info!(
        target: "access",
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
    );
    response
}

type Served = (Response, Option<(String, String)>);

async fn serve(sh: &Arc<Shared>, req: Request, ctx: &CallContext) -> Served {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let prefix = &sh.config.host.route_prefix;
    let rest: &[&str] = if prefix.is_empty() {
        &segments
    } else if segments
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case(prefix))
    {
        &segments[1..]
    } else {
        return (Error::NotFound.into_response(), None);
    };
    if rest.len() == 1 && rest[0].eq_ignore_ascii_case("health") {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return (allow(Error::MethodNotAllowed.into_response(), "GET"), None);
        }
        return (
            health(sh, ctx).await,
            Some(("host".into(), "health".into())),
        );
    }
    let mut allowed: Vec<String> = Vec::new();
    let mut found = None;
    for r in &sh.routes {
        if let Some(values) = r.template.matches(rest) {
            match &r.methods {
                Some(ms) if !ms.iter().any(|m| m == req.method().as_str()) => {
                    allowed.extend(ms.iter().cloned())
                }
                _ => {
                    found = Some((r, values));
                    break;
                }
            }
        }
    }
    let Some((route, params)) = found else {
        if allowed.is_empty() {
            return (Error::NotFound.into_response(), None);
        }
        allowed.sort();
        allowed.dedup();
        return (
            allow(Error::MethodNotAllowed.into_response(), &allowed.join(", ")),
            None,
        );
    };
    let app = &sh.apps[route.app];
    let f = &app.functions[route.function];
    let target = Some((app.name.clone(), f.name.clone()));

    if let Some(len) = content_length(req.headers())
        && len > sh.gateway.body_limit as u64
    {
        return (
            Error::PayloadTooLarge {
                limit_bytes: sh.gateway.body_limit,
            }
            .into_response(),
            target,
        );
    }
    let tenant = if sh.limiter.enabled() {
        tenant_of(sh, req.headers()).await
    } else {
        None
    };
    if let Err(retry_after_secs) = sh
        .limiter
        .check(tenant.as_deref().unwrap_or(crate::ratelimit::ANONYMOUS))
    {
        return (
            Error::TooManyRequests { retry_after_secs }.into_response(),
            target,
        );
    }
    let mut status = app.status.clone();
    let wait = sh.config.host.initialization_timeout * 4;
    let Some(port) = supervisor::wait_ready(&mut status, wait).await else {
        let s = app.status.borrow().clone();
        tracing::warn!(app = %app.name, "app is {:?}: {}", s.state, s.reason.unwrap_or_default());
        return (
            Error::Unavailable(format!("app {} is not running", app.name)).into_response(),
            target,
        );
    };
    let response = if f.forwarded {
        forward(sh, port, req, ctx).await
    } else {
        envelope_http(sh, app, f, port, req, params, ctx).await
    };
    (response, target)
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
/// `Content-Length > 0`; the answer is returned as is.
async fn forward(sh: &Shared, port: u16, req: Request, ctx: &CallContext) -> Response {
    let (parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let has_body = content_length(&parts.headers).is_some_and(|n| n > 0);
    let mut builder = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://127.0.0.1:{port}{pq}"));
    if let Some(h) = builder.headers_mut() {
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) && (has_body || name != header::CONTENT_LENGTH)
            {
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
    let Ok(out) = builder.body(if has_body { body } else { Body::empty() }) else {
        return Error::BadRequest("the request cannot be forwarded".into()).into_response();
    };
    match sh.client.send(out).await {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => Error::Internal(format!("forwarding to the handler failed: {e}")).into_response(),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Envelope mode for an HTTP-triggered function that also has other bindings.
async fn envelope_http(
    sh: &Shared,
    app: &AppRt,
    f: &FunctionDef,
    port: u16,
    req: Request,
    params: BTreeMap<String, String>,
    ctx: &CallContext,
) -> Response {
    let Trigger::Http { name: binding, .. } = &f.trigger else {
        return Error::Internal("not an http function".into()).into_response();
    };
    let (parts, body) = req.into_parts();
    let has_length = content_length(&parts.headers).is_some();
    let bytes = match http_body_util::Limited::new(body, sh.gateway.body_limit)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Error::PayloadTooLarge {
                limit_bytes: sh.gateway.body_limit,
            }
            .into_response();
        }
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let url = format!(
        "http://{host}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let input = invoke::HttpTriggerInput {
        url,
        method: parts.method.as_str(),
        query: parts.uri.query(),
        headers: &parts.headers,
        params: &params,
        body: has_length.then_some(&bytes[..]),
    };
    let envelope = invoke::http_envelope(&f.name, binding, &input);
    let answer = match call(sh, app, port, f, ctx, &envelope).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(app = %app.name, function = %f.name, invocation_id = %ctx.invocation_id, "invocation failed: {e}");
            return Error::Internal(format!("invocation failed: {e}")).into_response();
        }
    };
    let writes = match invoke::writes(f, &answer) {
        Ok(w) => w,
        Err(e) => return Error::Internal(format!("invocation output: {e}")).into_response(),
    };
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

/// Posts an envelope and reads the answer (non-2xx, bad JSON, connection errors → failed).
async fn call(
    sh: &Shared,
    app: &AppRt,
    port: u16,
    f: &FunctionDef,
    ctx: &CallContext,
    envelope: &flowgrid_http::invocation::InvokeRequest,
) -> Result<flowgrid_http::invocation::InvokeResponse, String> {
    let req = invoke::invocation_request(port, &f.name, ctx, envelope)?;
    let sent = sh.client.send_collect(req);
    let (status, _, body) = match sh.config.host.function_timeout {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(r) => r?,
            Err(_) => {
                // As the host: a function timeout restarts the handler process.
                app.restart.notify_waiters();
                return Err(format!(
                    "function timeout ({} s): the handler is restarted",
                    limit.as_secs_f64()
                ));
            }
        },
        None => sent.await?,
    };
    let answer = invoke::read_answer(status, &body)?;
    for line in &answer.logs {
        tracing::info!(target: "function", app = %app.name, function = %f.name, invocation_id = %ctx.invocation_id, "{line}");
    }
    Ok(answer)
}

async fn send_all(
    sh: &Shared,
    messages: Vec<(Target, crate::bus::Outgoing)>,
) -> Result<(), String> {
    if messages.is_empty() {
        return Ok(());
    }
    let bus = sh.bus.clone();
    tokio::task::spawn_blocking(move || {
        for (target, m) in messages {
            bus.send(&target, m).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `GET /api/health`: every app's process state, restarts and deep health.
async fn health(sh: &Shared, ctx: &CallContext) -> Response {
    let prefix = &sh.config.host.route_prefix;
    let mut apps = serde_json::Map::new();
    let mut healthy = true;
    for app in &sh.apps {
        let s = app.status.borrow().clone();
        let mut entry =
            json!({"state": s.state, "restarts": s.restarts, "reason": s.reason, "pid": s.pid});
        let deep = match (s.state, s.port) {
            (AppState::Ready, Some(port)) => {
                let url = format!("http://127.0.0.1:{port}/{prefix}/health/{}", app.name);
                let req = hyper::Request::get(url)
                    .header(correlation::HEADER, &ctx.correlation_id)
                    .body(Body::empty());
                match req {
                    Ok(req) => match tokio::time::timeout(
                        Duration::from_secs(3),
                        sh.client.send_collect(req),
                    )
                    .await
                    {
                        Ok(Ok((status, _, body))) => {
                            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            json!({"status": status.as_u16(), "body": body})
                        }
                        Ok(Err(e)) => json!({"status": null, "error": e}),
                        Err(_) => json!({"status": null, "error": "no answer within 3 s"}),
                    },
                    Err(e) => json!({"status": null, "error": e.to_string()}),
                }
            }
            _ => Value::Null,
        };
        let ok = s.state == AppState::Ready
            && deep
                .get("status")
                .and_then(Value::as_u64)
                .is_some_and(|c| (200..300).contains(&c));
        healthy &= ok;
        if let Some(obj) = entry.as_object_mut() {
            obj.insert("healthy".into(), Value::Bool(ok));
            obj.insert("health".into(), deep);
        }
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

/// Waits for the app to be ready; `None` when shutting down.
async fn ready_port(sh: &Shared, app: &AppRt) -> Option<u16> {
    let mut status = app.status.clone();
    let mut stop = sh.shutdown.clone();
    loop {
        if *stop.borrow() {
            return None;
        }
        {
            let s = status.borrow_and_update();
            if s.state == AppState::Ready {
                return s.port;
            }
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { return None },
            _ = stop.changed() => return None,
        }
    }
}

/// The Service Bus trigger of one function: peek-lock receive while the app is ready and a
/// `maxConcurrentCalls` permit is free; success completes, failure abandons.
async fn pump(sh: Arc<Shared>, ai: usize, fi: usize) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    let Trigger::ServiceBus { entity, .. } = &f.trigger else {
        return;
    };
    let notify = sh.bus.notifier(entity);
    let mut stop = sh.shutdown.clone();
    loop {
        let Some(port) = ready_port(&sh, app).await else {
            return;
        };
        let Ok(permit) = app.calls.clone().acquire_owned().await else {
            return;
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let bus = sh.bus.clone();
        let e = entity.clone();
        let received = tokio::task::spawn_blocking(move || bus.receive(&e)).await;
        match received {
            Ok(Ok(Some(m))) => {
                let sh2 = sh.clone();
                tokio::spawn(async move {
                    process(&sh2, ai, fi, port, m).await;
                    drop(permit);
                });
            }
            Ok(Ok(None)) => {
                drop(permit);
                let bus = sh.bus.clone();
                let e = entity.clone();
                let wake = tokio::task::spawn_blocking(move || bus.next_wakeup(&e))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                let now = Utc::now().timestamp_millis();
                let wait = wake.map_or(1000, |t| (t - now).clamp(5, 1000));
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(1000))) => {}
                    _ = stop.changed() => return,
                }
            }
            Ok(Err(e)) => {
                drop(permit);
                tracing::error!(entity = %entity, "receive failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(_) => return,
        }
    }
}

async fn process(sh: &Arc<Shared>, ai: usize, fi: usize, port: u16, m: crate::bus::Message) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    let Trigger::ServiceBus { name, binary, .. } = &f.trigger else {
        return;
    };
    let token = m.lock_token.clone().unwrap_or_default();
    let seq = m.sequence_number;
    let correlation_id = m
        .correlation_id
        .clone()
        .unwrap_or_else(|| m.message_id.clone());
    let ctx = CallContext::new(correlation_id, correlation::traceparent(&HeaderMap::new()));
    let envelope = invoke::service_bus_envelope(&f.name, name, *binary, &m);

    // Renew the lock while the handler works, up to maxAutoLockRenewalDuration.
    let renewer = {
        let bus = sh.bus.clone();
        let token = token.clone();
        let every = bus.settings().lock_duration / 2;
        let until = Instant::now() + sh.config.host.max_auto_lock_renewal;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if Instant::now() >= until {
                    return;
                }
                let (b, t) = (bus.clone(), token.clone());
                match tokio::task::spawn_blocking(move || b.renew_lock(seq, &t)).await {
                    Ok(Ok(true)) => {}
                    _ => return,
                }
            }
        })
    };
    let result = match call(sh, app, port, f, &ctx, &envelope).await {
        Ok(answer) => match invoke::writes(f, &answer) {
            Ok(w) => send_all(sh, w.messages).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if result.is_err() && !sh.client.probe(port).await {
        // The handler died with the message: hold the lock until the supervisor has noticed
        // and restarted it, so that the redelivery goes to the new process instead of burning
        // delivery attempts against a dead port.
        let mut status = app.status.clone();
        let _ = tokio::time::timeout(
            sh.config.host.initialization_timeout,
            status.wait_for(|s| s.state != AppState::Ready || s.port != Some(port)),
        )
        .await;
    }
    renewer.abort();
    let bus = sh.bus.clone();
    let (fname, aname) = (f.name.clone(), app.name.clone());
    let _ = tokio::task::spawn_blocking(move || match result {
        Ok(()) => {
            if !bus.complete(seq, &token).unwrap_or(false) {
                tracing::warn!(app = %aname, function = %fname, "message {seq}: the lock was lost before completion; it will be delivered again");
            }
        }
        Err(e) => {
            tracing::warn!(app = %aname, function = %fname, delivery_count = m.delivery_count, "invocation failed, abandoning message {seq}: {e}");
            if bus.abandon(seq, &token, &e).unwrap_or(false) {
                tracing::warn!(app = %aname, function = %fname, "message {seq} dead-lettered: MaxDeliveryCountExceeded");
            }
        }
    })
    .await;
}

/// A timer trigger: fires at each due time (one firing per due time), `runOnStartup`, and —
/// with `useMonitor` — once at start when the stored next due time has passed (`IsPastDue`).
async fn timer_loop(sh: Arc<Shared>, ai: usize, fi: usize) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    let Trigger::Timer {
        name,
        schedule,
        run_on_startup,
        use_monitor,
    } = &f.trigger
    else {
        return;
    };
    let Ok(sched) = Schedule::parse(schedule) else {
        return;
    };
    let key = format!("{}/{}", app.name, f.name);
    let mut stop = sh.shutdown.clone();
    if ready_port(&sh, app).await.is_none() {
        return;
    }
    let bus = sh.bus.clone();
    let k = key.clone();
    let mut status: Option<TimerStatus> = if *use_monitor {
        tokio::task::spawn_blocking(move || bus.timer_status(&k))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    } else {
        None
    };
    let now = Utc::now();
    let past_due = status.as_ref().is_some_and(|s| s.next <= now);
    if past_due || *run_on_startup {
        fire(&sh, ai, fi, name, status.as_ref(), past_due).await;
    }
    let Some(mut due) = sched.next_after(Utc::now()) else {
        return;
    };
    if *use_monitor {
        let s = TimerStatus {
            last: status.as_ref().map_or(now, |s| s.last),
            next: due,
            last_updated: Utc::now(),
        };
        store_status(&sh, &key, &s).await;
        status = Some(s);
    }
    loop {
        // Sleep until the wall-clock due time.
        loop {
            let left = due - Utc::now();
            let Ok(left) = left.to_std() else { break };
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                _ = stop.changed() => return,
            }
        }
        if ready_port(&sh, app).await.is_none() {
            return;
        }
        fire(&sh, ai, fi, name, status.as_ref(), false).await;
        let after = if Utc::now() > due { Utc::now() } else { due };
        let Some(next) = sched.next_after(after) else {
            return;
        };
        if *use_monitor {
            let s = TimerStatus {
                last: due,
                next,
                last_updated: Utc::now(),
            };
            store_status(&sh, &key, &s).await;
            status = Some(s);
        }
        due = next;
    }
}

async fn store_status(sh: &Shared, key: &str, s: &TimerStatus) {
    let bus = sh.bus.clone();
    let (k, s) = (key.to_owned(), s.clone());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || bus.set_timer_status(&k, &s)).await {
        tracing::error!(timer = %key, "cannot store the schedule status: {e}");
    }
}

async fn fire(
    sh: &Arc<Shared>,
    ai: usize,
    fi: usize,
    binding: &str,
    status: Option<&TimerStatus>,
    past_due: bool,
) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    let Some(port) = ready_port(sh, app).await else {
        return;
    };
    let ctx = CallContext::new(
        uuid::Uuid::new_v4().to_string(),
        correlation::traceparent(&HeaderMap::new()),
    );
    let envelope = invoke::timer_envelope(&f.name, binding, status, past_due);
    let result = match call(sh, app, port, f, &ctx, &envelope).await {
        Ok(answer) => match invoke::writes(f, &answer) {
            Ok(w) => send_all(sh, w.messages).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::error!(app = %app.name, function = %f.name, invocation_id = %ctx.invocation_id, "timer invocation failed: {e}");
    }
}
