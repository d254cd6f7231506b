//! User management within the caller's tenant, and one-time tokens (invitations, resets).

use chrono::{DateTime, Utc};
use flowgrid_domain::{Email, OneTimeToken, TenantId, User, UserId};
use flowgrid_domain::{Error, FieldError, Result};
use flowgrid_http::auth::{Caller, Role};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::password::{check_new_password, constant_time_eq, random_token, token_hash};
use crate::sessions::{invalid, revoke_user};

/// How long an invitation works.
const INVITE_TTL: chrono::Duration = chrono::Duration::days(7);
/// How long a password-reset token works.
const RESET_TTL: chrono::Duration = chrono::Duration::hours(24);

/// A user as the API shows it: never the password hash or a token hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: String,
    tenant_id: String,
    email: String,
    /// The highest role: `viewer`, `editor`, `admin` or `owner`.
    #[schema(value_type = Option<String>)]
    role: Option<&'static str>,
    roles: Vec<String>,
    disabled: bool,
    /// Whether the user has set a password (an invited user has not yet).
    has_password: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.to_string(),
            tenant_id: u.tenant_id.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            role: u.role().map(Role::as_str),
            roles: u.roles.clone(),
            disabled: u.disabled,
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// `POST /api/auth/users` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    /// The user's email, unique in the tenant.
    email: String,
    /// `viewer`, `editor`, `admin` or `owner` (only an owner makes owners).
    role: String,
    /// A password (at least 12 characters); without one the answer holds an invitation token.
    #[serde(default)]
    password: Option<String>,
}

impl flowgrid_http::json::Secrets for CreateUser {
    const FIELDS: &'static [&'static str] = &["password"];
}

/// `PATCH /api/auth/users/{id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

/// `POST /api/auth/users/{id}/reset-password` body (may be empty).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetPassword {
    #[serde(default)]
    password: Option<String>,
}

impl flowgrid_http::json::Secrets for ResetPassword {
    const FIELDS: &'static [&'static str] = &["password"];
}

/// `POST /api/auth/password` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPassword {
    token: String,
    password: String,
}

impl flowgrid_http::json::Secrets for SetPassword {
    const FIELDS: &'static [&'static str] = &["token", "password"];
}

/// A created user, with the invitation token when no password was given.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    #[serde(flatten)]
    user: UserView,
    /// Shown once: the invited user sets a password with it at `POST /api/auth/password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_token: Option<String>,
}

/// The answer to a reset.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reset {
    #[serde(flatten)]
    user: UserView,
    /// Shown once, when no password was given: set a password with it at `POST /api/auth/password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reset_token: Option<String>,
}

fn parse_role(raw: &str) -> Result<Role> {
    Role::parse(raw).ok_or_else(|| {
        Error::Validation(vec![FieldError::new(
            "role",
            "must be viewer, editor, admin or owner",
        )])
    })
}

/// The caller's role, which must be at least admin.
fn admin_role(caller: &Caller) -> Result<Role> {
    caller.require(Role::Admin)?;
    caller
        .role
        .ok_or_else(|| Error::Forbidden("This action needs the admin role.".into()))
}

fn is_self(caller: &Caller, user: &User) -> bool {
    caller.subject == user.id.to_string()
}

/// A one-time token naming its user: `<tenant>.<user>.<secret>`, stored as a hash.
fn one_time_token(
    user: &User,
    purpose: &str,
    ttl: chrono::Duration,
) -> Result<(String, OneTimeToken)> {
    let token = format!("{}.{}.{}", user.tenant_id, user.id, random_token(32)?);
    let stored = OneTimeToken {
        hash: token_hash(&token),
        purpose: purpose.into(),
        expires_at: Utc::now() + ttl,
    };
    Ok((token, stored))
}

/// Creates a user with a password, or invites them with a one-time token.
pub async fn create_user(state: &AppState, caller: &Caller, body: CreateUser) -> Result<Created> {
    let own = admin_role(caller)?;
    let email = Email::parse(&body.email)?;
    let role = parse_role(&body.role)?;
    if role > own {
        return Err(Error::Forbidden(
            "Nobody can grant a role above their own.".into(),
        ));
    }
    let password_hash = match &body.password {
        Some(password) => {
            check_new_password(password, "password")?;
            Some(state.passwords.hash(password).await?)
        }
        None => None,
    };
    let now = Utc::now();
    let mut user = User {
        id: UserId::new(),
        tenant_id: caller.tenant.clone(),
        email,
        roles: vec![role.as_str().to_owned()],
        disabled: false,
        password_hash,
        one_time_token: None,
        created_at: now,
        updated_at: now,
        etag: String::new(),
    };
    let mut invite_token = None;
    if user.password_hash.is_none() {
        let (token, stored) = one_time_token(&user, "invite", INVITE_TTL)?;
        user.one_time_token = Some(stored);
        invite_token = Some(token);
    }
    let user = state.stores.users.insert(&user).await?;
    Ok(Created {
        user: UserView::from(&user),
        invite_token,
    })
}

/// A user of the caller's tenant for an admin (404 for any other tenant's id).
pub async fn get_user(state: &AppState, caller: &Caller, id: UserId) -> Result<User> {
    admin_role(caller)?;
    state.stores.users.get(&caller.tenant, id).await
}

/// Changes a user's role or disabled flag; disabling (or any role change) revokes their sessions.
pub async fn update_user(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    body: UpdateUser,
) -> Result<User> {
    let own = admin_role(caller)?;
    let user = get_user(state, caller, id).await?;
    if user.role() > Some(own) {
        return Err(Error::Forbidden(
            "Nobody can change a user ranked above them.".into(),
        ));
    }
    let mut next = user.clone();
    if let Some(raw) = &body.role {
        let role = parse_role(raw)?;
        if is_self(caller, &user) {
            return Err(Error::Forbidden("Nobody can change their own role.".into()));
        }
        if role > own {
            return Err(Error::Forbidden(
                "Nobody can grant a role above their own.".into(),
            ));
        }
        next.roles = vec![role.as_str().to_owned()];
    }
    if let Some(disabled) = body.disabled {
        if disabled && is_self(caller, &user) {
            return Err(Error::Forbidden("Nobody can disable themselves.".into()));
        }
        next.disabled = disabled;
    }
    if next == user {
        return Ok(user);
    }
    next.updated_at = Utc::now();
    let saved = state.stores.users.replace(&next, &user.etag).await?;
    if saved.disabled || saved.roles != user.roles {
        revoke_user(state, &saved.tenant_id, saved.id).await?;
    }
    Ok(saved)
}

/// Sets a user's password, or issues a reset token; either way their sessions are revoked.
pub async fn reset_password(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    body: ResetPassword,
) -> Result<Reset> {
    let own = admin_role(caller)?;
    let user = get_user(state, caller, id).await?;
    if user.role() > Some(own) {
        return Err(Error::Forbidden(
            "Nobody can reset the password of a user ranked above them.".into(),
        ));
    }
    let mut next = user.clone();
    let mut reset_token = None;
    match &body.password {
        Some(password) => {
            check_new_password(password, "password")?;
            next.password_hash = Some(state.passwords.hash(password).await?);
            next.one_time_token = None;
        }
        None => {
            let (token, stored) = one_time_token(&user, "reset", RESET_TTL)?;
            next.one_time_token = Some(stored);
            reset_token = Some(token);
        }
    }
    next.updated_at = Utc::now();
    let saved = state.stores.users.replace(&next, &user.etag).await?;
    revoke_user(state, &saved.tenant_id, saved.id).await?;
    Ok(Reset {
        user: UserView::from(&saved),
        reset_token,
    })
}

/// Redeems an invitation or reset token: sets the password, spends the token, revokes sessions.
pub async fn set_password(state: &AppState, body: SetPassword, client: &str) -> Result<()> {
    state.throttles.caller.check(client)?;
    check_new_password(&body.password, "password")?;
    let fail = || {
        state.throttles.caller.fail(client);
        invalid("set password: unknown, used or expired token")
    };
    let mut parts = body.token.splitn(3, '.');
    let (Some(tenant), Some(user_id), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(fail());
    };
    let (Ok(tenant), Ok(user_id)) = (TenantId::parse(tenant), UserId::parse(user_id)) else {
        return Err(fail());
    };
    let user = match state.stores.users.get(&tenant, user_id).await {
        Ok(user) => user,
        Err(Error::NotFound) => return Err(fail()),
        Err(e) => return Err(e),
    };
    let valid = user.one_time_token.as_ref().is_some_and(|t| {
        constant_time_eq(&t.hash, &token_hash(&body.token)) && t.expires_at > Utc::now()
    });
    if !valid || user.disabled {
        return Err(fail());
    }
    let mut next = user.clone();
    next.password_hash = Some(state.passwords.hash(&body.password).await?);
    next.one_time_token = None;
    next.updated_at = Utc::now();
    let saved = state.stores.users.replace(&next, &user.etag).await?;
    revoke_user(state, &saved.tenant_id, saved.id).await
}
