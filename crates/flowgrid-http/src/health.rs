//! Liveness, readiness and deep health for an app, and the host's `GET /` readiness probe.
//!
//! Routes: `GET /` (the Functions host's probe, answered at once), `GET /api/health/{app}/live`,
//! `GET /api/health/{app}/ready` and `GET /api/health/{app}` (deep: every dependency, with timings).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use flowgrid_domain::health::HealthCheck;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The health routes of `app` over `checks`.
pub fn routes(app: &'static str, checks: Vec<Arc<dyn HealthCheck>>) -> Router {
    let checks: Arc<[Arc<dyn HealthCheck>]> = checks.into();
    let ready_checks = checks.clone();
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            &format!("/api/health/{app}/live"),
            get(move || async move { live(app) }),
        )
        .route(
            &format!("/api/health/{app}/ready"),
            get(move || {
                let checks = ready_checks.clone();
                async move { report(app, &checks, false).await }
            }),
        )
        .route(
            &format!("/api/health/{app}"),
            get(move || {
                let checks = checks.clone();
                async move { report(app, &checks, true).await }
            }),
        )
}

fn live(app: &'static str) -> Response {
    crate::Json(json!({ "app": app, "status": "ok" })).into_response()
}

async fn report(app: &'static str, checks: &[Arc<dyn HealthCheck>], deep: bool) -> Response {
    let mut healthy = true;
    let mut results = serde_json::Map::new();
    for check in checks {
        let started = Instant::now();
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, check.check()).await;
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, error) = match outcome {
            Ok(Ok(())) => ("ok", None),
            Ok(Err(e)) => ("failing", Some(e.to_string())),
            Err(_) => (
                "failing",
                Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
            ),
        };
        if let Some(error) = &error {
            healthy = false;
            tracing::warn!(app, check = check.name(), error = %error, "health check failing");
        }
        let mut entry = json!({ "status": status });
        if deep {
            entry["durationMs"] = json!((duration_ms * 1000.0).round() / 1000.0);
        }
        results.insert(check.name().to_owned(), entry);
    }
    let body: Value = json!({
        "app": app,
        "status": if healthy { "ok" } else { "failing" },
        "version": env!("CARGO_PKG_VERSION"),
        "checks": results,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, crate::Json(body)).into_response()
}
