//! Domain types: identifiers and aggregates, parsed so that invalid values cannot be built.

pub mod agent;
mod identity;
mod ids;
mod schedule;

pub use agent::{Agent, AgentDefinition, AgentInput, AgentStatus};
pub use identity::{
    Email, OneTimeToken, RefreshOutcome, RefreshToken, Session, Tenant, User, UserId,
};
pub use ids::{AgentId, TenantId};
pub use schedule::Schedule;
