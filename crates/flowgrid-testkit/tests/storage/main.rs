//! The storage tests, one binary (one link) with a module per suite: the conformance suites of
//! the agents, identity and jobs stores on SQLite and on the Cosmos DB emulator, the blob suite
//! on a folder and on Azurite, throttling, and the real apps on Cosmos.
//!
//! The emulators are started by the tests themselves ([`flowgrid_testkit::emulators`]): each
//! process shares one of each while any test holds it, so `cargo test` (every test in one
//! process) and nextest (a process per test) both work.

mod agents_on_cosmos;
mod blob_conformance;
mod cosmos_agents_conformance;
mod cosmos_analytics_conformance;
mod cosmos_api_requests_conformance;
mod cosmos_connections_conformance;
mod cosmos_identity_conformance;
mod cosmos_jobs_conformance;
mod cosmos_spend_conformance;
mod cosmos_throttling;
mod helpers;
mod identity_on_cosmos;
mod sqlite_agents_conformance;
mod sqlite_analytics_conformance;
mod sqlite_api_requests_conformance;
mod sqlite_connections_conformance;
mod sqlite_identity_conformance;
mod sqlite_jobs_conformance;
mod sqlite_spend_conformance;
