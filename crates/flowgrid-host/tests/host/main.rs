//! The host against the fixture handler: every rule of the local Functions host, and its access
//! log. One test binary (one link), a module per topic.

mod access_log;
mod apps;
mod canary;
mod common;
mod configuration;
mod dev_guards;
mod gateway;
mod instances;
mod scaling;
mod service_bus;
mod supervision;
mod timers;
