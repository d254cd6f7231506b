//! The non-HTTP functions (invocation envelope): the worker on queue `executions`, the reaper and
//! schedule timers, and the `agent-compiled` subscription. A storage failure answers 503, so the
//! host fails the invocation (a message is abandoned and delivered again). Besides the messages
//! of its output `out` (queue `executions`), an invocation answers the platform events it
//! produced as its output `events` (topic `platform-events`), stamped with its trace context.

use std::time::Duration;

use axum::extract::State;
use chrono::Utc;
use flowgrid_domain::events::AgentCompiled;
use flowgrid_domain::store::{JobId, record_compiled};
use flowgrid_domain::{Error, TenantId};
use flowgrid_http::trace::Trace;
use flowgrid_http::trigger::{Event, Failed, Message, Outputs, Tick};

use crate::AppState;
use crate::engine::{Effects, JobMessage};

/// The queue of runs.
pub const QUEUE: &str = "executions";
/// The Service Bus output binding (queue `executions`) of the worker and the timers.
pub const OUT: &str = "out";
/// The Service Bus output binding (topic `platform-events`) of every function that changes a job.
pub const EVENTS: &str = "events";
/// Queued jobs older than this are re-enqueued by the reaper.
pub const REQUEUE_AFTER: Duration = Duration::from_secs(60);
/// How far back the schedule timer looks for a missed due time.
pub const SCHEDULE_LOOKBACK: Duration = Duration::from_secs(300);

/// The answer of an invocation: the messages and the events (stamped with its trace) it sends.
fn answer(effects: Effects, trace: &Trace, log: String) -> Result<Outputs, Failed> {
    Ok(Outputs::new()
        .send(OUT, effects.messages)
        .events(EVENTS, effects.events, trace)?
        .log(log))
}

/// `ExecuteJob`: runs the job a message names.
pub async fn execute_job(
    State(state): State<AppState>,
    msg: Message<JobMessage>,
) -> Result<Outputs, Failed> {
    let (Ok(tenant), Ok(id)) = (
        TenantId::parse(&msg.body.tenant_id),
        JobId::parse(&msg.body.job_id),
    ) else {
        // A message that cannot be read will never be: complete it, with a warning.
        tracing::warn!("message completed unread: a malformed tenant or job id");
        return Ok(Outputs::new().log("ignored a message with a malformed tenant or job id"));
    };
    // The run is logged under the submitting request's correlation id (the message carries
    // it), else under this invocation's id.
    let correlation_id = msg
        .body
        .correlation_id
        .clone()
        .filter(|c| flowgrid_http::correlation::is_sane(c))
        .unwrap_or_else(|| msg.invocation_id.clone());
    let work = flowgrid_http::correlation::scope(
        correlation_id,
        state.engine.work(&tenant, id, &msg.invocation_id),
    )
    .await?;
    answer(
        work.effects,
        &msg.trace,
        format!("job {id}: {:?}", work.outcome),
    )
}

/// `ReapJobs`: re-enqueues lost and stalled jobs; gives up those whose workers keep dying.
pub async fn reap_jobs(State(state): State<AppState>, tick: Tick) -> Result<Outputs, Failed> {
    let effects = state.engine.reap(Utc::now(), REQUEUE_AFTER).await?;
    let n = effects.messages.len();
    answer(effects, &tick.trace, format!("re-enqueued {n} job(s)"))
}

/// `RunSchedules`: creates the runs of scheduled agents that are due.
pub async fn run_schedules(State(state): State<AppState>, tick: Tick) -> Result<Outputs, Failed> {
    let effects = state
        .engine
        .run_schedules(Utc::now(), SCHEDULE_LOOKBACK)
        .await?;
    let n = effects.messages.len();
    answer(
        effects,
        &tick.trace,
        format!("started {n} scheduled run(s)"),
    )
}

/// `AgentCompiled`: records the compiled version an agent runs, from a
/// `flowgrid.agent.compiled` CloudEvent (its tenant is the event's `tenantid`).
pub async fn agent_compiled(
    State(state): State<AppState>,
    Event(event): Event<AgentCompiled>,
) -> Result<Outputs, Failed> {
    let tenant = event.tenant()?;
    let AgentCompiled { agent_id, version } = event.data;
    match record_compiled(state.stores.agents.as_ref(), &tenant, agent_id, version).await {
        Ok(_) => Ok(Outputs::new().log(format!("agent {agent_id}: compiled version {version}"))),
        Err(Error::NotFound | Error::BadRequest(_)) => Ok(Outputs::new().log(format!(
            "ignored: agent {agent_id} has no version {version}"
        ))),
        Err(e) => Err(e.into()),
    }
}
