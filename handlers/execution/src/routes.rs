//! The Execution app's HTTP routes. Each handler extracts, calls the engine or the store, and
//! maps the result. `SubmitJob` and `CancelJob` run in envelope mode (they have Service Bus
//! outputs): what they send rides on the response as an `OutputBindings` extension.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use flowgrid_domain::AgentId;
use flowgrid_domain::events::{CloudEvent, PlatformEvent, topics};
use flowgrid_domain::store::jobs::Created;
use flowgrid_domain::store::jobs::StepRecord;
use flowgrid_domain::store::{Job, JobId, JobQuery, JobStatus, Page, paging};
use flowgrid_http::app::{App, Trigger};
use flowgrid_http::auth::{Caller, Role};
use flowgrid_http::envelope::OutputBindings;
use flowgrid_http::extract::Id;
use flowgrid_http::json::{OptionalJson, Secrets};
use flowgrid_http::openapi::routes;
use flowgrid_http::trace::Trace;
use flowgrid_http::{Error, Result};
use flowgrid_http::{Json, Query};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::engine::JobMessage;
use crate::functions::{self, EVENTS, OUT, QUEUE};
use crate::{APP, AppState};

type Event = CloudEvent<PlatformEvent>;

/// The output binding (Service Bus, queue `executions`) of `SubmitJob`. Both `SubmitJob` and
/// `CancelJob` also have the output [`EVENTS`] (topic `platform-events`).
pub const MESSAGE_BINDING: &str = "msg";

/// Every function of the Execution app: `functions/execution/<Name>/function.json` declares
/// the same. `SubmitJob` and `CancelJob` are HTTP functions in envelope mode (they have outputs).
pub fn app() -> App<AppState> {
    let to_events = (EVENTS, topics::PLATFORM_EVENTS);
    let to_queue = |binding| (binding, QUEUE);
    App::new(APP)
        .http_envelope(
            "post",
            "SubmitJob",
            "execute/agent/{id}",
            &[to_queue(MESSAGE_BINDING), to_events],
            routes!(submit_job),
        )
        .get("ListJobs", "execute/jobs", routes!(list_jobs))
        .get("GetJob", "execute/jobs/{jobId}", routes!(get_job))
        .http_envelope(
            "post",
            "CancelJob",
            "execute/cancel/{jobId}",
            &[to_events],
            routes!(cancel_job),
        )
        .function(
            "ExecuteJob",
            Trigger::ServiceBus(QUEUE.into()),
            &[to_queue(OUT), to_events],
            functions::execute_job,
        )
        .function(
            "ReapJobs",
            Trigger::Timer,
            &[to_queue(OUT), to_events],
            functions::reap_jobs,
        )
        .function(
            "RunSchedules",
            Trigger::Timer,
            &[to_queue(OUT), to_events],
            functions::run_schedules,
        )
        .function(
            "AgentCompiled",
            Trigger::ServiceBus(format!("{}/execution", topics::AGENT_COMPILED)),
            &[],
            functions::agent_compiled,
        )
}

/// `POST /api/execute/agent/{id}` body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    /// The run's input: any JSON the agent's input schema accepts (`{}` when absent).
    #[serde(default)]
    input: Option<Value>,
}

impl Secrets for SubmitBody {
    const FIELDS: &'static [&'static str] = &[];
}

/// The query of `GET /api/execute/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only this agent's jobs.
    #[param(value_type = Option<AgentId>)]
    agent_id: Option<String>,
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Page size: 50 when absent, at most 200 (larger is clamped, 0 is 1).
    limit: Option<u32>,
    /// Where the previous page stopped, as it gave it.
    continuation_token: Option<String>,
}

/// A job as the API shows it (no plan, lease or internal fields); `input` and `steps` only on
/// `GET /api/execute/jobs/{jobId}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView<'a> {
    id: JobId,
    agent_id: AgentId,
    agent_version: u32,
    /// `manual`, `schedule` or `event`.
    #[schema(value_type = String)]
    trigger: &'a str,
    status: JobStatus,
    attempts: u32,
    /// The run's output once it has succeeded.
    #[schema(value_type = Option<serde_json::Value>)]
    output: &'a Option<Value>,
    /// Why it failed.
    #[schema(value_type = Option<String>)]
    error: &'a Option<String>,
    created_at: DateTime<Utc>,
    #[schema(value_type = String)]
    created_by: &'a str,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    status_url: String,
    /// The run's input (`GET /api/execute/jobs/{jobId}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    input: Option<&'a Value>,
    /// The step records (`GET /api/execute/jobs/{jobId}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<StepRecord>>)]
    steps: Option<&'a [StepRecord]>,
}

impl<'a> JobView<'a> {
    /// The view of `job`, with its input and step records when `with_detail`.
    pub fn of(job: &'a Job, with_detail: bool) -> Self {
        JobView {
            id: job.id,
            agent_id: job.agent_id,
            agent_version: job.agent_version,
            trigger: &job.trigger,
            status: job.status,
            attempts: job.attempts,
            output: &job.output,
            error: &job.error,
            created_at: job.created_at,
            created_by: &job.created_by,
            started_at: job.started_at,
            finished_at: job.finished_at,
            updated_at: job.updated_at,
            status_url: status_url(job.id),
            input: with_detail.then_some(&job.input),
            steps: with_detail.then_some(job.steps.as_slice()),
        }
    }
}

/// `202 Accepted` of a submit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    job_id: JobId,
    status: JobStatus,
    status_url: String,
}

fn status_url(id: JobId) -> String {
    format!("/api/execute/jobs/{id}")
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| (1..=200).contains(&k.len()) && !k.starts_with("schedule:"))
        .ok_or_else(|| {
            Error::BadRequest("Idempotency-Key must be 1-200 visible ASCII characters".into())
        })?;
    Ok(Some(key.to_owned()))
}

fn request_hash(agent: AgentId, input: &Value) -> String {
    let text = format!("{agent}\n{input}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Submits a run of the agent: 202 with the job id and its status URL.
///
/// The job record and its message never exist one without the other: the job is committed
/// (`queued`) first, and its message is returned as the `msg` output binding, which the host
/// sends only when this invocation answers 2xx. If the process dies between the commit and the
/// answer, or the host fails to send, the job stays `queued` without a message: the reaper
/// (`ReapJobs`) re-enqueues every job left queued for a minute. A duplicate message is harmless:
/// its `MessageId` is the job id and the worker is an idempotent consumer (a job already claimed
/// or finished is left alone). A new job's `flowgrid.job.submitted` goes out the same way.
#[utoipa::path(post, path = "/api/execute/agent/{id}",
    params(("id" = AgentId, Path, description = "The agent to run."),
        ("Idempotency-Key" = Option<String>, Header, description = "1-200 visible ASCII characters, not starting with `schedule:`: a replay with the same key and body answers the same job; with another body, 422.")),
    request_body(content = Option<SubmitBody>, description = "Optional: the run's input (checked against the agent's input schema); empty means `{}`.",
        example = json!({"input": {"title": "Printer on fire"}})),
    responses(
        (status = 202, description = "Accepted: the job is queued (or the job of the same Idempotency-Key).", body = Accepted,
            headers(("Location" = String, description = "The job's status URL.")),
            links(("GetJob" = (operation_id = "GetJob", parameters(("jobId" = "$response.body#/jobId")))), ("CancelJob" = (operation_id = "CancelJob", parameters(("jobId" = "$response.body#/jobId")))))),
        (status = 403, description = "The editor role is required."),
        (status = 409, description = "The agent is disabled."),
        (status = 422, description = "The input fails the agent's input schema or is too large, the agent's definition does not compile, or the Idempotency-Key was used with another body."),
        (status = 429, description = "The tenant has too many queued jobs; retry after `Retry-After` seconds."),
    ))]
async fn submit_job(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<SubmitBody>,
) -> Result<Response> {
    caller.require(Role::Editor)?;
    let input = body.input.unwrap_or_else(|| json!({}));
    let key = idempotency_key(&headers)?;
    let hash = request_hash(id, &input);
    let agent = state.stores.agents.get(&caller.tenant, id).await?;
    let created = state
        .engine
        .create_job(
            &agent,
            input,
            "manual",
            &caller.subject,
            key,
            Some(hash.clone()),
        )
        .await?;
    let event = match &created {
        Created::New(job) => Some(job.submitted_event(APP)),
        Created::Existing(_) => None,
    };
    let job = match created {
        Created::New(job) => job,
        Created::Existing(job) if job.request_hash.as_deref() == Some(hash.as_str()) => job,
        Created::Existing(_) => {
            return Err(Error::Validation(vec![flowgrid_http::FieldError::new(
                "Idempotency-Key",
                "was already used with a different request body",
            )])
            .into());
        }
    };
    accepted(&job, event, &Trace::from_headers(&headers))
}

/// The 202 of a submit, with the job's message while it is queued and the submitted event.
fn accepted(job: &Job, event: Option<Event>, trace: &Trace) -> Result<Response> {
    let status_url = status_url(job.id);
    let location =
        HeaderValue::from_str(&status_url).map_err(|e| Error::Internal(e.to_string()))?;
    let body = Accepted {
        job_id: job.id,
        status: job.status,
        status_url,
    };
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response();
    let mut bindings = OutputBindings::default();
    if job.status == JobStatus::Queued {
        // A replayed key whose job is still queued sends its message again: harmless, and it
        // covers a first answer whose message was lost.
        bindings.push(MESSAGE_BINDING, JobMessage::of(job));
    }
    for event in trace.stamp(event.into_iter().collect())? {
        bindings.push(EVENTS, event);
    }
    if !bindings.0.is_empty() {
        response.extensions_mut().insert(bindings);
    }
    Ok(response)
}

/// The longest `wait` of `GET /api/execute/jobs/{jobId}?wait=N`, in seconds (a longer one is
/// clamped): well inside `functionTimeout` and the 230 s Azure's front end allows a request.
pub const MAX_WAIT_SECS: u64 = 60;
/// How often a waiting `GetJob` re-reads the job (one point read each).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The query of `GET /api/execute/jobs/{jobId}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GetParams {
    /// Long poll: answer when the job's status or a step changes, or after this many seconds
    /// (at most 60; more is clamped).
    wait: Option<u64>,
}

/// What a watcher sees change: the status, the attempts, and each step's status and attempts
/// (not `updatedAt`, which lease renewals move).
fn observed(job: &Job) -> (JobStatus, u32, Vec<(String, u32, String)>) {
    let steps = job
        .steps
        .iter()
        .map(|s| (s.id.clone(), s.attempts, format!("{:?}", s.status)))
        .collect();
    (job.status, job.attempts, steps)
}

/// One job with its step records. With `?wait=N` (seconds, at most [`MAX_WAIT_SECS`]) it is a
/// long poll: answered as soon as the job's status or a step changes, at once when the job has
/// finished, else after N seconds with the job as it is. It re-reads the job every 200 ms, so
/// it works whichever instance runs the job, and answers once (the Functions host buffers).
#[utoipa::path(get, path = "/api/execute/jobs/{jobId}", params(("jobId" = JobId, Path, description = "The job's id (a UUID)."), GetParams),
    responses((status = 200, description = "The job with its input and step records.", body = JobView)))]
async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Id(job_id): Id<JobId>,
    Query(params): Query<GetParams>,
) -> Result<Response> {
    caller.require(Role::Viewer)?;
    let mut job = state.stores.jobs.get(&caller.tenant, job_id).await?;
    let wait = std::time::Duration::from_secs(params.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let seen = observed(&job);
    while !job.status.is_terminal() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + WAIT_POLL)).await;
        let now = state.stores.jobs.get(&caller.tenant, job_id).await?;
        let changed = observed(&now) != seen;
        job = now;
        if changed {
            break;
        }
    }
    Ok(Json(JobView::of(&job, true)).into_response())
}

/// The caller's jobs, newest first, filtered by `agentId` and `status`, paged.
#[utoipa::path(get, path = "/api/execute/jobs", params(ListParams),
    responses((status = 200, description = "One page of the caller's jobs, newest first (without input and steps).", body = Page<JobView>),
        (status = 404, description = "`agentId` names no agent of the caller's tenant.")))]
async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Response> {
    caller.require(Role::Viewer)?;
    let query = JobQuery {
        agent_id: params.agent_id.as_deref().map(AgentId::parse).transpose()?,
        status: params.status.as_deref().map(JobStatus::parse).transpose()?,
        limit: paging::limit(params.limit),
        continuation_token: params.continuation_token,
    };
    let page = state.stores.jobs.list(&caller.tenant, &query).await?;
    if let Some(agent) = query.agent_id
        && page.items.is_empty()
        && query.continuation_token.is_none()
    {
        // Another tenant's agent (or none at all) is a 404, as on every route; a deleted agent
        // of the caller's own still lists the jobs it left.
        state.stores.agents.get(&caller.tenant, agent).await?;
    }
    let page = Page {
        items: page.items.iter().map(|j| JobView::of(j, false)).collect(),
        continuation_token: page.continuation_token,
    };
    Ok(Json(page).into_response())
}

/// Cancels a job: a queued one at once (200, and its `flowgrid.job.finished`), a running one by
/// asking its worker (`cancelling`, 202); a finished one is a 409.
#[utoipa::path(post, path = "/api/execute/cancel/{jobId}", params(("jobId" = JobId, Path, description = "The job's id (a UUID).")),
    responses(
        (status = 200, description = "A queued job, cancelled at once.", body = JobView),
        (status = 202, description = "A running job: its worker is asked to stop between steps (`cancelling`).", body = JobView),
        (status = 403, description = "The editor role is required."),
        (status = 409, description = "The job has finished, or is changing (retry)."),
    ))]
async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    Id(job_id): Id<JobId>,
    headers: HeaderMap,
) -> Result<Response> {
    caller.require(Role::Editor)?;
    let job = state.engine.cancel(&caller.tenant, job_id).await?;
    let status = if job.status == JobStatus::Cancelled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, Json(JobView::of(&job, false))).into_response();
    let mut bindings = OutputBindings::default();
    let finished = job.finished_event(APP).into_iter().collect();
    for event in Trace::from_headers(&headers).stamp(finished)? {
        bindings.push(EVENTS, event);
    }
    if !bindings.0.is_empty() {
        response.extensions_mut().insert(bindings);
    }
    Ok(response)
}
