//! Stranded work: a worker that dies in the middle of a step (its invocation gone, as when the
//! host's handler process is SIGKILLed) leaves the job under a lease nobody renews; with the
//! default settings the job is taken over and finishes within 15 s, each step applied once.

use std::time::{Duration, Instant};

use chrono::Utc;
use flowgrid_domain::store::JobStatus;
use flowgrid_execution::Settings;
use flowgrid_http::auth::Role;
use serde_json::json;

use crate::helpers::{ExecApp, job_id};

/// The `ReapJobs` timer's period (its schedule `*/5 * * * * *` in function.json).
const REAPER_EVERY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_job_whose_worker_died_mid_step_finishes_within_15_s_with_each_step_applied_once() {
    let defaults = Settings::default();
    let app = ExecApp::new().await;
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x", "steps": [
                {"id": "one", "kind": "http", "url": app.server.url("/ok")},
                {"id": "two", "kind": "http", "url": app.server.url("/stall-once")},
                {"id": "three", "kind": "http", "url": app.server.url("/ok")}
            ]}),
        )
        .await;
    let id = job_id(
        &app.submit(&app.token("t1", Role::Editor), &agent, json!({}), None)
            .await,
    );
    let message = app.queue.lock().unwrap().pop_front().unwrap();
    let (one, two, three) = (
        format!("{id}:one"),
        format!("{id}:two"),
        format!("{id}:three"),
    );

    // The worker runs step one, then stalls in step two (renewing its lease meanwhile) ...
    {
        let worker = app.deliver(&message);
        tokio::pin!(worker);
        let started = Instant::now();
        loop {
            tokio::select! {
                r = &mut worker => panic!("the worker cannot finish while step two stalls: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if app.server.calls(&two) == 1 && started.elapsed() >= defaults.lease / 2 {
                break;
            }
        }
        // ... and dies: its invocation is gone and none of its code runs again.
    }
    let killed = Instant::now();
    let stranded = app.job("t1", &id).await;
    assert_eq!(stranded.status, JobStatus::Running);
    assert!(
        stranded.lease_until.unwrap() > Utc::now(),
        "the lease was renewed during the step"
    );

    // The host delivers the abandoned message again as soon as the handler is back: the lease
    // is still live, so that delivery does nothing (the dead worker might have been alive).
    let (status, answer) = app.deliver(&message).await;
    assert!(status.is_success(), "{answer}");
    assert_eq!(app.job("t1", &id).await.status, JobStatus::Running);

    // Then the reaper ticks on its schedule and the host delivers what it re-enqueues.
    let job = loop {
        let job = app.job("t1", &id).await;
        if job.status.is_terminal() {
            break job;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the job is still {:?} 30 s after its worker died",
            job.status
        );
        let now = Utc::now();
        let into_period = u64::try_from(now.timestamp_millis()).unwrap()
            % u64::try_from(REAPER_EVERY.as_millis()).unwrap();
        let next_tick = REAPER_EVERY - Duration::from_millis(into_period);
        tokio::time::sleep(next_tick).await;
        let (status, answer) = app
            .invoke(
                "ReapJobs",
                json!({"Data": {"timer": {}}, "Metadata": {}}),
                &uuid::Uuid::new_v4().to_string(),
            )
            .await;
        assert!(status.is_success(), "{answer}");
        app.drain().await;
    };
    let resumed_in = killed.elapsed();
    eprintln!(
        "figure: worker died mid-step -> job {:?} in {} ms (lease {} s, reaper every {} s)",
        job.status,
        resumed_in.as_millis(),
        defaults.lease.as_secs(),
        REAPER_EVERY.as_secs()
    );
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert!(
        resumed_in <= Duration::from_secs(15),
        "stranded work resumes within 15 s, took {resumed_in:?}"
    );
    assert_eq!(app.server.calls(&one), 1, "step one is not run again");
    assert_eq!(
        app.server.calls(&two),
        2,
        "the interrupted step is attempted again, with the same key"
    );
    assert_eq!(app.server.applied(&two), 1, "and applied once");
    assert_eq!(app.server.calls(&three), 1);
    assert_eq!(job.attempts, 2, "one takeover");
}
