//! The Integrations routes. Each handler extracts, calls the connector layer or the store, and
//! maps the result. Roles: viewers read (catalog, connections, status), editors use (tests and
//! actions), admins create and change connections.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use flowgrid_domain::store::connections::{
    CallRecord, CircuitState, RateLimit, SealedSecret, TestResult, check_name,
};
use flowgrid_domain::store::{Connection, Page, paging, update_with_retry};
use flowgrid_domain::{FieldError, Result as DomainResult};
use flowgrid_http::app::App;
use flowgrid_http::auth::{Caller, Role};
use flowgrid_http::extract::{Id, PathParam};
use flowgrid_http::{Error, Json, Query, Result, etag};
use flowgrid_providers::integrations::{Failure, FailureKind, catalog};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::AppState;

/// Every function of the Integrations app: `functions/integrations/<Name>/function.json`
/// declares the same.
pub fn app() -> App<AppState> {
    App::new(crate::APP)
        .get("GetCatalog", "integrations/catalog", get_catalog)
        .get(
            "ListConnections",
            "integrations/connections",
            list_connections,
        )
        .post(
            "CreateConnection",
            "integrations/connections",
            create_connection,
        )
        .get(
            "GetConnection",
            "integrations/connections/{name}",
            get_connection,
        )
        .put(
            "UpdateConnection",
            "integrations/connections/{name}",
            update_connection,
        )
        .delete(
            "DeleteConnection",
            "integrations/connections/{name}",
            delete_connection,
        )
        .post(
            "RotateConnectionSecret",
            "integrations/connections/{name}/secret",
            rotate_secret,
        )
        .post(
            "TestConnection",
            "integrations/{name}/test",
            test_connection,
        )
        .get(
            "GetIntegrationStatus",
            "integrations/{name}/status",
            get_status,
        )
        .post(
            "CreateServiceNowIncident",
            "integrations/servicenow/incident",
            create_servicenow_incident,
        )
        .post(
            "CreateJiraIssue",
            "integrations/jira/issue",
            create_jira_issue,
        )
        .get(
            "ListGitHubRepos",
            "integrations/github/repos",
            list_github_repos,
        )
}

/// A connection name from `{name}`.
struct Name(String);

impl PathParam for Name {
    const NAME: &'static str = "name";
    fn parse(segment: &str) -> DomainResult<Self> {
        Ok(Name(segment.to_owned()))
    }
}

/// A connection as the API shows it: the secret only masked.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionView {
    name: String,
    kind: String,
    auth: String,
    config: Map<String, Value>,
    is_default: bool,
    secret: Option<SecretView>,
    last_test: Option<TestResult>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretView {
    masked: String,
    set_at: DateTime<Utc>,
    key_id: String,
}

impl From<Connection> for ConnectionView {
    fn from(c: Connection) -> Self {
        ConnectionView {
            secret: c.secret.map(|s: SealedSecret| SecretView {
                masked: s.masked,
                set_at: s.set_at,
                key_id: s.kek_id,
            }),
            name: c.name,
            kind: c.kind,
            auth: c.auth,
            config: c.config,
            is_default: c.is_default,
            last_test: c.last_test,
            created_by: c.created_by,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

fn with_etag(status: StatusCode, c: Connection) -> Response {
    let tag = etag::header_value(&c.etag);
    (status, [(header::ETAG, tag)], Json(ConnectionView::from(c))).into_response()
}

/// `POST /api/integrations/connections`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewConnection {
    name: String,
    kind: String,
    auth: String,
    #[serde(default)]
    config: Map<String, Value>,
    secret: Option<String>,
    #[serde(default)]
    is_default: bool,
}

/// `PUT /api/integrations/connections/{name}`: everything but the name, kind and secret.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConnectionChange {
    auth: String,
    #[serde(default)]
    config: Map<String, Value>,
    #[serde(default)]
    is_default: bool,
}

/// `POST /api/integrations/connections/{name}/secret`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageParams {
    limit: Option<u32>,
    continuation_token: Option<String>,
}

/// Checks that the auth mode has a secret exactly when it needs one.
fn check_secret(kind: &str, auth: &str, secret: Option<&str>) -> DomainResult<()> {
    let needs = catalog::kind(kind)
        .and_then(|k| k.auth_mode(auth))
        .is_some_and(|m| m.secret.is_some());
    match (needs, secret) {
        (true, None) => Err(Error::Validation(vec![FieldError::new(
            "secret",
            format!("is required for auth mode {auth}"),
        )])),
        (true, Some(s)) if s.is_empty() || s.len() > 8192 => {
            Err(Error::Validation(vec![FieldError::new(
                "secret",
                "must be 1 to 8192 characters",
            )]))
        }
        (false, Some(_)) => Err(Error::Validation(vec![FieldError::new(
            "secret",
            format!("auth mode {auth} takes no secret"),
        )])),
        _ => Ok(()),
    }
}

/// The catalog: each kind's config schema, auth modes and actions.
async fn get_catalog(caller: Caller) -> Result<Json<Value>> {
    caller.require(Role::Viewer)?;
    Ok(Json(catalog::to_json()))
}

/// Lists the caller's connections by name, paged.
async fn list_connections(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<ConnectionView>>> {
    caller.require(Role::Viewer)?;
    let page = state
        .integrations
        .store()
        .list(
            &caller.tenant,
            paging::limit(params.limit),
            params.continuation_token.as_deref(),
        )
        .await?;
    Ok(Json(Page {
        items: page.items.into_iter().map(ConnectionView::from).collect(),
        continuation_token: page.continuation_token,
    }))
}

/// Creates a connection; its secret is sealed at once.
async fn create_connection(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<NewConnection>,
) -> Result<Response> {
    caller.require(Role::Admin)?;
    check_name(&input.name)?;
    state
        .integrations
        .check_connection(&input.kind, &input.auth, &input.config)?;
    check_secret(&input.kind, &input.auth, input.secret.as_deref())?;
    let secret = input
        .secret
        .as_deref()
        .map(|s| state.integrations.seal(&caller.tenant, &input.name, s))
        .transpose()?;
    let now = Utc::now();
    let connection = Connection {
        name: input.name,
        tenant_id: caller.tenant.clone(),
        kind: input.kind,
        auth: input.auth,
        config: input.config,
        is_default: input.is_default,
        secret,
        last_test: None,
        created_by: caller.subject.clone(),
        created_at: now,
        updated_at: now,
        etag: String::new(),
    };
    let connection = state.integrations.store().insert(&connection).await?;
    let location = HeaderValue::from_str(&format!(
        "/api/integrations/connections/{}",
        connection.name
    ))
    .map_err(|e| Error::Internal(e.to_string()))?;
    let mut response = with_etag(StatusCode::CREATED, connection);
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Reads one connection (secret masked).
async fn get_connection(
    State(state): State<AppState>,
    caller: Caller,
    Id(Name(name)): Id<Name>,
) -> Result<Response> {
    caller.require(Role::Viewer)?;
    let c = state
        .integrations
        .store()
        .get(&caller.tenant, &name)
        .await?;
    Ok(with_etag(StatusCode::OK, c))
}

/// Changes a connection's auth mode, config and default flag; honours `If-Match`.
async fn update_connection(
    State(state): State<AppState>,
    caller: Caller,
    Id(Name(name)): Id<Name>,
    headers: HeaderMap,
    Json(input): Json<ConnectionChange>,
) -> Result<Response> {
    caller.require(Role::Admin)?;
    let store = state.integrations.store();
    let current = store.get(&caller.tenant, &name).await?;
    state
        .integrations
        .check_connection(&current.kind, &input.auth, &input.config)?;
    let keeps_secret = catalog::kind(&current.kind)
        .and_then(|k| k.auth_mode(&input.auth))
        .is_some_and(|m| m.secret.is_some());
    if keeps_secret && current.secret.is_none() {
        return Err(Error::Validation(vec![FieldError::new(
            "auth",
            "this auth mode needs a secret: set one with POST .../secret first",
        )])
        .into());
    }
    let condition = etag::if_match(&headers);
    let now = Utc::now();
    let saved = update_with_retry(
        5,
        || store.get(&caller.tenant, &name),
        |c| {
            if let Some(cond) = &condition
                && !cond.matches(&c.etag)
            {
                return Err(Error::PreconditionFailed);
            }
            let mut next = c.clone();
            next.auth = input.auth.clone();
            next.config = input.config.clone();
            next.is_default = input.is_default;
            if !keeps_secret {
                next.secret = None;
            }
            next.updated_at = now;
            Ok(Some(next))
        },
        |next, etag| async move { store.replace(&next, &etag).await },
    )
    .await?;
    Ok(with_etag(StatusCode::OK, saved))
}

/// Replaces a connection's secret, sealed under the current key-encryption key.
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Id(Name(name)): Id<Name>,
    headers: HeaderMap,
    Json(input): Json<NewSecret>,
) -> Result<Response> {
    caller.require(Role::Admin)?;
    let store = state.integrations.store();
    let current = store.get(&caller.tenant, &name).await?;
    check_secret(&current.kind, &current.auth, Some(&input.secret))?;
    let sealed = state
        .integrations
        .seal(&caller.tenant, &name, &input.secret)?;
    let condition = etag::if_match(&headers);
    let saved = update_with_retry(
        5,
        || store.get(&caller.tenant, &name),
        |c| {
            if let Some(cond) = &condition
                && !cond.matches(&c.etag)
            {
                return Err(Error::PreconditionFailed);
            }
            let mut next = c.clone();
            next.secret = Some(sealed.clone());
            next.updated_at = sealed.set_at;
            Ok(Some(next))
        },
        |next, etag| async move { store.replace(&next, &etag).await },
    )
    .await?;
    Ok(with_etag(StatusCode::OK, saved))
}

/// Deletes a connection and its health; honours `If-Match`.
async fn delete_connection(
    State(state): State<AppState>,
    caller: Caller,
    Id(Name(name)): Id<Name>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    caller.require(Role::Admin)?;
    let expected = match etag::if_match(&headers) {
        Some(flowgrid_domain::store::Condition::Tags(tags)) => tags.into_iter().next(),
        _ => None,
    };
    state
        .integrations
        .store()
        .delete(&caller.tenant, &name, expected.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/integrations/{name}/test`: one real authenticated call; the result is stored
/// on the connection. `{name}` is a connection, or a kind (the tenant's default of that kind).
async fn test_connection(
    State(state): State<AppState>,
    caller: Caller,
    Id(Name(name)): Id<Name>,
) -> Result<Json<TestResult>> {
    caller.require(Role::Editor)?;
    let connection = state.integrations.resolve(&caller.tenant, &name).await?;
    let result = state.integrations.test(&connection).await;
    let store = state.integrations.store();
    let stored = result.clone();
    update_with_retry(
        5,
        || store.get(&caller.tenant, &connection.name),
        |c| {
            let mut next = c.clone();
            next.last_test = Some(stored.clone());
            Ok(Some(next))
        },
        |next, etag| async move { store.replace(&next, &etag).await },
    )
    .await?;
    Ok(Json(result))
}

/// `GET /api/integrations/{name}/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusView {
    name: String,
    kind: String,
    circuit: CircuitState,
    open_until: Option<DateTime<Utc>>,
    consecutive_failures: u32,
    last_test: Option<TestResult>,
    recent_calls: Vec<CallRecord>,
    rate_limit: Option<RateLimit>,
}

/// The connection's last results, circuit state and rate-limit figures.
async fn get_status(
    State(state): State<AppState>,
    caller: Caller,
    Id(Name(name)): Id<Name>,
) -> Result<Json<StatusView>> {
    caller.require(Role::Viewer)?;
    let c = state.integrations.resolve(&caller.tenant, &name).await?;
    let health = state
        .integrations
        .store()
        .health(&caller.tenant, &c.name)
        .await?
        .unwrap_or_else(|| {
            flowgrid_domain::store::ConnectionHealth::new(caller.tenant.clone(), &c.name)
        });
    Ok(Json(StatusView {
        circuit: health.circuit_at(Utc::now()),
        open_until: health.open_until,
        consecutive_failures: health.consecutive_failures,
        recent_calls: health.recent,
        rate_limit: health.rate_limit,
        name: c.name,
        kind: c.kind,
        last_test: c.last_test,
    }))
}

/// An upstream failure as problem+json: input → 422, a circuit open or a rate limit → 503
/// with `Retry-After`, anything else from the upstream → 502 with the upstream's message.
fn failure_response(f: Failure) -> Response {
    let (status, slug) = match f.kind {
        FailureKind::Input => {
            return flowgrid_http::ApiError(Error::Validation(if f.fields.is_empty() {
                vec![FieldError::new("action", f.message)]
            } else {
                f.fields
            }))
            .into_response();
        }
        FailureKind::CircuitOpen => (StatusCode::SERVICE_UNAVAILABLE, "circuit-open"),
        FailureKind::RateLimited => (StatusCode::SERVICE_UNAVAILABLE, "upstream-rate-limited"),
        FailureKind::Credentials => (StatusCode::BAD_GATEWAY, "upstream-credentials"),
        FailureKind::Refused => (StatusCode::BAD_GATEWAY, "outbound-refused"),
        FailureKind::Misconfigured => (StatusCode::BAD_GATEWAY, "connection-misconfigured"),
        FailureKind::Rejected | FailureKind::Unavailable => {
            (StatusCode::BAD_GATEWAY, "upstream-failed")
        }
    };
    let body = json!({
        "type": format!("urn:flowgrid:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or("Bad Gateway"),
        "status": status.as_u16(),
        "detail": f.message,
        "upstreamStatus": f.status,
        "correlationId": flowgrid_http::correlation::current(),
    });
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(flowgrid_http::PROBLEM_JSON),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// The idempotency key of an action request: the caller's `Idempotency-Key` (scoped to the
/// tenant), else a fresh one (no retry of this request can then be recognised).
fn action_key(caller: &Caller, headers: &HeaderMap) -> DomainResult<String> {
    match headers.get("idempotency-key") {
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    Error::BadRequest("Idempotency-Key must be 1 to 200 visible characters.".into())
                })?;
            Ok(format!("{}:api:{key}", caller.tenant.as_str()))
        }
        None => Ok(format!(
            "{}:api:{}",
            caller.tenant.as_str(),
            uuid::Uuid::new_v4()
        )),
    }
}

/// Runs `action` on the connection the body or query names (`connection`), else the tenant's
/// default of `kind`.
async fn run_action(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    kind: &str,
    action: &str,
    mut input: Map<String, Value>,
    status: StatusCode,
) -> Result<Response> {
    caller.require(Role::Editor)?;
    let name = match input.remove("connection") {
        Some(Value::String(n)) => n,
        Some(_) => {
            return Err(
                Error::Validation(vec![FieldError::new("connection", "must be a string")]).into(),
            );
        }
        None => kind.to_owned(),
    };
    let connection = state.integrations.resolve(&caller.tenant, &name).await?;
    if connection.kind != kind {
        return Err(Error::Validation(vec![FieldError::new(
            "connection",
            format!("is a {} connection, not {kind}", connection.kind),
        )])
        .into());
    }
    let key = action_key(caller, headers)?;
    match state
        .integrations
        .perform(&connection, action, &Value::Object(input), &key)
        .await
    {
        Ok(output) => Ok((status, Json(output)).into_response()),
        Err(f) => Ok(failure_response(f)),
    }
}

/// `POST /api/integrations/servicenow/incident`: creates an incident, once per
/// `Idempotency-Key`.
async fn create_servicenow_incident(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(input): Json<Map<String, Value>>,
) -> Result<Response> {
    run_action(
        &state,
        &caller,
        &headers,
        "servicenow",
        "create-incident",
        input,
        StatusCode::CREATED,
    )
    .await
}

/// `POST /api/integrations/jira/issue`: creates an issue (description as ADF), once per
/// `Idempotency-Key`.
async fn create_jira_issue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(input): Json<Map<String, Value>>,
) -> Result<Response> {
    run_action(
        &state,
        &caller,
        &headers,
        "jira",
        "create-issue",
        input,
        StatusCode::CREATED,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReposParams {
    connection: Option<String>,
    owner: Option<String>,
    owner_type: Option<String>,
    per_page: Option<u32>,
    max_pages: Option<u32>,
}

/// `GET /api/integrations/github/repos`: every page of the user's or organisation's
/// repositories.
async fn list_github_repos(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<ReposParams>,
) -> Result<Response> {
    let mut input = Map::new();
    if let Some(c) = params.connection {
        input.insert("connection".into(), json!(c));
    }
    if let Some(o) = params.owner {
        input.insert("owner".into(), json!(o));
    }
    if let Some(t) = params.owner_type {
        input.insert("ownerType".into(), json!(t));
    }
    if let Some(p) = params.per_page {
        input.insert("perPage".into(), json!(p));
    }
    if let Some(p) = params.max_pages {
        input.insert("maxPages".into(), json!(p));
    }
    run_action(
        &state,
        &caller,
        &headers,
        "github",
        "list-repositories",
        input,
        StatusCode::OK,
    )
    .await
}
