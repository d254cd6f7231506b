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
use flowgrid_http::openapi::routes;
use flowgrid_http::{Error, Json, Query, Result, etag};
use flowgrid_providers::integrations::{Failure, FailureKind, catalog};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::marker::PhantomData;

use crate::AppState;

/// Every function of the Integrations app: `functions/integrations/<Name>/function.json`
/// declares the same.
pub fn app() -> App<AppState> {
    App::new(crate::APP)
        .get("GetCatalog", "integrations/catalog", routes!(get_catalog))
        .get(
            "ListConnections",
            "integrations/connections",
            routes!(list_connections),
        )
        .post(
            "CreateConnection",
            "integrations/connections",
            routes!(create_connection),
        )
        .get(
            "GetConnection",
            "integrations/connections/{name}",
            routes!(get_connection),
        )
        .put(
            "UpdateConnection",
            "integrations/connections/{name}",
            routes!(update_connection),
        )
        .delete(
            "DeleteConnection",
            "integrations/connections/{name}",
            routes!(delete_connection),
        )
        .post(
            "RotateConnectionSecret",
            "integrations/connections/{name}/secret",
            routes!(rotate_secret),
        )
        .post(
            "TestConnection",
            "integrations/{name}/test",
            routes!(test_connection),
        )
        .get(
            "GetIntegrationStatus",
            "integrations/{name}/status",
            routes!(get_status),
        )
        .post(
            "CreateServiceNowIncident",
            "integrations/servicenow/incident",
            routes!(create_servicenow_incident),
        )
        .post(
            "CreateJiraIssue",
            "integrations/jira/issue",
            routes!(create_jira_issue),
        )
        .get(
            "ListGitHubRepos",
            "integrations/github/repos",
            routes!(list_github_repos),
        )
}

/// A connection name from `{name}`.
struct Name(String);

impl PathParam for Name {
    const NAME: &'static str = "name";
    fn parse(segment: &str) -> DomainResult<Self> {
        // Not a name any connection can have: a 400, like a malformed id (never echoed: it
        // may be 8 KiB of anything).
        flowgrid_domain::store::connections::check_name(segment).map_err(|_| {
            Error::BadRequest(
                "The connection name in the path is not one: 1 to 63 characters of a-z, 0-9, \
                 '_' and '-'."
                    .into(),
            )
        })?;
        Ok(Name(segment.to_owned()))
    }
}

/// A connection as the API shows it: the secret only masked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Connection)]
struct ConnectionView {
    /// Its name, unique in the tenant.
    name: String,
    /// Its kind: `servicenow`, `jira`, `github` or `http`.
    kind: String,
    /// Its auth mode, one of the kind's (see the catalog).
    auth: String,
    /// Non-secret settings (base URL, user name, ...), as the kind's `configSchema` allows.
    #[schema(value_type = Object)]
    config: Map<String, Value>,
    /// Whether it is the tenant's default connection of its kind.
    is_default: bool,
    /// The secret, masked; null for an auth mode without one.
    secret: Option<SecretView>,
    /// The last connection test; null before the first.
    last_test: Option<TestResult>,
    /// Who created it (the token's subject).
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A connection's secret as shown: never the secret itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = MaskedSecret)]
struct SecretView {
    /// `••••` and the last 4 characters when the secret has 12 or more, else `••••`.
    masked: String,
    /// When it was set.
    set_at: DateTime<Utc>,
    /// The id of the key-encryption key that sealed it.
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewConnection {
    /// 1 to 63 of `a-z 0-9 _ -`, starting with a letter or digit; not `catalog` or
    /// `connections` (422).
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    name: String,
    /// `servicenow`, `jira`, `github` or `http`.
    #[schema(pattern = "^(servicenow|jira|github|http)$")]
    kind: String,
    /// One of the kind's auth modes (another kind's: 422).
    #[schema(pattern = "^(basic|oauth|api-token|token|none|bearer|header)$")]
    auth: String,
    /// Non-secret settings, checked against the kind's `configSchema` and the fields the auth
    /// mode needs (422 naming `config.<field>`).
    #[serde(default)]
    #[schema(value_type = Object)]
    config: Map<String, Value>,
    /// The secret (1 to 8192 characters) when the auth mode has one; absent or null otherwise.
    /// Sealed at once, never returned.
    #[schema(write_only)]
    secret: Option<String>,
    /// Whether it is the tenant's default connection of its kind.
    #[serde(default)]
    is_default: bool,
}

/// `PUT /api/integrations/connections/{name}`: everything but the name, kind and secret.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConnectionChange {
    /// One of the kind's auth modes (another kind's: 422); one with a secret needs the
    /// connection to have one.
    #[schema(pattern = "^(basic|oauth|api-token|token|none|bearer|header)$")]
    auth: String,
    /// Non-secret settings, checked as at creation.
    #[serde(default)]
    #[schema(value_type = Object)]
    config: Map<String, Value>,
    /// Whether it is the tenant's default connection of its kind.
    #[serde(default)]
    is_default: bool,
}

/// `POST /api/integrations/connections/{name}/secret`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    /// The new secret, 1 to 8192 characters (422 otherwise, or when the auth mode has none).
    #[schema(write_only)]
    secret: String,
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

/// The catalog, `GET /api/integrations/catalog`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = IntegrationCatalog)]
struct CatalogView {
    /// Every kind, in catalog order.
    items: Vec<KindView>,
}

/// One kind of integration. Fields in alphabetical order, as the catalog's JSON had them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = IntegrationKind)]
struct KindView {
    /// What it can do.
    actions: Vec<ActionView>,
    /// How a connection authenticates.
    auth_modes: Vec<AuthModeView>,
    /// The JSON Schema of a connection's `config`.
    #[schema(value_type = Object)]
    config_schema: Value,
    /// `servicenow`, `jira`, `github`, `http`.
    name: &'static str,
    /// Human title.
    title: &'static str,
}

/// One auth mode of a kind.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = IntegrationAuthMode)]
struct AuthModeView {
    /// What it is.
    description: &'static str,
    /// `basic`, `oauth`, `api-token`, `token`, `none`, `bearer`, `header`.
    name: &'static str,
    /// Config fields it needs besides the kind's required ones.
    requires: Vec<&'static str>,
    /// What the secret is; null when the mode has none.
    secret: Option<&'static str>,
}

/// One action of a kind.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = IntegrationAction)]
struct ActionView {
    /// Whether it creates a record upstream (once per idempotency key).
    creates_record: bool,
    /// What it does.
    description: &'static str,
    /// The JSON Schema of its input.
    #[schema(value_type = Object)]
    input_schema: Value,
    /// `create-incident`, `create-issue`, `list-repositories`, ...
    name: &'static str,
    /// The JSON Schema of its output.
    #[schema(value_type = Object)]
    output_schema: Value,
}

impl CatalogView {
    fn of(kinds: &[catalog::Kind]) -> CatalogView {
        CatalogView {
            items: kinds
                .iter()
                .map(|k| KindView {
                    actions: k
                        .actions
                        .iter()
                        .map(|a| ActionView {
                            creates_record: a.creates,
                            description: a.description,
                            input_schema: a.input.clone(),
                            name: a.name,
                            output_schema: a.output.clone(),
                        })
                        .collect(),
                    auth_modes: k
                        .auth
                        .iter()
                        .map(|a| AuthModeView {
                            description: a.description,
                            name: a.name,
                            requires: a.requires.to_vec(),
                            secret: a.secret,
                        })
                        .collect(),
                    config_schema: k.config.clone(),
                    name: k.name,
                    title: k.title,
                })
                .collect(),
        }
    }
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
#[utoipa::path(get, path = "/api/integrations/catalog",
    responses((status = 200, description = "Every kind of integration, in catalog order.", body = CatalogView)))]
async fn get_catalog(caller: Caller) -> Result<Json<CatalogView>> {
    caller.require(Role::Viewer)?;
    Ok(Json(CatalogView::of(catalog::kinds())))
}

/// Lists the caller's connections by name, paged.
#[utoipa::path(get, path = "/api/integrations/connections", params(PageParams),
    responses((status = 200, description = "One page of the caller's connections, by name.", body = Page<ConnectionView>)))]
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
#[utoipa::path(post, path = "/api/integrations/connections",
    request_body(content = NewConnection, description = "The new connection.", example = json!({
            "name": "jira-main",
            "kind": "jira",
            "auth": "api-token",
            "config": {"baseUrl": "https://acme.atlassian.net", "email": "ops@acme.example"},
            "secret": "ATATT3xFfGF0-example-token",
            "isDefault": true
        })),
    responses(
        (status = 201, description = "Created; the secret sealed and shown masked.", body = ConnectionView,
            headers(("ETag" = String, description = "The connection's concurrency token."),
                ("Location" = String, description = "`/api/integrations/connections/{name}`.")),
            links(("GetConnection" = (operation_id = "GetConnection", parameters(("name" = "$response.body#/name")))), ("UpdateConnection" = (operation_id = "UpdateConnection", parameters(("name" = "$response.body#/name")))), ("DeleteConnection" = (operation_id = "DeleteConnection", parameters(("name" = "$response.body#/name")))), ("RotateConnectionSecret" = (operation_id = "RotateConnectionSecret", parameters(("name" = "$response.body#/name")))), ("TestConnection" = (operation_id = "TestConnection", parameters(("name" = "$response.body#/name")))), ("GetIntegrationStatus" = (operation_id = "GetIntegrationStatus", parameters(("name" = "$response.body#/name")))))),
        (status = 403, description = "The admin role is required."),
        (status = 409, description = "The tenant has a connection of that name."),
    ))]
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
#[utoipa::path(get, path = "/api/integrations/connections/{name}",
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The connection's name.")),
    responses((status = 200, description = "The connection, its secret masked.", body = ConnectionView, headers(("ETag" = String, description = "The connection's concurrency token.")))))]
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

/// Changes a connection's auth mode, config and default flag; honours `If-Match`. An auth mode
/// without a secret drops the stored one.
#[utoipa::path(put, path = "/api/integrations/connections/{name}",
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The connection's name."), ("If-Match" = Option<String>, Header, description = "Apply only if the connection's current ETag is this one (412 otherwise).")),
    request_body(content = ConnectionChange, description = "The connection's new auth mode, config and default flag.", example = json!({
            "auth": "api-token",
            "config": {"baseUrl": "https://acme.atlassian.net", "email": "ops@acme.example"},
            "isDefault": false
        })),
    responses(
        (status = 200, description = "Saved.", body = ConnectionView, headers(("ETag" = String, description = "The connection's concurrency token."))),
        (status = 403, description = "The admin role is required."),
        (status = 412, description = "`If-Match` does not match the connection's current ETag."),
    ))]
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

/// Replaces a connection's secret, sealed under the current key-encryption key; honours
/// `If-Match`.
#[utoipa::path(post, path = "/api/integrations/connections/{name}/secret",
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The connection's name."), ("If-Match" = Option<String>, Header, description = "Apply only if the connection's current ETag is this one (412 otherwise).")),
    request_body(content = NewSecret, description = "The new secret.", example = json!({"secret": "ATATT3xFfGF0-rotated-token"})),
    responses(
        (status = 200, description = "Saved; the new secret shown masked.", body = ConnectionView, headers(("ETag" = String, description = "The connection's concurrency token."))),
        (status = 403, description = "The admin role is required."),
        (status = 412, description = "`If-Match` does not match the connection's current ETag."),
    ))]
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
#[utoipa::path(delete, path = "/api/integrations/connections/{name}",
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "The connection's name."), ("If-Match" = Option<String>, Header, description = "Apply only if the connection's current ETag is this one (412 otherwise).")),
    responses(
        (status = 204, description = "Deleted, with its health record."),
        (status = 403, description = "The admin role is required."),
        (status = 412, description = "`If-Match` does not match the connection's current ETag."),
    ))]
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

/// Tests a connection with one real authenticated call; the result is stored on the connection.
///
/// `{name}` is a connection, or a kind (the tenant's default of that kind). A failed test is
/// still a 200, with `ok` false; an open circuit does not stop it. No request body is read.
#[utoipa::path(post, path = "/api/integrations/{name}/test",
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "A connection's name, or a kind (`jira`): the tenant's default connection of that kind.")),
    responses(
        (status = 200, description = "The test's result, as stored on the connection.", body = TestResult),
        (status = 403, description = "The editor role is required."),
        (status = 412, description = "The connection changed five times in a row while the result was being stored."),
    ))]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = IntegrationStatus)]
struct StatusView {
    /// The connection's name.
    name: String,
    /// Its kind.
    kind: String,
    /// The circuit breaker, shared by every instance of Integrations and Execution.
    circuit: CircuitState,
    /// Until when an open circuit refuses calls.
    open_until: Option<DateTime<Utc>>,
    /// Upstream failures in a row.
    consecutive_failures: u32,
    /// The last connection test.
    last_test: Option<TestResult>,
    /// The last calls (at most 10).
    recent_calls: Vec<CallRecord>,
    /// The rate-limit figures the upstream reported last.
    rate_limit: Option<RateLimit>,
}

/// The connection's last results, circuit state and rate-limit figures.
///
/// `{name}` is a connection, or a kind (the tenant's default of that kind).
#[utoipa::path(get, path = "/api/integrations/{name}/status",
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "A connection's name, or a kind (`jira`): the tenant's default connection of that kind.")),
    responses((status = 200, description = "Circuit state, recent calls, last test and rate-limit figures.", body = StatusView)))]
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

/// The problem body of an action that failed upstream: a `Problem` with the upstream's status.
/// Fields in alphabetical order, as the JSON had them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UpstreamProblem {
    /// The request's correlation id.
    correlation_id: Option<String>,
    /// The upstream's own error message (never a secret).
    detail: String,
    /// 502 or 503.
    status: u16,
    /// The status code's reason phrase.
    title: String,
    /// `urn:flowgrid:problem:` and `upstream-credentials`, `upstream-failed`,
    /// `outbound-refused`, `connection-misconfigured`, `circuit-open` or
    /// `upstream-rate-limited`.
    #[serde(rename = "type")]
    type_: String,
    /// The upstream's last HTTP status, 0 when none came (absent in a storage 503).
    #[schema(required = false)]
    upstream_status: u16,
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
    let body = UpstreamProblem {
        correlation_id: flowgrid_http::correlation::current(),
        detail: f.message,
        status: status.as_u16(),
        title: status
            .canonical_reason()
            .unwrap_or("Bad Gateway")
            .to_owned(),
        type_: format!("urn:flowgrid:problem:{slug}"),
        upstream_status: f.status,
    };
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
/// default of `kind`; answers its output as `O` (`status`) or the failure as problem+json.
async fn run_action<O: DeserializeOwned + Serialize>(
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
        Ok(output) => {
            let output: O = serde_json::from_value(output)
                .map_err(|e| Error::Internal(format!("{action} output: {e}")))?;
            Ok((status, Json(output)).into_response())
        }
        Err(f) => Ok(failure_response(f)),
    }
}

/// An action's body as the handler reads it: the JSON object as sent, checked by the connector
/// layer against the action's input schema in the catalog (so its field errors name
/// `input.<field>`, as an `integration` step's do), with `connection` taken out. It is
/// documented as `T`, which mirrors that schema (a test compares the two).
#[derive(Debug, Deserialize)]
#[serde(transparent, bound = "")]
struct ActionBody<T> {
    input: Map<String, Value>,
    #[serde(skip)]
    doc: PhantomData<T>,
}

/// The body of `POST /api/integrations/servicenow/incident`: the catalog's `create-incident`
/// input and the connection to use.
#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents ActionBody's JSON; the connector reads it"
)]
struct NewServiceNowIncident {
    /// A servicenow connection's name; the tenant's default servicenow connection when absent.
    #[schema(nullable = false)]
    connection: Option<String>,
    #[schema(min_length = 1, max_length = 160)]
    short_description: String,
    #[schema(nullable = false, max_length = 32000)]
    description: Option<String>,
    #[schema(nullable = false)]
    urgency: Option<Level>,
    #[schema(nullable = false)]
    impact: Option<Level>,
    #[schema(nullable = false, max_length = 40)]
    category: Option<String>,
    #[schema(nullable = false, max_length = 64)]
    assignment_group: Option<String>,
    #[schema(nullable = false, max_length = 64)]
    caller_id: Option<String>,
}

/// ServiceNow's urgency or impact: 1 (high), 2 (medium), 3 (low).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = ServiceNowLevel)]
#[expect(
    dead_code,
    reason = "documents ActionBody's JSON; the connector reads it"
)]
enum Level {
    #[serde(rename = "1")]
    High,
    #[serde(rename = "2")]
    Medium,
    #[serde(rename = "3")]
    Low,
}

/// An incident as created (or found by its tag after an unknown outcome). The values are the
/// Table API record's; fields in alphabetical order, as the connector's JSON has them.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ServiceNowIncident {
    /// `correlation_id`: the tag made from the idempotency key.
    #[schema(value_type = Option<String>, required = true)]
    correlation_id: Value,
    /// `number` (`INC0010001`).
    #[schema(value_type = Option<String>, required = true)]
    number: Value,
    /// `short_description`.
    #[schema(value_type = Option<String>, required = true)]
    short_description: Value,
    /// `state`.
    #[schema(value_type = Option<String>, required = true)]
    state: Value,
    /// `sys_id`.
    #[schema(value_type = Option<String>, required = true)]
    sys_id: Value,
}

/// The body of `POST /api/integrations/jira/issue`: the catalog's `create-issue` input and
/// the connection to use.
#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents ActionBody's JSON; the connector reads it"
)]
struct NewJiraIssue {
    /// A jira connection's name; the tenant's default jira connection when absent.
    #[schema(nullable = false)]
    connection: Option<String>,
    #[schema(pattern = "^[A-Z][A-Z0-9_]{0,19}$")]
    project_key: String,
    #[schema(min_length = 1, max_length = 255)]
    summary: String,
    /// `Task` when absent.
    #[schema(nullable = false, min_length = 1, max_length = 60)]
    issue_type: Option<String>,
    /// Sent as Atlassian Document Format, read as `descriptionFormat` says.
    #[schema(nullable = false, max_length = 32000)]
    description: Option<String>,
    #[schema(nullable = false)]
    description_format: Option<DescriptionFormat>,
    /// Labels without white space, 1 to 255 characters each.
    #[schema(nullable = false, max_items = 20)]
    labels: Option<Vec<String>>,
}

/// How a Jira description is written: `markdown` when absent.
#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = JiraDescriptionFormat)]
#[expect(
    dead_code,
    reason = "documents ActionBody's JSON; the connector reads it"
)]
enum DescriptionFormat {
    Text,
    Markdown,
}

/// An issue as created (or found by its label after an unknown outcome): Jira's values.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
struct JiraIssue {
    /// The issue's id.
    #[schema(value_type = Option<String>, required = true)]
    id: Value,
    /// Its key (`OPS-12`).
    #[schema(value_type = Option<String>, required = true)]
    key: Value,
    /// Its REST URL.
    #[serde(rename = "self")]
    #[schema(value_type = Option<String>, required = true)]
    self_: Value,
}

/// The query of `GET /api/integrations/github/repos`: the catalog's `list-repositories` input
/// and the connection to use. Bad values are 422s naming `input.<field>`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReposParams {
    /// A github connection's name; the tenant's default github connection when absent.
    connection: Option<String>,
    /// A user or organisation; the token's user when absent.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}$")]
    owner: Option<String>,
    /// `user` (default) or `org`.
    #[param(inline, value_type = Option<OwnerType>)]
    owner_type: Option<String>,
    /// Repositories per page, 1 to 100 (default 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
    /// Pages to follow at most, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    max_pages: Option<u32>,
}

/// Whose repositories `owner` names: a user's (default) or an organisation's.
#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[expect(
    dead_code,
    reason = "documents ReposParams' ownerType; the connector reads it"
)]
enum OwnerType {
    User,
    Org,
}

/// Repositories, every page followed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
struct GitHubRepositories {
    /// Pages read.
    pages: u64,
    /// The repositories, in GitHub's order.
    repositories: Vec<GitHubRepository>,
}

/// One repository: GitHub's values; fields in alphabetical order, as the connector's JSON has
/// them.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct GitHubRepository {
    #[schema(value_type = Option<String>, required = true)]
    default_branch: Value,
    #[schema(value_type = Option<String>, required = true)]
    full_name: Value,
    #[schema(value_type = Option<String>, required = true)]
    html_url: Value,
    #[schema(value_type = Option<i64>, required = true)]
    id: Value,
    #[schema(value_type = Option<String>, required = true)]
    name: Value,
    #[schema(value_type = Option<bool>, required = true)]
    private: Value,
}

/// Creates an incident, once per `Idempotency-Key`.
///
/// A retry with the same `Idempotency-Key` whose first outcome was unknown returns the incident
/// made then; without the header each request gets a fresh key.
#[utoipa::path(post, path = "/api/integrations/servicenow/incident",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, description = "Makes retries of this request create one incident (scoped to the tenant).")),
    request_body(content = NewServiceNowIncident, description = "The incident, and the connection to use.", example = json!({
            "shortDescription": "Disk full on db-1",
            "description": "The data volume of db-1 is at 98%.",
            "urgency": "2",
            "impact": "2"
        })),
    responses(
        (status = 201, description = "The incident.", body = ServiceNowIncident),
        (status = 403, description = "The editor role is required."),
        (status = 404, description = "No such connection (nor a default servicenow one) for the caller's tenant."),
        (status = 502, description = "ServiceNow refused or failed (`type` says which; `upstreamStatus`).", content_type = "application/problem+json", body = UpstreamProblem,
            example = json!({"type": "urn:flowgrid:problem:upstream-failed", "title": "Bad Gateway", "status": 502, "detail": "the upstream answered 500", "upstreamStatus": 500, "correlationId": "3f1c2a9e-corr"})),
        (status = 503, description = "The connection's circuit is open or ServiceNow's rate limit is longer than a call may wait (retry after `Retry-After`), or storage is unreachable.", content_type = "application/problem+json", body = UpstreamProblem,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying.")),
            example = json!({"type": "urn:flowgrid:problem:circuit-open", "title": "Service Unavailable", "status": 503, "detail": "the circuit of this connection is open", "upstreamStatus": 0, "correlationId": "3f1c2a9e-corr"})),
    ))]
async fn create_servicenow_incident(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<ActionBody<NewServiceNowIncident>>,
) -> Result<Response> {
    run_action::<ServiceNowIncident>(
        &state,
        &caller,
        &headers,
        "servicenow",
        "create-incident",
        body.input,
        StatusCode::CREATED,
    )
    .await
}

/// Creates an issue (description as ADF), once per `Idempotency-Key`.
///
/// A retry with the same `Idempotency-Key` whose first outcome was unknown returns the issue
/// made then; without the header each request gets a fresh key.
#[utoipa::path(post, path = "/api/integrations/jira/issue",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, description = "Makes retries of this request create one issue (scoped to the tenant).")),
    request_body(content = NewJiraIssue, description = "The issue, and the connection to use.", example = json!({
            "projectKey": "OPS",
            "summary": "Disk full on db-1",
            "description": "The data volume of **db-1** is at 98%.",
            "labels": ["disk"]
        })),
    responses(
        (status = 201, description = "The issue.", body = JiraIssue),
        (status = 403, description = "The editor role is required."),
        (status = 404, description = "No such connection (nor a default jira one) for the caller's tenant."),
        (status = 502, description = "Jira refused or failed (`type` says which; `upstreamStatus`).", content_type = "application/problem+json", body = UpstreamProblem,
            example = json!({"type": "urn:flowgrid:problem:upstream-failed", "title": "Bad Gateway", "status": 502, "detail": "the upstream answered 500", "upstreamStatus": 500, "correlationId": "3f1c2a9e-corr"})),
        (status = 503, description = "The connection's circuit is open or Jira's rate limit is longer than a call may wait (retry after `Retry-After`), or storage is unreachable.", content_type = "application/problem+json", body = UpstreamProblem,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying.")),
            example = json!({"type": "urn:flowgrid:problem:circuit-open", "title": "Service Unavailable", "status": 503, "detail": "the circuit of this connection is open", "upstreamStatus": 0, "correlationId": "3f1c2a9e-corr"})),
    ))]
async fn create_jira_issue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<ActionBody<NewJiraIssue>>,
) -> Result<Response> {
    run_action::<JiraIssue>(
        &state,
        &caller,
        &headers,
        "jira",
        "create-issue",
        body.input,
        StatusCode::CREATED,
    )
    .await
}

/// Lists a user's or an organisation's repositories (the token's user by default), every page.
#[utoipa::path(get, path = "/api/integrations/github/repos",
    params(ReposParams, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, description = "Read but of no effect: listing creates nothing.")),
    responses(
        (status = 200, description = "The repositories, every page followed.", body = GitHubRepositories),
        (status = 403, description = "The editor role is required."),
        (status = 404, description = "No such connection (nor a default github one) for the caller's tenant."),
        (status = 422, description = "A parameter breaks the action's input schema (`input.<field>`), or the connection is not a github one."),
        (status = 502, description = "GitHub refused or failed (`type` says which; `upstreamStatus`).", content_type = "application/problem+json", body = UpstreamProblem,
            example = json!({"type": "urn:flowgrid:problem:upstream-failed", "title": "Bad Gateway", "status": 502, "detail": "the upstream answered 500", "upstreamStatus": 500, "correlationId": "3f1c2a9e-corr"})),
        (status = 503, description = "The connection's circuit is open or GitHub's rate limit is longer than a call may wait (retry after `Retry-After`), or storage is unreachable.", content_type = "application/problem+json", body = UpstreamProblem,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying.")),
            example = json!({"type": "urn:flowgrid:problem:circuit-open", "title": "Service Unavailable", "status": 503, "detail": "the circuit of this connection is open", "upstreamStatus": 0, "correlationId": "3f1c2a9e-corr"})),
    ))]
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
    run_action::<GitHubRepositories>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `schema` with a `$ref` resolved against the document's component schemas.
    fn resolved<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
            None => schema,
        }
    }

    /// Checks that `documented` (property name → schema, with its required names) describes
    /// the catalog's `input` schema of `kind`'s `action`, plus `connection`.
    fn same_as_catalog(
        doc: &Value,
        what: &str,
        documented: &Map<String, Value>,
        required: &[String],
        kind: &str,
        action: &str,
    ) {
        let input = &catalog::kind(kind)
            .and_then(|k| k.action(action))
            .expect("catalog action")
            .input;
        let mut names: Vec<&String> = documented.keys().filter(|k| *k != "connection").collect();
        names.sort();
        let mut expected: Vec<&String> = input["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        expected.sort();
        assert_eq!(names, expected, "{what}: properties");
        let mut required: Vec<&str> = required.iter().map(String::as_str).collect();
        required.sort_unstable();
        let mut expected: Vec<&str> = input["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        expected.sort_unstable();
        assert_eq!(required, expected, "{what}: required");
        for (name, rule) in input["properties"].as_object().expect("properties") {
            let schema = resolved(doc, &documented[name]);
            for keyword in [
                "minLength",
                "maxLength",
                "pattern",
                "minimum",
                "maximum",
                "maxItems",
                "enum",
            ] {
                if let Some(want) = rule.get(keyword) {
                    let got = &schema[keyword];
                    let same = match (want.as_f64(), got.as_f64()) {
                        (Some(a), Some(b)) => a == b,
                        _ => want == got,
                    };
                    assert!(
                        same,
                        "{what}.{name}: {keyword} {got} in the document, {want} in the catalog"
                    );
                }
            }
            assert_ne!(schema["type"], "null", "{what}.{name}");
        }
        assert!(
            documented
                .get("connection")
                .is_some_and(|c| c["type"] == "string"),
            "{what}: connection"
        );
    }

    #[test]
    fn action_routes_document_the_input_the_catalog_checks() {
        let doc = app().openapi();
        for (schema, kind, action) in [
            ("NewServiceNowIncident", "servicenow", "create-incident"),
            ("NewJiraIssue", "jira", "create-issue"),
        ] {
            let body = &doc["components"]["schemas"][schema];
            assert_eq!(body["additionalProperties"], false, "{schema}");
            let required: Vec<String> =
                serde_json::from_value(body["required"].clone()).expect("required");
            let properties = body["properties"].as_object().expect("properties");
            same_as_catalog(&doc, schema, properties, &required, kind, action);
        }
        let params = doc["paths"]["/api/integrations/github/repos"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let query: Map<String, Value> = params
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("").to_owned(),
                    p["schema"].clone(),
                )
            })
            .collect();
        let required: Vec<String> = params
            .iter()
            .filter(|p| p["in"] == "query" && p["required"] == true)
            .map(|p| p["name"].as_str().unwrap_or("").to_owned())
            .collect();
        same_as_catalog(
            &doc,
            "ListGitHubRepos",
            &query,
            &required,
            "github",
            "list-repositories",
        );
    }

    #[test]
    fn created_connections_link_to_their_operations() {
        let doc = app().openapi();
        let links =
            &doc["paths"]["/api/integrations/connections"]["post"]["responses"]["201"]["links"];
        for op in [
            "GetConnection",
            "UpdateConnection",
            "DeleteConnection",
            "RotateConnectionSecret",
            "TestConnection",
            "GetIntegrationStatus",
        ] {
            assert_eq!(links[op]["operationId"], op, "{links}");
            assert_eq!(links[op]["parameters"]["name"], "$response.body#/name");
        }
    }

    #[test]
    fn the_catalog_answer_is_the_catalogs_json_byte_for_byte() {
        let typed = serde_json::to_string(&CatalogView::of(catalog::kinds())).expect("json");
        assert_eq!(typed, catalog::to_json().to_string());
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = app().openapi();
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or("");
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
    }
}
