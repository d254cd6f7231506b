//! The agents store.

use chrono::{DateTime, Utc};

use super::Page;
use crate::store::{Condition, Versioned, update_with_retry};
use crate::{Agent, AgentId, AgentStatus, TenantId};
use crate::{Error, Result};

/// Filters and paging of an agent listing.
#[derive(Debug, Clone, Default)]
pub struct AgentQuery {
    /// Only agents with this status.
    pub status: Option<AgentStatus>,
    /// Only agents whose name contains this text (case-insensitive).
    pub name_contains: Option<String>,
    /// Page size (already clamped).
    pub limit: u32,
    /// Where the previous page ended.
    pub continuation_token: Option<String>,
}

/// One entry of an agent's version history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentVersionSummary {
    /// Version number.
    pub version: u32,
    /// Name at that version.
    pub name: String,
    /// Status at that version.
    pub status: AgentStatus,
    /// When the version was made.
    pub created_at: chrono::DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
}

impl From<&Agent> for AgentVersionSummary {
    fn from(a: &Agent) -> Self {
        AgentVersionSummary {
            version: a.version,
            name: a.name.clone(),
            status: a.status,
            created_at: a.updated_at,
            created_by: a.updated_by.clone(),
        }
    }
}

/// An agent as the JSON the API answers with, and its ETag.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDocument {
    /// The agent's JSON: what [`Agent`]'s `Serialize` gives.
    pub json: String,
    /// Its ETag.
    pub etag: String,
}

impl AgentDocument {
    /// The document of `agent`, encoded.
    pub fn of(agent: &Agent) -> Result<Self> {
        let json = serde_json::to_string(agent)
            .map_err(|e| Error::Internal(format!("encoding agent: {e}")))?;
        Ok(AgentDocument {
            json,
            etag: agent.etag.clone(),
        })
    }
}

/// Agents and their immutable version history, per tenant.
#[async_trait::async_trait]
pub trait AgentStore: Send + Sync {
    /// Stores a new agent and its version 1. Returns it with its ETag.
    /// [`Error::Conflict`] when the tenant already has an agent of that name.
    async fn insert(&self, agent: &Agent) -> Result<Agent>;

    /// The tenant's agent `id`.
    async fn get(&self, tenant: &TenantId, id: AgentId) -> Result<Agent>;

    /// The tenant's agent `id` as the JSON the API answers with. A backend that stores exactly
    /// that JSON serves it without decoding and encoding it again; the default encodes
    /// [`AgentStore::get`]'s agent.
    async fn get_document(&self, tenant: &TenantId, id: AgentId) -> Result<AgentDocument> {
        AgentDocument::of(&self.get(tenant, id).await?)
    }

    /// The tenant's agents, newest first.
    async fn list(&self, tenant: &TenantId, query: &AgentQuery) -> Result<Page<Agent>>;

    /// Replaces the agent with `next` (its next version) if its current ETag is still
    /// `expected_etag`, and records `next` in the history. [`Error::PreconditionFailed`] when the
    /// ETag moved on, [`Error::NotFound`] when it is gone, [`Error::Conflict`] on a name clash.
    async fn replace(&self, next: &Agent, expected_etag: &str) -> Result<Agent>;

    /// Deletes the agent and its history. `if_match` must match its ETag when given.
    async fn delete(
        &self,
        tenant: &TenantId,
        id: AgentId,
        if_match: Option<&Condition>,
    ) -> Result<()>;

    /// The agent's versions, newest first.
    async fn versions(
        &self,
        tenant: &TenantId,
        id: AgentId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<AgentVersionSummary>>;

    /// The agent as it was at `version`.
    async fn version(&self, tenant: &TenantId, id: AgentId, version: u32) -> Result<Agent>;

    /// Across tenants: agents that have a schedule and are not disabled (at most `limit`), for
    /// the Execution app's schedule timer. A backend that cannot answer this query reports
    /// [`Error::Unavailable`], so the timer fails loudly instead of silently never firing.
    async fn scheduled(&self, limit: u32) -> Result<Vec<Agent>> {
        let _ = limit;
        Err(Error::Unavailable(
            "this storage backend does not list scheduled agents yet".into(),
        ))
    }

    /// Across tenants: the agents whose stored next fire time is at or before `now` (at most
    /// `limit`, earliest first), and only those: a backend keeps the next fire time of every
    /// agent ([`next_fire`] from the time it was written) in an index, so the schedule timer
    /// reads what is due, not every scheduled agent.
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueAgent>> {
        let _ = (now, limit);
        Err(Error::Unavailable(
            "this storage backend does not list due agents yet".into(),
        ))
    }

    /// After the timer handled the due time `from` of agent `id`: its next fire time becomes
    /// `to` (none: it no longer fires), unless it changed since it was read (an edit computed a
    /// new one; that one stands). Changes neither the agent's version nor its ETag.
    async fn advance_schedule(
        &self,
        tenant: &TenantId,
        id: AgentId,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let _ = (tenant, id, from, to);
        Err(Error::Unavailable(
            "this storage backend does not keep fire times yet".into(),
        ))
    }
}

/// The first time after `after` that `agent` fires on schedule: only an `active` agent with a
/// schedule fires (drafts, compiled drafts and disabled agents keep their schedule but do not
/// run on it). Whole seconds: `after` is truncated first.
pub fn next_fire(agent: &Agent, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if agent.status != AgentStatus::Active {
        return None;
    }
    let whole = DateTime::from_timestamp(after.timestamp(), 0)?;
    agent.schedule.as_ref()?.next_after(whole)
}

/// An agent whose stored next fire time has come, as [`AgentStore::due`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct DueAgent {
    /// The agent.
    pub agent: Agent,
    /// Its stored next fire time (the Unix epoch for an agent stored before fire times were).
    pub next_fire: DateTime<Utc>,
}

impl Versioned for Agent {
    fn etag(&self) -> &str {
        &self.etag
    }
}

/// Read-modify-write of one agent with optimistic concurrency: reads it, checks `if_match`,
/// computes the next version with `change`, and writes it conditioned on the ETag it read.
/// Without `if_match` a concurrent writer is retried a few times; with it, a mismatch is a 412.
pub async fn update_agent<F>(
    store: &dyn AgentStore,
    tenant: &TenantId,
    id: AgentId,
    if_match: Option<&Condition>,
    mut change: F,
) -> Result<Agent>
where
    F: FnMut(&Agent) -> Result<Agent> + Send,
{
    const ATTEMPTS: usize = 5;
    let result = update_with_retry(
        if if_match.is_some() { 1 } else { ATTEMPTS },
        || store.get(tenant, id),
        |current| {
            if let Some(condition) = if_match
                && !condition.matches(&current.etag)
            {
                return Err(Error::PreconditionFailed);
            }
            change(current).map(Some)
        },
        |next, etag| async move { store.replace(&next, &etag).await },
    )
    .await;
    match result {
        Err(Error::PreconditionFailed) if if_match.is_none() => Err(Error::Conflict(
            "The agent is being changed by others; try again.".into(),
        )),
        other => other,
    }
}

/// The `agent-compiled` fact recorded on the agent: `version` is the version its runs use
/// ([`Agent::mark_compiled`], one new version of the agent; nothing when it is already marked).
/// [`Error::NotFound`] for no such agent, [`Error::BadRequest`] for a version it never had.
pub async fn record_compiled(
    agents: &dyn AgentStore,
    tenant: &TenantId,
    id: AgentId,
    version: u32,
) -> Result<Agent> {
    let now = Utc::now();
    update_with_retry(
        5,
        || agents.get(tenant, id),
        |current| {
            let mut next = current.clone();
            Ok(next.mark_compiled(version, now)?.then_some(next))
        },
        |next, etag| async move { agents.replace(&next, &etag).await },
    )
    .await
    .map_err(|e| match e {
        Error::PreconditionFailed => {
            Error::Conflict("The agent is being changed by others; try again.".into())
        }
        other => other,
    })
}
