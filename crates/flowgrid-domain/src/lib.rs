//! Flowgrid's domain: identifiers, aggregates that own their transitions, the storage traits
//! they are kept behind, the compiled plan, platform events and the one error type.
//!
//! This crate is the bottom layer: it knows no HTTP framework, no SQL and no Azure SDK (its
//! dependencies say so, and the compiler keeps it that way). Storage backends
//! (`flowgrid-storage`), the HTTP/Functions kit (`flowgrid-http`) and the apps build on it.
//! Process configuration (`config`) lives here too: it is plain data read from the environment,
//! shared by every layer above.

pub mod agent;
pub mod analytics;
pub mod blob;
pub mod config;
pub mod definition;
pub mod error;
pub mod events;
pub mod health;
mod identity;
mod ids;
pub mod job;
pub mod plan;
mod role;
mod schedule;
pub mod schema;
pub mod store;

pub use agent::{Agent, AgentInput, AgentStatus};
pub use definition::AgentDefinition;
pub use error::{Error, FieldError, Problem, Result};
pub use identity::{
    Email, OneTimeToken, RefreshOutcome, RefreshToken, Session, Tenant, User, UserId,
};
pub use ids::{AgentId, TenantId};
pub use role::Role;
pub use schedule::Schedule;
