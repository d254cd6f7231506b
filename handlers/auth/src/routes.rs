//! The Auth routes. Each handler extracts, calls the domain, and maps the result.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flowgrid_domain::UserId;
use flowgrid_domain::store::{Page, paging};
use flowgrid_http::auth::{Caller, Role};
use flowgrid_http::{Error, FieldError, Result};
use flowgrid_http::{Json, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::sessions::{self, LoginRequest, TokenResponse};
use crate::users::{self, CreateUser, ResetPassword, SetPassword, UpdateUser, UserView};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/validate", post(validate))
        .route("/api/auth/user", get(current_user))
        .route("/api/auth/tenant", get(current_tenant))
        .route(
            "/api/auth/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/api/auth/.well-known/jwks.json", get(jwks))
        .route("/api/auth/users", get(list_users).post(create_user))
        .route("/api/auth/users/{id}", get(get_user).patch(update_user))
        .route("/api/auth/users/{id}/reset-password", post(reset_password))
        .route("/api/auth/password", post(set_password))
}

/// The caller's address for throttling: the last `X-Forwarded-For` hop (the one the gateway
/// added), else `direct`.
fn client(headers: &HeaderMap) -> String {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
        .map_or_else(|| "direct".to_owned(), |v| v.chars().take(64).collect())
}

/// Field errors on secret fields never echo the value.
fn redact(e: Error, secret_fields: &[&str]) -> Error {
    match e {
        Error::Validation(errors) => Error::Validation(
            errors
                .into_iter()
                .map(|f| {
                    if secret_fields.iter().any(|s| f.field == *s) {
                        FieldError::new(f.field, "must be a string")
                    } else {
                        f
                    }
                })
                .collect(),
        ),
        Error::BadRequest(_) => Error::BadRequest("The request body is not valid JSON.".into()),
        other => other,
    }
}

/// Parses a JSON body (`application/json` or `+json`) whose fields may be secret.
fn secret_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    secret_fields: &[&str],
) -> Result<T> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !json {
        return Err(Error::UnsupportedMediaType.into());
    }
    Ok(flowgrid_http::json::parse(body).map_err(|e| redact(e, secret_fields))?)
}

/// Logs in with email and password; returns an access token and a refresh token.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TokenResponse>> {
    let request: LoginRequest = secret_body(&headers, &body, &["password"])?;
    Ok(Json(
        sessions::login(&state, request, &client(&headers)).await?,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

/// Exchanges a refresh token for new tokens (the presented one is spent).
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TokenResponse>> {
    let request: RefreshRequest = secret_body(&headers, &body, &["refreshToken"])?;
    Ok(Json(
        sessions::refresh(&state, &request.refresh_token, &client(&headers)).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LogoutRequest {
    #[serde(default)]
    all_sessions: bool,
}

/// Revokes the caller's session, or with `{"allSessions": true}` every session of the user.
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode> {
    let request: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        secret_body(&headers, &body, &[])?
    };
    if request.all_sessions {
        let user = UserId::parse(&caller.subject).map_err(|_| {
            Error::BadRequest("This token's subject is not a Flowgrid user.".into())
        })?;
        sessions::revoke_user(&state, &caller.tenant, user).await?;
    } else {
        let sid = caller
            .session_id
            .as_deref()
            .ok_or_else(|| Error::BadRequest("This token has no session to log out of.".into()))?;
        sessions::revoke_session(&state, &caller.tenant, sid).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValidateRequest {
    token: String,
}

/// Verifies a token (signature, claims, revocation) and returns its claims; 401 otherwise.
async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let request: ValidateRequest = secret_body(&headers, &body, &["token"])?;
    let claims = state.verifier.authenticate(request.token.trim()).await?;
    Ok(Json(json!({ "active": true, "claims": claims })))
}

/// The caller: their stored user when there is one, else what their token says.
async fn current_user(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>> {
    if let Ok(id) = UserId::parse(&caller.subject) {
        match state.stores.users.get(&caller.tenant, id).await {
            Ok(user) => return Ok(Json(json!(UserView::from(&user)))),
            Err(Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({
        "id": caller.subject,
        "tenantId": caller.tenant.as_str(),
        "role": caller.role.map(Role::as_str),
        "roles": caller.role.map(Role::as_str).into_iter().collect::<Vec<_>>(),
        "external": true,
    })))
}

/// The caller's tenant.
async fn current_tenant(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>> {
    match state.stores.tenants.get(&caller.tenant).await {
        Ok(tenant) => Ok(Json(json!(tenant))),
        Err(Error::NotFound) => Ok(Json(
            json!({ "id": caller.tenant.as_str(), "registered": false }),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The built-in issuer's OpenID Connect discovery document.
async fn openid_configuration(State(state): State<AppState>) -> Response {
    let issuer = state.issuer.issuer();
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/login"),
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "sub", "aud", "tid", "roles", "jti", "sid", "iat", "nbf", "exp"],
    });
    ([("cache-control", "public, max-age=300")], Json(body)).into_response()
}

/// The built-in issuer's public keys (the current one and recently retired ones).
async fn jwks(State(state): State<AppState>) -> Result<Response> {
    let keys = state.issuer.jwks().await?;
    Ok(([("cache-control", "public, max-age=60")], Json(keys)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageParams {
    limit: Option<u32>,
    continuation_token: Option<String>,
}

/// Lists the users of the caller's tenant, paged (admins and owners).
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<UserView>>> {
    caller.require(Role::Admin)?;
    let page = state
        .stores
        .users
        .list(
            &caller.tenant,
            paging::limit(params.limit),
            params.continuation_token.as_deref(),
        )
        .await?;
    Ok(Json(Page {
        items: page.items.iter().map(UserView::from).collect(),
        continuation_token: page.continuation_token,
    }))
}

/// Creates a user with a password, or invites them (admins and owners).
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let request: CreateUser = secret_body(&headers, &body, &["password"])?;
    let created = users::create_user(&state, &caller, request).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// One user of the caller's tenant (admins and owners).
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserView>> {
    let user = users::get_user(&state, &caller, &id).await?;
    Ok(Json(UserView::from(&user)))
}

/// Changes a user's role or disabled flag (admins and owners).
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<UserView>> {
    let user = users::update_user(&state, &caller, &id, body).await?;
    Ok(Json(UserView::from(&user)))
}

/// Sets a user's password or issues a reset token (admins and owners).
async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<users::Reset>> {
    let request: ResetPassword = if body.iter().all(u8::is_ascii_whitespace) {
        ResetPassword::default()
    } else {
        secret_body(&headers, &body, &["password"])?
    };
    Ok(Json(
        users::reset_password(&state, &caller, &id, request).await?,
    ))
}

/// Sets a password with an invitation or reset token.
async fn set_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode> {
    let request: SetPassword = secret_body(&headers, &body, &["token", "password"])?;
    users::set_password(&state, request, &client(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}
