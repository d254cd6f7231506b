//! The Execution app: runs of agents as jobs through Service Bus, exactly once in effect.
//!
//! Every function is declared once in `routes::app()`. HTTP routes (`routes.rs`): submit and
//! cancel (envelope mode, for their Service Bus outputs), read and list jobs. Functions
//! (`functions.rs`): the worker on queue `executions`, the reaper and schedule timers, the
//! `agent-compiled` subscription, each on the kit's typed triggers (`Message`, `Tick`, `Event`)
//! answering `Outputs` with the invocation's trace context stamped on its platform events. The
//! engine (`engine/`) drives the domain's job transitions through the store; `steps.rs` is what
//! each step kind does. See `docs/execution.md`.
//!
//! `router(state)` is what both `main` and the tests serve.

pub mod engine;
pub mod functions;
pub mod routes;
pub mod schema;
pub mod settings;
pub mod steps;
pub use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use flowgrid_domain::config::Config;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{AgentStore, JobStore};
use flowgrid_http::auth::TokenVerifier;
use flowgrid_storage::Backend;

pub use engine::Engine;
pub use settings::{AI_SETTINGS, SETTINGS, Settings};

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
    /// Pending API request counts of this app's instances (the kit writes and publishes them).
    pub api_request_counts: Arc<dyn flowgrid_domain::store::ApiRequestCountStore>,
}

impl Stores {
    /// The Execution app's stores of `backend`.
    pub fn of(backend: &Backend) -> Self {
        Stores {
            agents: backend.agents(),
            jobs: backend.jobs(),
            health: backend.health(),
            api_request_counts: backend.api_request_counts(),
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
        let backend = Backend::open(config).await?;
        let stores = Stores::of(&backend);
        let mut runner = steps::StepRunner::new(settings.outbound.clone())?;
        runner.templates = Arc::new(flowgrid_domain::plan::template::Templates::with_max_bytes(
            settings.template_max_bytes,
        ));
        runner.response_max_bytes = settings.http_response_max_bytes;
        runner.offered = Some(settings.offered.clone());
        // `integration` steps: the Integrations app's connectors, in-process, on the same store
        // and key-encryption key.
        runner.connectors = Arc::new(flowgrid_providers::integrations::Integrations::new(
            backend.connections(),
            flowgrid_providers::crypto::KeyEncryptionKey::from_config(config)?,
            settings.outbound.clone(),
            flowgrid_providers::integrations::CallSettings::from_env()?,
        )?);
        runner.budget = Some(Arc::new(flowgrid_providers::llm::budget::Budget::new(
            backend.tenants(),
            backend.spend(),
        )));
        runner.llm = Arc::new(flowgrid_providers::llm::Providers::new(
            flowgrid_providers::llm::http::HttpProvider::new(
                settings.ai.clone(),
                runner.policy.clone(),
            )?,
        ));
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

pub use routes::app;

/// Every function of the app (HTTP forwarded, envelope-mode HTTP, Service Bus, timers), with
/// health routes and the common layers.
pub fn router(state: AppState) -> Router {
    let checks = vec![state.stores.health.clone()];
    app()
        .api_request_counts(state.stores.api_request_counts.clone())
        .router(state, checks)
}

#[cfg(test)]
mod function_json_tests {
    use super::*;

    #[test]
    fn every_function_is_declared_the_same_in_code_and_in_function_json() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../functions")
            .join(APP);
        assert_eq!(
            flowgrid_http::app::differences(app().functions(), &dir),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_http_function_is_documented_in_the_openapi_document() {
        assert_eq!(app().undocumented(), Vec::<String>::new());
    }
}
