//! The Agents routes. Each handler extracts, calls the domain and the store, and maps the result.
//! The writes (create, replace, delete, restore) run in envelope mode: their platform event
//! (`flowgrid.agent.created/updated/deleted`) rides on the response as the `events` output
//! binding (topic `platform-events`), sent by the host only with a 2xx answer. Reads stay
//! forwarded.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use flowgrid_domain::events::{CloudEvent, PlatformEvent, topics};
use flowgrid_domain::store::{AgentQuery, AgentVersionSummary, Page, paging, update_agent};
use flowgrid_domain::{Agent, AgentId, AgentInput, AgentStatus};
use flowgrid_http::app::App;
use flowgrid_http::auth::{Caller, Role};
use flowgrid_http::envelope::OutputBindings;
use flowgrid_http::extract::{Id, Version};
use flowgrid_http::openapi::routes;
use flowgrid_http::trace::Trace;
use flowgrid_http::{Error, Result};
use flowgrid_http::{Json, Query, RawJson, etag};
use serde::{Deserialize, Serialize};

use crate::AppState;

/// The output binding (topic `platform-events`) of the write functions.
pub const EVENTS: &str = "events";

/// Every function of the Agents app: `functions/agents/<Name>/function.json` declares the same.
pub fn app() -> App<AppState> {
    let events = &[(EVENTS, topics::PLATFORM_EVENTS)];
    App::new(crate::APP)
        .get("ListAgents", "agents", routes!(list_agents))
        .http_envelope(
            "post",
            "CreateAgent",
            "agents",
            events,
            routes!(create_agent),
        )
        .get("GetAgent", "agents/{id}", routes!(get_agent))
        .http_envelope(
            "put",
            "ReplaceAgent",
            "agents/{id}",
            events,
            routes!(replace_agent),
        )
        .http_envelope(
            "delete",
            "DeleteAgent",
            "agents/{id}",
            events,
            routes!(delete_agent),
        )
        .get(
            "GetAgentStatus",
            "agents/{id}/status",
            routes!(get_agent_status),
        )
        .get(
            "ListAgentVersions",
            "agents/{id}/versions",
            routes!(list_agent_versions),
        )
        .get(
            "GetAgentVersion",
            "agents/{id}/versions/{version:int}",
            routes!(get_agent_version),
        )
        .http_envelope(
            "post",
            "RestoreAgentVersion",
            "agents/{id}/versions/{version:int}/restore",
            events,
            routes!(restore_agent_version),
        )
}

/// The query of `GET /api/agents`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only agents in this status.
    #[param(value_type = Option<AgentStatus>)]
    status: Option<String>,
    /// Only agents whose name contains this text (case-insensitive).
    q: Option<String>,
    /// Page size: 50 when absent, at most 200 (larger is clamped, 0 is 1).
    limit: Option<u32>,
    /// Where the previous page stopped, as it gave it.
    continuation_token: Option<String>,
}

/// Paging of a listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct PageParams {
    /// Page size: 50 when absent, at most 200 (larger is clamped, 0 is 1).
    limit: Option<u32>,
    /// Where the previous page stopped, as it gave it.
    continuation_token: Option<String>,
}

/// `GET /api/agents/{id}/status`: lifecycle status, versions and run figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AgentStatusView {
    id: AgentId,
    status: AgentStatus,
    version: u32,
    compiled_version: Option<u32>,
    updated_at: chrono::DateTime<Utc>,
    last_run_at: Option<chrono::DateTime<Utc>>,
    runs_last24h: u64,
    success_rate: Option<f64>,
    running_count: u64,
}

/// The agent with its `ETag` header.
fn with_etag(status: StatusCode, agent: Agent) -> Response {
    let tag = etag::header_value(&agent.etag);
    (status, [(header::ETAG, tag)], Json(agent)).into_response()
}

/// Attaches `event` (stamped with the request's trace context) to `response` as the `events`
/// output binding.
fn with_event(
    mut response: Response,
    event: CloudEvent<PlatformEvent>,
    headers: &HeaderMap,
) -> Result<Response> {
    let mut bindings = OutputBindings::default();
    for event in Trace::from_headers(headers).stamp(vec![event])? {
        bindings.push(EVENTS, event);
    }
    response.extensions_mut().insert(bindings);
    Ok(response)
}

/// `flowgrid.agent.created` or `.updated` of the agent as saved.
fn saved_event(agent: &Agent, created: bool) -> CloudEvent<PlatformEvent> {
    let (agent_id, version) = (agent.id, agent.version);
    let data = if created {
        PlatformEvent::AgentCreated { agent_id, version }
    } else {
        PlatformEvent::AgentUpdated { agent_id, version }
    };
    CloudEvent::new(crate::APP, &agent.tenant_id, agent.updated_at, data)
}

/// Lists the caller's agents, newest first, filtered by `status` and `q`, paged.
#[utoipa::path(get, path = "/api/agents", params(ListParams),
    responses((status = 200, description = "One page of the caller's agents, newest first.", body = Page<Agent>)))]
async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Agent>>> {
    caller.require(Role::Viewer)?;
    let query = AgentQuery {
        status: params
            .status
            .as_deref()
            .map(AgentStatus::parse)
            .transpose()?,
        name_contains: params.q.filter(|q| !q.trim().is_empty()),
        limit: paging::limit(params.limit),
        continuation_token: params.continuation_token,
    };
    Ok(Json(
        state.stores.agents.list(&caller.tenant, &query).await?,
    ))
}

/// An agent body: every unknown field reported at once (reading with serde stops at the
/// first), then read strictly as the kit reads every body.
fn agent_input(body: &serde_json::Value) -> Result<AgentInput> {
    let unknown = AgentInput::unknown_fields(body);
    if !unknown.is_empty() {
        return Err(Error::Validation(unknown).into());
    }
    let bytes = serde_json::to_vec(body).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(flowgrid_http::json::parse(&bytes)?)
}

/// Creates an agent at version 1.
#[utoipa::path(post, path = "/api/agents",
    request_body(content = AgentInput, description = "The new agent.", example = json!({
            "name": "Ticket triage",
            "description": "Sorts new tickets by urgency.",
            "definition": {
                "instructions": "Classify the ticket {{ input.title }} by urgency.",
                "model": {"provider": "offline", "model": "offline"},
                "steps": [{"id": "classify", "kind": "llm", "prompt": "Urgency of {{ input.title }}?"}]
            }
        })),
    responses(
        (status = 201, description = "Created at version 1.", body = Agent,
            headers(("ETag" = String, description = "The agent's concurrency token."),
                ("Location" = String, description = "`/api/agents/{id}`.")),
            links(
                ("GetAgent" = (operation_id = "GetAgent", parameters(("id" = "$response.body#/id")))),
                ("ReplaceAgent" = (operation_id = "ReplaceAgent", parameters(("id" = "$response.body#/id")))),
                ("DeleteAgent" = (operation_id = "DeleteAgent", parameters(("id" = "$response.body#/id")))),
                ("GetAgentStatus" = (operation_id = "GetAgentStatus", parameters(("id" = "$response.body#/id")))),
                ("ListAgentVersions" = (operation_id = "ListAgentVersions", parameters(("id" = "$response.body#/id")))),
                ("RestoreAgentVersion" = (operation_id = "RestoreAgentVersion",
                    parameters(("id" = "$response.body#/id"), ("version" = "$response.body#/version")))),
            )),
        (status = 403, description = "The editor role is required."),
        (status = 409, description = "The tenant has an agent of that name."),
    ))]
async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    caller.require(Role::Editor)?;
    let input = agent_input(&body)?;
    let agent = Agent::create(
        caller.tenant.clone(),
        input.validate_offered(&state.providers)?,
        &caller.subject,
        Utc::now(),
    );
    let agent = state.stores.agents.insert(&agent).await?;
    let location = HeaderValue::from_str(&format!("/api/agents/{}", agent.id))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let event = saved_event(&agent, true);
    let mut response = with_etag(StatusCode::CREATED, agent);
    response.headers_mut().insert(header::LOCATION, location);
    with_event(response, event, &headers)
}

/// Reads one agent, as the store keeps its JSON; `If-None-Match` with its current ETag gives 304.
#[utoipa::path(get, path = "/api/agents/{id}",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID)."), ("If-None-Match" = Option<String>, Header, description = "304 if the agent's current ETag is this one.")),
    responses(
        (status = 200, description = "The agent.", body = Agent, headers(("ETag" = String, description = "The agent's current concurrency token."))),
        (status = 304, description = "Unchanged since the ETag given in `If-None-Match`.", headers(("ETag" = String, description = "The agent's current concurrency token."))),
    ))]
async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    headers: HeaderMap,
) -> Result<Response> {
    caller.require(Role::Viewer)?;
    let agent = state.stores.agents.get_document(&caller.tenant, id).await?;
    let tag = [(header::ETAG, etag::header_value(&agent.etag))];
    if etag::if_none_match(&headers).is_some_and(|c| c.matches(&agent.etag)) {
        return Ok((StatusCode::NOT_MODIFIED, tag).into_response());
    }
    Ok((StatusCode::OK, tag, RawJson(agent.json)).into_response())
}

/// Replaces an agent's content as its next version; honours `If-Match`.
#[utoipa::path(put, path = "/api/agents/{id}",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID)."), ("If-Match" = Option<String>, Header, description = "Apply only if the agent's current ETag is this one (412 otherwise).")),
    request_body(content = AgentInput, description = "The agent's new content.", example = json!({
            "name": "Ticket triage",
            "description": "Sorts new tickets by urgency.",
            "definition": {
                "instructions": "Classify the ticket {{ input.title }} by urgency.",
                "model": {"provider": "offline", "model": "offline"},
                "steps": [{"id": "classify", "kind": "llm", "prompt": "Urgency of {{ input.title }}?"}]
            }
        })),
    responses(
        (status = 200, description = "Saved as the next version.", body = Agent, headers(("ETag" = String, description = "The agent's current concurrency token."))),
        (status = 403, description = "The editor role is required."),
        (status = 409, description = "The tenant has another agent of that name."),
        (status = 412, description = "`If-Match` does not match the agent's current ETag."),
    ))]
async fn replace_agent(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Result<Response> {
    caller.require(Role::Editor)?;
    let input = agent_input(&body)?.validate_offered(&state.providers)?;
    let now = Utc::now();
    let agent = update_agent(
        state.stores.agents.as_ref(),
        &caller.tenant,
        id,
        etag::if_match(&headers).as_ref(),
        |current| Ok(current.replaced(input.clone(), &caller.subject, now)),
    )
    .await?;
    let event = saved_event(&agent, false);
    with_event(with_etag(StatusCode::OK, agent), event, &headers)
}

/// Deletes an agent and its history; honours `If-Match`.
#[utoipa::path(delete, path = "/api/agents/{id}",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID)."), ("If-Match" = Option<String>, Header, description = "Apply only if the agent's current ETag is this one (412 otherwise).")),
    responses(
        (status = 204, description = "Deleted, with its history."),
        (status = 403, description = "The admin role is required."),
        (status = 412, description = "`If-Match` does not match the agent's current ETag."),
    ))]
async fn delete_agent(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    headers: HeaderMap,
) -> Result<Response> {
    caller.require(Role::Admin)?;
    state
        .stores
        .agents
        .delete(&caller.tenant, id, etag::if_match(&headers).as_ref())
        .await?;
    let event = CloudEvent::new(
        crate::APP,
        &caller.tenant,
        Utc::now(),
        PlatformEvent::AgentDeleted { agent_id: id },
    );
    with_event(StatusCode::NO_CONTENT.into_response(), event, &headers)
}

/// Lifecycle status, current and compiled version, and run figures from the jobs store: last
/// run, runs in the last 24 h, their success rate (null until one has finished), running count.
#[utoipa::path(get, path = "/api/agents/{id}/status",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID).")),
    responses((status = 200, description = "Status, versions and run figures.", body = AgentStatusView)))]
async fn get_agent_status(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
) -> Result<Json<AgentStatusView>> {
    caller.require(Role::Viewer)?;
    let agent = state.stores.agents.get(&caller.tenant, id).await?;
    let since = Utc::now() - chrono::Duration::hours(24);
    let runs = state
        .stores
        .jobs
        .agent_stats(&caller.tenant, agent.id, since)
        .await?;
    let success_rate =
        (runs.finished_since > 0).then(|| runs.succeeded_since as f64 / runs.finished_since as f64);
    Ok(Json(AgentStatusView {
        id: agent.id,
        status: agent.status,
        version: agent.version,
        compiled_version: agent.compiled_version,
        updated_at: agent.updated_at,
        last_run_at: runs.last_run_at,
        runs_last24h: runs.runs_since,
        success_rate,
        running_count: runs.running,
    }))
}

/// The agent's versions, newest first, paged.
#[utoipa::path(get, path = "/api/agents/{id}/versions",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID)."), PageParams),
    responses((status = 200, description = "One page of versions, newest first.", body = Page<AgentVersionSummary>,
        links(("GetAgentVersion" = (operation_id = "GetAgentVersion",
            parameters(("id" = "$request.path.id"), ("version" = "$response.body#/items/0/version"))))))))]
async fn list_agent_versions(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    Query(params): Query<PageParams>,
) -> Result<Response> {
    caller.require(Role::Viewer)?;
    let page = state
        .stores
        .agents
        .versions(
            &caller.tenant,
            id,
            paging::limit(params.limit),
            params.continuation_token.as_deref(),
        )
        .await?;
    Ok(Json(page).into_response())
}

/// The agent as it was at one version.
#[utoipa::path(get, path = "/api/agents/{id}/versions/{version}",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID)."), ("version" = u32, Path, minimum = 1, description = "A version number: 1, 2, ...")),
    responses((status = 200, description = "The agent as it was at that version.", body = Agent)))]
async fn get_agent_version(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    Id(Version(version)): Id<Version>,
) -> Result<Json<Agent>> {
    caller.require(Role::Viewer)?;
    let agent = state
        .stores
        .agents
        .version(&caller.tenant, id, version)
        .await?;
    Ok(Json(agent))
}

/// Makes a new version whose content equals version `n`, if its definition still compiles.
#[utoipa::path(post, path = "/api/agents/{id}/versions/{version}/restore",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID)."), ("version" = u32, Path, minimum = 1, description = "A version number: 1, 2, ..."), ("If-Match" = Option<String>, Header, description = "Apply only if the agent's current ETag is this one (412 otherwise).")),
    responses(
        (status = 200, description = "Saved as the next version, with that version's content.", body = Agent, headers(("ETag" = String, description = "The agent's current concurrency token."))),
        (status = 403, description = "The admin role is required."),
        (status = 412, description = "`If-Match` does not match the agent's current ETag."),
    ))]
async fn restore_agent_version(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    Id(Version(version)): Id<Version>,
    headers: HeaderMap,
) -> Result<Response> {
    caller.require(Role::Admin)?;
    let old = state
        .stores
        .agents
        .version(&caller.tenant, id, version)
        .await?;
    let now = Utc::now();
    let agent = update_agent(
        state.stores.agents.as_ref(),
        &caller.tenant,
        id,
        etag::if_match(&headers).as_ref(),
        |current| {
            let next = current.restored_from(&old, &caller.subject, now);
            // Saved versions were checked by the rules of their day: a restore is a save, so
            // it passes today's compiler (one 422 with every error).
            let mut errors = flowgrid_domain::plan::check(&next.definition);
            errors.extend(state.providers.check(&next.definition));
            if errors.is_empty() {
                Ok(next)
            } else {
                Err(Error::Validation(errors))
            }
        },
    )
    .await?;
    let event = saved_event(&agent, false);
    with_event(with_etag(StatusCode::OK, agent), event, &headers)
}
