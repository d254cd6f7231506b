//! The running host's shared state — the apps, the route table, the bus and the gateway's
//! limits — and the steps the gateway, the Service Bus trigger and the timers have in common:
//! waiting for an app to be ready, posting an invocation, sending its output messages.

use std::sync::Arc;

use flowgrid_http::auth::TokenVerifier;
use tokio::sync::watch;

use crate::bus::{Bus, Outgoing, Target};
use crate::client::HttpClient;
use crate::config::{Config, FunctionDef};
use crate::instances::{Instance, Pool};
use crate::invoke::{self, CallContext};
use crate::ratelimit::RateLimiter;
use crate::route::RouteTemplate;

/// One app at run time.
pub(crate) struct AppRt {
    pub(crate) name: String,
    /// Its instances (handler processes).
    pub(crate) pool: Arc<Pool>,
    pub(crate) functions: Vec<FunctionDef>,
    /// Its canary, when one runs, and the record of canary changes.
    pub(crate) canary: crate::canary::Slot,
}

pub(crate) struct RouteEntry {
    pub(crate) app: usize,
    pub(crate) function: usize,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) template: RouteTemplate,
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

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) apps: Vec<AppRt>,
    pub(crate) routes: Vec<RouteEntry>,
    pub(crate) client: HttpClient,
    pub(crate) bus: Arc<Bus>,
    pub(crate) limiter: RateLimiter,
    pub(crate) verifier: Option<TokenVerifier>,
    pub(crate) gateway: GatewaySettings,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The host admin key (`host-admin.key` in the data folder): the admin endpoints want it.
    pub(crate) admin_key: String,
    /// The Service Bus receivers (one per trigger and instance), awaited by the host's stop so
    /// that nothing is received once it returns.
    pub(crate) receivers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Waits for a ready instance of the app (chosen by its strategy); `None` when shutting down.
pub(crate) async fn ready_instance(sh: &Shared, app: &AppRt) -> Option<(Arc<Instance>, u16)> {
    let mut stop = sh.shutdown.clone();
    loop {
        match app
            .pool
            .lease(None, &[], std::time::Duration::from_secs(3600))
            .await
        {
            Ok(lease) => return Some((lease.instance.clone(), lease.port)),
            Err(crate::instances::NoInstance::ShuttingDown) => return None,
            Err(crate::instances::NoInstance::Unavailable) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// Posts an envelope and reads the answer (non-2xx, bad JSON, connection errors → failed).
pub(crate) async fn call(
    sh: &Shared,
    app: &AppRt,
    inst: &Instance,
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
                inst.restart.notify_waiters();
                return Err(format!(
                    "function timeout ({} s): the handler is restarted",
                    limit.as_secs_f64()
                ));
            }
        },
        None => sent.await?,
    };
    let answer = invoke::read_answer(status, &body)?;
    // `Logs` carry no level, and handlers log what matters on stdout with one: debug here.
    for line in &answer.logs {
        tracing::debug!(target: "function", app = %app.name, function = %f.name, invocation_id = %ctx.invocation_id, "{line}");
    }
    Ok(answer)
}

/// An invocation without an HTTP answer (a message, a timer): posts the envelope, then sends the
/// messages of its output bindings.
pub(crate) async fn call_and_send(
    sh: &Shared,
    app: &AppRt,
    inst: &Instance,
    port: u16,
    f: &FunctionDef,
    ctx: &CallContext,
    envelope: &flowgrid_http::invocation::InvokeRequest,
) -> Result<(), String> {
    match call(sh, app, inst, port, f, ctx, envelope).await {
        Ok(answer) => match invoke::writes(f, &answer) {
            Ok(w) => send_all(sh, w.messages).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

pub(crate) async fn send_all(sh: &Shared, messages: Vec<(Target, Outgoing)>) -> Result<(), String> {
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
