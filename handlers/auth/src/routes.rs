//! The Auth routes. Each handler extracts, calls the domain, and maps the result.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flowgrid_domain::store::{Page, paging};
use flowgrid_domain::{Tenant, UserId};
use flowgrid_http::app::App;
use flowgrid_http::auth::{AccessClaims, Caller, Role};
use flowgrid_http::extract::Id;
use flowgrid_http::json::{OptionalJson, SecretJson, Secrets};
use flowgrid_http::{Error, Result};
use flowgrid_http::{Json, Query};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::sessions::{self, LoginRequest, TokenResponse};
use crate::users::{self, CreateUser, ResetPassword, SetPassword, UpdateUser, UserView};

/// Every function of the Auth app: `functions/auth/<Name>/function.json` declares the same.
pub fn app() -> App<AppState> {
    App::new(crate::APP)
        .post("Login", "auth/login", login)
        .post("Refresh", "auth/refresh", refresh)
        .post("Logout", "auth/logout", logout)
        .post("Validate", "auth/validate", validate)
        .get("GetCurrentUser", "auth/user", current_user)
        .get("GetCurrentTenant", "auth/tenant", current_tenant)
        .get(
            "OpenIdConfiguration",
            "auth/.well-known/openid-configuration",
            openid_configuration,
        )
        .get("Jwks", "auth/.well-known/jwks.json", jwks)
        .get("ListUsers", "auth/users", list_users)
        .post("CreateUser", "auth/users", create_user)
        .get("GetUser", "auth/users/{id}", get_user)
        .patch("UpdateUser", "auth/users/{id}", update_user)
        .post(
            "ResetPassword",
            "auth/users/{id}/reset-password",
            reset_password,
        )
        .post("SetPassword", "auth/password", set_password)
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

/// Logs in with email and password; returns an access token and a refresh token.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    SecretJson(request): SecretJson<LoginRequest>,
) -> Result<Json<TokenResponse>> {
    Ok(Json(
        sessions::login(&state, request, &client(&headers)).await?,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

impl Secrets for RefreshRequest {
    const FIELDS: &'static [&'static str] = &["refreshToken"];
}

/// Exchanges a refresh token for new tokens (the presented one is spent).
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    SecretJson(request): SecretJson<RefreshRequest>,
) -> Result<Json<TokenResponse>> {
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

impl Secrets for LogoutRequest {
    const FIELDS: &'static [&'static str] = &[];
}

/// Revokes the caller's session, or with `{"allSessions": true}` every session of the user.
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJson(request): OptionalJson<LogoutRequest>,
) -> Result<StatusCode> {
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

impl Secrets for ValidateRequest {
    const FIELDS: &'static [&'static str] = &["token"];
}

/// `POST /api/auth/validate`: the verified claims of an active token.
#[derive(Serialize)]
struct Validated {
    active: bool,
    claims: AccessClaims,
}

/// Verifies a token (signature, claims, revocation) and returns its claims; 401 otherwise.
async fn validate(
    State(state): State<AppState>,
    SecretJson(request): SecretJson<ValidateRequest>,
) -> Result<Json<Validated>> {
    let claims = state.verifier.authenticate(request.token.trim()).await?;
    Ok(Json(Validated {
        active: true,
        claims,
    }))
}

/// `GET /api/auth/user`: the stored user, or what an external token says of its subject.
#[derive(Serialize)]
#[serde(untagged)]
enum CurrentUser {
    Stored(UserView),
    #[serde(rename_all = "camelCase")]
    External {
        id: String,
        tenant_id: String,
        role: Option<&'static str>,
        roles: Vec<&'static str>,
        external: bool,
    },
}

/// The caller: their stored user when there is one, else what their token says.
async fn current_user(State(state): State<AppState>, caller: Caller) -> Result<Json<CurrentUser>> {
    if let Ok(id) = UserId::parse(&caller.subject) {
        match state.stores.users.get(&caller.tenant, id).await {
            Ok(user) => return Ok(Json(CurrentUser::Stored(UserView::from(&user)))),
            Err(Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(CurrentUser::External {
        id: caller.subject,
        tenant_id: caller.tenant.as_str().to_owned(),
        role: caller.role.map(Role::as_str),
        roles: caller.role.map(Role::as_str).into_iter().collect(),
        external: true,
    }))
}

/// `GET /api/auth/tenant`: the stored tenant, or only its id when it was never registered
/// (a tenant of an external issuer).
#[derive(Serialize)]
#[serde(untagged)]
enum CurrentTenant {
    Stored(Tenant),
    Unregistered { id: String, registered: bool },
}

/// The caller's tenant.
async fn current_tenant(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CurrentTenant>> {
    match state.stores.tenants.get(&caller.tenant).await {
        Ok(tenant) => Ok(Json(CurrentTenant::Stored(tenant))),
        Err(Error::NotFound) => Ok(Json(CurrentTenant::Unregistered {
            id: caller.tenant.as_str().to_owned(),
            registered: false,
        })),
        Err(e) => Err(e.into()),
    }
}

/// The OpenID Connect discovery document of the built-in issuer.
#[derive(Serialize)]
struct OpenIdConfiguration {
    issuer: String,
    jwks_uri: String,
    token_endpoint: String,
    response_types_supported: [&'static str; 1],
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: [&'static str; 1],
    token_endpoint_auth_methods_supported: [&'static str; 1],
    claims_supported: [&'static str; 10],
}

/// The built-in issuer's OpenID Connect discovery document.
async fn openid_configuration(State(state): State<AppState>) -> Response {
    let issuer = state.issuer.issuer();
    let body = OpenIdConfiguration {
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}/login"),
        issuer: issuer.to_owned(),
        response_types_supported: ["token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["EdDSA"],
        token_endpoint_auth_methods_supported: ["none"],
        claims_supported: [
            "iss", "sub", "aud", "tid", "roles", "jti", "sid", "iat", "nbf", "exp",
        ],
    };
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
    SecretJson(request): SecretJson<CreateUser>,
) -> Result<Response> {
    let created = users::create_user(&state, &caller, request).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// One user of the caller's tenant (admins and owners).
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<UserId>,
) -> Result<Json<UserView>> {
    let user = users::get_user(&state, &caller, id).await?;
    Ok(Json(UserView::from(&user)))
}

/// Changes a user's role or disabled flag (admins and owners).
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<UserId>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<UserView>> {
    let user = users::update_user(&state, &caller, id, body).await?;
    Ok(Json(UserView::from(&user)))
}

/// Sets a user's password or issues a reset token (admins and owners).
async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<UserId>,
    OptionalJson(request): OptionalJson<ResetPassword>,
) -> Result<Json<users::Reset>> {
    Ok(Json(
        users::reset_password(&state, &caller, id, request).await?,
    ))
}

/// Sets a password with an invitation or reset token.
async fn set_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    SecretJson(request): SecretJson<SetPassword>,
) -> Result<StatusCode> {
    users::set_password(&state, request, &client(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}
