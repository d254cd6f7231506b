//! The platform events the functions send through their `events` output (topic
//! `platform-events`): one `flowgrid.job.finished` per job, from whichever invocation wrote its
//! terminal state, never again from a redelivery.

use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::events::{AgentCompiled, CloudEvent, PlatformEvent};
use flowgrid_domain::store::JobStatus;
use flowgrid_domain::store::jobs::StepStatus;
use flowgrid_http::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{ExecApp, job_id};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn llm_agent() -> Value {
    json!({"instructions": "be brief", "steps": [
        {"id": "greet", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}},
        {"id": "ask", "kind": "llm", "prompt": "Summarise {{ steps.greet.output.greeting }} please"}
    ]})
}

#[tokio::test]
async fn a_finished_job_sends_one_job_finished_event_with_the_usage_of_each_step() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", llm_agent()).await;
    let res = app
        .submit(
            &app.token("t1", Role::Editor),
            &agent,
            json!({"name": "Ada"}),
            None,
        )
        .await;
    let id = job_id(&res);
    assert_eq!(app.events_of("flowgrid.job.submitted", &id).len(), 1);
    let message = app.queue.lock().unwrap().pop_front().unwrap();
    let (_, answer) = app
        .deliver_with(&message, &[("traceparent", TRACEPARENT)])
        .await;
    let sent = answer["Outputs"]["events"].as_array().unwrap();
    let types: Vec<&str> = sent.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["flowgrid.job.started", "flowgrid.job.finished"]);
    let finished = app.events_of("flowgrid.job.finished", &id);
    assert_eq!(finished.len(), 1);
    let event = &finished[0];
    assert_eq!(event["id"], format!("flowgrid.job.finished:{id}"));
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["source"], "/flowgrid/execution");
    assert_eq!(event["tenantid"], "t1");
    assert_eq!(event["traceparent"], TRACEPARENT, "the invocation's trace");
    let read: CloudEvent<PlatformEvent> = serde_json::from_value(event.clone()).unwrap();
    let PlatformEvent::JobFinished {
        agent_id,
        status,
        steps,
        ..
    } = read.data
    else {
        panic!("{event}")
    };
    assert_eq!((agent_id, status), (agent.id, JobStatus::Succeeded));
    let job = app.job("t1", &id).await;
    assert_eq!(steps.len(), 2);
    assert_eq!(
        (steps[0].step_id.as_str(), steps[0].kind.as_str()),
        ("greet", "transform")
    );
    assert_eq!(steps[0].tokens, None);
    let tokens = job.steps[1].tokens.unwrap();
    assert_eq!(steps[1].kind, "llm");
    assert_eq!(
        steps[1].tokens,
        Some(tokens.into()),
        "the step record's tokens"
    );
    assert_eq!(
        (steps[1].status, steps[1].attempts),
        (StepStatus::Succeeded, 1)
    );
    let started = app.events_of("flowgrid.job.started", &id);
    assert_eq!(
        started[0]["id"],
        format!("flowgrid.job.started:{id}:1"),
        "the first claim"
    );
}

#[tokio::test]
async fn a_redelivered_message_that_finds_the_job_finished_sends_no_event_again() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", llm_agent()).await;
    let id = job_id(
        &app.submit(
            &app.token("t1", Role::Editor),
            &agent,
            json!({"name": "x"}),
            None,
        )
        .await,
    );
    app.drain().await;
    assert_eq!(app.events_of("flowgrid.job.finished", &id).len(), 1);
    let (status, answer) = app.deliver(&json!({"tenantId": "t1", "jobId": id})).await;
    assert!(status.is_success());
    assert!(
        answer["Logs"][0].as_str().unwrap().contains("AlreadyDone"),
        "{answer}"
    );
    assert!(answer["Outputs"].get("events").is_none(), "{answer}");
    assert_eq!(app.events_of("flowgrid.job.finished", &id).len(), 1);
}

#[tokio::test]
async fn cancelling_a_queued_job_sends_its_finished_event_once() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", llm_agent()).await;
    let token = app.token("t1", Role::Editor);
    let id = job_id(&app.submit(&token, &agent, json!({"name": "x"}), None).await);
    let res = app.cancel(&token, &id).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    let finished = app.events_of("flowgrid.job.finished", &id);
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["data"]["status"], "cancelled");
    let again = app.cancel(&token, &id).await;
    assert_eq!(again["statusCode"], 409);
    assert_eq!(app.events_of("flowgrid.job.finished", &id).len(), 1);
}

#[tokio::test]
async fn a_job_the_reaper_gives_up_sends_its_finished_event_through_the_timer() {
    let app = ExecApp::with(&[("FLOWGRID_JOB_MAX_CLAIMS", "1")]).await;
    let agent = app.agent("t1", llm_agent()).await;
    let id = job_id(
        &app.submit(
            &app.token("t1", Role::Editor),
            &agent,
            json!({"name": "x"}),
            None,
        )
        .await,
    );
    let job = app.job("t1", &id).await;
    let mut crashed = job.clone();
    crashed
        .claim(
            "dead",
            Utc::now() - chrono::Duration::seconds(120),
            chrono::Duration::seconds(60),
        )
        .unwrap();
    app.stores()
        .jobs
        .replace(&crashed, &job.etag)
        .await
        .unwrap();
    let (status, answer) = app
        .invoke(
            "ReapJobs",
            json!({"Data": {"timer": {}}, "Metadata": {}}),
            "r1",
        )
        .await;
    assert!(status.is_success(), "{answer}");
    assert_eq!(app.job("t1", &id).await.status, JobStatus::Failed);
    let finished = app.events_of("flowgrid.job.finished", &id);
    assert_eq!(finished.len(), 1, "{answer}");
    assert_eq!(finished[0]["data"]["status"], "failed");
}

#[tokio::test]
async fn an_agent_compiled_message_that_is_not_a_cloud_event_is_completed_with_a_log_line() {
    use base64::Engine as _;
    let app = ExecApp::new().await;
    let agent = app.agent("t1", llm_agent()).await;
    let envelope = |body: String| json!({"Data": {"msg": base64::engine::general_purpose::STANDARD.encode(body)}, "Metadata": {}});
    let plain = json!({"tenantId": "t1", "agentId": agent.id, "version": 1}).to_string();
    let (status, answer) = app.invoke("AgentCompiled", envelope(plain), "c1").await;
    assert!(status.is_success(), "{answer}");
    assert!(
        answer["Logs"][0]
            .as_str()
            .unwrap()
            .contains("on agent-compiled that is not a valid event"),
        "{answer}"
    );
    let tenant = TenantId::parse("t1").unwrap();
    let unknown = AgentCompiled {
        agent_id: flowgrid_domain::AgentId::new(),
        version: 1,
    };
    let event = CloudEvent::new("design", &tenant, Utc::now(), unknown)
        .to_json()
        .unwrap();
    let (status, answer) = app
        .invoke("AgentCompiled", envelope(event.to_string()), "c2")
        .await;
    assert!(status.is_success(), "{answer}");
    assert!(
        answer["Logs"][0].as_str().unwrap().contains("ignored"),
        "{answer}"
    );
    let stored = app.stores().agents.get(&tenant, agent.id).await.unwrap();
    assert_eq!(
        (stored.version, stored.compiled_version),
        (1, None),
        "untouched"
    );
}

#[test]
fn every_function_that_changes_a_job_has_the_events_output_to_platform_events() {
    let functions =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions/execution");
    for function in [
        "SubmitJob",
        "CancelJob",
        "ExecuteJob",
        "ReapJobs",
        "RunSchedules",
    ] {
        let path = functions.join(function).join("function.json");
        let definition: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let events = definition["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "events");
        assert_eq!(
            events.map(|b| (&b["type"], &b["direction"], &b["topicName"])),
            Some((
                &json!("serviceBus"),
                &json!("out"),
                &json!("platform-events")
            )),
            "{function}"
        );
    }
}
