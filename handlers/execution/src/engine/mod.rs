//! The run engine: the worker's claim-run-finish cycle, the reaper, schedules and cancel.
//! Handlers in `functions.rs` and `routes.rs` only decode requests and call it; the rules of
//! each move of a job are the transitions of the domain's `Job` (`flowgrid_domain::job`).
//!
//! Exactly once in effect, on an at-least-once queue:
//! - a job moves only by compare-and-swap on its ETag ([`JobStore::replace`] through
//!   [`update_with_retry`]); a worker claims it (`queued → running`, or takes over an expired
//!   lease) with its invocation id as owner and a lease, and every later write of that worker is
//!   conditioned on the ETag it last wrote;
//! - a delivery that finds the job terminal, or owned under a live lease, completes and does
//!   nothing; a lost CAS means another worker took over, and this one stops without writing;
//! - after each step the step record and the run position are written (and the lease renewed),
//!   so a redelivery after a crash resumes from the last completed step; the in-flight step is
//!   attempted again with the same `Idempotency-Key: {jobId}:{stepId}`, which is what makes the
//!   side effect happen once at the receiving end;
//! - terminal states are written once, by the CAS that moves the job into them, and the
//!   invocation that wrote one is the one that reports `flowgrid.job.finished`.
//!
//! [`JobStore::replace`]: flowgrid_domain::store::JobStore::replace

mod run;

use std::time::Duration;

use chrono::{DateTime, Utc};
use flowgrid_domain::events::{CloudEvent, PlatformEvent};
use flowgrid_domain::job::is_lease_lost;
use flowgrid_domain::store::jobs::Created;
use flowgrid_domain::store::{self, DueAgent, Job, JobId, JobStatus, Versioned, update_with_retry};
use flowgrid_domain::{Agent, AgentStatus, TenantId};
use flowgrid_domain::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::settings::Settings;
use crate::steps::StepRunner;
use crate::{APP, Stores};

/// Attempts of a claim before the delivery gives up to the other writers.
const CLAIM_ATTEMPTS: usize = 10;
/// Attempts of an API cancel against concurrent writers.
const CANCEL_ATTEMPTS: usize = 5;

/// The body of a message on the `executions` queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// The job's tenant (its partition); the job record is authoritative.
    pub tenant_id: String,
    /// The job.
    pub job_id: String,
    /// The correlation id of the request that submitted the job, which the worker logs the
    /// run under (absent when a timer or the reaper enqueued it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The W3C trace context of the span that enqueued the job (when traces are exported), so
    /// the run continues the submitting request's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl JobMessage {
    /// The message for `job`, carrying the correlation id of the request being served.
    pub fn of(job: &Job) -> Value {
        let mut message = json!({"tenantId": job.tenant_id.as_str(), "jobId": job.id.to_string()});
        if let Some(id) = flowgrid_http::correlation::current() {
            message["correlationId"] = Value::String(id);
        }
        if let Some(tp) = flowgrid_http::otel::current_traceparent() {
            message["traceparent"] = Value::String(tp);
        }
        message
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

/// What an invocation sends through its output bindings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// `{tenantId, jobId}` messages for the `executions` queue.
    pub messages: Vec<Value>,
    /// Platform events for the `platform-events` topic (without trace context: the function
    /// adds the invocation's).
    pub events: Vec<CloudEvent<PlatformEvent>>,
}

/// What a worker invocation did, and what it sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// What happened.
    pub outcome: WorkOutcome,
    /// Messages and events to send.
    pub effects: Effects,
}

enum Claim {
    Run(Box<Job>),
    Stop(WorkOutcome),
}

/// What a claim attempt did to the job.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Took {
    /// Nothing: the job is finished, leased by another worker, or waiting for a slot.
    Nothing,
    /// Claimed it (from `queued`, or by taking over an expired lease).
    Claimed { from_queue: bool },
    /// Gave it up: its workers kept dying.
    GaveUp,
}

/// A job as a claim sees it: with whether its tenant is at its limit, and what the claim did.
struct Claiming {
    job: Job,
    at_limit: bool,
    took: Took,
}

impl Versioned for Claiming {
    fn etag(&self) -> &str {
        &self.job.etag
    }
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

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(60))
}

impl Engine {
    /// Handles one `executions` message for `tenant`/`id` as invocation `owner`.
    pub async fn work(&self, tenant: &TenantId, id: JobId, owner: &str) -> Result<Work> {
        let mut effects = Effects::default();
        let outcome = match self.claim(tenant, id, owner, &mut effects).await? {
            Claim::Stop(outcome) => outcome,
            Claim::Run(job) => {
                effects.events.extend(job.started_event(APP));
                match self.run(*job, owner).await {
                    Ok(done) => {
                        effects.events.extend(done.finished_event(APP));
                        effects
                            .messages
                            .extend(self.kick_after_finish(tenant).await);
                        WorkOutcome::Finished(done.status)
                    }
                    Err(e) if is_lease_lost(&e) => WorkOutcome::Lost,
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Work { outcome, effects })
    }

    /// A message for the tenant's oldest waiting job, if it has a free slot: one, for the one
    /// slot the job that just ended freed (a job whose message came while its tenant was at
    /// its limit waits without one, and the oldest queued jobs are those). Not one per free
    /// slot: below the limit every queued job still has its own message, so a finish would
    /// send copies of the whole backlog's oldest messages (with a limit of 1,000 and a flood,
    /// the queue grew by hundreds of copies per finished run).
    async fn kick(&self, tenant: &TenantId) -> Result<Vec<Value>> {
        let (queued, running) = self.stores.jobs.counts(tenant).await?;
        if queued == 0 || running >= self.settings.tenant_max_running {
            return Ok(Vec::new());
        }
        let ids = self.stores.jobs.oldest_queued(tenant, 1).await?;
        Ok(ids
            .into_iter()
            .map(|id| json!({"tenantId": tenant.as_str(), "jobId": id.to_string()}))
            .collect())
    }

    /// [`Engine::kick`] after this invocation wrote a terminal state: a storage failure here
    /// must not fail the invocation, whose answer carries the one `flowgrid.job.finished` of
    /// the job (a redelivery finds it finished and reports nothing). The reaper re-enqueues
    /// the waiting jobs a failed kick leaves behind.
    async fn kick_after_finish(&self, tenant: &TenantId) -> Vec<Value> {
        self.kick(tenant).await.unwrap_or_else(|e| {
            tracing::warn!(tenant = %tenant, error = %e, "waiting jobs not kicked; the reaper will");
            Vec::new()
        })
    }

    /// Claims the job for `owner`, or says why not; a job whose workers keep dying is given up.
    async fn claim(
        &self,
        tenant: &TenantId,
        id: JobId,
        owner: &str,
        effects: &mut Effects,
    ) -> Result<Claim> {
        let jobs = self.stores.jobs.as_ref();
        let result = update_with_retry(
            CLAIM_ATTEMPTS,
            || self.load_claiming(tenant, id),
            |current| self.take(current, owner),
            |next, etag| async move {
                let job = jobs.replace(&next.job, &etag).await?;
                Ok(Claiming { job, ..next })
            },
        )
        .await;
        let claiming = match result {
            Ok(claiming) => claiming,
            Err(Error::NotFound) => return Ok(Claim::Stop(WorkOutcome::Unknown)),
            Err(Error::PreconditionFailed) => return Ok(Claim::Stop(WorkOutcome::OwnedElsewhere)),
            Err(e) => return Err(e),
        };
        let job = claiming.job;
        Ok(match claiming.took {
            Took::Nothing if job.status.is_terminal() => {
                Claim::Stop(WorkOutcome::AlreadyDone(job.status))
            }
            Took::Nothing if claiming.at_limit => Claim::Stop(WorkOutcome::Waiting),
            Took::Nothing => Claim::Stop(WorkOutcome::OwnedElsewhere),
            Took::GaveUp => {
                effects.events.extend(job.finished_event(APP));
                effects
                    .messages
                    .extend(self.kick_after_finish(tenant).await);
                Claim::Stop(WorkOutcome::AlreadyDone(job.status))
            }
            Took::Claimed { from_queue } => self.keep_slot(job, from_queue, effects).await?,
        })
    }

    /// The job, and for a queued one whether its tenant is at its concurrency limit.
    async fn load_claiming(&self, tenant: &TenantId, id: JobId) -> Result<Claiming> {
        let job = self.stores.jobs.get(tenant, id).await?;
        let at_limit = job.status == JobStatus::Queued && {
            let (_, running) = self.stores.jobs.counts(tenant).await?;
            running >= self.settings.tenant_max_running
        };
        Ok(Claiming {
            job,
            at_limit,
            took: Took::Nothing,
        })
    }

    /// The claim's decision on `current`: nothing to take, a claim, or giving it up.
    fn take(&self, current: &Claiming, owner: &str) -> Result<Option<Claiming>> {
        let now = Utc::now();
        let job = &current.job;
        if job.status.is_terminal() || job.is_leased(now) || current.at_limit {
            return Ok(None);
        }
        let mut next = job.clone();
        let took = if job.claims_exhausted(self.settings.max_claims) {
            next.give_up(now)?;
            Took::GaveUp
        } else {
            next.claim(owner, now, chrono_dur(self.settings.lease))?;
            Took::Claimed {
                from_queue: job.status == JobStatus::Queued,
            }
        };
        Ok(Some(Claiming {
            job: next,
            at_limit: false,
            took,
        }))
    }

    /// After a claim from `queued`: if another worker claimed a job of the same tenant at the
    /// same instant and the tenant is now over its limit, gives this one back and asks for it
    /// again.
    async fn keep_slot(
        &self,
        claimed: Job,
        from_queue: bool,
        effects: &mut Effects,
    ) -> Result<Claim> {
        if from_queue {
            let (_, running) = self.stores.jobs.counts(&claimed.tenant_id).await?;
            if running > self.settings.tenant_max_running {
                let mut back = claimed.clone();
                back.give_back()?;
                if self.stores.jobs.replace(&back, &claimed.etag).await.is_ok() {
                    effects.messages.push(JobMessage::of(&back));
                    return Ok(Claim::Stop(WorkOutcome::Waiting));
                }
            }
        }
        Ok(Claim::Run(Box::new(claimed)))
    }

    /// The reaper: re-enqueues queued jobs nobody picked up for `queued_after`, and jobs whose
    /// worker's lease expired (a redelivery takes over; after too many claims they are given
    /// up here). Returns the messages and the events of the jobs it ended.
    pub async fn reap(&self, now: DateTime<Utc>, queued_after: Duration) -> Result<Effects> {
        let stale = self
            .stores
            .jobs
            .stale(now, now - chrono_dur(queued_after), 200)
            .await?;
        let mut effects = Effects::default();
        for s in stale {
            let Ok(job) = self.stores.jobs.get(&s.tenant_id, s.id).await else {
                continue;
            };
            if job.claims_exhausted(self.settings.max_claims) {
                let mut next = job.clone();
                next.give_up(Utc::now())?;
                if let Ok(done) = self.stores.jobs.replace(&next, &job.etag).await {
                    effects.events.extend(done.finished_event(APP));
                    effects.messages.extend(self.kick(&s.tenant_id).await?);
                }
            } else if job.status == JobStatus::Queued {
                // Touch it so that one waiting job is re-enqueued at most once a period.
                let mut next = job.clone();
                next.requeue(now)?;
                if self.stores.jobs.replace(&next, &job.etag).await.is_ok() {
                    effects.messages.push(JobMessage::of(&job));
                }
            } else if !job.status.is_terminal() {
                effects.messages.push(JobMessage::of(&job));
            }
        }
        Ok(effects)
    }

    /// A cancel request on the tenant's job `id` ([`Job::cancel`]), retried against concurrent
    /// writers; returns the job as it now is.
    pub async fn cancel(&self, tenant: &TenantId, id: JobId) -> Result<Job> {
        let jobs = self.stores.jobs.as_ref();
        update_with_retry(
            CANCEL_ATTEMPTS,
            || jobs.get(tenant, id),
            |job| {
                let mut next = job.clone();
                Ok(next.cancel(Utc::now())?.then_some(next))
            },
            |next, etag| async move { jobs.replace(&next, &etag).await },
        )
        .await
        .map_err(|e| match e {
            Error::PreconditionFailed => Error::Conflict("The job is changing; try again.".into()),
            other => other,
        })
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
        let size = serde_json::to_vec(&input).map_or(usize::MAX, |b| b.len());
        if size > self.settings.run_input_max_bytes {
            return Err(Error::Validation(vec![flowgrid_domain::FieldError::new(
                "input",
                format!(
                    "is {size} bytes; a run input may be at most {} bytes (FLOWGRID_RUN_INPUT_MAX_BYTES)",
                    self.settings.run_input_max_bytes
                ),
            )]));
        }
        let plan = source.compile()?;
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

    /// The schedule timer: reads only the agents whose stored next fire time has come
    /// ([`AgentStore::due`], an index range on both backends), and for each takes its latest due
    /// time within the last `lookback` (not before that stored time, nor the agent's creation)
    /// and creates its job with the key `schedule:{agentId}:{dueTime}`, so a due time fires at
    /// most once whatever the number of timer firings. Then it stores the agent's next fire time
    /// after `now` ([`AgentStore::advance_schedule`]). Returns the messages and
    /// `flowgrid.job.submitted` events of the new jobs.
    ///
    /// [`AgentStore::due`]: flowgrid_domain::store::AgentStore::due
    /// [`AgentStore::advance_schedule`]: flowgrid_domain::store::AgentStore::advance_schedule
    pub async fn run_schedules(&self, now: DateTime<Utc>, lookback: Duration) -> Result<Effects> {
        /// Agents read per query; a tick reads batches until none is left (at most `BATCHES`).
        const BATCH: u32 = 500;
        const BATCHES: usize = 20;
        let mut effects = Effects::default();
        for _ in 0..BATCHES {
            let due = self.stores.agents.due(now, BATCH).await?;
            let full = due.len() == BATCH as usize;
            for DueAgent { agent, next_fire } in due {
                self.fire(&agent, next_fire, now, lookback, &mut effects)
                    .await?;
                self.stores
                    .agents
                    .advance_schedule(
                        &agent.tenant_id,
                        agent.id,
                        next_fire,
                        store::next_fire(&agent, now),
                    )
                    .await?;
            }
            if !full {
                break;
            }
        }
        Ok(effects)
    }

    /// Creates the job of `agent`'s latest due time, if one is within `lookback`.
    async fn fire(
        &self,
        agent: &Agent,
        stored: DateTime<Utc>,
        now: DateTime<Utc>,
        lookback: Duration,
        effects: &mut Effects,
    ) -> Result<()> {
        let Some(due) = latest_due(agent, stored, now, lookback) else {
            return Ok(());
        };
        let key = format!("schedule:{}:{}", agent.id, due.to_rfc3339());
        match self
            .create_job(agent, json!({}), "schedule", "schedule", Some(key), None)
            .await
        {
            Ok(Created::New(job)) => {
                effects.messages.push(JobMessage::of(&job));
                effects.events.push(job.submitted_event(APP));
            }
            Ok(Created::Existing(_)) => {}
            Err(e @ Error::Unavailable(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(agent.id = %agent.id, tenant = %agent.tenant_id, error = %e, "scheduled run not created")
            }
        }
        Ok(())
    }
}

/// The agent's latest due time within `lookback` before `now`, not before its stored fire time
/// `stored` nor its creation.
fn latest_due(
    agent: &Agent,
    stored: DateTime<Utc>,
    now: DateTime<Utc>,
    lookback: Duration,
) -> Option<DateTime<Utc>> {
    if agent.status != AgentStatus::Active {
        return None;
    }
    let schedule = agent.schedule.as_ref()?;
    let mut due = None;
    let from = (now - chrono_dur(lookback))
        .max(agent.created_at)
        .max(stored - chrono::Duration::seconds(1));
    let mut t = DateTime::from_timestamp(from.timestamp(), 0)?;
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        due = Some(next);
        t = next;
    }
    due
}
