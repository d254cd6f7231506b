//! The Agents app: agent CRUD, version history and restore, and lifecycle status, served as an
//! Azure Functions custom handler (HTTP forwarding mode).
//!
//! `router(state)` is what both `main` and the tests serve.

mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use flowgrid_domain::agent::OfferedProviders;
use flowgrid_domain::config::Config;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{AgentStore, JobStore};
use flowgrid_http::auth::TokenVerifier;
use flowgrid_storage::Backend;

/// The app's name: its folder under `functions/`, its binary `flowgrid-agents`.
pub const APP: &str = "agents";

/// Every setting the app reads on top of the shared ones.
pub const SETTINGS: &[flowgrid_domain::config::Setting] =
    &[flowgrid_domain::agent::PROVIDERS_SETTING];

/// The stores the Agents app uses: its agents, and jobs for the run figures of an agent's
/// status (read only).
#[derive(Clone)]
pub struct Stores {
    /// Agents and their versions.
    pub agents: Arc<dyn AgentStore>,
    /// Jobs, read for `GET /api/agents/{id}/status`.
    pub jobs: Arc<dyn JobStore>,
    /// Reachability of the backend.
    pub health: Arc<dyn HealthCheck>,
    /// Pending API request counts of this app's instances (the kit writes and publishes them).
    pub api_request_counts: Arc<dyn flowgrid_domain::store::ApiRequestCountStore>,
}

impl Stores {
    /// The Agents app's stores of `backend`.
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
    /// The model providers this deployment offers (`FLOWGRID_AI_PROVIDERS`).
    pub providers: OfferedProviders,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    /// Opens storage and loads the token keys the configuration names; the offered providers
    /// from the environment.
    pub async fn from_config(config: &Config) -> flowgrid_domain::Result<AppState> {
        Self::with_providers(config, OfferedProviders::from_env()?).await
    }

    /// [`AppState::from_config`] with the offered `providers` given.
    pub async fn with_providers(
        config: &Config,
        providers: OfferedProviders,
    ) -> flowgrid_domain::Result<AppState> {
        let verifier = Arc::new(TokenVerifier::from_config(config)?);
        let stores = Stores::of(&Backend::open(config).await?);
        Ok(AppState {
            stores,
            verifier,
            providers,
        })
    }
}

pub use routes::app;

/// Every route of the app, with health routes and the common layers.
pub fn router(state: AppState) -> Router {
    let checks = vec![state.stores.health.clone()];
    app()
        .api_request_counts(state.stores.api_request_counts.clone())
        .router(state, checks)
}

#[cfg(test)]
mod tests {
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
