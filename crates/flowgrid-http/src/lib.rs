//! The HTTP/Functions kit every Flowgrid app is served with: problem+json responses, extractors
//! (the caller, JSON and query with problem+json rejections, typed ids), correlation ids and the
//! access log, ETag helpers, health routes, the custom-handler invocation protocol (Service Bus
//! and timer triggers, output bindings), token verification, telemetry and `serve`.

pub mod api_requests;
pub mod app;
pub mod auth;
pub mod correlation;
pub mod envelope;
mod error;
pub mod etag;
pub mod extract;
mod function;
pub mod health;
pub mod invocation;
pub mod json;
mod middleware;
pub mod openapi;
mod query;
mod serve;
mod strict;
pub use flowgrid_providers::otel;
pub mod telemetry;
pub mod trace;
pub mod trigger;

pub use error::{
    ApiError, ErrorResponse, LoggedError, PROBLEM_JSON, Result, is_development, status_of,
};
pub use flowgrid_domain::{Error, FieldError};
pub use json::{Json, RawJson};
pub use middleware::{RequestContext, invocation_spans, register_functions, with_common_layers};
pub use query::Query;
pub use serve::{ServerLimits, bind_address, serve, serve_listener};

/// The largest request body an app accepts unless `FLOWGRID_BODY_LIMIT_BYTES` says otherwise
/// (1 MiB).
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// The range `FLOWGRID_BODY_LIMIT_BYTES` may take: 1 KiB to 100 MiB (the Functions host's own
/// request limit).
pub const BODY_LIMIT_RANGE: std::ops::RangeInclusive<usize> = 1024..=100 * 1024 * 1024;

/// `FLOWGRID_BODY_LIMIT_BYTES` parsed: a whole number of bytes within [`BODY_LIMIT_RANGE`].
pub fn parse_body_limit(value: &str) -> std::result::Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if BODY_LIMIT_RANGE.contains(&n) => Ok(n),
        _ => Err(format!(
            "{value:?} is not a number of bytes from {} to {}",
            BODY_LIMIT_RANGE.start(),
            BODY_LIMIT_RANGE.end()
        )),
    }
}

/// The largest request body this process accepts: `FLOWGRID_BODY_LIMIT_BYTES` from the
/// environment (the same setting the local host enforces at its gateway, which refuses to start
/// on a malformed value), else [`BODY_LIMIT_BYTES`]. Read once; a malformed value in a process
/// started without the local host's check is logged and the default applies. Invocation
/// envelopes may be 8 times larger (their body is base64 inside JSON).
pub fn body_limit_bytes() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| match std::env::var("FLOWGRID_BODY_LIMIT_BYTES") {
        Ok(v) if !v.trim().is_empty() => parse_body_limit(&v).unwrap_or_else(|e| {
            tracing::warn!("setting FLOWGRID_BODY_LIMIT_BYTES: {e}; using {BODY_LIMIT_BYTES}");
            BODY_LIMIT_BYTES
        }),
        _ => BODY_LIMIT_BYTES,
    })
}

/// The largest invocation envelope: its body is base64-encoded inside JSON, so 8 times
/// [`body_limit_bytes`].
pub fn invocation_body_limit() -> usize {
    8 * body_limit_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_limit_setting_takes_whole_bytes_from_1_kib_to_100_mib() {
        assert_eq!(parse_body_limit(" 2048 "), Ok(2048));
        assert_eq!(parse_body_limit("1024"), Ok(1024));
        assert_eq!(parse_body_limit("104857600"), Ok(100 * 1024 * 1024));
        for bad in ["10", "104857601", "1MiB", "-1", "1.5", ""] {
            let e = parse_body_limit(bad).unwrap_err();
            assert!(e.contains("1024") && e.contains("104857600"), "{bad}: {e}");
        }
    }
}
