//! Login, refresh-token rotation with reuse detection, and logout.

use chrono::{DateTime, Utc};
use flowgrid_domain::{Error, Result};
use flowgrid_domain::{RefreshOutcome, RefreshToken, Session, TenantId, User, UserId};
use flowgrid_http::auth::LEEWAY_SECS;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::password::{random_token, token_hash};

/// `POST /api/auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's email.
    pub email: String,
    /// The password.
    pub password: String,
    /// The tenant, needed only when the email has accounts in several tenants.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl flowgrid_http::json::Secrets for LoginRequest {
    const FIELDS: &'static [&'static str] = &["password"];
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginRequest(..)")
    }
}

/// Tokens handed out by login and refresh.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The access token (JWT, `typ: at+jwt`).
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The opaque, single-use refresh token.
    pub refresh_token: String,
    /// The session id (`sid` of the access tokens).
    pub session_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The user.
    pub user_id: String,
    /// The user's roles.
    pub roles: Vec<String>,
}

/// The generic failure of login, refresh and token exchange: the same for every cause.
pub fn invalid(reason: &str) -> Error {
    Error::InvalidCredentials(reason.into())
}

fn new_refresh_token(
    state: &AppState,
    session_id: &str,
    now: DateTime<Utc>,
) -> Result<(String, RefreshToken)> {
    let token = format!("fgr_{}", random_token(32)?);
    let record = RefreshToken {
        hash: token_hash(&token),
        session_id: session_id.to_owned(),
        issued_at: now,
        expires_at: now
            + chrono::Duration::from_std(state.lifetimes.refresh_idle).unwrap_or_default(),
    };
    Ok((token, record))
}

async fn tokens(
    state: &AppState,
    user: &User,
    session: &Session,
    refresh: String,
) -> Result<TokenResponse> {
    let access = state.issuer.access_token(user, &session.id).await?;
    Ok(TokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
        refresh_token: refresh,
        session_id: session.id.clone(),
        tenant_id: user.tenant_id.as_str().to_owned(),
        user_id: user.id.to_string(),
        roles: user.roles.clone(),
    })
}

/// Checks the password of the account `request` names and starts a session.
pub async fn login(state: &AppState, request: LoginRequest, client: &str) -> Result<TokenResponse> {
    let account_key = request.email.trim().to_lowercase();
    state.throttles.caller.check(client)?;
    state.throttles.account.check(&account_key)?;
    let user = match check_password(state, &request, &account_key).await? {
        Some(user) if !user.disabled => user,
        found => {
            state.throttles.caller.fail(client);
            state.throttles.account.fail(&account_key);
            return Err(invalid(if found.is_some() {
                "login: user disabled"
            } else {
                "login: unknown email or wrong password"
            }));
        }
    };
    state.throttles.account.clear(&account_key);
    let user = rehash_if_needed(state, user, &request.password).await;
    let (session, refresh) = open_session(state, &user).await?;
    tracing::info!(tenant.id = %user.tenant_id, user.id = %user.id, session.id = %session.id, "login");
    tokens(state, &user, &session, refresh).await
}

/// The one user of `account_key` (in the named tenant, if any) whose password matches; a
/// missing account costs the same password check as a real one, so time tells nothing.
async fn check_password(
    state: &AppState,
    request: &LoginRequest,
    account_key: &str,
) -> Result<Option<User>> {
    let tenant = request
        .tenant_id
        .as_deref()
        .map(TenantId::parse)
        .transpose()?;
    let mut candidates = state.stores.users.find_by_email(account_key).await?;
    if let Some(tenant) = &tenant {
        candidates.retain(|u| &u.tenant_id == tenant);
    }
    if candidates.is_empty() {
        state.passwords.verify(None, &request.password).await?;
    }
    let mut matched = Vec::new();
    for user in candidates {
        if state
            .passwords
            .verify(user.password_hash.as_deref(), &request.password)
            .await?
        {
            matched.push(user);
        }
    }
    if matched.len() > 1 {
        return Err(Error::BadRequest(
            "This email has accounts in several tenants: name one in tenantId.".into(),
        ));
    }
    Ok(matched.pop())
}

/// A new session of `user` with its first refresh token (and, on about one login in 256, the
/// housekeeping of ended sessions and expired refresh tokens).
async fn open_session(state: &AppState, user: &User) -> Result<(Session, String)> {
    let now = Utc::now();
    let session = Session {
        id: format!("s{}", uuid::Uuid::new_v4().simple()),
        tenant_id: user.tenant_id.clone(),
        user_id: user.id,
        created_at: now,
        expires_at: now + chrono::Duration::from_std(state.lifetimes.session).unwrap_or_default(),
        revoked_at: None,
    };
    let (refresh, record) = new_refresh_token(state, &session.id, now)?;
    state.stores.sessions.create(&session, &record).await?;
    if record.hash.ends_with("00")
        && let Err(e) = state.stores.sessions.purge_expired(now).await
    {
        tracing::warn!(error = %e, "purging ended sessions failed");
    }
    Ok((session, refresh))
}

/// Re-hashes a password hashed with older parameters; failures only cost the upgrade.
async fn rehash_if_needed(state: &AppState, user: User, password: &str) -> User {
    let Some(hash) = user.password_hash.as_deref() else {
        return user;
    };
    if !state.passwords.needs_rehash(hash) {
        return user;
    }
    let Ok(new_hash) = state.passwords.hash(password).await else {
        return user;
    };
    let mut next = user.clone();
    next.password_hash = Some(new_hash);
    next.updated_at = Utc::now();
    let etag = user.etag.clone();
    state
        .stores
        .users
        .replace(&next, &etag)
        .await
        .unwrap_or(user)
}

/// How long a revoked session stays on the denylist: until its last access token expires.
fn deny_until(state: &AppState, now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(state.lifetimes.access).unwrap_or_default()
        + chrono::Duration::seconds(2 * LEEWAY_SECS as i64)
}

/// Puts sessions on the denylist, so their access tokens fail in every app, and forgets
/// entries whose tokens have all expired.
pub async fn deny(state: &AppState, sessions: &[Session]) -> Result<()> {
    let now = Utc::now();
    let until = deny_until(state, now);
    for session in sessions {
        state.stores.revocations.revoke(&session.id, until).await?;
        state.verifier.note_revoked(&session.id);
    }
    if let Err(e) = state.stores.revocations.purge_expired(now).await {
        tracing::warn!(error = %e, "purging expired denylist entries failed");
    }
    Ok(())
}

/// Revokes one session everywhere.
pub async fn revoke_session(state: &AppState, tenant: &TenantId, sid: &str) -> Result<()> {
    let session = state
        .stores
        .sessions
        .revoke(tenant, sid, Utc::now())
        .await?;
    deny(state, &[session]).await
}

/// Revokes every session of a user everywhere.
pub async fn revoke_user(state: &AppState, tenant: &TenantId, user: UserId) -> Result<()> {
    let revoked = state
        .stores
        .sessions
        .revoke_all_of_user(tenant, user, Utc::now())
        .await?;
    deny(state, &revoked).await
}

/// Exchanges a refresh token for new tokens; a reused one revokes its whole family.
pub async fn refresh(state: &AppState, presented: &str, client: &str) -> Result<TokenResponse> {
    state.throttles.caller.check(client)?;
    let now = Utc::now();
    let (refresh, record) = new_refresh_token(state, "", now)?;
    let grace = chrono::Duration::from_std(state.lifetimes.reuse_grace).unwrap_or_default();
    let outcome = state
        .stores
        .sessions
        .rotate(&token_hash(presented), &record, now, grace)
        .await?;
    let session = match outcome {
        RefreshOutcome::Rotated(session) => session,
        RefreshOutcome::Reused(session) => {
            tracing::warn!(tenant.id = %session.tenant_id, session.id = %session.id,
                "refresh token reused: the session and its token family are revoked");
            deny(state, &[session]).await?;
            state.throttles.caller.fail(client);
            return Err(invalid("refresh: token reused"));
        }
        RefreshOutcome::Invalid => {
            state.throttles.caller.fail(client);
            return Err(invalid("refresh: unknown, expired or revoked token"));
        }
    };
    let user = match state
        .stores
        .users
        .get(&session.tenant_id, session.user_id)
        .await
    {
        Ok(user) if !user.disabled => user,
        Ok(_) | Err(Error::NotFound) => {
            revoke_session(state, &session.tenant_id, &session.id).await?;
            return Err(invalid("refresh: user disabled or gone"));
        }
        Err(e) => return Err(e),
    };
    tokens(state, &user, &session, refresh).await
}
