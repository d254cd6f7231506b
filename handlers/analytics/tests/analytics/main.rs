//! The Analytics app's tests, one binary: ingestion through the `IngestEvent` function as the
//! host invokes it, the rollup timer, the usage, metrics and dashboard routes, tracked events,
//! and the dashboard page (its assets, and the page in headless Chromium).

mod browser;
mod ingest;
mod page;
mod sources;
mod track;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Utc};
use flowgrid_analytics::{AppState, router};
use flowgrid_domain::events::{CloudEvent, PlatformEvent, StepUsage, TokenUsage};
use flowgrid_domain::job::{JobStatus, StepStatus};
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_testkit::{Reply, TestApp};
use serde_json::{Value, json};

/// The app in-process on a fresh data folder.
pub async fn start() -> TestApp<AppState> {
    TestApp::start(async |config| AppState::from_config(config).await, router).await
}

/// Invokes `function` with `data` as the trigger binding `msg` (or the timer), as the host does.
pub async fn invoke(app: &TestApp<AppState>, function: &str, envelope: Value) -> Reply {
    let request = Request::builder()
        .method("POST")
        .uri(format!("/{function}"))
        .header("content-type", "application/json")
        .header("x-azure-functions-invocationid", "inv-1")
        .body(Body::from(envelope.to_string()))
        .expect("request");
    app.request(request).await
}

/// Delivers one event on the `analytics` subscription.
pub async fn deliver(app: &TestApp<AppState>, event: &Value) -> Reply {
    let reply = invoke(
        app,
        "IngestEvent",
        json!({"Data": {"msg": event.to_string()}, "Metadata": {"DeliveryCount": 1}}),
    )
    .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    reply
}

/// One tick of the rollup timer.
pub async fn tick(app: &TestApp<AppState>) {
    let reply = invoke(
        app,
        "RefreshRollups",
        json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}),
    )
    .await;
    assert!(reply.status.is_success(), "{}", reply.text);
}

/// A `job.finished` event of `tenant` at `at`: one `llm` step (`tokens` in, `tokens / 2` out,
/// `cost`) and one `integration` step that failed when `status` is failed.
pub fn job_finished(
    tenant: &str,
    agent: AgentId,
    job: &str,
    at: DateTime<Utc>,
    status: JobStatus,
    tokens: u64,
    cost: u64,
) -> Value {
    let event = CloudEvent::new(
        "execution",
        &TenantId::parse(tenant).expect("tenant"),
        at,
        PlatformEvent::JobFinished {
            job_id: job.into(),
            agent_id: agent,
            status,
            duration_ms: 1_200,
            steps: vec![
                StepUsage {
                    step_id: "ask".into(),
                    kind: "llm".into(),
                    status: StepStatus::Succeeded,
                    attempts: 1,
                    duration_ms: Some(300),
                    tokens: Some(TokenUsage {
                        input: tokens,
                        output: tokens / 2,
                        ..TokenUsage::default()
                    }),
                    cost_micro_usd: Some(cost),
                    provider: Some("openai".into()),
                    model: Some("gpt-4o-mini".into()),
                },
                StepUsage {
                    step_id: "ticket".into(),
                    kind: "integration".into(),
                    status: if status == JobStatus::Failed {
                        StepStatus::Failed
                    } else {
                        StepStatus::Succeeded
                    },
                    attempts: 1,
                    duration_ms: Some(80),
                    tokens: None,
                    cost_micro_usd: None,
                    provider: None,
                    model: None,
                },
            ],
        },
    );
    event.to_json().expect("json")
}
