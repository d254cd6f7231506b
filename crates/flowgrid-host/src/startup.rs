//! Start-up: the configuration and the settings, the bus and its entities, the token verifier,
//! each app's pool of supervised handler instances, the route table, the trigger tasks, the
//! scale controllers and the listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use flowgrid_http::auth::TokenVerifier;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::{Bus, BusSettings};
use crate::client::HttpClient;
use crate::config::check::{self, AppSettings};
use crate::config::scaling::{ScaleOverrides, Scaling};
use crate::config::{AppDef, Config, OutputKind, Trigger};
use crate::gateway::handle;
use crate::instances::{Pool, PoolSettings};
use crate::ratelimit::RateLimiter;
use crate::runtime::{AppRt, GatewaySettings, RouteEntry, Shared};
use crate::scale::Rules;
use crate::supervisor::Launch;
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
    /// The apps' own settings, checked before anything starts (the shared ones always are).
    pub app_settings: BTreeMap<String, AppSettings>,
    /// Instances and balancing given on the command line (over the settings).
    pub scaling: ScaleOverrides,
}

/// What a started host is made of.
pub(crate) struct Started {
    pub(crate) addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
    pub(crate) issuer: String,
}

/// Loads the configuration and checks every setting, opens the bus, binds the listener, then
/// starts every handler and serves. `notice` receives one-line progress and notices.
pub(crate) async fn start(opts: HostOptions, notice: &mut dyn FnMut(String)) -> Result<Started> {
    let mut config = Config::load(&opts.root, notice)?;
    let data_dir = absolute(&opts.data_dir)?;
    let bus_settings = bus_settings(&config)?;
    let gateway = gateway_settings(&config)?;
    let app_names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let scaling = Scaling::read(&|n| config.setting(n), &app_names, &opts.scaling)?;
    // The port first: nothing is started when it is taken.
    let listener = bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let issuer = issuer_for(&config, addr.port());
    config
        .settings
        .insert("FLOWGRID_JWT_ISSUER".into(), issuer.clone());
    check_settings(&config, &opts, &data_dir, notice)?;
    let bus = open_bus(&data_dir, bus_settings, &config, notice)?;
    let verifier = token_verifier(&config, &data_dir, notice);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
    let admin_key = crate::devstate::write_admin_key(&data_dir)?;

    let client = handler_client(&config);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let apps = start_apps(
        &opts,
        &config,
        &scaling,
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
        admin_key,
        receivers: std::sync::Mutex::default(),
    });
    spawn_triggers(&shared, &mut tasks);
    for (app, spec) in &scaling.canaries {
        if let Some(ai) = shared.apps.iter().position(|a| &a.name == app) {
            notice(format!(
                "starting a canary of {app} ({}, {} % of its HTTP traffic)",
                spec.binary.display(),
                spec.weight
            ));
            crate::admin::start_canary(&shared, ai, spec.binary.clone(), spec.weight, None)
                .await
                .map_err(|e| anyhow::anyhow!("canary of {app}: {e}"))?;
        }
    }
    for ai in 0..shared.apps.len() {
        tasks.push(tokio::spawn(crate::autoscale::run(
            shared.clone(),
            ai,
            scaling.interval,
        )));
    }
    serve(listener, &shared, shutdown_rx, &mut tasks);
    Ok(Started {
        addr,
        shared,
        shutdown: shutdown_tx,
        tasks,
        issuer,
    })
}

/// The issuer the apps expect in tokens: `FLOWGRID_JWT_ISSUER` from the environment when set,
/// else the settings' one unless it is empty or the default (`http://localhost:7071/api/auth`),
/// which follows the port actually served (`--port`).
fn issuer_for(config: &Config, port: u16) -> String {
    if let Ok(v) = std::env::var("FLOWGRID_JWT_ISSUER")
        && !v.trim().is_empty()
    {
        return v;
    }
    match config.settings.get("FLOWGRID_JWT_ISSUER") {
        Some(v) if !v.trim().is_empty() && v != flowgrid_domain::config::DEFAULT_ISSUER => {
            v.clone()
        }
        _ => format!("http://localhost:{port}/api/auth"),
    }
}

/// Every setting checked before any handler starts: a malformed value stops the host with one
/// line per problem naming the setting and the app; a key nobody reads is a notice.
fn check_settings(
    config: &Config,
    opts: &HostOptions,
    data_dir: &Path,
    notice: &mut dyn FnMut(String),
) -> Result<()> {
    if config.settings_source == "local.settings.json" {
        let example = crate::config::Config::example_keys(&config.root);
        let known = check::known_names(
            &opts.app_settings,
            example
                .into_iter()
                .chain(config.referenced_settings.iter().cloned()),
        );
        let keys = config.settings.keys().cloned().collect();
        for warning in check::unknown_keys(&config.settings_source, &keys, &known) {
            notice(format!("warning: {warning}"));
        }
    }
    let env = handler_env(config, data_dir, &opts.root);
    let get = |name: &str| -> Option<String> {
        env.get(name).cloned().or_else(|| std::env::var(name).ok())
    };
    let problems = check::malformed(config, &opts.app_settings, &get);
    if !problems.is_empty() {
        anyhow::bail!(
            "{} (from {} or the environment); nothing was started",
            problems.join("\n"),
            config.settings_source
        );
    }
    Ok(())
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
        body_limit: match config.setting("FLOWGRID_BODY_LIMIT_BYTES") {
            Some(v) if !v.trim().is_empty() => flowgrid_http::parse_body_limit(&v)
                .map_err(|e| anyhow::anyhow!("setting FLOWGRID_BODY_LIMIT_BYTES: {e}"))?,
            _ => flowgrid_http::BODY_LIMIT_BYTES,
        },
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

/// Starts each app's pool with its minimum of instances.
#[expect(
    clippy::too_many_arguments,
    reason = "start-up's parts, each used once"
)]
fn start_apps(
    opts: &HostOptions,
    config: &Config,
    scaling: &Scaling,
    data_dir: &Path,
    client: &HttpClient,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
    notice: &mut dyn FnMut(String),
) -> Result<Vec<AppRt>> {
    let mut apps = Vec::new();
    for app in &config.apps {
        let launch = launch(app, opts, config, data_dir)?;
        let Some(s) = scaling.apps.get(&app.name) else {
            anyhow::bail!("no scaling for app {}", app.name);
        };
        let range = if s.min == s.max {
            format!("{} instance(s)", s.min)
        } else {
            format!("{}..{} instances", s.min, s.max)
        };
        notice(format!(
            "starting app {} ({}, {range}, {})",
            app.name,
            launch.program.display(),
            s.strategy.name()
        ));
        let settings = PoolSettings {
            rules: Rules {
                min: s.min,
                max: s.max,
                http_concurrency: s.http_concurrency,
                max_concurrent_calls: config.host.max_concurrent_calls,
                scale_in_after: scaling.scale_in_after,
            },
            strategy: s.strategy.clone(),
            fail: scaling.fail,
        };
        let (rt, task) = spawn_app(app, launch, settings, client, shutdown);
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
        quiet_routes: app
            .functions
            .iter()
            .filter(|f| !f.forwarded)
            .map(|f| format!("/{}", f.name))
            .collect(),
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

/// Starts the pool of one app; the task returned stops its instances at the shutdown.
fn spawn_app(
    app: &AppDef,
    launch: Launch,
    settings: PoolSettings,
    client: &HttpClient,
    shutdown: &watch::Receiver<bool>,
) -> (AppRt, JoinHandle<()>) {
    let pool = Pool::start(launch, client.clone(), settings, shutdown.clone());
    let stopper = pool.clone();
    let mut stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        stopper.stop_all().await;
    });
    let rt = AppRt {
        name: app.name.clone(),
        pool,
        functions: app.functions.clone(),
        canary: crate::canary::Slot::default(),
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

/// One pump per Service Bus trigger and instance, one loop per timer trigger.
fn spawn_triggers(shared: &Arc<Shared>, tasks: &mut Vec<JoinHandle<()>>) {
    for (ai, app) in shared.apps.iter().enumerate() {
        for inst in app.pool.instances() {
            crate::autoscale::start_receivers(shared, ai, &inst);
        }
        for (fi, f) in app.functions.iter().enumerate() {
            match &f.trigger {
                Trigger::ServiceBus { .. } => {}
                Trigger::Timer { .. } => {
                    tasks.push(tokio::spawn(timer_loop(shared.clone(), ai, fi)))
                }
                Trigger::Http { .. } => {}
            }
        }
    }
}

/// Binds the listener (before any handler starts).
async fn bind(at: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(at).await.with_context(|| {
        format!("cannot listen on {at} (is another `flowgrid dev` running? choose another port with --port)")
    })
}

/// Serves the gateway on `listener` until the shutdown.
fn serve(
    listener: tokio::net::TcpListener,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) {
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    tasks.push(tokio::spawn(async move {
        let graceful = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        flowgrid_http::serve_listener(
            listener,
            router,
            flowgrid_http::ServerLimits::HOST,
            graceful,
        )
        .await;
    }));
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}
