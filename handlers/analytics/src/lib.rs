//! The Analytics app: every platform event ingested once (a Service Bus subscription
//! `analytics` on topic `platform-events`, idempotent by event id) and tenants' tracked events
//! (`POST /api/analytics/track`); rollups per tenant per hour, day and month recomputed from the
//! raw events by a timer; the usage, agent-metrics and dashboard routes read rollups only; and
//! the dashboard page with its assets embedded in the binary.
//!
//! `router(state)` is what both `main` and the tests serve. See `docs/analytics.md`.

mod functions;
mod page;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use chrono::Duration;
use flowgrid_domain::config::{Config, Setting, setting_error};
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{AgentStore, AnalyticsStore, SpendStore, TenantStore};
use flowgrid_http::auth::TokenVerifier;
use flowgrid_storage::Backend;

pub use functions::{REFRESH_BATCH, SUBSCRIPTION};
pub use routes::app;

/// The app's name: its folder under `functions/`, its binary `flowgrid-analytics`.
pub const APP: &str = "analytics";

/// Every setting the app reads on top of the shared ones.
pub const SETTINGS: &[Setting] = &[Setting {
    name: "FLOWGRID_ANALYTICS_RETENTION_DAYS",
    default: "90",
    meaning: "days raw analytics events are kept (1-3650; Cosmos TTL, a purge on SQLite); rollups are kept",
}];

/// How long raw events are kept: `FLOWGRID_ANALYTICS_RETENTION_DAYS` (default 90, 1-3650).
pub fn retention_from_env() -> flowgrid_domain::Result<Duration> {
    retention_from_lookup(|name| std::env::var(name).ok())
}

/// [`retention_from_env`] through `get` (what `flowgrid dev` checks before anything starts).
pub fn retention_from_lookup(
    get: impl Fn(&str) -> Option<String>,
) -> flowgrid_domain::Result<Duration> {
    const NAME: &str = "FLOWGRID_ANALYTICS_RETENTION_DAYS";
    match get(NAME) {
        None => Ok(Duration::days(90)),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .map(Duration::days)
            .ok_or_else(|| setting_error(NAME, "must be a whole number of days from 1 to 3650")),
    }
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Raw events and rollups.
    pub analytics: Arc<dyn AnalyticsStore>,
    /// Agents, read only (does an agent exist in the caller's tenant).
    pub agents: Arc<dyn AgentStore>,
    /// Tenants, read only (the plan, hence the AI budget).
    pub tenants: Arc<dyn TenantStore>,
    /// The AI spend ledger, read only.
    pub spend: Arc<dyn SpendStore>,
    /// How long raw events are kept.
    pub retention: Duration,
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
    /// Opens storage and loads the token keys and the retention setting.
    pub async fn from_config(config: &Config) -> flowgrid_domain::Result<AppState> {
        let retention = retention_from_env()?;
        let verifier = Arc::new(TokenVerifier::from_config(config)?);
        let backend = Backend::open(config).await?;
        Ok(AppState {
            analytics: backend.analytics(),
            agents: backend.agents(),
            tenants: backend.tenants(),
            spend: backend.spend(),
            retention,
            health: backend.health(),
            verifier,
            api_request_counts: backend.api_request_counts(),
        })
    }
}

/// The dashboard's embedded assets (name, content type, content).
pub fn page_assets() -> &'static [(&'static str, &'static str, &'static str)] {
    page::ASSETS
}

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
