//! Structured JSON logs for every process.
//!
//! Logs go to stdout as one JSON object per line (the Functions host turns stdout lines into
//! Information logs). The filter comes from `FLOWGRID_LOG` (default `info`). Field names are
//! dotted with units in the name (`duration_ms`, `http.status`); secrets and tokens are never logged.

use tracing_subscriber::EnvFilter;

/// Initialises logging for `app` once; later calls are ignored.
pub fn init(app: &'static str) {
    let filter = EnvFilter::try_from_env("FLOWGRID_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
    tracing::debug!(app, "telemetry initialised");
}

/// Quiet logging for tests: only warnings and errors, through the test harness's capture.
pub fn init_for_tests() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}
