//! One claimed run, from its position to a terminal state: each step started, attempted under
//! its timeout while the worker watches for a cancel, recorded, retried or failed, and each
//! change written by compare-and-swap with the lease renewed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use flowgrid_domain::Error;
use flowgrid_domain::Result;
use flowgrid_domain::job::{Outcome, StepSuccess, is_lease_lost, lease_lost};
use flowgrid_domain::plan::{self, Plan, PlanStep};
use flowgrid_domain::store::jobs::StepStatus;
use flowgrid_domain::store::{Job, JobStatus, update_with_retry};
use flowgrid_http::otel;
use serde_json::{Map, Value, json};

use super::{Engine, chrono_dur};
use crate::steps::{StepError, StepOutcome};

/// Attempts of one write against a concurrent cancel request before the run counts as lost.
const SAVE_ATTEMPTS: usize = 5;

/// What the watch over a running step saw.
enum Watch {
    Cancel,
    Lost,
}

/// How one attempt of a step ended.
enum Attempt {
    /// A cancel request stopped it.
    Cancelled,
    /// It ran (or timed out).
    Done(Result<StepOutcome, StepError>),
}

/// A claimed job as its worker runs it.
struct Run<'e> {
    engine: &'e Engine,
    owner: &'e str,
    job: Job,
    /// The plan (a copy, so steps can run while the job is written).
    plan: Plan,
    /// Full outputs of the steps run by this invocation (the records may hold them truncated).
    outputs: HashMap<String, Value>,
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

/// The kind of a step, as plans name it (`http`, `llm`, ...).
fn step_kind(step: &PlanStep) -> String {
    serde_json::to_value(&step.action)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Engine {
    /// Runs the claimed `job` from its position to a terminal state; returns it as written.
    pub(super) async fn run(&self, job: Job, owner: &str) -> Result<Job> {
        let plan = job.plan.clone();
        let mut run = Run {
            engine: self,
            owner,
            job,
            plan,
            outputs: HashMap::new(),
        };
        loop {
            if run.job.status == JobStatus::Cancelling {
                run.job.finish(Outcome::Cancelled, Utc::now())?;
            } else if run.job.next_index().is_none() {
                run.job.finish(Outcome::Succeeded, Utc::now())?;
            } else if !run.cancel_requested().await? {
                run.step().await?;
            }
            if run.job.status.is_terminal() {
                return run.close().await;
            }
        }
    }

    /// CAS-writes `job` (renewing the lease). A concurrent cancel request is merged in; any
    /// other concurrent change means the job was taken over: [`lease_lost`].
    async fn save(&self, job: &mut Job, owner: &str) -> Result<()> {
        if !job.status.is_terminal() {
            job.renew_lease(Utc::now(), chrono_dur(self.settings.lease))?;
        }
        let jobs = self.stores.jobs.as_ref();
        let (tenant, id) = (job.tenant_id.clone(), job.id);
        let tenant = &tenant;
        let pending: &Job = job;
        // The first attempt writes over what this worker wrote last; later ones over the
        // record as stored, if it is still this worker's.
        let mut last_written = Some(pending.clone());
        let saved = update_with_retry(
            SAVE_ATTEMPTS,
            || {
                let last = last_written.take();
                async move {
                    if let Some(last) = last {
                        return Ok(last);
                    }
                    let stored = jobs.get(tenant, id).await?;
                    stored.ensure_owned_by(owner)?;
                    Ok(stored)
                }
            },
            |stored| {
                let mut next = pending.clone();
                next.take_cancel_request(stored);
                Ok(Some(next))
            },
            |next, etag| async move { jobs.replace(&next, &etag).await },
        )
        .await;
        match saved {
            Ok(saved) => {
                *job = saved;
                Ok(())
            }
            Err(Error::PreconditionFailed) => Err(lease_lost()),
            Err(e) => Err(e),
        }
    }

    /// Polls the job while a step runs: returns on a cancel request or a lost lease, renewing the
    /// lease when a third of it has passed. Storage hiccups are ridden out.
    async fn watch(&self, job: &mut Job, owner: &str) -> Watch {
        let renew_every = self.settings.lease / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.cancel_poll).await;
            let Ok(stored) = self.stores.jobs.get(&job.tenant_id, job.id).await else {
                continue;
            };
            if stored.ensure_owned_by(owner).is_err() {
                return Watch::Lost;
            }
            if job.take_cancel_request(&stored) {
                return Watch::Cancel;
            }
            if renewed.elapsed() >= renew_every {
                match self.save(job, owner).await {
                    Ok(()) => renewed = Instant::now(),
                    Err(e) if is_lease_lost(&e) => return Watch::Lost,
                    Err(_) => {}
                }
            }
        }
    }

    fn capped(&self, output: &Value) -> (Value, bool) {
        let size = serde_json::to_vec(output).map_or(usize::MAX, |b| b.len());
        if size > self.settings.step_output_max_bytes {
            (Value::Null, true)
        } else {
            (output.clone(), false)
        }
    }
}

impl Run<'_> {
    /// Between steps: whether a cancel was asked (seen here at the latest); [`lease_lost`] when
    /// the job is no longer this worker's.
    async fn cancel_requested(&mut self) -> Result<bool> {
        let stored = self
            .engine
            .stores
            .jobs
            .get(&self.job.tenant_id, self.job.id)
            .await?;
        stored.ensure_owned_by(self.owner)?;
        Ok(self.job.take_cancel_request(&stored))
    }

    /// Runs the step at the job's position: attempts until it succeeds, fails for good, or a
    /// cancel stops it. The job is left at the next position, or terminal.
    async fn step(&mut self) -> Result<()> {
        self.job.start_step(Utc::now())?;
        let Some(index) = self.job.next_index() else {
            return Ok(());
        };
        let step = self.plan.steps[index].clone();
        let ctx = context(&self.job, &self.outputs);
        loop {
            let attempt_no = self.job.begin_attempt()?;
            self.save().await?;
            match self.attempt(&step, &ctx, attempt_no).await? {
                Attempt::Cancelled => return self.job.cancel_step(true, Utc::now()),
                Attempt::Done(Ok(outcome)) => return self.succeed(&step, outcome).await,
                Attempt::Done(Err(e)) if e.retryable && attempt_no < step.retry.max_attempts => {
                    if self.wait_to_retry(&step, &e, attempt_no).await? {
                        return self.job.cancel_step(false, Utc::now());
                    }
                }
                Attempt::Done(Err(e)) => {
                    // A model call that failed after generating tokens: what it used and cost
                    // is recorded on the failed step, as a success's would be.
                    if let (Some(call), Some(record)) = (e.llm, self.job.steps.last_mut()) {
                        record.tokens = Some(crate::steps::tokens_of(&call));
                        record.llm = Some(*call);
                    }
                    return self.job.fail_step(&e.message, e.timed_out, Utc::now());
                }
            }
        }
    }

    /// One attempt of `step` under its timeout, raced against the watch for a cancel.
    async fn attempt(&mut self, step: &PlanStep, ctx: &Value, attempt_no: u32) -> Result<Attempt> {
        let tenant = self.job.tenant_id.clone();
        let key = format!("{}:{}", self.job.id, step.id);
        // A span per attempt of a step (when traces are exported), the parent of its calls.
        let mut span = otel::Span::child(format!("step {}", step.id), otel::Kind::Internal);
        if let Some(span) = &mut span {
            span.set("flowgrid.step.id", step.id.as_str());
            span.set("flowgrid.step.kind", step_kind(step));
            span.set("flowgrid.step.attempt", attempt_no);
            span.set("flowgrid.job.id", self.job.id.to_string());
            span.set("flowgrid.tenant", tenant.as_str());
            if let Some(c) = flowgrid_http::correlation::current() {
                span.set("flowgrid.correlation_id", c);
            }
        }
        let call = tokio::time::timeout(
            Duration::from_millis(step.timeout_ms),
            otel::within_context(
                span.as_ref().map(otel::Span::context),
                self.engine.runner.run(&tenant, &self.plan, step, ctx, &key),
            ),
        );
        tokio::select! {
            r = call => {
                let done = r.unwrap_or_else(|_| {
                    Err(StepError {
                        message: format!("timed out after {} ms", step.timeout_ms),
                        retryable: true,
                        timed_out: true,
                        llm: None,
                    })
                });
                if let (Err(e), Some(span)) = (&done, &mut span) {
                    span.fail(e.message.clone());
                }
                Ok(Attempt::Done(done))
            }
            w = self.engine.watch(&mut self.job, self.owner) => match w {
                Watch::Cancel => Ok(Attempt::Cancelled),
                Watch::Lost => Err(lease_lost()),
            },
        }
    }

    /// Records the step's success (its output capped, and dropped when the record would pass
    /// `FLOWGRID_JOB_RECORD_MAX_BYTES`) and writes it with the next position.
    async fn succeed(&mut self, step: &PlanStep, outcome: StepOutcome) -> Result<()> {
        let (mut output, mut output_truncated) = self.engine.capped(&outcome.output);
        if !output_truncated {
            // The output is kept twice: in the step's record and as the job's latest output
            // (which it replaces); 1 KiB for the rest the step record gains (times, attempts).
            let len = |v: &Value| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
            let record = serde_json::to_vec(&self.job).map_or(usize::MAX, |b| b.len());
            let replaced = self.job.output.as_ref().map_or(0, len);
            let size = len(&output);
            let after = record
                .saturating_sub(replaced)
                .saturating_add(size.saturating_mul(2))
                .saturating_add(1024);
            if after > self.engine.settings.job_record_max_bytes {
                (output, output_truncated) = (Value::Null, true);
            }
        }
        let success = StepSuccess {
            output,
            output_truncated,
            next: outcome.next,
            tokens: outcome.tokens,
            llm: outcome.llm.map(|c| *c),
        };
        self.job.record_step(success, Utc::now())?;
        self.outputs.insert(step.id.clone(), outcome.output);
        self.save().await
    }

    /// Records a failed attempt and waits out its backoff, watching for a cancel; returns
    /// whether a cancel came.
    async fn wait_to_retry(
        &mut self,
        step: &PlanStep,
        e: &StepError,
        attempt: u32,
    ) -> Result<bool> {
        self.job.fail_attempt(&e.message)?;
        self.save().await?;
        let wait = tokio::time::sleep(backoff(step.retry.backoff_ms, attempt));
        tokio::select! {
            () = wait => Ok(false),
            w = self.engine.watch(&mut self.job, self.owner) => match w {
                Watch::Cancel => Ok(true),
                Watch::Lost => Err(lease_lost()),
            },
        }
    }

    async fn save(&mut self) -> Result<()> {
        self.engine.save(&mut self.job, self.owner).await
    }

    /// Writes the terminal state (once: by CAS) and hands the job back.
    async fn close(mut self) -> Result<Job> {
        self.save().await?;
        let (job, invocation_id) = (self.job, self.owner);
        let correlation_id = flowgrid_http::correlation::current().unwrap_or_default();
        tracing::info!(job.id = %job.id, tenant = %job.tenant_id, status = job.status.as_str(), correlation_id, invocation_id, "job finished");
        Ok(job)
    }
}
