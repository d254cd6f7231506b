//! The legal and illegal transitions of a job.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::*;
use crate::events::PlatformEvent;
use crate::plan::Jump;
use crate::{Agent, AgentInput};

fn lease() -> TimeDelta {
    TimeDelta::seconds(60)
}

/// A queued job of a three-step plan: `greet` (transform), `check` (condition), `shout`.
fn queued() -> Job {
    let input: AgentInput = serde_json::from_value(json!({"name": "a", "definition": {
    "instructions": "x", "steps": [
        {"id": "greet", "kind": "transform", "output": "hi"},
        {"id": "check", "kind": "condition", "if": "true", "then": "shout"},
        {"id": "shout", "kind": "transform", "output": "HI"}
    ]}}))
    .unwrap();
    let now = Utc::now();
    let agent = Agent::create(
        TenantId::parse("t1").unwrap(),
        input.validate().unwrap(),
        "u",
        now,
    );
    Job {
        id: JobId::new(),
        tenant_id: agent.tenant_id.clone(),
        agent_id: agent.id,
        agent_version: 1,
        trigger: "manual".into(),
        input: json!({}),
        status: JobStatus::Queued,
        plan: agent.compile().unwrap(),
        steps: Vec::new(),
        next_step: Some(0),
        output: None,
        error: None,
        attempts: 0,
        lease_until: None,
        lease_owner: None,
        idempotency_key: None,
        request_hash: None,
        created_by: "u".into(),
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
        etag: "e1".into(),
    }
}

fn running(now: DateTime<Utc>) -> Job {
    let mut job = queued();
    job.claim("w1", now, lease()).unwrap();
    job
}

fn success(output: Value) -> StepSuccess {
    StepSuccess {
        output,
        output_truncated: false,
        next: Jump::Next,
        tokens: None,
        llm: None,
    }
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(Error::Conflict(_)))
}

#[test]
fn a_queued_job_is_claimed_running_under_a_lease_and_the_claim_is_counted() {
    let now = Utc::now();
    let job = running(now);
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.lease_owner.as_deref(), Some("w1"));
    assert_eq!(job.lease_until, Some(now + lease()));
    assert_eq!((job.attempts, job.started_at), (1, Some(now)));
    assert!(job.is_leased(now) && !job.is_leased(now + lease()));
}

#[test]
fn a_live_lease_or_a_finished_job_refuses_a_claim_and_an_expired_lease_is_taken_over() {
    let now = Utc::now();
    let mut job = running(now);
    let before = job.clone();
    assert!(is_conflict(job.claim("w2", now, lease())));
    assert_eq!(job, before, "a refused transition changes nothing");
    assert!(matches!(
        job.claim("", now + lease(), lease()),
        Err(Error::BadRequest(_))
    ));
    let later = now + lease() + TimeDelta::seconds(1);
    job.claim("w2", later, lease()).unwrap();
    assert_eq!(
        (job.lease_owner.as_deref(), job.attempts, job.started_at),
        (Some("w2"), 2, Some(now)),
        "a takeover keeps the first start"
    );
    assert!(job.claims_exhausted(2) && !job.claims_exhausted(3));
    job.finish(Outcome::Succeeded, later).unwrap();
    let err = job.claim("w3", later + lease() * 2, lease()).unwrap_err();
    assert!(
        err.to_string().contains("already finished (succeeded)"),
        "{err}"
    );
}

#[test]
fn a_claim_given_back_is_queued_again_and_not_counted() {
    let mut job = running(Utc::now());
    job.give_back().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!((job.attempts, job.lease_owner.clone()), (0, None));
    assert!(
        is_conflict(job.give_back()),
        "only a claimed job is given back"
    );
}

#[test]
fn only_a_queued_job_is_re_enqueued_and_it_is_marked_then() {
    let later = Utc::now() + TimeDelta::seconds(120);
    let mut job = queued();
    job.requeue(later).unwrap();
    assert_eq!((job.status, job.updated_at), (JobStatus::Queued, later));
    assert!(is_conflict(running(later).requeue(later)));
}

#[test]
fn cancel_cancels_a_queued_job_asks_a_running_one_and_refuses_a_finished_one() {
    let now = Utc::now();
    let mut job = queued();
    assert!(job.cancel(now).unwrap());
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.error.as_deref(), Some(CANCELLED_ON_REQUEST));
    assert_eq!(job.finished_at, Some(now));
    let err = job.cancel(now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conflict: The job has already finished (cancelled)."
    );
    let mut job = running(now);
    assert!(job.cancel(now).unwrap());
    assert_eq!(job.status, JobStatus::Cancelling);
    assert!(job.finished_at.is_none());
    assert!(!job.cancel(now).unwrap(), "asked once is enough");
}

#[test]
fn steps_are_recorded_and_the_run_moves_where_each_step_jumps() {
    let now = Utc::now();
    let mut job = running(now);
    job.start_step(now).unwrap();
    assert_eq!(job.begin_attempt().unwrap(), 1);
    job.record_step(success(json!("hi")), now).unwrap();
    assert_eq!(job.next_step, Some(1));
    assert_eq!(job.output, Some(json!("hi")));
    job.start_step(now).unwrap();
    job.begin_attempt().unwrap();
    let jump = StepSuccess {
        next: Jump::Step(2),
        ..success(json!({"result": true}))
    };
    job.record_step(jump, now).unwrap();
    assert_eq!(job.steps[1].kind, "condition");
    assert_eq!(
        job.output,
        Some(json!("hi")),
        "a condition's result is not the run's output"
    );
    assert_eq!(job.next_index(), Some(2));
    job.start_step(now).unwrap();
    job.begin_attempt().unwrap();
    let end = StepSuccess {
        next: Jump::End,
        ..success(json!("HI"))
    };
    job.record_step(end, now).unwrap();
    assert_eq!((job.next_index(), job.steps.len()), (None, 3));
    assert!(matches!(job.start_step(now), Err(Error::BadRequest(_))));
    assert!(is_conflict(job.begin_attempt()), "no step is running");
    job.finish(Outcome::Succeeded, now).unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert!(job.lease_owner.is_none() && job.lease_until.is_none());
}

#[test]
fn a_step_left_running_by_a_dead_worker_is_resumed_with_its_attempts() {
    let now = Utc::now();
    let mut job = running(now);
    job.start_step(now).unwrap();
    job.begin_attempt().unwrap();
    job.lease_until = Some(now - TimeDelta::seconds(1));
    job.claim("w2", now, lease()).unwrap();
    job.start_step(now).unwrap();
    assert_eq!(job.steps.len(), 1, "the same record goes on");
    assert_eq!(job.begin_attempt().unwrap(), 2);
}

#[test]
fn a_step_that_fails_for_good_fails_the_job_or_times_it_out_with_the_reason() {
    let now = Utc::now();
    for (timed_out, status) in [(false, JobStatus::Failed), (true, JobStatus::TimedOut)] {
        let mut job = running(now);
        job.start_step(now).unwrap();
        job.begin_attempt().unwrap();
        job.fail_attempt("first").unwrap();
        job.begin_attempt().unwrap();
        job.fail_step("boom", timed_out, now).unwrap();
        assert_eq!(job.status, status);
        assert_eq!(job.steps[0].status, StepStatus::Failed);
        assert_eq!(
            job.error.as_deref(),
            Some("step \"greet\" failed after 2 attempt(s): boom")
        );
        assert!(is_conflict(job.fail_step("again", false, now)));
    }
}

#[test]
fn a_cancel_stops_the_running_step_and_the_job() {
    let now = Utc::now();
    for aborted in [true, false] {
        let mut job = running(now);
        job.start_step(now).unwrap();
        job.begin_attempt().unwrap();
        job.fail_attempt("503").unwrap();
        job.cancel(now).unwrap();
        job.cancel_step(aborted, now).unwrap();
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(job.steps[0].status, StepStatus::Cancelled);
        let error = job.steps[0].error.as_deref().unwrap();
        assert_eq!(error.contains("aborted"), aborted, "{error}");
    }
}

#[test]
fn only_a_claimed_job_finishes_once_and_a_cancelled_one_cannot_succeed() {
    let now = Utc::now();
    assert!(is_conflict(queued().finish(Outcome::Succeeded, now)));
    let mut job = running(now);
    job.cancel(now).unwrap();
    assert!(is_conflict(job.finish(Outcome::Succeeded, now)));
    job.finish(Outcome::Failed("x".into()), now).unwrap();
    assert_eq!(job.error.as_deref(), Some("x"));
    assert!(is_conflict(job.finish(Outcome::Cancelled, now)));
    assert!(is_conflict(job.renew_lease(now, lease())));
}

#[test]
fn a_job_whose_workers_keep_dying_is_given_up_failed_or_cancelled() {
    let now = Utc::now();
    let mut job = running(now);
    job.start_step(now).unwrap();
    job.give_up(now).unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        job.error
            .as_deref()
            .unwrap()
            .contains("interrupted 1 times")
    );
    assert_eq!(job.steps[0].status, StepStatus::Failed);
    let mut asked = running(now);
    asked.cancel(now).unwrap();
    asked.give_up(now).unwrap();
    assert_eq!(asked.status, JobStatus::Cancelled);
    assert!(is_conflict(queued().give_up(now)));
    assert!(is_conflict(job.give_up(now)));
}

#[test]
fn a_worker_sees_a_takeover_as_a_lost_lease_and_takes_in_a_cancel_request() {
    let now = Utc::now();
    let mut mine = running(now);
    let mut stored = mine.clone();
    assert!(mine.ensure_owned_by("w1").is_ok());
    assert!(!mine.take_cancel_request(&stored));
    stored.cancel(now).unwrap();
    stored.etag = "e2".into();
    assert!(mine.take_cancel_request(&stored));
    assert_eq!(
        (mine.status, mine.etag.as_str()),
        (JobStatus::Cancelling, "e2")
    );
    stored.lease_until = Some(now - TimeDelta::seconds(1));
    stored.claim("w2", now, lease()).unwrap();
    let lost = stored.ensure_owned_by("w1").unwrap_err();
    assert!(is_lease_lost(&lost), "{lost}");
    assert!(!is_lease_lost(&Error::Conflict("other".into())));
}

#[test]
fn events_carry_the_claim_and_the_terminal_state_with_per_step_usage() {
    let mut job = queued();
    let now = job.created_at;
    assert!(job.started_event("execution").is_none());
    assert_eq!(
        job.submitted_event("execution").event_type,
        "flowgrid.job.submitted"
    );
    job.claim("w1", now, lease()).unwrap();
    let started = job.started_event("execution").unwrap();
    assert_eq!(started.id, format!("flowgrid.job.started:{}:1", job.id));
    job.start_step(now).unwrap();
    job.begin_attempt().unwrap();
    let used = StepSuccess {
        tokens: Some(Tokens {
            input: 7,
            output: 3,
        }),
        ..success(json!("hi"))
    };
    job.record_step(used, now + TimeDelta::milliseconds(40))
        .unwrap();
    assert!(
        job.finished_event("execution").is_none(),
        "not finished yet"
    );
    job.finish(Outcome::Succeeded, now + TimeDelta::milliseconds(50))
        .unwrap();
    let finished = job.finished_event("execution").unwrap();
    assert_eq!(finished.id, format!("flowgrid.job.finished:{}", job.id));
    assert_eq!(finished.tenantid, "t1");
    let PlatformEvent::JobFinished {
        status,
        steps,
        duration_ms,
        ..
    } = finished.data
    else {
        panic!("{:?}", finished.data)
    };
    assert_eq!(status, JobStatus::Succeeded);
    assert_eq!(duration_ms, 50, "from submission to the terminal state");
    assert_eq!(steps.len(), 1);
    assert_eq!((steps[0].step_id.as_str(), steps[0].attempts), ("greet", 1));
    assert_eq!(steps[0].duration_ms, Some(40));
    assert_eq!(steps[0].tokens.map(|t| (t.input, t.output)), Some((7, 3)));
}
