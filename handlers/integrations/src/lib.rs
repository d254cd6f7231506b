//! The Integrations app: the catalog of integration kinds, a tenant's connections (their
//! secrets sealed under the key-encryption key, never returned), connection tests and status,
//! and the ServiceNow, Jira and GitHub actions, served as an Azure Functions custom handler
//! (HTTP forwarding mode). The connectors themselves are the shared connector layer
//! (`flowgrid_providers::integrations`), which Execution's `integration` steps use in-process.
//!
//! `router(state)` is what both `main` and the tests serve. See `docs/integrations.md`.

mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use flowgrid_domain::config::Config;
use flowgrid_domain::health::HealthCheck;
use flowgrid_http::auth::TokenVerifier;
use flowgrid_providers::crypto::KeyEncryptionKey;
use flowgrid_providers::integrations::{CallSettings, Integrations};
use flowgrid_providers::outbound::OutboundPolicy;
use flowgrid_storage::Backend;

/// The app's name: its folder under `functions/`, its binary `flowgrid-integrations`.
pub const APP: &str = "integrations";

/// The connector layer's settings, read by this app and by Execution (its `integration` steps).
pub use flowgrid_providers::integrations::call::SETTINGS as CONNECTOR_SETTINGS;

/// Every setting the app reads on top of the shared ones: the connector settings and the
/// outbound guard's allow-list.
pub fn settings() -> Vec<flowgrid_domain::config::Setting> {
    let mut all = CONNECTOR_SETTINGS.to_vec();
    all.push(flowgrid_domain::config::Setting {
        name: "FLOWGRID_OUTBOUND_ALLOWLIST",
        default: "(empty)",
        meaning: "comma-separated `host[:port]` connections may reach over plain http or on private addresses (local development, tests)",
    });
    all
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The connector layer over the connections store.
    pub integrations: Integrations,
    /// Reachability of the backend.
    pub health: Arc<dyn HealthCheck>,
    /// Bearer token verification.
    pub verifier: Arc<TokenVerifier>,
    /// Pending API request counts of this app's instances (the kit writes and publishes them).
    pub api_request_counts: Arc<dyn flowgrid_domain::store::ApiRequestCountStore>,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    /// Opens storage, loads the token keys and the key-encryption key, and builds the
    /// connector layer with the outbound guard's allow-list (`FLOWGRID_OUTBOUND_ALLOWLIST`).
    pub async fn from_config(
        config: &Config,
        settings: CallSettings,
    ) -> flowgrid_domain::Result<AppState> {
        let policy = OutboundPolicy::parse(
            &std::env::var("FLOWGRID_OUTBOUND_ALLOWLIST").unwrap_or_default(),
        )?;
        AppState::build(config, policy, settings).await
    }

    /// The state with the outbound guard's `policy` and the connector `settings` given.
    pub async fn build(
        config: &Config,
        policy: OutboundPolicy,
        settings: CallSettings,
    ) -> flowgrid_domain::Result<AppState> {
        let verifier = Arc::new(TokenVerifier::from_config(config)?);
        let backend = Backend::open(config).await?;
        let kek = KeyEncryptionKey::from_config(config)?;
        let integrations = Integrations::new(backend.connections(), kek, policy, settings)?;
        Ok(AppState {
            integrations,
            health: backend.health(),
            verifier,
            api_request_counts: backend.api_request_counts(),
        })
    }
}

pub use routes::app;

/// Every route of the app, with health routes and the common layers.
pub fn router(state: AppState) -> Router {
    let checks = vec![state.health.clone()];
    app()
        .api_request_counts(state.api_request_counts.clone())
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
