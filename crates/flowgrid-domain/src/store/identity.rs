//! Storage traits of the Auth app: tenants, users, sessions with their refresh-token families,
//! the issuer's signing keys and the session revocation denylist.

use chrono::{DateTime, Utc};

use super::Page;
use crate::Result;
use crate::{RefreshOutcome, RefreshToken, Session, Tenant, TenantId, User, UserId};

/// Tenants.
#[async_trait::async_trait]
pub trait TenantStore: Send + Sync {
    /// Stores a new tenant; [`crate::Error::Conflict`] when the id exists.
    async fn insert(&self, tenant: &Tenant) -> Result<()>;
    /// The tenant, or [`crate::Error::NotFound`].
    async fn get(&self, id: &TenantId) -> Result<Tenant>;
}

/// Users, each within one tenant.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new user and returns it with its ETag; [`crate::Error::Conflict`] when the
    /// email is taken in that tenant (case-insensitively).
    async fn insert(&self, user: &User) -> Result<User>;
    /// The user of `tenant`, or [`crate::Error::NotFound`] (also for other tenants' users).
    async fn get(&self, tenant: &TenantId, id: UserId) -> Result<User>;
    /// Every user with this email (lower-cased key) in any tenant, for login.
    async fn find_by_email(&self, email_key: &str) -> Result<Vec<User>>;
    /// The users of `tenant` by id (creation order), `limit` at a time.
    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<User>>;
    /// Replaces the user if its ETag is still `expected_etag` ([`crate::Error::PreconditionFailed`]
    /// otherwise) and returns it with a new ETag.
    async fn replace(&self, user: &User, expected_etag: &str) -> Result<User>;
}

/// Login sessions and their refresh tokens (one family per session).
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session with its first refresh token.
    async fn create(&self, session: &Session, first: &RefreshToken) -> Result<()>;
    /// The session of `tenant`, or [`crate::Error::NotFound`].
    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Session>;
    /// Atomically presents the refresh token with hash `presented`:
    /// - unused, unexpired, session live: marks it used at `now`, stores `next`, `Rotated`;
    /// - used less than `grace` ago (a concurrent refresh): stores `next` too, `Rotated`;
    /// - used longer ago: revokes the session at `now`, `Reused`;
    /// - anything else: `Invalid`.
    ///
    /// `next.session_id` is ignored: the new token joins the presented token's family.
    async fn rotate(
        &self,
        presented: &str,
        next: &RefreshToken,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Result<RefreshOutcome>;
    /// Marks the session revoked at `now` (idempotent); returns it.
    async fn revoke(&self, tenant: &TenantId, id: &str, now: DateTime<Utc>) -> Result<Session>;
    /// Deletes sessions that ended before `now` with their refresh tokens, and refresh tokens
    /// that expired before `now`; returns how many rows went. (Cosmos: TTL does it.)
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Revokes every live session of the user; returns those it revoked.
    async fn revoke_all_of_user(
        &self,
        tenant: &TenantId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>>;
}

/// One of the built-in issuer's signing keys, its private half encrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSigningKey {
    /// Key id (`kid`).
    pub kid: String,
    /// JOSE algorithm (`EdDSA`).
    pub alg: String,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
    /// The private key (PKCS#8), encrypted with the key-encryption key (base64 nonce ‖ ciphertext).
    pub encrypted_private: String,
    /// Which key-encryption key encrypted it (a fingerprint, not the key).
    pub kek_id: String,
    /// When the key was made.
    pub created_at: DateTime<Utc>,
    /// When a newer key replaced it for signing; it stays published for a while.
    pub retired_at: Option<DateTime<Utc>>,
}

/// The built-in issuer's signing keys.
#[async_trait::async_trait]
pub trait SigningKeyStore: Send + Sync {
    /// Stores a new key.
    async fn insert(&self, key: &StoredSigningKey) -> Result<()>;
    /// Every stored key, newest first.
    async fn list(&self) -> Result<Vec<StoredSigningKey>>;
    /// Marks every key but `current` that is not yet retired as retired at `now`.
    async fn retire_all_except(&self, current: &str, now: DateTime<Utc>) -> Result<()>;
    /// Deletes keys retired before `before`; returns how many.
    async fn delete_retired_before(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// The denylist of revoked sessions, read by every app.
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync {
    /// Denies session `sid` until `until` (when its last access token expires).
    async fn revoke(&self, sid: &str, until: DateTime<Utc>) -> Result<()>;
    /// Whether `sid` is denied.
    async fn is_revoked(&self, sid: &str) -> Result<bool>;
    /// Forgets entries whose `until` is before `now`; returns how many.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64>;
}
