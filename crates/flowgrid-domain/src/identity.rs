//! Identity: tenants, users, login sessions and their refresh tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Role;
use crate::TenantId;
use crate::{Error, Result};

/// A tenant: an organisation whose data is isolated from every other tenant's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Tenant id (the `tid` of its users' tokens).
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Plan name (quotas follow from it).
    pub plan: String,
    /// When the tenant was created.
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    /// A new tenant named `name` with a fresh id, on the `free` plan.
    pub fn create(name: &str, now: DateTime<Utc>) -> Result<Tenant> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::BadRequest(
                "A tenant name is 1 to 100 characters.".into(),
            ));
        }
        let id = TenantId::parse(&format!("t{}", uuid::Uuid::new_v4().simple()))?;
        Ok(Tenant {
            id,
            name: name.to_owned(),
            plan: "free".into(),
            created_at: now,
        })
    }
}

/// A user id: a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(uuid::Uuid);

impl UserId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        UserId(uuid::Uuid::now_v7())
    }

    /// Parses an id from a path segment or a token subject; anything but a UUID is a 400.
    pub fn parse(s: &str) -> Result<Self> {
        uuid::Uuid::try_parse(s)
            .map(UserId)
            .map_err(|_| Error::BadRequest("the user id is not a UUID".into()))
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// An email address, trimmed; compared case-insensitively through [`Email::key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Parses an address: 3–254 characters, one `@` with text on both sides, no spaces.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let ok = (3..=254).contains(&s.len())
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(s.split_once('@'), Some((local, domain))
                if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if ok {
            Ok(Email(s.to_owned()))
        } else {
            Err(Error::Validation(vec![crate::FieldError::new(
                "email",
                "is not an email address",
            )]))
        }
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lookup key: the address in lower case.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for Email {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// A one-time token (invitation or password reset), stored as its hash only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OneTimeToken {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// Why it was issued (`invite`, `reset`).
    pub purpose: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A user of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id (the `sub` of their tokens).
    pub id: UserId,
    /// The tenant the user belongs to.
    pub tenant_id: TenantId,
    /// Email address, unique within the tenant (case-insensitively).
    pub email: Email,
    /// Roles (`viewer`, `editor`, `admin`, `owner`).
    pub roles: Vec<String>,
    /// A disabled user cannot log in and their sessions are revoked.
    pub disabled: bool,
    /// The argon2id PHC string; absent until an invited user sets a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// A pending invitation or reset token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_token: Option<OneTimeToken>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
    /// Opaque version for optimistic concurrency, set by the store.
    #[serde(default, skip_serializing)]
    pub etag: String,
}

impl User {
    /// The highest role the user holds.
    pub fn role(&self) -> Option<Role> {
        self.roles.iter().filter_map(|r| Role::parse(r)).max()
    }
}

/// A login session: every access token issued from one login carries its id as `sid`, and its
/// refresh tokens form one family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Session id (`sid`), also the refresh-token family id.
    pub id: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The user.
    pub user_id: UserId,
    /// When the login happened.
    pub created_at: DateTime<Utc>,
    /// Absolute end: no refresh extends the session past this.
    pub expires_at: DateTime<Utc>,
    /// When the session was revoked (logout, reuse of a refresh token, user disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A refresh token as stored: its hash only, never the token.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshToken {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// The session (family) it belongs to.
    pub session_id: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Idle end: unused after this, it no longer works.
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshOutcome {
    /// The token was unused (or used within the grace window): it is now used and `next`
    /// replaces it. Carries the session.
    Rotated(Session),
    /// The token had been used before, outside the grace window: the whole family is revoked.
    Reused(Session),
    /// Unknown, expired, or its session is over or revoked.
    Invalid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_one_at_with_text_around_it_and_compare_case_insensitively() {
        let e = Email::parse("  Ann@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Ann@Example.COM");
        assert_eq!(e.key(), "ann@example.com");
        for bad in ["", "ann", "@x", "ann@", "a b@c", "a@b@c"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_names_are_required_and_ids_are_valid_tenant_ids() {
        let t = Tenant::create("Acme", Utc::now()).unwrap();
        assert!(TenantId::parse(t.id.as_str()).is_ok());
        assert!(Tenant::create("  ", Utc::now()).is_err());
    }
}
