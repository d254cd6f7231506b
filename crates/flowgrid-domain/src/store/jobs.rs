//! The jobs store: runs of agents, their per-step records, leases and idempotency keys.
//!
//! A job moves `queued → running → succeeded | failed | cancelled | timed_out` (and `running →
//! cancelling → cancelled`) by the transitions of its aggregate ([`crate::job`]), written only
//! through [`JobStore::replace`], a compare-and-swap on its ETag, so two deliveries of the same
//! message can never both own a run and a terminal state is written exactly once.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Page, Versioned};
use crate::Result;
use crate::{AgentId, TenantId};

pub use crate::job::{Job, JobId, JobStatus, StepRecord, StepStatus, Tokens};

impl Versioned for Job {
    fn etag(&self) -> &str {
        &self.etag
    }
}

/// Filters and paging of a job listing.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Only jobs of this agent.
    pub agent_id: Option<AgentId>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Page size (already clamped).
    pub limit: u32,
    /// Where the previous page ended.
    pub continuation_token: Option<String>,
}

/// What [`JobStore::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new job was stored.
    New(Job),
    /// A job with the same idempotency key (within 24 h) already existed; here it is.
    Existing(Job),
}

/// Run figures of one agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunStats {
    /// Submission time of the newest job.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Jobs submitted since the `since` instant asked for.
    pub runs_since: u64,
    /// Of those, how many finished, and how many of them succeeded.
    pub finished_since: u64,
    /// Of those, how many succeeded.
    pub succeeded_since: u64,
    /// Jobs running or cancelling now.
    pub running: u64,
}

/// A job needing the reaper's attention.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleJob {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its id.
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
}

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 3600;

/// Jobs per tenant.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// Stores `job` (with its ETag). When it carries an idempotency key that the tenant used for
    /// another job within [`IDEMPOTENCY_WINDOW_SECS`], stores nothing and returns that job.
    async fn create(&self, job: &Job) -> Result<Created>;

    /// The tenant's job `id`.
    async fn get(&self, tenant: &TenantId, id: JobId) -> Result<Job>;

    /// Replaces the job with `next` if its ETag is still `expected_etag`.
    /// [`Error::PreconditionFailed`] when it moved on, [`Error::NotFound`] when it is gone.
    async fn replace(&self, next: &Job, expected_etag: &str) -> Result<Job>;

    /// The tenant's jobs, newest first.
    async fn list(&self, tenant: &TenantId, query: &JobQuery) -> Result<Page<Job>>;

    /// How many of the tenant's jobs are `queued`, and how many `running` or `cancelling`.
    async fn counts(&self, tenant: &TenantId) -> Result<(u64, u64)>;

    /// The tenant's oldest `queued` jobs (at most `limit`), oldest first.
    async fn oldest_queued(&self, tenant: &TenantId, limit: u32) -> Result<Vec<JobId>>;

    /// Across tenants: running or cancelling jobs whose lease ended before `now`, and queued
    /// jobs last changed before `queued_before` (at most `limit` in all).
    async fn stale(
        &self,
        now: DateTime<Utc>,
        queued_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StaleJob>>;

    /// Run figures of one agent.
    async fn agent_stats(
        &self,
        tenant: &TenantId,
        agent: AgentId,
        since: DateTime<Utc>,
    ) -> Result<AgentRunStats>;
}
