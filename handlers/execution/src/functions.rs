//! The non-HTTP functions (invocation envelope): the worker on queue `executions`, the reaper and
//! schedule timers, and the `agent-compiled` subscription. A storage failure answers 503, so the
//! host fails the invocation (a message is abandoned and delivered again). Besides the messages
//! of its output `out` (queue `executions`), an invocation answers the platform events it
//! produced as its output `events` (topic `platform-events`), stamped with its trace context.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use flowgrid_domain::events::{AgentCompiled, CloudEvent, Payload};
use flowgrid_domain::store::{JobId, record_compiled};
use flowgrid_domain::{Error, Result, TenantId};
use flowgrid_http::invocation::{self, INVOCATION_ID_HEADER, InvokeRequest, InvokeResponse};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::engine::{Effects, JobMessage};
use crate::trace::Trace;

/// Function names (folders under `functions/execution/`).
pub mod names {
    /// `POST /api/execute/agent/{id}` (envelope mode: it has Service Bus outputs).
    pub const SUBMIT: &str = "SubmitJob";
    /// `POST /api/execute/cancel/{jobId}` (envelope mode: it has the `events` output).
    pub const CANCEL: &str = "CancelJob";
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
/// The Service Bus output binding (topic `platform-events`) of every function that changes a job.
pub const EVENTS: &str = "events";
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

fn answer(effects: Effects, trace: &Trace, log: String) -> Response {
    let events = match trace.stamp(effects.events) {
        Ok(events) => events,
        Err(e) => return failed(&e),
    };
    let mut response = InvokeResponse::new().log(log);
    if !effects.messages.is_empty() {
        response = response.output(OUT, Value::Array(effects.messages));
    }
    if !events.is_empty() {
        response = response.output(EVENTS, Value::Array(events));
    }
    axum::Json(response).into_response()
}

/// Completes the invocation with nothing to send and a log line (a message that will never be
/// readable, or one that needs nothing done).
fn ignored(log: String) -> Response {
    answer(Effects::default(), &Trace::default(), log)
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
    serde_json::from_slice(&invocation::decode_bytes(raw, true))
        .ok()
        .or_else(|| invocation::decode_as(raw).ok())
}

/// The trigger message as a CloudEvent of `T`; [`Error::BadRequest`] when it is not one.
fn read_event<T: Payload>(envelope: &InvokeRequest) -> Result<CloudEvent<T>> {
    let raw = envelope
        .data
        .get(TRIGGER)
        .ok_or_else(|| Error::BadRequest("no message".into()))?;
    CloudEvent::from_slice(&invocation::decode_bytes(raw, true)).or_else(|e| {
        // Not base64: a plain or double-encoded JSON text, or native JSON.
        serde_json::to_vec(&invocation::decode_json(raw))
            .ok()
            .and_then(|bytes| CloudEvent::from_slice(&bytes).ok())
            .ok_or(e)
    })
}

/// `ExecuteJob`: runs the job a message names.
pub async fn execute_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Json(envelope): axum::Json<InvokeRequest>,
) -> Response {
    let Some(msg) = message_body::<JobMessage>(&envelope) else {
        // A message that cannot be read will never be: complete it, with a log line.
        return ignored("ignored a message that is not {tenantId, jobId}".into());
    };
    let (Ok(tenant), Ok(id)) = (TenantId::parse(&msg.tenant_id), JobId::parse(&msg.job_id)) else {
        return ignored("ignored a message with a malformed tenant or job id".into());
    };
    let owner = invocation_id(&headers);
    let trace = Trace::of_invocation(&headers, &envelope);
    match state.engine.work(&tenant, id, &owner).await {
        Ok(work) => answer(
            work.effects,
            &trace,
            format!("job {id}: {:?}", work.outcome),
        ),
        Err(e) => failed(&e),
    }
}

/// `ReapJobs`: re-enqueues lost and stalled jobs; gives up those whose workers keep dying.
pub async fn reap_jobs(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.engine.reap(Utc::now(), REQUEUE_AFTER).await {
        Ok(effects) => {
            let n = effects.messages.len();
            let trace = Trace::from_headers(&headers);
            answer(effects, &trace, format!("re-enqueued {n} job(s)"))
        }
        Err(e) => failed(&e),
    }
}

/// `RunSchedules`: creates the runs of scheduled agents that are due.
pub async fn run_schedules(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state
        .engine
        .run_schedules(Utc::now(), SCHEDULE_LOOKBACK)
        .await
    {
        Ok(effects) => {
            let n = effects.messages.len();
            let trace = Trace::from_headers(&headers);
            answer(effects, &trace, format!("started {n} scheduled run(s)"))
        }
        Err(e) => failed(&e),
    }
}

/// `AgentCompiled`: records the compiled version an agent runs, from a
/// `flowgrid.agent.compiled` CloudEvent (its tenant is the event's `tenantid`).
pub async fn agent_compiled(
    State(state): State<AppState>,
    axum::Json(envelope): axum::Json<InvokeRequest>,
) -> Response {
    let event = read_event::<AgentCompiled>(&envelope);
    let (tenant, event) = match event.and_then(|e| Ok((e.tenant()?, e))) {
        Ok(read) => read,
        Err(e) => {
            return ignored(format!(
                "ignored a message that is not an agent-compiled event ({e})"
            ));
        }
    };
    let AgentCompiled { agent_id, version } = event.data;
    match record_compiled(state.stores.agents.as_ref(), &tenant, agent_id, version).await {
        Ok(_) => ignored(format!("agent {agent_id}: compiled version {version}")),
        Err(Error::NotFound | Error::BadRequest(_)) => ignored(format!(
            "ignored: agent {agent_id} has no version {version}"
        )),
        Err(e) => failed(&e),
    }
}
