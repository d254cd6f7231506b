//! The timers (the reaper, schedules) and the `agent-compiled` subscription, driven directly
//! and through their functions with envelope payloads.

use std::time::Duration;

use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::events::{AgentCompiled, CloudEvent};
use flowgrid_domain::store::JobStatus;
use flowgrid_http::auth::Role;
use serde_json::json;

use crate::engine::transform_agent;
use crate::helpers::{ExecApp, job_id};

#[tokio::test]
async fn the_reaper_re_enqueues_lost_messages_and_fails_jobs_whose_workers_keep_dying() {
    let app = ExecApp::with(&[("FLOWGRID_JOB_MAX_CLAIMS", "2")]).await;
    let agent = app.agent("t1", transform_agent()).await;
    let token = app.token("t1", Role::Editor);
    let lost = job_id(
        &app.submit(&token, &agent, json!({"name": "x", "n": 1}), None)
            .await,
    );
    let dying = job_id(
        &app.submit(&token, &agent, json!({"name": "y", "n": 1}), None)
            .await,
    );
    app.queue.lock().unwrap().clear(); // both messages lost
    let job = app.job("t1", &dying).await;
    let mut crashed = job.clone();
    crashed.status = JobStatus::Running;
    crashed.attempts = 2;
    crashed.lease_owner = Some("dead".into());
    crashed.lease_until = Some(Utc::now() - chrono::Duration::seconds(5));
    app.stores()
        .jobs
        .replace(&crashed, &job.etag)
        .await
        .unwrap();
    // Now: the job whose workers keep dying fails with the reason, and the slot it frees is
    // offered to the tenant's oldest waiting job.
    let now_messages = app
        .state()
        .engine
        .reap(Utc::now(), Duration::from_secs(60))
        .await
        .unwrap()
        .messages;
    let failed = app.job("t1", &dying).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.error.unwrap().contains("interrupted 2 times"));
    assert_eq!(now_messages, vec![json!({"tenantId": "t1", "jobId": lost})]);
    // That message is lost too; a minute later the reaper re-enqueues the waiting job, once.
    let later = Utc::now() + chrono::Duration::seconds(120);
    let messages = app
        .state()
        .engine
        .reap(later, Duration::from_secs(60))
        .await
        .unwrap()
        .messages;
    assert_eq!(messages, vec![json!({"tenantId": "t1", "jobId": lost})]);
    let repeat = app
        .state()
        .engine
        .reap(later, Duration::from_secs(60))
        .await
        .unwrap()
        .messages;
    assert!(
        repeat.is_empty(),
        "re-enqueued at most once a period: {repeat:?}"
    );
    app.queue.lock().unwrap().extend(messages);
    app.drain().await;
    assert_eq!(app.job("t1", &lost).await.status, JobStatus::Succeeded);
    // Through the timer function too: nothing stale now, so nothing is sent.
    let (status, answer) = app
        .invoke(
            "ReapJobs",
            json!({"Data": {"timer": {}}, "Metadata": {}}),
            "r1",
        )
        .await;
    assert!(status.is_success());
    assert!(answer["Outputs"].get("out").is_none(), "{answer}");
}

#[tokio::test]
async fn a_schedule_fires_once_per_due_time_whatever_the_number_of_timer_firings() {
    let app = ExecApp::new().await;
    let agent = app
        .agent_with(
            "t1",
            json!({"name": "cron", "schedule": "0 * * * * *", "definition": transform_agent()}),
            600,
        )
        .await;
    let now = Utc::now();
    let first = app
        .state()
        .engine
        .run_schedules(now, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    let again = app
        .state()
        .engine
        .run_schedules(now, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    let (_, answer) = app
        .invoke(
            "RunSchedules",
            json!({"Data": {"timer": {}}, "Metadata": {}}),
            "s1",
        )
        .await;
    assert_eq!(first.len(), 1);
    assert!(again.is_empty(), "the same due time does not fire twice");
    assert!(
        answer["Outputs"]
            .get("out")
            .is_none_or(|o| o.as_array().is_some_and(|a| a.len() <= 1))
    );
    let next_minute = now + chrono::Duration::seconds(60);
    let later = app
        .state()
        .engine
        .run_schedules(next_minute, Duration::from_secs(300))
        .await
        .unwrap()
        .messages;
    assert_eq!(later.len(), 1, "the next due time fires");
    let tenant = TenantId::parse("t1").unwrap();
    let jobs = app
        .stores()
        .jobs
        .list(
            &tenant,
            &flowgrid_domain::store::JobQuery {
                agent_id: Some(agent.id),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(jobs.items.iter().all(|j| j.trigger == "schedule"));
    assert!((2..=3).contains(&jobs.items.len()), "{}", jobs.items.len());
}

#[tokio::test]
async fn agent_compiled_messages_pin_the_version_runs_use() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", transform_agent()).await;
    let compiled = AgentCompiled {
        agent_id: agent.id,
        version: 1,
    };
    let tenant = TenantId::parse("t1").unwrap();
    let msg = CloudEvent::new("design", &tenant, Utc::now(), compiled)
        .to_json()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let envelope = json!({"Data": {"msg": base64::engine::general_purpose::STANDARD.encode(&msg)}, "Metadata": {}});
    let (status, _) = app.invoke("AgentCompiled", envelope.clone(), "c1").await;
    assert!(status.is_success());
    app.invoke("AgentCompiled", envelope, "c2").await; // a duplicate is harmless
    let marked = app.stores().agents.get(&tenant, agent.id).await.unwrap();
    assert_eq!(marked.compiled_version, Some(1));
    assert_eq!(marked.version, 2, "one new version, not two");
    let id = job_id(
        &app.submit(
            &app.token("t1", Role::Editor),
            &marked,
            json!({"name": "z", "n": 0}),
            None,
        )
        .await,
    );
    assert_eq!(app.job("t1", &id).await.agent_version, 1);
}
