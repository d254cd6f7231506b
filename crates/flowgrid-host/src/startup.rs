//! Start-up: the configuration and the settings, the bus and its entities, the token verifier,
//! one supervised handler per app, the route table, the trigger tasks and the listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use flowgrid_http::auth::TokenVerifier;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::bus::{Bus, BusSettings};
use crate::bus_trigger::pump;
use crate::client::HttpClient;
use crate::config::{AppDef, Config, OutputKind, Trigger};
use crate::gateway::handle;
use crate::ratelimit::RateLimiter;
use crate::runtime::{AppRt, GatewaySettings, RouteEntry, Shared};
use crate::supervisor::{self, Launch, State as AppState, Status};
use crate::timer_trigger::timer_loop;

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

/// What a started host is made of.
pub(crate) struct Started {
    pub(crate) addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

/// Loads the configuration, opens the bus, starts every handler and the listener.
/// `notice` receives one-line progress and notices.
pub(crate) async fn start(opts: HostOptions, notice: &mut dyn FnMut(String)) -> Result<Started> {
    let config = Config::load(&opts.root, notice)?;
    let data_dir = absolute(&opts.data_dir)?;
    let bus_settings = bus_settings(&config)?;
    let gateway = gateway_settings(&config)?;
    let bus = open_bus(&data_dir, bus_settings, &config, notice)?;
    let verifier = token_verifier(&config, &data_dir, notice);

    let client = handler_client(&config);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let apps = start_apps(
        &opts,
        &config,
        &data_dir,
        &client,
        &shutdown_rx,
        &mut tasks,
        notice,
    )?;
    let routes = route_table(&apps);

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
    spawn_triggers(&shared, &mut tasks);
    let addr = listen(opts.listen, &shared, shutdown_rx, &mut tasks).await?;
    Ok(Started {
        addr,
        shared,
        shutdown: shutdown_tx,
        tasks,
    })
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

/// `FLOWGRID_SB_*`.
fn bus_settings(config: &Config) -> Result<BusSettings> {
    Ok(BusSettings {
        lock_duration: Duration::from_secs(
            parse_setting(config, "FLOWGRID_SB_LOCK_DURATION_SECS", 60u64)?.max(1),
        ),
        max_delivery_count: parse_setting(config, "FLOWGRID_SB_MAX_DELIVERY_COUNT", 10u32)?.max(1),
        duplicate_window: Duration::from_secs(parse_setting(
            config,
            "FLOWGRID_SB_DUPLICATE_DETECTION_WINDOW_SECS",
            600u64,
        )?),
    })
}

/// `FLOWGRID_RATE_LIMIT_*` and `FLOWGRID_BODY_LIMIT_BYTES`.
fn gateway_settings(config: &Config) -> Result<GatewaySettings> {
    Ok(GatewaySettings {
        rate_limit_rps: parse_setting(config, "FLOWGRID_RATE_LIMIT_RPS", 100.0f64)?,
        rate_limit_burst: parse_setting(config, "FLOWGRID_RATE_LIMIT_BURST", 200.0f64)?,
        body_limit: parse_setting(
            config,
            "FLOWGRID_BODY_LIMIT_BYTES",
            flowgrid_http::BODY_LIMIT_BYTES,
        )?,
    })
}

/// Opens `servicebus.db`, declares every entity the bindings name, and releases the locks an
/// earlier run held.
fn open_bus(
    data_dir: &Path,
    settings: BusSettings,
    config: &Config,
    notice: &mut dyn FnMut(String),
) -> Result<Arc<Bus>> {
    let bus = Arc::new(Bus::open(&data_dir.join("servicebus.db"), settings)?);
    declare_entities(&bus, config)?;
    let released = bus.release_all_locks()?;
    if released > 0 {
        notice(format!(
            "released {released} message lock(s) held by an earlier run; those messages are delivered again"
        ));
    }
    Ok(bus)
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

/// The token verifier keys the rate limit on a verified tenant; without one every request
/// shares the anonymous bucket.
fn token_verifier(
    config: &Config,
    data_dir: &Path,
    notice: &mut dyn FnMut(String),
) -> Option<TokenVerifier> {
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
    core_config
        .as_ref()
        .and_then(|c| match TokenVerifier::from_config(c) {
            Ok(v) => Some(v),
            Err(e) => {
                notice(format!(
                    "rate limits are not per tenant: cannot build the token verifier ({e})"
                ));
                None
            }
        })
}

/// The host → handler client: it waits `functionTimeout` plus one minute.
fn handler_client(config: &Config) -> HttpClient {
    let timeout = config
        .host
        .function_timeout
        .map(|t| t + Duration::from_secs(60));
    HttpClient::new(timeout)
}

/// Starts one supervised handler per app.
fn start_apps(
    opts: &HostOptions,
    config: &Config,
    data_dir: &Path,
    client: &HttpClient,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
    notice: &mut dyn FnMut(String),
) -> Result<Vec<AppRt>> {
    let mut apps = Vec::new();
    for app in &config.apps {
        let launch = launch(app, opts, config, data_dir)?;
        notice(format!(
            "starting app {} ({})",
            app.name,
            launch.program.display()
        ));
        let (rt, task) = spawn_app(app, launch, config, client, shutdown);
        tasks.push(task);
        apps.push(rt);
    }
    Ok(apps)
}

/// How to start the handler of `app`.
fn launch(app: &AppDef, opts: &HostOptions, config: &Config, data_dir: &Path) -> Result<Launch> {
    let args = config
        .host
        .arguments
        .iter()
        .map(|a| {
            crate::config::expand(a, &config.settings)
                .map_err(|e| anyhow::anyhow!("host.json: customHandler.description.arguments: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Launch {
        app: app.name.clone(),
        program: opts.bin_dir.join(format!("flowgrid-{}", app.name)),
        args,
        root: absolute(&opts.root)?,
        env: handler_env(config, data_dir, &opts.root),
        init_timeout: config.host.initialization_timeout,
    })
}

/// Handlers inherit the host's environment; a setting from the settings file is added only where
/// that environment does not set the variable (environment wins, as the docs say), so
/// `FLOWGRID_STORE=cosmos flowgrid dev` works without editing files.
fn handler_env(config: &Config, data_dir: &Path, root: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = config
        .settings
        .iter()
        .filter(|(k, _)| std::env::var_os(k.as_str()).is_none())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.insert("FLOWGRID_DATA_DIR".into(), data_dir.display().to_string());
    env.entry("FUNCTIONS_WORKER_RUNTIME".into())
        .or_insert_with(|| "custom".into());
    env.insert("AzureWebJobsScriptRoot".into(), root.display().to_string());
    env
}

/// Starts the supervisor of one app's handler.
fn spawn_app(
    app: &AppDef,
    launch: Launch,
    config: &Config,
    client: &HttpClient,
    shutdown: &watch::Receiver<bool>,
) -> (AppRt, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Status {
        state: AppState::Starting,
        port: None,
        pid: None,
        restarts: 0,
        reason: None,
    });
    let restart = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(supervisor::supervise(
        launch,
        client.clone(),
        tx,
        shutdown.clone(),
        restart.clone(),
    ));
    let rt = AppRt {
        name: app.name.clone(),
        status: rx,
        restart,
        calls: Arc::new(Semaphore::new(config.host.max_concurrent_calls)),
        functions: app.functions.clone(),
    };
    (rt, task)
}

/// Every HTTP-triggered function's route, in precedence order.
fn route_table(apps: &[AppRt]) -> Vec<RouteEntry> {
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
    routes
}

/// One pump per Service Bus trigger, one loop per timer trigger.
fn spawn_triggers(shared: &Arc<Shared>, tasks: &mut Vec<JoinHandle<()>>) {
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
}

/// Binds the listener and serves the gateway until the shutdown.
async fn listen(
    at: SocketAddr,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(at).await.with_context(|| {
        format!("cannot listen on {at} (is another `flowgrid dev` running? choose another port with --port)")
    })?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
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
    Ok(addr)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}
