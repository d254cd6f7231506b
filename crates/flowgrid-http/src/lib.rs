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

/// The largest request body any app accepts (1 MiB).
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
