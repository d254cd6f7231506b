//! Flowgrid's shared library.
//!
//! Everything the handler binaries and the `flowgrid` CLI share: the one error type and its
//! RFC 9457 rendering, configuration, telemetry, token verification, domain types, the storage
//! traits with their backends, and the HTTP plumbing every app is served with.

pub mod auth;
pub mod blob;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod invocation;
pub mod outbound;
pub mod plan;
pub mod schema;
pub mod store;
pub mod telemetry;

pub use error::{Error, FieldError, Result};
