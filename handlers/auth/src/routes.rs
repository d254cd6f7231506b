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
use flowgrid_http::openapi::routes;
use flowgrid_http::{Error, Result};
use flowgrid_http::{Json, Query};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::sessions::{self, LoginRequest, TokenResponse};
use crate::users::{
    self, CreateUser, Created, Reset, ResetPassword, SetPassword, UpdateUser, UserView,
};

/// Every function of the Auth app: `functions/auth/<Name>/function.json` declares the same.
pub fn app() -> App<AppState> {
    App::new(crate::APP)
        .post("Login", "auth/login", routes!(login))
        .post("Refresh", "auth/refresh", routes!(refresh))
        .post("Logout", "auth/logout", routes!(logout))
        .post("Validate", "auth/validate", routes!(validate))
        .get("GetCurrentUser", "auth/user", routes!(current_user))
        .get("GetCurrentTenant", "auth/tenant", routes!(current_tenant))
        .get(
            "OpenIdConfiguration",
            "auth/.well-known/openid-configuration",
            routes!(openid_configuration),
        )
        .get("Jwks", "auth/.well-known/jwks.json", routes!(jwks))
        .get("ListUsers", "auth/users", routes!(list_users))
        .post("CreateUser", "auth/users", routes!(create_user))
        .get("GetUser", "auth/users/{id}", routes!(get_user))
        .patch("UpdateUser", "auth/users/{id}", routes!(update_user))
        .post(
            "ResetPassword",
            "auth/users/{id}/reset-password",
            routes!(reset_password),
        )
        .post("SetPassword", "auth/password", routes!(set_password))
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
#[utoipa::path(post, path = "/api/auth/login", security(()),
    request_body(content = LoginRequest, description = "Email and password.",
        example = json!({"email": "ada@example.com", "password": "correct horse battery staple"})),
    responses(
        (status = 200, description = "An access token and a refresh token.", body = TokenResponse),
        (status = 400, description = "The email has accounts in several tenants and no `tenantId` was given."),
        (status = 401, description = "The credentials are not valid (the same answer whatever was wrong)."),
        (status = 429, description = "Too many failed attempts from this caller or for this account."),
    ))]
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    SecretJson(request): SecretJson<LoginRequest>,
) -> Result<Json<TokenResponse>> {
    Ok(Json(
        sessions::login(&state, request, &client(&headers)).await?,
    ))
}

/// `POST /api/auth/refresh` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

impl Secrets for RefreshRequest {
    const FIELDS: &'static [&'static str] = &["refreshToken"];
}

/// Exchanges a refresh token for new tokens (the presented one is spent).
#[utoipa::path(post, path = "/api/auth/refresh", security(()),
    request_body(content = RefreshRequest, description = "The refresh token (single use).",
        example = json!({"refreshToken": "rt_3q2+7w..."})),
    responses(
        (status = 200, description = "New tokens; the presented refresh token is spent.", body = TokenResponse),
        (status = 401, description = "The refresh token is unknown, spent (its session is then revoked) or expired."),
        (status = 429, description = "Too many failed attempts from this caller."),
    ))]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    SecretJson(request): SecretJson<RefreshRequest>,
) -> Result<Json<TokenResponse>> {
    Ok(Json(
        sessions::refresh(&state, &request.refresh_token, &client(&headers)).await?,
    ))
}

/// `POST /api/auth/logout` body (optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LogoutRequest {
    #[serde(default)]
    all_sessions: bool,
}

impl Secrets for LogoutRequest {
    const FIELDS: &'static [&'static str] = &[];
}

/// Revokes the caller's session, or with `{"allSessions": true}` every session of the user.
#[utoipa::path(post, path = "/api/auth/logout",
    request_body(content = Option<LogoutRequest>, description = "Optional: `{\"allSessions\": true}` ends every session of the user.",
        example = json!({"allSessions": false})),
    responses(
        (status = 204, description = "The session (or every session) is revoked."),
    ))]
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

/// `POST /api/auth/validate` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValidateRequest {
    token: String,
}

impl Secrets for ValidateRequest {
    const FIELDS: &'static [&'static str] = &["token"];
}

/// `POST /api/auth/validate`: the verified claims of an active token.
#[derive(Serialize, utoipa::ToSchema)]
struct Validated {
    active: bool,
    claims: AccessClaims,
}

/// Verifies a token (signature, claims, revocation) and returns its claims; 401 otherwise.
#[utoipa::path(post, path = "/api/auth/validate", security(()),
    request_body(content = ValidateRequest, description = "The token to check.",
        example = json!({"token": "eyJhbGciOiJFZERTQSIs..."})),
    responses(
        (status = 200, description = "The token is active; its verified claims.", body = Validated),
        (status = 401, description = "The token fails verification or is revoked."),
    ))]
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
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum CurrentUser {
    Stored(UserView),
    #[serde(rename_all = "camelCase")]
    External {
        id: String,
        tenant_id: String,
        #[schema(value_type = Option<String>)]
        role: Option<&'static str>,
        #[schema(value_type = Vec<String>)]
        roles: Vec<&'static str>,
        external: bool,
    },
}

/// The caller: their stored user when there is one, else what their token says.
#[utoipa::path(get, path = "/api/auth/user",
    responses((status = 200, description = "The caller.", body = CurrentUser)))]
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
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum CurrentTenant {
    Stored(Tenant),
    Unregistered { id: String, registered: bool },
}

/// The caller's tenant.
#[utoipa::path(get, path = "/api/auth/tenant",
    responses((status = 200, description = "The caller's tenant.", body = CurrentTenant)))]
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
#[derive(Serialize, utoipa::ToSchema)]
struct OpenIdConfiguration {
    issuer: String,
    jwks_uri: String,
    token_endpoint: String,
    #[schema(value_type = Vec<String>)]
    response_types_supported: [&'static str; 1],
    #[schema(value_type = Vec<String>)]
    subject_types_supported: [&'static str; 1],
    #[schema(value_type = Vec<String>)]
    id_token_signing_alg_values_supported: [&'static str; 1],
    #[schema(value_type = Vec<String>)]
    token_endpoint_auth_methods_supported: [&'static str; 1],
    #[schema(value_type = Vec<String>)]
    claims_supported: [&'static str; 10],
}

/// The JSON Web Key Set as `GET /api/auth/.well-known/jwks.json` answers it (RFC 7517): the
/// schema of the `jsonwebtoken` crate's `JwkSet` the handler serialises.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "documents the shape of jsonwebtoken's JwkSet")]
struct JwksView {
    /// The keys: Ed25519 public keys (`kty: OKP`, `crv: Ed25519`, `x`, `kid`, `alg: EdDSA`, `use: sig`).
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// The built-in issuer's OpenID Connect discovery document.
#[utoipa::path(get, path = "/api/auth/.well-known/openid-configuration", security(()),
    responses((status = 200, description = "The discovery document.", body = OpenIdConfiguration)))]
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
#[utoipa::path(get, path = "/api/auth/.well-known/jwks.json", security(()),
    responses((status = 200, description = "The JSON Web Key Set.", body = JwksView)))]
async fn jwks(State(state): State<AppState>) -> Result<Response> {
    let keys = state.issuer.jwks().await?;
    Ok(([("cache-control", "public, max-age=60")], Json(keys)).into_response())
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

/// Lists the users of the caller's tenant, paged (admins and owners).
#[utoipa::path(get, path = "/api/auth/users", params(PageParams),
    responses(
        (status = 200, description = "One page of the tenant's users.", body = Page<UserView>),
        (status = 403, description = "The admin role is required."),
    ))]
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
#[utoipa::path(post, path = "/api/auth/users",
    request_body(content = CreateUser, description = "The new user.",
        example = json!({"email": "grace@example.com", "role": "editor"})),
    responses(
        (status = 201, description = "Created; with an invitation token when no password was given.", body = Created,
            links(
                ("GetUser" = (operation_id = "GetUser", parameters(("id" = "$response.body#/id")))),
                ("UpdateUser" = (operation_id = "UpdateUser", parameters(("id" = "$response.body#/id")))),
                ("ResetPassword" = (operation_id = "ResetPassword", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 403, description = "The admin role is required (owner to make an owner)."),
        (status = 409, description = "The tenant has a user with that email."),
    ))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    SecretJson(request): SecretJson<CreateUser>,
) -> Result<Response> {
    let created = users::create_user(&state, &caller, request).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// One user of the caller's tenant (admins and owners).
#[utoipa::path(get, path = "/api/auth/users/{id}", params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user.", body = UserView),
        (status = 403, description = "The admin role is required."),
    ))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<UserId>,
) -> Result<Json<UserView>> {
    let user = users::get_user(&state, &caller, id).await?;
    Ok(Json(UserView::from(&user)))
}

/// Changes a user's role or disabled flag (admins and owners).
#[utoipa::path(patch, path = "/api/auth/users/{id}", params(("id" = String, Path, description = "The user's id.")),
    request_body(content = UpdateUser, description = "The fields to change.",
        example = json!({"role": "viewer"})),
    responses(
        (status = 200, description = "The user as changed.", body = UserView),
        (status = 403, description = "The admin role is required; nobody changes their own role or disables themselves; only an owner touches an owner."),
    ))]
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
#[utoipa::path(post, path = "/api/auth/users/{id}/reset-password", params(("id" = String, Path, description = "The user's id.")),
    request_body(content = Option<ResetPassword>, description = "Optional: a new password; without one the answer holds a reset token.",
        example = json!({})),
    responses(
        (status = 200, description = "The user, and the reset token when no password was given.", body = Reset),
        (status = 403, description = "The admin role is required; only an owner resets an owner."),
    ))]
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
#[utoipa::path(post, path = "/api/auth/password", security(()),
    request_body(content = SetPassword, description = "An invitation or reset token and the new password.",
        example = json!({"token": "inv_9f...", "password": "correct horse battery staple"})),
    responses(
        (status = 204, description = "The password is set; the token is spent."),
        (status = 401, description = "The token is unknown, spent or expired."),
        (status = 429, description = "Too many failed attempts from this caller."),
    ))]
async fn set_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    SecretJson(request): SecretJson<SetPassword>,
) -> Result<StatusCode> {
    users::set_password(&state, request, &client(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}
