//! The transitions of a [`Job`], and the platform events its states give rise to.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::{Job, JobStatus, StepRecord, StepStatus, Tokens};
use crate::plan::{Jump, StepAction};
use crate::{Error, Result};

/// The error of a cancelled job.
pub const CANCELLED_ON_REQUEST: &str = "cancelled on request";

const LEASE_LOST: &str = "the job's lease was taken over by another worker";

/// The error a worker gets when the job it runs was taken over (its lease ended and another
/// worker claimed it) or finished under it: it stops without writing.
pub fn lease_lost() -> Error {
    Error::Conflict(LEASE_LOST.into())
}

/// Whether `e` is [`lease_lost`].
pub fn is_lease_lost(e: &Error) -> bool {
    matches!(e, Error::Conflict(m) if m == LEASE_LOST)
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every step ran.
    Succeeded,
    /// It could not go on; the reason.
    Failed(String),
    /// A step ran out of time after its retries; the reason.
    TimedOut(String),
    /// Cancelled on request.
    Cancelled,
}

/// What a successful step produced, as the job records it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSuccess {
    /// The output to keep (`null` when it was larger than the cap).
    pub output: Value,
    /// Whether the output was dropped for being larger than the cap.
    pub output_truncated: bool,
    /// Where the run goes next.
    pub next: Jump,
    /// Tokens used (`llm`).
    pub tokens: Option<Tokens>,
    /// The model call (`llm`).
    pub llm: Option<super::LlmCall>,
}

fn finished(status: JobStatus) -> Error {
    Error::Conflict(format!(
        "The job has already finished ({}).",
        status.as_str()
    ))
}

fn kind_of(action: &StepAction) -> &'static str {
    match action {
        StepAction::Transform { .. } => "transform",
        StepAction::Http { .. } => "http",
        StepAction::Condition { .. } => "condition",
        StepAction::Llm { .. } => "llm",
        StepAction::Integration { .. } => "integration",
    }
}

pub(crate) fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<u64> {
    u64::try_from((to - from).num_milliseconds()).ok()
}

impl Job {
    fn cannot(&self, what: &str) -> Error {
        if self.status.is_terminal() {
            return finished(self.status);
        }
        Error::Conflict(format!("a {} job cannot {what}", self.status.as_str()))
    }

    pub(crate) fn is_owned(&self) -> bool {
        matches!(self.status, JobStatus::Running | JobStatus::Cancelling)
    }

    /// Whether a worker holds the job under a lease that has not ended at `now`.
    pub fn is_leased(&self, now: DateTime<Utc>) -> bool {
        self.status != JobStatus::Queued && self.lease_until.is_some_and(|t| t > now)
    }

    /// Whether a job whose lease expired has been claimed `max_claims` times already: its
    /// workers keep dying, and it should be given up ([`Job::give_up`]) rather than claimed.
    pub fn claims_exhausted(&self, max_claims: u32) -> bool {
        self.is_owned() && self.attempts >= max_claims
    }

    /// The index in the plan of the step to run next; `None` at the end of the run.
    pub fn next_index(&self) -> Option<usize> {
        self.next_step.filter(|&i| i < self.plan.steps.len())
    }

    /// A worker (`owner`, its invocation id) takes the job until `now + lease`: `queued →
    /// running`, or a takeover of a running (or cancelling) job whose lease ended. Counts a claim.
    /// A finished job, or one under another worker's live lease, is a conflict.
    pub fn claim(&mut self, owner: &str, now: DateTime<Utc>, lease: TimeDelta) -> Result<()> {
        if owner.is_empty() {
            return Err(Error::BadRequest("a claim needs the worker's id".into()));
        }
        if self.status.is_terminal() || self.is_leased(now) {
            return Err(self.cannot("be claimed while another worker's lease is live"));
        }
        if self.status == JobStatus::Queued {
            self.status = JobStatus::Running;
        }
        self.lease_until = Some(now + lease);
        self.lease_owner = Some(owner.to_owned());
        self.attempts += 1;
        self.started_at.get_or_insert(now);
        self.updated_at = now;
        Ok(())
    }

    /// Undoes a claim just made from `queued` (the tenant turned out to be over its limit):
    /// queued again, unowned, the claim not counted.
    pub fn give_back(&mut self) -> Result<()> {
        if self.status != JobStatus::Running || self.attempts == 0 {
            return Err(self.cannot("be given back"));
        }
        self.status = JobStatus::Queued;
        self.lease_until = None;
        self.lease_owner = None;
        self.attempts -= 1;
        Ok(())
    }

    /// The reaper re-sends the message of a queued job nobody picked up: the job is marked
    /// `now`, so it is re-sent at most once a period.
    pub fn requeue(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.status != JobStatus::Queued {
            return Err(self.cannot("be re-enqueued"));
        }
        self.updated_at = now;
        Ok(())
    }

    /// Ends a job whose workers keep disappearing ([`Job::claims_exhausted`]): failed, or
    /// cancelled when a cancel was asked; its running step fails with the same reason.
    pub fn give_up(&mut self, now: DateTime<Utc>) -> Result<()> {
        if !self.is_owned() {
            return Err(self.cannot("be given up"));
        }
        let reason = format!(
            "the run was interrupted {} times (its worker stopped before finishing); giving up",
            self.attempts
        );
        let outcome = if self.status == JobStatus::Cancelling {
            Outcome::Cancelled
        } else {
            Outcome::Failed(reason.clone())
        };
        for record in self
            .steps
            .iter_mut()
            .filter(|r| r.status == StepStatus::Running)
        {
            record.status = StepStatus::Failed;
            record.error = Some(reason.clone());
            record.finished_at = Some(now);
        }
        self.finish(outcome, now)?;
        self.error = Some(reason);
        Ok(())
    }

    /// The owning worker extends its lease to `now + lease`.
    pub fn renew_lease(&mut self, now: DateTime<Utc>, lease: TimeDelta) -> Result<()> {
        if !self.is_owned() {
            return Err(self.cannot("renew a lease"));
        }
        self.lease_until = Some(now + lease);
        self.updated_at = now;
        Ok(())
    }

    /// Checks that this stored job is still `owner`'s to run: [`lease_lost`] when another worker
    /// took it over or it finished.
    pub fn ensure_owned_by(&self, owner: &str) -> Result<()> {
        if self.lease_owner.as_deref() != Some(owner) || self.status.is_terminal() {
            return Err(lease_lost());
        }
        Ok(())
    }

    /// Takes in a cancel request found on `stored` (the job as stored now): a job not yet
    /// finished becomes `cancelling` and adopts the stored ETag. Returns whether a cancel is asked.
    pub fn take_cancel_request(&mut self, stored: &Job) -> bool {
        if stored.status != JobStatus::Cancelling || self.status.is_terminal() {
            return false;
        }
        self.status = JobStatus::Cancelling;
        self.etag.clone_from(&stored.etag);
        true
    }

    /// A cancel request: a queued job is cancelled at once; a running one becomes `cancelling`
    /// (its worker stops at its next check). Returns `false` when a cancel was already asked
    /// (nothing to change). A finished job is a conflict.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<bool> {
        match self.status {
            s if s.is_terminal() => return Err(finished(s)),
            JobStatus::Cancelling => return Ok(false),
            JobStatus::Queued => {
                self.status = JobStatus::Cancelled;
                self.error = Some(CANCELLED_ON_REQUEST.into());
                self.finished_at = Some(now);
            }
            _ => self.status = JobStatus::Cancelling,
        }
        self.updated_at = now;
        Ok(true)
    }

    /// Starts the step at [`Job::next_index`]: a new record, or the record of the same step left
    /// running by a worker that died (resumed: its attempts go on).
    pub fn start_step(&mut self, now: DateTime<Utc>) -> Result<()> {
        if self.status != JobStatus::Running {
            return Err(self.cannot("start a step"));
        }
        let index = self
            .next_index()
            .ok_or_else(|| Error::BadRequest("the run has no step left to start".into()))?;
        let step = &self.plan.steps[index];
        let resumed = matches!(self.steps.last(),
            Some(r) if r.id == step.id && r.status == StepStatus::Running);
        if !resumed {
            self.steps.push(StepRecord {
                id: step.id.clone(),
                kind: kind_of(&step.action).into(),
                status: StepStatus::Running,
                attempts: 0,
                started_at: now,
                finished_at: None,
                duration_ms: None,
                output: Value::Null,
                output_truncated: false,
                error: None,
                tokens: None,
                llm: None,
            });
        }
        Ok(())
    }

    fn running_step(&mut self) -> Result<&mut StepRecord> {
        if !self.is_owned() {
            return Err(self.cannot("change a step"));
        }
        match self.steps.last_mut() {
            Some(record) if record.status == StepStatus::Running => Ok(record),
            _ => Err(Error::Conflict("no step of the job is running".into())),
        }
    }

    /// Counts an attempt of the running step; returns its number (1 for the first).
    pub fn begin_attempt(&mut self) -> Result<u32> {
        let record = self.running_step()?;
        record.attempts += 1;
        Ok(record.attempts)
    }

    /// Records the error of an attempt of the running step that will be retried.
    pub fn fail_attempt(&mut self, error: &str) -> Result<()> {
        self.running_step()?.error = Some(error.to_owned());
        Ok(())
    }

    /// Records the running step's success and moves the run to where it jumps. The run's
    /// output becomes the step's (a `condition` step's `{result}` does not replace it).
    pub fn record_step(&mut self, success: StepSuccess, now: DateTime<Utc>) -> Result<()> {
        let index = self.next_index();
        let record = self.running_step()?;
        let Some(index) = index else {
            return Err(Error::BadRequest("the run has no step running".into()));
        };
        record.status = StepStatus::Succeeded;
        record.finished_at = Some(now);
        record.duration_ms = millis(record.started_at, now);
        record.output = success.output.clone();
        record.output_truncated = success.output_truncated;
        record.error = None;
        record.tokens = success.tokens;
        record.llm = success.llm;
        if record.kind != "condition" {
            self.output = Some(success.output);
        }
        self.next_step = match success.next {
            Jump::Next => Some(index + 1),
            Jump::Step(k) => Some(k),
            Jump::End => None,
        };
        Ok(())
    }

    /// The running step failed for good (its last attempt's `error`): the job ends failed, or
    /// timed out when that attempt ran out of time, with a reason naming the step.
    pub fn fail_step(&mut self, error: &str, timed_out: bool, now: DateTime<Utc>) -> Result<()> {
        let record = self.running_step()?;
        record.status = StepStatus::Failed;
        record.error = Some(error.to_owned());
        record.finished_at = Some(now);
        record.duration_ms = millis(record.started_at, now);
        let reason = format!(
            "step {:?} failed after {} attempt(s): {error}",
            record.id, record.attempts
        );
        self.finish(
            if timed_out {
                Outcome::TimedOut(reason)
            } else {
                Outcome::Failed(reason)
            },
            now,
        )
    }

    /// A cancel stopped the running step (`aborted`: in the middle of its call, rather than
    /// while waiting to retry it): the step and the job end cancelled.
    pub fn cancel_step(&mut self, aborted: bool, now: DateTime<Utc>) -> Result<()> {
        let record = self.running_step()?;
        record.status = StepStatus::Cancelled;
        record.finished_at = Some(now);
        if aborted {
            record.error = Some("cancelled while running; its call was aborted".into());
        }
        self.finish(Outcome::Cancelled, now)
    }

    /// Ends the run: its terminal state, with no owner left. Only a claimed job finishes; one
    /// whose cancel was asked cannot succeed; a finished job is finished for good.
    pub fn finish(&mut self, outcome: Outcome, now: DateTime<Utc>) -> Result<()> {
        if !self.is_owned() {
            return Err(self.cannot("finish before it is claimed"));
        }
        if self.status == JobStatus::Cancelling && outcome == Outcome::Succeeded {
            return Err(Error::Conflict(
                "a cancelled job cannot succeed; finish it cancelled".into(),
            ));
        }
        (self.status, self.error) = match outcome {
            Outcome::Succeeded => (JobStatus::Succeeded, None),
            Outcome::Failed(reason) => (JobStatus::Failed, Some(reason)),
            Outcome::TimedOut(reason) => (JobStatus::TimedOut, Some(reason)),
            Outcome::Cancelled => (JobStatus::Cancelled, Some(CANCELLED_ON_REQUEST.into())),
        };
        self.finished_at = Some(now);
        self.lease_until = None;
        self.lease_owner = None;
        self.updated_at = now;
        Ok(())
    }
}
