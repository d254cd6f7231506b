//! The non-HTTP functions (invocation envelope): the worker on queue `executions`, the reaper and
//! schedule timers, and the `agent-compiled` subscription. A storage failure answers 503, so the
//! host fails the invocation (a message is abandoned and delivered again).

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use flowgrid_domain::store::JobId;
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_domain::{Error, Result};
use flowgrid_http::invocation::{self, INVOCATION_ID_HEADER, InvokeRequest, InvokeResponse};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::engine::JobMessage;

/// Function names (folders under `functions/execution/`).
pub mod names {
    /// `POST /api/execute/agent/{id}` (envelope mode: it has a Service Bus output).
    pub const SUBMIT: &str = "SubmitJob";
    /// Service Bus trigger on `executions`.
    pub const WORKER: &str = "ExecuteJob";
    /// Timer: lease expiry and lost messages.
    pub const REAPER: &str = "ReapJobs";
    /// Timer: cron schedules.
    pub const SCHEDULES: &str = "RunSchedules";
    /// Subscription `execution` of topic `agent-compiled`.
    pub const COMPILED: &str = "AgentCompiled";
}

/// The trigger binding name of the Service Bus functions.
const TRIGGER: &str = "msg";
/// The Service Bus output binding (queue `executions`) of the worker and the timers.
const OUT: &str = "out";
/// Queued jobs older than this are re-enqueued by the reaper.
pub const REQUEUE_AFTER: Duration = Duration::from_secs(60);
/// How far back the schedule timer looks for a missed due time.
pub const SCHEDULE_LOOKBACK: Duration = Duration::from_secs(300);

fn invocation_id(headers: &HeaderMap) -> String {
    headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn answer(messages: Vec<Value>, log: String) -> Response {
    let mut response = InvokeResponse::new().log(log);
    if !messages.is_empty() {
        response = response.output(OUT, Value::Array(messages));
    }
    axum::Json(response).into_response()
}

fn failed(e: &Error) -> Response {
    // Non-2xx: the host fails the invocation; a message is abandoned and redelivered.
    tracing::warn!(error = %e, "invocation failed");
    let status = match e {
        Error::Unavailable(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
        _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string()).into_response()
}

fn message_body<T: for<'de> Deserialize<'de>>(envelope: &InvokeRequest) -> Option<T> {
    let raw = envelope.data.get(TRIGGER)?;
    // `dataType: binary` gives base64; tolerate the other encodings too.
    let bytes = invocation::decode_bytes(raw, true);
    serde_json::from_slice(&bytes)
        .ok()
        .or_else(|| invocation::decode_as(raw).ok())
}

/// `ExecuteJob`: runs the job a message names.
pub async fn execute_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Json(envelope): axum::Json<InvokeRequest>,
) -> Response {
    let Some(msg) = message_body::<JobMessage>(&envelope) else {
        // A message that cannot be read will never be: complete it, with a log line.
        return answer(
            Vec::new(),
            "ignored a message that is not {tenantId, jobId}".into(),
        );
    };
    let (Ok(tenant), Ok(id)) = (TenantId::parse(&msg.tenant_id), JobId::parse(&msg.job_id)) else {
        return answer(
            Vec::new(),
            "ignored a message with a malformed tenant or job id".into(),
        );
    };
    let owner = invocation_id(&headers);
    match state.engine.work(&tenant, id, &owner).await {
        Ok(work) => answer(work.messages, format!("job {id}: {:?}", work.outcome)),
        Err(e) => failed(&e),
    }
}

/// `ReapJobs`: re-enqueues lost and stalled jobs.
pub async fn reap_jobs(State(state): State<AppState>) -> Response {
    match state.engine.reap(Utc::now(), REQUEUE_AFTER).await {
        Ok(messages) => {
            let n = messages.len();
            answer(messages, format!("re-enqueued {n} job(s)"))
        }
        Err(e) => failed(&e),
    }
}

/// `RunSchedules`: creates the runs of scheduled agents that are due.
pub async fn run_schedules(State(state): State<AppState>) -> Response {
    match state
        .engine
        .run_schedules(Utc::now(), SCHEDULE_LOOKBACK)
        .await
    {
        Ok(messages) => {
            let n = messages.len();
            answer(messages, format!("started {n} scheduled run(s)"))
        }
        Err(e) => failed(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Compiled {
    tenant_id: String,
    agent_id: String,
    version: u32,
}

/// `AgentCompiled`: records the compiled version an agent runs.
pub async fn agent_compiled(
    State(state): State<AppState>,
    axum::Json(envelope): axum::Json<InvokeRequest>,
) -> Response {
    let Some(msg) = message_body::<Compiled>(&envelope) else {
        return answer(
            Vec::new(),
            "ignored a message that is not {tenantId, agentId, version}".into(),
        );
    };
    let (Ok(tenant), Ok(agent)) = (
        TenantId::parse(&msg.tenant_id),
        AgentId::parse(&msg.agent_id),
    ) else {
        return answer(
            Vec::new(),
            "ignored a message with a malformed tenant or agent id".into(),
        );
    };
    let result: Result<()> = state
        .engine
        .mark_compiled(&tenant, agent, msg.version)
        .await;
    match result {
        Ok(()) => answer(
            Vec::new(),
            format!("agent {agent}: compiled version {}", msg.version),
        ),
        Err(Error::NotFound | Error::BadRequest(_)) => answer(
            Vec::new(),
            format!("ignored: agent {agent} has no version {}", msg.version),
        ),
        Err(e) => failed(&e),
    }
}
