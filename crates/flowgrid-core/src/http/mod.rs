//! The HTTP plumbing every Flowgrid app is served with: correlation ids, the access log,
//! the JSON extractor whose rejections are problem+json, ETag helpers, health routes and `serve`.

pub mod correlation;
pub mod envelope;
pub mod etag;
pub mod health;
pub mod json;
mod middleware;
mod query;
mod serve;

pub use json::Json;
pub use middleware::{RequestContext, with_common_layers};
pub use query::Query;
pub use serve::{bind_address, serve};

/// The largest request body any app accepts (1 MiB).
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
