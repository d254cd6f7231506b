//! The Job aggregate: one run of an agent, its per-step records and its lease, and the
//! transitions that move it.
//!
//! ```text
//! queued ──claim──▶ running ──finish──▶ succeeded | failed | timed_out | cancelled
//!   │   ◀─give_back─┘  │  └──cancel──▶ cancelling ──finish / cancel_step──▶ cancelled | failed
//!   └──cancel──▶ cancelled        running | cancelling ──give_up──▶ failed | cancelled
//! ```
//!
//! Every transition is a method that checks the move is legal and then changes the job, or
//! returns a domain error and leaves it as it was: [`Error::Conflict`] for a move the job's state
//! forbids (a finished job is finished for good), [`Error::BadRequest`] for an argument that
//! cannot be right. The store (`JobStore`) writes the result by compare-and-swap
//! on the ETag, so a terminal state is written exactly once; the events a transition gives rise
//! to ([`Job::started_event`], [`Job::finished_event`]) are derived from the written state, with
//! ids that are the same for the same fact.

#[cfg(test)]
mod tests;
pub(crate) mod transitions;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::Plan;
use crate::{AgentId, TenantId};
use crate::{Error, Result};

pub use transitions::{CANCELLED_ON_REQUEST, Outcome, StepSuccess, is_lease_lost, lease_lost};

/// A job id: a UUID v7 (ids sort by creation time).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        JobId(uuid::Uuid::now_v7())
    }

    /// Parses an id from a path segment or a message; anything but a UUID is a 400.
    pub fn parse(s: &str) -> Result<Self> {
        uuid::Uuid::try_parse(s).map(JobId).map_err(|_| {
            let shown: String = s.chars().take(64).collect();
            Error::BadRequest(format!("{shown:?} is not a job id (a UUID)"))
        })
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker (or for a slot under the tenant's concurrency limit).
    Queued,
    /// Owned by a worker under a lease.
    Running,
    /// Cancel requested while running; the worker stops at the next check.
    Cancelling,
    /// Every step ran.
    Succeeded,
    /// A step failed after its retries, or the run could not go on.
    Failed,
    /// Cancelled.
    Cancelled,
    /// A step ran out of time after its retries.
    TimedOut,
}

impl JobStatus {
    /// The status's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Cancelling => "cancelling",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
        }
    }

    /// Parses a status name (for query filters).
    pub fn parse(s: &str) -> Result<Self> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Cancelling,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
            JobStatus::TimedOut,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "status {s:?} is not one of queued, running, cancelling, succeeded, failed, cancelled, timed_out"
            ))
        })
    }

    /// Whether no further change can happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut
        )
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Being attempted.
    Running,
    /// Done.
    Succeeded,
    /// Failed after its retries.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

/// Tokens an `llm` step used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    /// Prompt tokens.
    pub input: u64,
    /// Generated tokens.
    pub output: u64,
}

/// One model call of an `llm` step, as the job records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmCall {
    /// The provider that answered (`offline`, `openai`, `openai-chat`, `azure-openai`, `anthropic`).
    pub provider: String,
    /// The model (or deployment) that answered, as the provider names it.
    pub model: String,
    /// Tokens by kind.
    pub tokens: crate::events::TokenUsage,
    /// The provider's usage object as it sent it.
    #[serde(default)]
    pub raw_usage: Value,
    /// From the first attempt to the answer, retries included, in ms.
    pub latency_ms: u64,
    /// Attempts the provider layer made.
    pub attempts: u32,
    /// Cost in US dollars; `null` when the model's price is unknown (see `costUnknownReason`).
    pub cost_usd: Option<f64>,
    /// Cost in micro-dollars, rounded up; `null` with `costUsd`.
    pub cost_micro_usd: Option<u64>,
    /// Why the cost is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_unknown_reason: Option<String>,
    /// The price table's version the cost comes from.
    pub price_version: String,
}

/// The record of one executed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// The step's id in the plan.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Duration from start to finish, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Its output (`null` when it was larger than the cap; see `outputTruncated`).
    #[serde(default)]
    pub output: Value,
    /// Whether the output was dropped for being larger than the cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// Why it failed (the last attempt's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens used, for `llm` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// The model call, for `llm` steps: provider, model, tokens by kind, latency, cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmCall>,
}

/// A run of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The agent run.
    pub agent_id: AgentId,
    /// The agent version whose plan runs.
    pub agent_version: u32,
    /// `manual` or `schedule`.
    pub trigger: String,
    /// The run's input.
    pub input: Value,
    /// Where it is.
    pub status: JobStatus,
    /// The compiled plan, frozen at submit time.
    pub plan: Plan,
    /// Records of the executed steps, in execution order.
    pub steps: Vec<StepRecord>,
    /// Index in the plan of the next step to run; `None` when the run is at its end.
    pub next_step: Option<usize>,
    /// The run's output: the last executed step's output.
    pub output: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// How many times a worker has claimed it.
    pub attempts: u32,
    /// The owning worker's lease end, while running.
    pub lease_until: Option<DateTime<Utc>>,
    /// The owning worker (its invocation id), while running.
    pub lease_owner: Option<String>,
    /// The submitter's `Idempotency-Key`, or `schedule:{agentId}:{dueTime}`.
    pub idempotency_key: Option<String>,
    /// Hash of the submitted request, to tell a reused key with a different body.
    pub request_hash: Option<String>,
    /// Who submitted it.
    pub created_by: String,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// First claim.
    pub started_at: Option<DateTime<Utc>>,
    /// Terminal time.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Opaque concurrency token; changes on every write. Set by the store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}
