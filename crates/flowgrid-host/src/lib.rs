//! Flowgrid's local Azure Functions host: what `flowgrid dev` runs.
//!
//! It reads `host.json`, the app settings and every `functions/<app>/<Function>/function.json`,
//! starts each app's custom-handler processes (instances) as the Functions host does, and serves every app on
//! one port: HTTP forwarding, the invocation envelope for other triggers, Service Bus queues and
//! topics durable in SQLite, timers, and the gateway's correlation ids, rate limits and body limit.
//! See `docs/local-host.md`.

pub mod balance;
pub mod bus;
pub mod cli;
pub mod client;
pub mod config;
pub mod devstate;
pub mod host;
pub mod invoke;
pub mod output;
pub mod package;
pub mod ratelimit;
pub mod route;
pub mod scale;
pub mod supervisor;
pub mod timer;

mod admin;
mod autoscale;
mod bus_trigger;
mod canary;
mod docs;
mod gateway;
mod instances;
mod runtime;
mod startup;
mod timer_trigger;
mod timespan;

pub use host::{Host, HostOptions};
