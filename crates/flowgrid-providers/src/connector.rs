//! The integration connector layer: one trait for running an action on one of a tenant's
//! connections (ServiceNow, Jira, GitHub, HTTP), used by Execution's `integration` steps and by
//! the Integrations app. Until connectors are configured, [`NoConnectors`] answers every action
//! with a clear, permanent error.

use flowgrid_domain::TenantId;
use serde_json::Value;

use crate::CallError;

/// Actions on a tenant's integration connections.
#[async_trait::async_trait]
pub trait Connectors: Send + Sync {
    /// Runs `action` on the tenant's connection named `connection` with `input`. The
    /// `idempotency_key` identifies the effect (`{jobId}:{stepId}` for a step): a connector
    /// makes the same key's effect happen once.
    async fn run(
        &self,
        tenant: &TenantId,
        connection: &str,
        action: &str,
        input: &Value,
        idempotency_key: &str,
    ) -> Result<Value, CallError>;
}

/// No connector is available in this build.
#[derive(Debug, Clone, Default)]
pub struct NoConnectors;

#[async_trait::async_trait]
impl Connectors for NoConnectors {
    async fn run(
        &self,
        _: &TenantId,
        connection: &str,
        _: &str,
        _: &Value,
        _: &str,
    ) -> Result<Value, CallError> {
        Err(CallError::permanent(format!(
            "integration {connection:?} is not available"
        )))
    }
}
