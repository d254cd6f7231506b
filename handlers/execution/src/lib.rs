//! The Execution app: runs of agents as jobs through Service Bus, exactly once in effect.
//!
//! HTTP routes (`routes.rs`): submit and cancel (envelope mode, for their Service Bus outputs),
//! read and list jobs. Functions (`functions.rs`): the worker on queue `executions`, the reaper
//! and schedule timers, the `agent-compiled` subscription. The engine (`engine/`) drives the
//! domain's job transitions through the store; `steps.rs` is what each step kind does;
//! `trace.rs` the trace context stamped on the platform events. See `docs/execution.md`.
//!
//! `router(state)` is what both `main` and the tests serve.

pub mod engine;
pub mod functions;
pub mod routes;
pub mod schema;
pub mod settings;
pub mod steps;
pub mod trace;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::post;
use flowgrid_domain::config::Config;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{AgentStore, JobStore};
use flowgrid_http::auth::TokenVerifier;
use flowgrid_http::{envelope, health, with_common_layers};
use flowgrid_storage::Backend;

pub use engine::Engine;
pub use settings::{SETTINGS, Settings};

/// The app's name: its folder under `functions/`, its binary `flowgrid-execution`.
pub const APP: &str = "execution";

/// The stores the Execution app uses: jobs, and agents (read, and marked compiled through the
/// domain operation `flowgrid_domain::store::record_compiled`).
#[derive(Clone)]
pub struct Stores {
    /// Agents.
    pub agents: Arc<dyn AgentStore>,
    /// Jobs.
    pub jobs: Arc<dyn JobStore>,
    /// Reachability of the backend.
    pub health: Arc<dyn HealthCheck>,
}

impl Stores {
    /// The Execution app's stores of `backend`.
    pub fn of(backend: &Backend) -> Self {
        Stores {
            agents: backend.agents(),
            jobs: backend.jobs(),
            health: backend.health(),
        }
    }
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub stores: Stores,
    /// Bearer token verification.
    pub verifier: Arc<TokenVerifier>,
    /// The run engine.
    pub engine: Engine,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    /// Opens storage, loads the token keys and builds the engine the configuration names.
    pub async fn from_config(
        config: &Config,
        settings: Settings,
    ) -> flowgrid_domain::Result<AppState> {
        let verifier = Arc::new(TokenVerifier::from_config(config)?);
        let stores = Stores::of(&Backend::open(config).await?);
        let runner = steps::StepRunner::new(settings.outbound.clone())?;
        let engine = Engine {
            stores: stores.clone(),
            settings,
            runner,
        };
        Ok(AppState {
            stores,
            verifier,
            engine,
        })
    }
}

/// Every route of the app: the HTTP API (forwarded), its envelope-mode twins for `SubmitJob`
/// and `CancelJob`,
/// the invocation routes of the other functions, health, and the common layers.
pub fn router(state: AppState) -> Router {
    let health = health::routes(APP, vec![state.stores.health.clone()]);
    let api = with_common_layers(
        routes::routes().with_state(state.clone()).merge(health),
        APP,
    );
    let invocations = Router::new()
        .route(
            &format!("/{}", functions::names::WORKER),
            post(functions::execute_job),
        )
        .route(
            &format!("/{}", functions::names::REAPER),
            post(functions::reap_jobs),
        )
        .route(
            &format!("/{}", functions::names::SCHEDULES),
            post(functions::run_schedules),
        )
        .route(
            &format!("/{}", functions::names::COMPILED),
            post(functions::agent_compiled),
        )
        .with_state(state)
        .route(
            &format!("/{}", functions::names::SUBMIT),
            envelope::http_function(api.clone(), "req", "res"),
        )
        .route(
            &format!("/{}", functions::names::CANCEL),
            envelope::http_function(api.clone(), "req", "res"),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            8 * flowgrid_http::BODY_LIMIT_BYTES,
        ));
    api.merge(invocations)
}
