//! The run engine: the worker's claim-run-finish cycle, the reaper, schedules, and the
//! `agent-compiled` subscription. Handlers in `functions.rs` only decode envelopes and call it.
//!
//! Exactly once in effect, on an at-least-once queue:
//! - a job moves only by compare-and-swap on its ETag ([`JobStore::replace`]); a worker claims
//!   it (`queued → running`, or takes over an expired lease) with its invocation id as owner and
//!   a lease, and every later write of that worker is conditioned on the ETag it last wrote;
//! - a delivery that finds the job terminal, or owned under a live lease, completes and does
//!   nothing; a lost CAS means another worker took over, and this one stops without writing;
//! - after each step the step record and the run position are written (and the lease renewed),
//!   so a redelivery after a crash resumes from the last completed step; the in-flight step is
//!   attempted again with the same `Idempotency-Key: {jobId}:{stepId}`, which is what makes the
//!   side effect happen once at the receiving end;
//! - terminal states are written once, by the CAS that moves the job into them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::Stores;
use chrono::{DateTime, Utc};
use flowgrid_domain::plan::{self, Jump, Plan};
use flowgrid_domain::store::jobs::{Created, StepRecord, StepStatus};
use flowgrid_domain::store::{Job, JobId, JobStatus, update_agent};
use flowgrid_domain::{Agent, AgentId, AgentStatus, TenantId};
use flowgrid_domain::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::settings::Settings;
use crate::steps::{StepError, StepRunner};

/// The body of a message on the `executions` queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// The job's tenant (its partition); the job record is authoritative.
    pub tenant_id: String,
    /// The job.
    pub job_id: String,
}

impl JobMessage {
    /// The message for `job`.
    pub fn of(job: &Job) -> Value {
        json!({"tenantId": job.tenant_id.as_str(), "jobId": job.id.to_string()})
    }
}

/// How a worker invocation ended (for logs and tests).
#[derive(Debug, Clone, PartialEq)]
pub enum WorkOutcome {
    /// The job is missing, or belongs to no such tenant.
    Unknown,
    /// The job was already terminal.
    AlreadyDone(JobStatus),
    /// Another worker holds a live lease on it.
    OwnedElsewhere,
    /// The tenant is at its concurrency limit; the job stays queued.
    Waiting,
    /// This worker lost the job to another (its lease was taken over).
    Lost,
    /// This worker ran it to a terminal state.
    Finished(JobStatus),
}

/// Messages a worker invocation sends (through its output binding) on top of its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// What happened.
    pub outcome: WorkOutcome,
    /// `{tenantId, jobId}` messages to send to the `executions` queue.
    pub messages: Vec<Value>,
}

enum Claim {
    Run(Box<Job>),
    Stop(WorkOutcome),
}

enum Watch {
    Cancel,
    Lost,
}

/// The engine, shared by every function of the app.
#[derive(Clone)]
pub struct Engine {
    /// Storage.
    pub stores: Stores,
    /// Settings.
    pub settings: Settings,
    /// Step kinds.
    pub runner: StepRunner,
}

fn lost() -> Error {
    Error::Conflict("the job's lease was taken over by another worker".into())
}

fn is_lost(e: &Error) -> bool {
    matches!(e, Error::Conflict(m) if m.starts_with("the job's lease"))
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(60))
}

/// Backoff before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped, with ±25 % jitter.
fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(plan::limits::MAX_BACKOFF_MS);
    let r = u64::from(uuid::Uuid::new_v4().as_bytes()[0]); // 0..=255
    let jittered = capped * (384 + r) / 512; // 0.75x .. 1.25x
    Duration::from_millis(jittered)
}

/// The run context `{input, steps: {<id>: {output}}}`.
fn context(job: &Job, outputs: &HashMap<String, Value>) -> Value {
    let mut steps = Map::new();
    for record in job
        .steps
        .iter()
        .filter(|r| r.status == StepStatus::Succeeded)
    {
        let output = outputs
            .get(&record.id)
            .cloned()
            .unwrap_or_else(|| record.output.clone());
        steps.insert(record.id.clone(), json!({"output": output}));
    }
    json!({"input": job.input, "steps": steps})
}

impl Engine {
    /// Handles one `executions` message for `tenant`/`id` as invocation `owner`.
    pub async fn work(&self, tenant: &TenantId, id: JobId, owner: &str) -> Result<Work> {
        let mut messages = Vec::new();
        let outcome = match self.claim(tenant, id, owner, &mut messages).await? {
            Claim::Stop(outcome) => outcome,
            Claim::Run(job) => match self.run(*job, owner).await {
                Ok(status) => WorkOutcome::Finished(status),
                Err(e) if is_lost(&e) => WorkOutcome::Lost,
                Err(e) => return Err(e),
            },
        };
        if matches!(outcome, WorkOutcome::Finished(_)) {
            messages.extend(self.kick(tenant).await?);
        }
        Ok(Work { outcome, messages })
    }

    /// A message for the tenant's oldest waiting job, if it has a free slot.
    async fn kick(&self, tenant: &TenantId) -> Result<Vec<Value>> {
        let (queued, running) = self.stores.jobs.counts(tenant).await?;
        if queued == 0 || running >= self.settings.tenant_max_running {
            return Ok(Vec::new());
        }
        let free = self.settings.tenant_max_running - running;
        let ids = self
            .stores
            .jobs
            .oldest_queued(tenant, u32::try_from(free).unwrap_or(1))
            .await?;
        Ok(ids
            .into_iter()
            .map(|id| json!({"tenantId": tenant.as_str(), "jobId": id.to_string()}))
            .collect())
    }

    async fn claim(
        &self,
        tenant: &TenantId,
        id: JobId,
        owner: &str,
        messages: &mut Vec<Value>,
    ) -> Result<Claim> {
        for _ in 0..10 {
            let job = match self.stores.jobs.get(tenant, id).await {
                Err(Error::NotFound) => return Ok(Claim::Stop(WorkOutcome::Unknown)),
                other => other?,
            };
            let now = Utc::now();
            if job.status.is_terminal() {
                return Ok(Claim::Stop(WorkOutcome::AlreadyDone(job.status)));
            }
            let lease_live = job.lease_until.is_some_and(|t| t > now);
            if job.status != JobStatus::Queued && lease_live {
                return Ok(Claim::Stop(WorkOutcome::OwnedElsewhere));
            }
            if job.status == JobStatus::Queued {
                let (_, running) = self.stores.jobs.counts(tenant).await?;
                if running >= self.settings.tenant_max_running {
                    return Ok(Claim::Stop(WorkOutcome::Waiting));
                }
            } else if job.attempts >= self.settings.max_claims {
                // The lease of a running job expired too often: its worker keeps dying.
                let reason = format!(
                    "the run was interrupted {} times (its worker stopped before finishing); giving up",
                    job.attempts
                );
                match self.finish_stale(job, &reason).await {
                    Ok(status) => {
                        messages.extend(self.kick(tenant).await?);
                        return Ok(Claim::Stop(WorkOutcome::AlreadyDone(status)));
                    }
                    Err(Error::PreconditionFailed) => continue,
                    Err(e) => return Err(e),
                }
            }
            let was_queued = job.status == JobStatus::Queued;
            let mut next = job.clone();
            if next.status == JobStatus::Queued {
                next.status = JobStatus::Running;
            }
            next.lease_until = Some(now + chrono_dur(self.settings.lease));
            next.lease_owner = Some(owner.to_owned());
            next.attempts += 1;
            next.started_at.get_or_insert(now);
            next.updated_at = now;
            match self.stores.jobs.replace(&next, &job.etag).await {
                Ok(claimed) => {
                    if was_queued {
                        let (_, running) = self.stores.jobs.counts(tenant).await?;
                        if running > self.settings.tenant_max_running {
                            // Another worker claimed a job of this tenant at the same instant:
                            // give this one back and ask for it again.
                            let mut back = claimed.clone();
                            back.status = JobStatus::Queued;
                            back.lease_until = None;
                            back.lease_owner = None;
                            back.attempts -= 1;
                            if self.stores.jobs.replace(&back, &claimed.etag).await.is_ok() {
                                messages.push(JobMessage::of(&back));
                                return Ok(Claim::Stop(WorkOutcome::Waiting));
                            }
                        }
                    }
                    return Ok(Claim::Run(Box::new(claimed)));
                }
                Err(Error::PreconditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Claim::Stop(WorkOutcome::OwnedElsewhere))
    }

    /// Ends a job whose worker keeps disappearing: failed (or cancelled, if a cancel was asked).
    async fn finish_stale(&self, job: Job, reason: &str) -> Result<JobStatus> {
        let now = Utc::now();
        let mut next = job.clone();
        next.status = if job.status == JobStatus::Cancelling {
            JobStatus::Cancelled
        } else {
            JobStatus::Failed
        };
        next.error = Some(reason.to_owned());
        for record in next
            .steps
            .iter_mut()
            .filter(|r| r.status == StepStatus::Running)
        {
            record.status = StepStatus::Failed;
            record.error = Some(reason.to_owned());
            record.finished_at = Some(now);
        }
        next.finished_at = Some(now);
        next.lease_until = None;
        next.lease_owner = None;
        next.updated_at = now;
        self.stores.jobs.replace(&next, &job.etag).await?;
        Ok(next.status)
    }

    /// CAS-writes `job` (renewing the lease). A concurrent cancel request is merged in; any
    /// other concurrent change means the job was taken over: [`lost`].
    async fn save(&self, job: &mut Job, owner: &str) -> Result<()> {
        let now = Utc::now();
        job.updated_at = now;
        if !job.status.is_terminal() {
            job.lease_until = Some(now + chrono_dur(self.settings.lease));
        }
        for _ in 0..5 {
            match self.stores.jobs.replace(job, &job.etag).await {
                Ok(saved) => {
                    *job = saved;
                    return Ok(());
                }
                Err(Error::PreconditionFailed) => {
                    let current = self.stores.jobs.get(&job.tenant_id, job.id).await?;
                    if current.lease_owner.as_deref() != Some(owner) || current.status.is_terminal()
                    {
                        return Err(lost());
                    }
                    if current.status == JobStatus::Cancelling && !job.status.is_terminal() {
                        job.status = JobStatus::Cancelling;
                    }
                    job.etag = current.etag;
                }
                Err(e) => return Err(e),
            }
        }
        Err(lost())
    }

    /// Polls the job while a step runs: returns on a cancel request or a lost lease, renewing the
    /// lease when a third of it has passed. Storage hiccups are ridden out.
    async fn watch(&self, job: &mut Job, owner: &str) -> Watch {
        let renew_every = self.settings.lease / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.cancel_poll).await;
            let Ok(current) = self.stores.jobs.get(&job.tenant_id, job.id).await else {
                continue;
            };
            if current.lease_owner.as_deref() != Some(owner) || current.status.is_terminal() {
                return Watch::Lost;
            }
            if current.status == JobStatus::Cancelling {
                job.status = JobStatus::Cancelling;
                job.etag = current.etag;
                return Watch::Cancel;
            }
            if renewed.elapsed() >= renew_every {
                match self.save(job, owner).await {
                    Ok(()) => renewed = Instant::now(),
                    Err(e) if is_lost(&e) => return Watch::Lost,
                    Err(_) => {}
                }
            }
        }
    }

    /// Writes the terminal state `status` (once: by CAS).
    async fn finish(
        &self,
        job: &mut Job,
        owner: &str,
        status: JobStatus,
        error: Option<String>,
    ) -> Result<JobStatus> {
        job.status = status;
        job.error = error;
        job.finished_at = Some(Utc::now());
        job.lease_until = None;
        job.lease_owner = None;
        self.save(job, owner).await?;
        tracing::info!(job.id = %job.id, tenant = %job.tenant_id, status = status.as_str(), "job finished");
        Ok(status)
    }

    fn capped(&self, output: &Value) -> (Value, bool) {
        let size = serde_json::to_vec(output).map_or(usize::MAX, |b| b.len());
        if size > self.settings.step_output_max_bytes {
            (Value::Null, true)
        } else {
            (output.clone(), false)
        }
    }

    /// Runs the claimed `job` from its position to a terminal state.
    async fn run(&self, mut job: Job, owner: &str) -> Result<JobStatus> {
        let plan: Plan = job.plan.clone();
        let mut outputs: HashMap<String, Value> = HashMap::new();
        loop {
            if job.status == JobStatus::Cancelling {
                return self
                    .finish(
                        &mut job,
                        owner,
                        JobStatus::Cancelled,
                        Some("cancelled on request".into()),
                    )
                    .await;
            }
            let index = match job.next_step {
                Some(i) if i < plan.steps.len() => i,
                _ => {
                    return self
                        .finish(&mut job, owner, JobStatus::Succeeded, None)
                        .await;
                }
            };
            // Between steps: a cancel request is seen here at the latest.
            let current = self.stores.jobs.get(&job.tenant_id, job.id).await?;
            if current.lease_owner.as_deref() != Some(owner) || current.status.is_terminal() {
                return Err(lost());
            }
            if current.status == JobStatus::Cancelling {
                job = current;
                continue;
            }
            let step = plan.steps[index].clone();
            let kind = serde_json::to_value(&step.action)
                .ok()
                .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            let resumed = matches!(job.steps.last(), Some(r) if r.id == step.id && r.status == StepStatus::Running);
            if !resumed {
                job.steps.push(StepRecord {
                    id: step.id.clone(),
                    kind: kind.clone(),
                    status: StepStatus::Running,
                    attempts: 0,
                    started_at: Utc::now(),
                    finished_at: None,
                    duration_ms: None,
                    output: Value::Null,
                    output_truncated: false,
                    error: None,
                    tokens: None,
                });
            }
            let key = format!("{}:{}", job.id, step.id);
            let ctx = context(&job, &outputs);
            let tenant = job.tenant_id.clone();
            loop {
                let last = job.steps.len() - 1;
                job.steps[last].attempts += 1;
                let attempt_no = job.steps[last].attempts;
                self.save(&mut job, owner).await?;
                let attempt = tokio::time::timeout(
                    Duration::from_millis(step.timeout_ms),
                    self.runner.run(&tenant, &plan, &step, &ctx, &key),
                );
                let result = {
                    let tenant_job = &mut job;
                    tokio::select! {
                        r = attempt => Some(r),
                        w = self.watch(tenant_job, owner) => match w {
                            Watch::Cancel => None,
                            Watch::Lost => return Err(lost()),
                        },
                    }
                };
                let last = job.steps.len() - 1;
                let now = Utc::now();
                let Some(result) = result else {
                    let record = &mut job.steps[last];
                    record.status = StepStatus::Cancelled;
                    record.finished_at = Some(now);
                    record.error = Some("cancelled while running; its call was aborted".into());
                    return self
                        .finish(
                            &mut job,
                            owner,
                            JobStatus::Cancelled,
                            Some("cancelled on request".into()),
                        )
                        .await;
                };
                let result = result.unwrap_or_else(|_| {
                    Err(StepError {
                        message: format!("timed out after {} ms", step.timeout_ms),
                        retryable: true,
                        timed_out: true,
                    })
                });
                match result {
                    Ok(outcome) => {
                        let (stored, truncated) = self.capped(&outcome.output);
                        let record = &mut job.steps[last];
                        record.status = StepStatus::Succeeded;
                        record.finished_at = Some(now);
                        record.duration_ms =
                            u64::try_from((now - record.started_at).num_milliseconds()).ok();
                        record.output = stored.clone();
                        record.output_truncated = truncated;
                        record.error = None;
                        record.tokens = outcome.tokens;
                        if kind != "condition" {
                            job.output = Some(stored);
                        }
                        outputs.insert(step.id.clone(), outcome.output);
                        job.next_step = match outcome.next {
                            Jump::Next => Some(index + 1),
                            Jump::Step(k) => Some(k),
                            Jump::End => None,
                        };
                        self.save(&mut job, owner).await?;
                        break;
                    }
                    Err(e) => {
                        job.steps[last].error = Some(e.message.clone());
                        if e.retryable && attempt_no < step.retry.max_attempts {
                            self.save(&mut job, owner).await?;
                            let wait =
                                tokio::time::sleep(backoff(step.retry.backoff_ms, attempt_no));
                            let cancelled = {
                                let j = &mut job;
                                tokio::select! {
                                    () = wait => false,
                                    w = self.watch(j, owner) => match w {
                                        Watch::Cancel => true,
                                        Watch::Lost => return Err(lost()),
                                    },
                                }
                            };
                            if cancelled {
                                let record = &mut job.steps[last];
                                record.status = StepStatus::Cancelled;
                                record.finished_at = Some(Utc::now());
                                return self
                                    .finish(
                                        &mut job,
                                        owner,
                                        JobStatus::Cancelled,
                                        Some("cancelled on request".into()),
                                    )
                                    .await;
                            }
                            continue;
                        }
                        let record = &mut job.steps[last];
                        record.status = StepStatus::Failed;
                        record.finished_at = Some(now);
                        record.duration_ms =
                            u64::try_from((now - record.started_at).num_milliseconds()).ok();
                        let status = if e.timed_out {
                            JobStatus::TimedOut
                        } else {
                            JobStatus::Failed
                        };
                        let reason = format!(
                            "step {:?} failed after {attempt_no} attempt(s): {}",
                            step.id, e.message
                        );
                        return self.finish(&mut job, owner, status, Some(reason)).await;
                    }
                }
            }
        }
    }

    /// The reaper: re-enqueues queued jobs nobody picked up for `queued_after`, and jobs whose
    /// worker's lease expired (a redelivery takes over, or fails them after too many claims).
    /// Returns the messages to send.
    pub async fn reap(&self, now: DateTime<Utc>, queued_after: Duration) -> Result<Vec<Value>> {
        let stale = self
            .stores
            .jobs
            .stale(now, now - chrono_dur(queued_after), 200)
            .await?;
        let mut messages = Vec::new();
        for s in stale {
            let Ok(job) = self.stores.jobs.get(&s.tenant_id, s.id).await else {
                continue;
            };
            match job.status {
                JobStatus::Queued => {
                    // Touch it so that one waiting job is re-enqueued at most once a period.
                    let mut next = job.clone();
                    next.updated_at = now;
                    if self.stores.jobs.replace(&next, &job.etag).await.is_ok() {
                        messages.push(JobMessage::of(&job));
                    }
                }
                JobStatus::Running | JobStatus::Cancelling
                    if job.attempts >= self.settings.max_claims =>
                {
                    let reason = format!(
                        "the run was interrupted {} times (its worker stopped before finishing); giving up",
                        job.attempts
                    );
                    if self.finish_stale(job, &reason).await.is_ok() {
                        messages.extend(self.kick(&s.tenant_id).await?);
                    }
                }
                JobStatus::Running | JobStatus::Cancelling => messages.push(JobMessage::of(&job)),
                _ => {}
            }
        }
        Ok(messages)
    }

    /// Creates a job for `agent` (its compiled version, or its current one when never compiled).
    /// The caller sends the message of a new job (see `routes::submit_job` for why).
    pub async fn create_job(
        &self,
        agent: &Agent,
        input: Value,
        trigger: &str,
        created_by: &str,
        idempotency_key: Option<String>,
        request_hash: Option<String>,
    ) -> Result<Created> {
        if agent.status == AgentStatus::Disabled {
            return Err(Error::Conflict(
                "The agent is disabled; enable it to run it.".into(),
            ));
        }
        let source = match agent.compiled_version {
            Some(v) if v != agent.version => {
                self.stores
                    .agents
                    .version(&agent.tenant_id, agent.id, v)
                    .await?
            }
            _ => agent.clone(),
        };
        let plan = plan::compile(&source)?;
        crate::schema::validate(plan.input_schema.as_ref(), &input)?;
        let (queued, _) = self.stores.jobs.counts(&agent.tenant_id).await?;
        if queued >= self.settings.tenant_max_queued {
            return Err(Error::TooManyRequests {
                retry_after_secs: 30,
            });
        }
        let now = Utc::now();
        let job = Job {
            id: JobId::new(),
            tenant_id: agent.tenant_id.clone(),
            agent_id: agent.id,
            agent_version: source.version,
            trigger: trigger.to_owned(),
            input,
            status: JobStatus::Queued,
            plan,
            steps: Vec::new(),
            next_step: Some(0),
            output: None,
            error: None,
            attempts: 0,
            lease_until: None,
            lease_owner: None,
            idempotency_key,
            request_hash,
            created_by: created_by.to_owned(),
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            etag: String::new(),
        };
        self.stores.jobs.create(&job).await
    }

    /// The schedule timer: for every scheduled agent whose latest due time (within the last
    /// `lookback`, and after the agent was created) has passed, creates its job with the key
    /// `schedule:{agentId}:{dueTime}`, so a due time fires at most once whatever the number of
    /// timer firings. Returns the messages of the new jobs.
    pub async fn run_schedules(
        &self,
        now: DateTime<Utc>,
        lookback: Duration,
    ) -> Result<Vec<Value>> {
        let mut messages = Vec::new();
        for agent in self.stores.agents.scheduled(10_000).await? {
            let Some(schedule) = &agent.schedule else {
                continue;
            };
            let from = (now - chrono_dur(lookback)).max(agent.created_at);
            let mut due = None;
            let mut t = from;
            while let Some(next) = schedule.next_after(t) {
                if next > now {
                    break;
                }
                due = Some(next);
                t = next;
            }
            let Some(due) = due else { continue };
            let key = format!("schedule:{}:{}", agent.id, due.to_rfc3339());
            match self
                .create_job(&agent, json!({}), "schedule", "schedule", Some(key), None)
                .await
            {
                Ok(Created::New(job)) => messages.push(JobMessage::of(&job)),
                Ok(Created::Existing(_)) => {}
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(agent.id = %agent.id, tenant = %agent.tenant_id, error = %e, "scheduled run not created")
                }
            }
        }
        Ok(messages)
    }

    /// The `agent-compiled` subscription: records `version` as the agent's compiled version.
    pub async fn mark_compiled(
        &self,
        tenant: &TenantId,
        agent: AgentId,
        version: u32,
    ) -> Result<()> {
        let now = Utc::now();
        let result = update_agent(
            self.stores.agents.as_ref(),
            tenant,
            agent,
            None,
            |current| {
                if version == 0 || version > current.version {
                    return Err(Error::BadRequest(format!(
                        "version {version} of the agent does not exist"
                    )));
                }
                if current.compiled_version == Some(version) {
                    return Err(Error::Conflict("already marked".into()));
                }
                let mut next = current.clone();
                next.version = current.version + 1;
                next.compiled_version = Some(version);
                if next.status == AgentStatus::Draft {
                    next.status = AgentStatus::Compiled;
                }
                next.updated_at = now;
                next.updated_by = "design:compile".into();
                Ok(next)
            },
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(Error::Conflict(m)) if m == "already marked" => Ok(()),
            Err(e) => Err(e),
        }
    }
}
