//! The worker driven through its function with envelope payloads, as the host calls it.

use std::time::{Duration, Instant};

use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::store::JobStatus;
use flowgrid_domain::store::jobs::{StepRecord, StepStatus};
use flowgrid_execution::engine::WorkOutcome;
use flowgrid_http::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{ExecApp, job_id};

pub(crate) fn transform_agent() -> Value {
    json!({"instructions": "greet", "steps": [
        {"id": "greet", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}},
        {"id": "shout", "kind": "transform", "output": {"loud": "{{ steps.greet.output.greeting | upper }}", "n": "{{ input.n }}"}}
    ]})
}

#[tokio::test]
async fn a_run_succeeds_with_step_records_and_the_last_steps_output() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", transform_agent()).await;
    let token = app.token("t1", Role::Editor);
    let res = app
        .submit(&token, &agent, json!({"name": "Ada", "n": 2}), None)
        .await;
    assert_eq!(res["statusCode"], 202, "{res}");
    let id = job_id(&res);
    assert_eq!(
        app.queue.lock().unwrap().len(),
        1,
        "the submit sends one message"
    );
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.steps.len(), 2);
    assert!(
        job.steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded && s.attempts == 1)
    );
    assert_eq!(job.steps[0].output, json!({"greeting": "hello Ada"}));
    assert_eq!(job.output, Some(json!({"loud": "HELLO ADA", "n": 2})));
    assert!(job.finished_at.is_some() && job.lease_owner.is_none());
}

#[tokio::test]
async fn conditions_branch_and_llm_steps_record_tokens_from_the_offline_provider() {
    let app = ExecApp::new().await;
    let agent = app
        .agent("t1", json!({"instructions": "be brief", "steps": [
            {"id": "check", "kind": "condition", "if": "input.urgent", "then": "ask", "else": "end"},
            {"id": "ask", "kind": "llm", "prompt": "Summarise the ticket about {{ input.topic }} please"}
        ]}))
        .await;
    let token = app.token("t1", Role::Editor);
    let urgent = job_id(
        &app.submit(
            &token,
            &agent,
            json!({"urgent": true, "topic": "printers"}),
            None,
        )
        .await,
    );
    let calm = job_id(
        &app.submit(&token, &agent, json!({"urgent": false, "topic": "x"}), None)
            .await,
    );
    app.drain().await;
    let urgent = app.job("t1", &urgent).await;
    assert_eq!(urgent.status, JobStatus::Succeeded);
    let ask = &urgent.steps[1];
    assert!(
        ask.output["text"].as_str().unwrap().contains("printers"),
        "{ask:?}"
    );
    assert!(ask.tokens.is_some_and(|t| t.input > 0 && t.output > 0));
    let call = ask.llm.as_ref().expect("the model call is recorded");
    assert_eq!(
        (call.provider.as_str(), call.model.as_str()),
        ("offline", "offline")
    );
    assert!(call.tokens.input > 0 && call.tokens.output > 0);
    assert_eq!(
        call.cost_micro_usd,
        Some(0),
        "the offline provider costs nothing, and says so"
    );
    assert!(call.price_version.starts_with("@pydantic/genai-prices@"));
    let calm = app.job("t1", &calm).await;
    assert_eq!(calm.status, JobStatus::Succeeded);
    assert_eq!(calm.steps.len(), 1, "the condition ended the run");
}

#[tokio::test]
async fn every_outbound_call_carries_the_job_and_step_idempotency_key_once() {
    let app = ExecApp::new().await;
    let agent = app
        .agent("t1", json!({"instructions": "x", "steps": [
            {"id": "post", "kind": "http", "method": "POST", "url": app.server.url("/ok"), "body": {"who": "{{ input.who }}"}},
            {"id": "get", "kind": "http", "url": app.server.url("/ok")}
        ]}))
        .await;
    let id = job_id(
        &app.submit(
            &app.token("t1", Role::Editor),
            &agent,
            json!({"who": "me"}),
            None,
        )
        .await,
    );
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(
        job.steps[0].output["body"],
        json!({"received": {"who": "me"}})
    );
    assert_eq!(app.server.calls(&format!("{id}:post")), 1);
    assert_eq!(app.server.calls(&format!("{id}:get")), 1);
    assert_eq!(app.server.total_calls(), 2);
    // A duplicate delivery of the finished job changes nothing and calls nothing.
    let (_, answer) = app.deliver(&json!({"tenantId": "t1", "jobId": id})).await;
    assert!(
        answer["Logs"][0].as_str().unwrap().contains("AlreadyDone"),
        "{answer}"
    );
    assert_eq!(app.server.total_calls(), 2);
}

#[tokio::test]
async fn a_failing_step_is_retried_per_its_policy_then_the_job_fails_with_the_reason() {
    let app = ExecApp::new().await;
    let agent = app
        .agent("t1", json!({"instructions": "x", "steps": [
            {"id": "flaky", "kind": "http", "url": app.server.url("/fail"), "retry": {"maxAttempts": 3, "backoffMs": 10}},
            {"id": "never", "kind": "transform", "output": 1}
        ]}))
        .await;
    let id = job_id(
        &app.submit(&app.token("t1", Role::Editor), &agent, json!({}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Failed);
    let reason = job.error.clone().unwrap();
    assert!(
        reason.contains("\"flaky\"") && reason.contains("3 attempt") && reason.contains("500"),
        "{reason}"
    );
    assert_eq!(job.steps.len(), 1);
    assert_eq!(job.steps[0].status, StepStatus::Failed);
    assert_eq!(job.steps[0].attempts, 3);
    assert_eq!(
        app.server.calls(&format!("{id}:flaky")),
        3,
        "each attempt carries the same key"
    );
}

#[tokio::test]
async fn ssrf_attempts_in_http_steps_are_refused_without_retries() {
    let app = ExecApp::new().await;
    for url in [
        "https://127.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://2130706433/",
        "https://[::ffff:127.0.0.1]/",
        "http://example.org/",
        // The compiler refuses a literal non-http(s) URL (below); one made at run time is
        // refused by the guard.
        "{{ 'file' }}:///etc/passwd",
        "https://localhost:9/",
    ] {
        let agent = app
            .agent("t1", json!({"instructions": "x", "steps": [
                {"id": "evil", "kind": "http", "url": url, "retry": {"maxAttempts": 3, "backoffMs": 10}}
            ]}))
            .await;
        let id = job_id(
            &app.submit(&app.token("t1", Role::Editor), &agent, json!({}), None)
                .await,
        );
        app.drain().await;
        let job = app.job("t1", &id).await;
        assert_eq!(job.status, JobStatus::Failed, "{url}");
        assert_eq!(job.steps[0].attempts, 1, "{url}: a refusal is not retried");
        let reason = job.error.unwrap();
        assert!(
            reason.contains("not allowed") || reason.contains("refused"),
            "{url}: {reason}"
        );
    }
    // A literal file:// URL does not compile: the submit is refused before any run.
    let agent = app
        .agent("t1", json!({"instructions": "x", "steps": [{"id": "evil", "kind": "http", "url": "file:///etc/passwd"}]}))
        .await;
    let res = app
        .submit(&app.token("t1", Role::Editor), &agent, json!({}), None)
        .await;
    assert_eq!(res["statusCode"], 422, "{res}");
    // A redirect from an allowed server is not followed.
    let agent = app
        .agent("t1", json!({"instructions": "x", "steps": [{"id": "hop", "kind": "http", "url": app.server.url("/redirect")}]}))
        .await;
    let id = job_id(
        &app.submit(&app.token("t1", Role::Editor), &agent, json!({}), None)
            .await,
    );
    app.drain().await;
    let job = app.job("t1", &id).await;
    assert!(job.error.unwrap().contains("redirects are not followed"));
}

#[tokio::test]
async fn a_run_resumes_after_a_crash_from_the_last_completed_step() {
    let app = ExecApp::new().await;
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x", "steps": [
                {"id": "one", "kind": "http", "url": app.server.url("/ok")},
                {"id": "two", "kind": "http", "url": app.server.url("/ok")},
                {"id": "three", "kind": "transform", "output": "{{ steps.one.output.status }}"}
            ]}),
        )
        .await;
    let id = job_id(
        &app.submit(&app.token("t1", Role::Editor), &agent, json!({}), None)
            .await,
    );
    let message = app.queue.lock().unwrap().pop_front().unwrap();
    // A worker claimed the job, finished step one, started step two, and died: its lease expired.
    let tenant = TenantId::parse("t1").unwrap();
    let job = app.job("t1", &id).await;
    let now = Utc::now();
    let mut crashed = job.clone();
    crashed.status = JobStatus::Running;
    crashed.attempts = 1;
    crashed.lease_owner = Some("dead-worker".into());
    crashed.lease_until = Some(now - chrono::Duration::seconds(1));
    crashed.started_at = Some(now);
    let record = |id: &str, status| StepRecord {
        id: id.into(),
        kind: "http".into(),
        status,
        attempts: 1,
        started_at: now,
        finished_at: None,
        duration_ms: None,
        output: if status == StepStatus::Succeeded {
            json!({"status": 200})
        } else {
            Value::Null
        },
        output_truncated: false,
        error: None,
        tokens: None,
        llm: None,
    };
    crashed.steps = vec![
        record("one", StepStatus::Succeeded),
        record("two", StepStatus::Running),
    ];
    crashed.next_step = Some(1);
    app.stores()
        .jobs
        .replace(&crashed, &job.etag)
        .await
        .unwrap();
    // The redelivered message takes over the expired lease and resumes at step two.
    let (_, answer) = app.deliver(&message).await;
    assert!(
        answer["Logs"][0]
            .as_str()
            .unwrap()
            .contains("Finished(Succeeded)"),
        "{answer}"
    );
    let job = app.stores().jobs.get(&tenant, job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempts, 2);
    assert_eq!(
        app.server.calls(&format!("{id}:one")),
        0,
        "step one is not done again"
    );
    assert_eq!(app.server.calls(&format!("{id}:two")), 1);
    assert_eq!(job.steps[1].attempts, 2, "the interrupted attempt counts");
    assert_eq!(
        job.output,
        Some(json!(200)),
        "context from the record of step one"
    );
}

#[tokio::test]
async fn a_delivery_while_another_worker_holds_a_live_lease_does_nothing() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", transform_agent()).await;
    let id = job_id(
        &app.submit(
            &app.token("t1", Role::Editor),
            &agent,
            json!({"name": "x", "n": 1}),
            None,
        )
        .await,
    );
    let message = app.queue.lock().unwrap().pop_front().unwrap();
    let job = app.job("t1", &id).await;
    let mut owned = job.clone();
    owned.status = JobStatus::Running;
    owned.lease_owner = Some("alive".into());
    owned.lease_until = Some(Utc::now() + chrono::Duration::seconds(60));
    app.stores().jobs.replace(&owned, &job.etag).await.unwrap();
    let (_, answer) = app.deliver(&message).await;
    assert!(
        answer["Logs"][0]
            .as_str()
            .unwrap()
            .contains("OwnedElsewhere"),
        "{answer}"
    );
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Running);
    assert!(job.steps.is_empty());
}

#[tokio::test]
async fn cancelling_a_running_job_aborts_its_in_flight_call_within_the_bound() {
    let app = ExecApp::new().await;
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x", "steps": [
                {"id": "slow", "kind": "http", "url": app.server.url("/slow"), "timeoutMs": 60000},
                {"id": "after", "kind": "transform", "output": 1}
            ]}),
        )
        .await;
    let token = app.token("t1", Role::Editor);
    let id = job_id(&app.submit(&token, &agent, json!({}), None).await);
    let message = app.queue.lock().unwrap().pop_front().unwrap();
    let worker = {
        let app_router = app.router().clone();
        let message = message.clone();
        tokio::spawn(async move {
            use base64::Engine as _;
            use tower::ServiceExt;
            let body = base64::engine::general_purpose::STANDARD.encode(message.to_string());
            let request = axum::http::Request::post("/ExecuteJob")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    json!({"Data": {"msg": body}, "Metadata": {}}).to_string(),
                ))
                .unwrap();
            app_router.oneshot(request).await.unwrap().status()
        })
    };
    app.wait_job("t1", &id, "the slow step to be in flight", |j| {
        j.status == JobStatus::Running && !j.steps.is_empty()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.server.calls(&format!("{id}:slow")) == 0 {
        assert!(Instant::now() < deadline, "the slow call never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    let reply = app
        .send("POST", &format!("/api/execute/cancel/{id}"), &token, None)
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "cancelling");
    assert!(worker.await.unwrap().is_success());
    let took = asked.elapsed();
    let job = app.job("t1", &id).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.steps.len(), 1, "no step after the cancel");
    assert_eq!(job.steps[0].status, StepStatus::Cancelled);
    assert_eq!(
        app.server.seen.lock().unwrap().slow_completed,
        0,
        "the call was aborted, not awaited"
    );
    // The bound: one poll interval plus a store read and write; well under the 30 s call.
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    let again = app
        .send("POST", &format!("/api/execute/cancel/{id}"), &token, None)
        .await;
    assert_eq!(again.status, 409);
}

#[tokio::test]
async fn a_tenant_at_its_limit_waits_while_another_tenant_runs_and_finishing_kicks_the_next() {
    let app = ExecApp::with(&[("FLOWGRID_TENANT_MAX_RUNNING", "1")]).await;
    let gated = json!({"instructions": "x", "steps": [{"id": "wait", "kind": "http", "url": app.server.url("/gate")}]});
    let a_agent = app.agent("ta", gated).await;
    let b_agent = app.agent("tb", transform_agent()).await;
    let a = app.token("ta", Role::Editor);
    let a1 = job_id(&app.submit(&a, &a_agent, json!({}), None).await);
    let a2 = job_id(&app.submit(&a, &a_agent, json!({}), None).await);
    let b1 = job_id(
        &app.submit(
            &app.token("tb", Role::Editor),
            &b_agent,
            json!({"name": "b", "n": 1}),
            None,
        )
        .await,
    );
    let (m_a1, m_a2, m_b1) = {
        let mut q = app.queue.lock().unwrap();
        (
            q.pop_front().unwrap(),
            q.pop_front().unwrap(),
            q.pop_front().unwrap(),
        )
    };
    // Tenant A's first job holds its only slot (its step waits at the gate).
    let router = app.router().clone();
    let first = tokio::spawn(async move {
        use base64::Engine as _;
        use tower::ServiceExt;
        let body = base64::engine::general_purpose::STANDARD.encode(m_a1.to_string());
        let request = axum::http::Request::post("/ExecuteJob")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"Data": {"msg": body}, "Metadata": {}}).to_string(),
            ))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    });
    app.wait_job("ta", &a1, "A's first job to run", |j| {
        j.status == JobStatus::Running
    })
    .await;
    // A's second job waits queued; B's job runs at once.
    let (_, answer) = app.deliver(&m_a2).await;
    assert!(
        answer["Logs"][0]
            .as_str()
            .unwrap()
            .contains(&format!("{:?}", WorkOutcome::Waiting)),
        "{answer}"
    );
    assert_eq!(app.job("ta", &a2).await.status, JobStatus::Queued);
    app.deliver(&m_b1).await;
    assert_eq!(app.job("tb", &b1).await.status, JobStatus::Succeeded);
    // A's first job finishes and its answer carries the message for A's waiting job.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !first.is_finished() {
        app.server.open_gate();
        assert!(Instant::now() < deadline, "the gated job never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = first.await.unwrap();
    assert_eq!(
        answer["Outputs"]["out"],
        json!([{"tenantId": "ta", "jobId": a2}]),
        "{answer}"
    );
    app.queue
        .lock()
        .unwrap()
        .push_back(json!({"tenantId": "ta", "jobId": a2}));
    let opener = {
        let server = app.server.clone();
        tokio::spawn(async move {
            for _ in 0..500 {
                server.open_gate();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    app.drain().await;
    opener.abort();
    assert_eq!(app.job("ta", &a2).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_finished_run_below_the_limit_sends_no_copies_of_the_backlogs_messages() {
    let app = ExecApp::with(&[("FLOWGRID_TENANT_MAX_RUNNING", "100")]).await;
    let agent = app.agent("flood", transform_agent()).await;
    let token = app.token("flood", Role::Editor);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(job_id(
            &app.submit(&token, &agent, json!({"name": "f", "n": n}), None)
                .await,
        ));
    }
    let first = app.queue.lock().unwrap().pop_front().unwrap();
    let (_, answer) = app.deliver(&first).await;
    // Five queued jobs, each with its own message still in the queue: the finished run frees
    // one slot and names at most one job, never a copy of each (the old rule sent five here,
    // and with a flood a copy of the backlog's oldest per finished run).
    let out = answer["Outputs"]["out"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(out.len(), 1, "{answer}");
    // The five messages of the submissions plus the one it sent (the harness queues outputs).
    assert_eq!(app.queue.lock().unwrap().len(), 6);
    app.drain().await;
    for id in &ids {
        assert_eq!(app.job("flood", id).await.status, JobStatus::Succeeded);
    }
}
