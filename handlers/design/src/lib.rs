//! The Design app: from a picture or a description to a drafted, checked, compiled and priced
//! agent. Routes (`routes.rs`): `analyze-image`, `analyze-model`, `generate-interactions`,
//! `compile/{agentId}`, `prompt-preview/{agentId}` under `/api/design/`. Model calls go through
//! the shared provider layer (`flowgrid_providers::llm`, offline by default) under the tenant's
//! monthly AI budget; images and compiled plans go to Blob Storage; `agent-compiled` is
//! published through an output binding. docs/design.md has the decisions.

pub mod calls;
pub mod compile;
pub mod image;
pub mod probe;
mod routes;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use flowgrid_domain::blob::BlobStore;
use flowgrid_domain::config::Config;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::AgentStore;
use flowgrid_http::auth::TokenVerifier;
use flowgrid_providers::llm::Providers;
use flowgrid_providers::llm::budget::Budget;
use flowgrid_providers::llm::http::HttpProvider;
use flowgrid_providers::outbound::OutboundPolicy;
use flowgrid_storage::Backend;

pub use settings::{SETTINGS, Settings};

/// The app's name: its folder under `functions/`.
pub const APP: &str = "design";

/// The stores the Design app uses.
#[derive(Clone)]
pub struct Stores {
    /// Agents (read; their compiled version recorded).
    pub agents: Arc<dyn AgentStore>,
    /// Images and compiled plans.
    pub blobs: Arc<dyn BlobStore>,
    /// Reachability of the backend.
    pub health: Arc<dyn HealthCheck>,
    /// Reachability of the blob store.
    pub blob_health: Arc<dyn HealthCheck>,
    /// Pending API request counts of this app's instances (the kit writes and publishes them).
    pub api_request_counts: Arc<dyn flowgrid_domain::store::ApiRequestCountStore>,
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub stores: Stores,
    /// Bearer token verification.
    pub verifier: Arc<TokenVerifier>,
    /// The model providers.
    pub llm: Arc<Providers>,
    /// The monthly AI budget.
    pub budget: Arc<Budget>,
    /// The app's settings.
    pub settings: Arc<Settings>,
    /// `analyze-model`'s probe verdicts, per provider, model and endpoint.
    pub probes: Arc<probe::ProbeCache>,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    /// Opens storage and blobs, loads the token keys, and builds the providers.
    pub async fn from_config(
        config: &Config,
        settings: Settings,
    ) -> flowgrid_domain::Result<AppState> {
        let verifier = Arc::new(TokenVerifier::from_config(config)?);
        let backend = Backend::open(config).await?;
        let (blobs, blob_health) = flowgrid_storage::blob::open(config).await?;
        let policy = Arc::new(OutboundPolicy::parse(&settings.outbound_allowlist)?);
        let llm = Arc::new(Providers::new(HttpProvider::new(
            settings.ai.clone(),
            policy,
        )?));
        Ok(AppState {
            stores: Stores {
                agents: backend.agents(),
                blobs,
                health: backend.health(),
                blob_health,
                api_request_counts: backend.api_request_counts(),
            },
            verifier,
            llm,
            budget: Arc::new(Budget::new(backend.tenants(), backend.spend())),
            settings: Arc::new(settings),
            probes: Arc::new(probe::ProbeCache::default()),
        })
    }
}

pub use routes::app;

/// Every function of the app, with health routes and the common layers.
pub fn router(state: AppState) -> Router {
    let checks = vec![
        state.stores.health.clone(),
        state.stores.blob_health.clone(),
    ];
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
