//! The identity stores on Cosmos: tenants, users, sessions with their refresh tokens, the
//! built-in issuer's signing keys and the session denylist.
//!
//! Containers (all partitioned by `/tenantId`):
//! - `tenants`: one `tenant` document per tenant (`id` = `tenantId` = the tenant id).
//! - `users`: `user` documents (`id` = the user id, `emailKey`, `sortKey` = the id) and
//!   `userEmail` reservations (`id` = `email-<sha256 of the lower-cased email>`), so that emails
//!   are unique per tenant by create-if-absent, in the same batch as the user.
//! - `sessions`: `session` documents (`id` = the session id) and `refreshToken` documents (`id`
//!   = `rt-<sha256 of the token hash>`, `hash`), in the tenant's partition; both carry a `ttl`
//!   that ends them when they expire. A rotation is one batch: the presented token marked used
//!   (If-Match), the session (If-Match, unchanged: a concurrent revoke makes the rotation lose),
//!   and the next token.
//! - `tokens`: what belongs to no tenant, each kind in a fixed partition: signing keys
//!   (`signingKey`, partition `_issuer`) and the denylist (`revokedSession`, partition
//!   `_revoked`, with a `ttl`). Only these fixed partitions exist in this container.
//!
//! Cross-tenant lookups (no tenant in the request, so no tenant filter in the text; each result
//! names its tenant): login by email (`find_by_email`) and the presented refresh token
//! (`rotate` knows only the token's hash) are full-container queries on an indexed equality
//! (`emailKey`, `hash`), and `purge_expired` is a full-container scan on `expiresMs`. See
//! docs/storage.md for why these are queries rather than lookup documents.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::{
    BatchFailure, Cosmos, bare, charge, map_error, query_in, query_of, raw, run_batch, timed,
    units_of,
};
use azure_data_cosmos::models::TransactionalBatch;
use azure_data_cosmos::options::{
    BatchReplaceOptions, ItemReadOptions, ItemWriteOptions, Precondition,
};
use azure_data_cosmos::{ContainerClient, FeedScope, Query};
use flowgrid_domain::store::{
    Page, RevocationStore, SessionStore, SigningKeyStore, StoredSigningKey, TenantStore, UserStore,
    decode_token, encode_token,
};
use flowgrid_domain::{Error, Result};
use flowgrid_domain::{RefreshOutcome, RefreshToken, Session, Tenant, TenantId, User, UserId};

/// Tenants.
pub(super) const TENANTS: &str = "tenants";
/// Users and their email reservations.
pub(super) const USERS: &str = "users";
/// Sessions and their refresh tokens.
pub(super) const SESSIONS: &str = "sessions";
/// Signing keys and the session denylist (fixed partitions).
pub(super) const TOKENS: &str = "tokens";

const TYPE_TENANT: &str = "tenant";
const TYPE_USER: &str = "user";
const TYPE_EMAIL: &str = "userEmail";
const TYPE_SESSION: &str = "session";
const TYPE_REFRESH: &str = "refreshToken";
const TYPE_KEY: &str = "signingKey";
const TYPE_REVOKED: &str = "revokedSession";

/// The partition of the signing keys in `tokens`.
const ISSUER_PARTITION: &str = "_issuer";
/// The partition of the denylist in `tokens`.
const REVOKED_PARTITION: &str = "_revoked";

/// Kept a little past its end, so that a clock a little behind never sees a document vanish
/// early: TTL deletes it `TTL_MARGIN_SECS` after it stopped mattering.
const TTL_MARGIN_SECS: i64 = 3600;

/// Attempts of a read-check-write that lost a race (412) before giving up.
const ATTEMPTS: usize = 8;

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The `ttl` (seconds) of a document that stops mattering at `end`.
fn ttl_until(end: DateTime<Utc>) -> i64 {
    (end - Utc::now()).num_seconds().max(0) + TTL_MARGIN_SECS
}

fn sha_hex(s: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn email_id(email_key: &str) -> String {
    format!("email-{}", sha_hex(email_key))
}

fn refresh_id(hash: &str) -> String {
    format!("rt-{}", sha_hex(hash))
}

fn key_id(kid: &str) -> String {
    format!("kid-{}", sha_hex(kid))
}

fn revoked_id(sid: &str) -> String {
    format!("sid-{}", sha_hex(sid))
}

fn span(operation: &'static str, collection: &'static str, tenant: &str) -> tracing::Span {
    tracing::info_span!(
        "cosmos",
        db.system = "cosmosdb",
        db.operation = operation,
        db.collection = collection,
        tenant.id = tenant,
        db.cosmos.request_charge = tracing::field::Empty,
    )
}

fn to_batch_error(e: azure_data_cosmos::CosmosError) -> Error {
    Error::Internal(format!("building a batch: {e}"))
}

fn email_taken() -> Error {
    Error::Conflict("A user with this email already exists in the tenant.".into())
}

fn if_match(etag: &str) -> Option<BatchReplaceOptions> {
    Some(BatchReplaceOptions::default().with_precondition(Precondition::if_match(raw(etag))))
}

fn write_if_match(etag: &str) -> Option<ItemWriteOptions> {
    Some(ItemWriteOptions::default().with_precondition(Precondition::if_match(raw(etag))))
}

/// Point-reads document `id` of partition `pk`; `None` when absent.
async fn read_doc<T: serde::de::DeserializeOwned>(
    c: &ContainerClient,
    pk: &str,
    id: &str,
) -> Result<Option<T>> {
    match c
        .read_item(pk.to_owned(), id, None::<ItemReadOptions>)
        .await
    {
        Ok(response) => {
            charge(units_of(response.headers()));
            response
                .into_model()
                .map(Some)
                .map_err(|e| Error::Internal(format!("decoding a stored document: {e}")))
        }
        Err(e) if e.status().is_not_found() => Ok(None),
        Err(e) => Err(map_error(e, "reading a document")),
    }
}

/// Deletes document `id` of partition `pk`; `false` when it was already gone.
async fn delete_doc(c: &ContainerClient, pk: &str, id: &str) -> Result<bool> {
    match c.delete_item(pk.to_owned(), id, None).await {
        Ok(response) => {
            charge(units_of(response.headers()));
            Ok(true)
        }
        Err(e) if e.status().is_not_found() => Ok(false),
        Err(e) => Err(map_error(e, "deleting a document")),
    }
}

// ---------------------------------------------------------------------------------------------
// Tenants

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TenantDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    tenant: Tenant,
}

#[async_trait::async_trait]
impl TenantStore for Cosmos {
    async fn insert(&self, tenant: &Tenant) -> Result<()> {
        let id = tenant.id.as_str();
        timed("insert tenant", self.limit(), async {
            let c = &self.containers().await?.tenants;
            let doc = TenantDoc {
                id: id.to_owned(),
                tenant_id: id.to_owned(),
                kind: TYPE_TENANT.into(),
                tenant: tenant.clone(),
            };
            let response = c
                .create_item(id.to_owned(), id, doc, None)
                .await
                .map_err(|e| match map_error(e, "creating a tenant") {
                    Error::Conflict(_) => Error::Conflict("The tenant exists.".into()),
                    other => other,
                })?;
            charge(units_of(response.headers()));
            Ok(())
        })
        .instrument(span("insert", TENANTS, id))
        .await
    }

    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        timed("get tenant", self.limit(), async {
            let c = &self.containers().await?.tenants;
            let doc: TenantDoc = read_doc(c, id.as_str(), id.as_str())
                .await?
                .ok_or(Error::NotFound)?;
            if doc.kind != TYPE_TENANT || doc.tenant_id != id.as_str() {
                return Err(Error::NotFound);
            }
            Ok(doc.tenant)
        })
        .instrument(span("get", TENANTS, id.as_str()))
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Users

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    email_key: String,
    sort_key: String,
    user: User,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmailDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    user_id: String,
    email_key: String,
}

/// Where a user listing page ended.
#[derive(Serialize, Deserialize)]
struct UserCursor {
    i: String,
}

fn user_doc(user: &User) -> UserDoc {
    UserDoc {
        id: user.id.to_string(),
        tenant_id: user.tenant_id.as_str().to_owned(),
        kind: TYPE_USER.into(),
        email_key: user.email.key(),
        sort_key: user.id.to_string(),
        user: user.clone(),
        etag: String::new(),
    }
}

fn email_doc(user: &User) -> EmailDoc {
    EmailDoc {
        id: email_id(&user.email.key()),
        tenant_id: user.tenant_id.as_str().to_owned(),
        kind: TYPE_EMAIL.into(),
        user_id: user.id.to_string(),
        email_key: user.email.key(),
    }
}

fn into_user(doc: UserDoc) -> User {
    let mut user = doc.user;
    user.etag = bare(&doc.etag);
    user
}

impl Cosmos {
    /// The user document (with its raw ETag) of `tenant`, or `NotFound`.
    async fn read_user(&self, tenant: &TenantId, id: UserId) -> Result<UserDoc> {
        let c = &self.containers().await?.users;
        let doc: UserDoc = read_doc(c, tenant.as_str(), &id.to_string())
            .await?
            .ok_or(Error::NotFound)?;
        if doc.kind != TYPE_USER || doc.tenant_id != tenant.as_str() {
            return Err(Error::NotFound);
        }
        Ok(doc)
    }
}

#[async_trait::async_trait]
impl UserStore for Cosmos {
    async fn insert(&self, user: &User) -> Result<User> {
        let tenant = user.tenant_id.as_str();
        timed("insert user", self.limit(), async {
            let batch = TransactionalBatch::new(tenant.to_owned())
                .create_item(email_doc(user))
                .and_then(|b| b.create_item(user_doc(user)))
                .map_err(to_batch_error)?;
            let c = &self.containers().await?.users;
            match run_batch(c, batch).await? {
                Ok((etags, units)) => {
                    charge(units);
                    let mut stored = user.clone();
                    stored.etag = etags.get(1).cloned().flatten().ok_or_else(|| {
                        Error::Internal("the batch returned no ETag for the user".into())
                    })?;
                    Ok(stored)
                }
                Err(BatchFailure {
                    index: 0 | usize::MAX,
                    status: 409,
                }) => Err(email_taken()),
                Err(BatchFailure { status: 409, .. }) => Err(Error::Conflict(
                    "A user with this id already exists.".into(),
                )),
                Err(BatchFailure { status, .. }) => Err(Error::Internal(format!(
                    "creating a user failed with {status}"
                ))),
            }
        })
        .instrument(span("insert", USERS, tenant))
        .await
    }

    async fn get(&self, tenant: &TenantId, id: UserId) -> Result<User> {
        timed("get user", self.limit(), async {
            Ok(into_user(self.read_user(tenant, id).await?))
        })
        .instrument(span("get", USERS, tenant.as_str()))
        .await
    }

    /// Cross-tenant by design: login names no tenant. An indexed equality on `emailKey` over
    /// the whole container; each user found names its tenant.
    async fn find_by_email(&self, email_key: &str) -> Result<Vec<User>> {
        timed("find user by email", self.limit(), async {
            let q = query_of(
                "SELECT * FROM c WHERE c.type = @type AND c.emailKey = @email",
                vec![("@type", json!(TYPE_USER)), ("@email", json!(email_key))],
            )?;
            let c = &self.containers().await?.users;
            let docs: Vec<UserDoc> =
                query_in(c, q, FeedScope::full_container(), usize::MAX).await?;
            let mut users: Vec<User> = docs.into_iter().map(into_user).collect();
            users.sort_by(|a, b| a.tenant_id.as_str().cmp(b.tenant_id.as_str()));
            Ok(users)
        })
        .instrument(span("find_by_email", USERS, ""))
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<User>> {
        let cursor: Option<UserCursor> = continuation_token.map(decode_token).transpose()?;
        let limit = limit as usize;
        timed("list users", self.limit(), async {
            let mut text =
                String::from("SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type");
            let mut params = vec![
                ("@tenant", json!(tenant.as_str())),
                ("@type", json!(TYPE_USER)),
            ];
            if let Some(c) = &cursor {
                text.push_str(" AND c.sortKey > @after");
                params.push(("@after", json!(c.i)));
            }
            text.push_str(" ORDER BY c.sortKey ASC");
            let c = &self.containers().await?.users;
            let docs: Vec<UserDoc> = query_in(
                c,
                query_of(text, params)?,
                FeedScope::partition(tenant.as_str().to_owned()),
                limit + 1,
            )
            .await?;
            let more = docs.len() > limit;
            let docs: Vec<UserDoc> = docs.into_iter().take(limit).collect();
            let continuation_token = match (more, docs.last()) {
                (true, Some(last)) => Some(encode_token(&UserCursor {
                    i: last.sort_key.clone(),
                })),
                _ => None,
            };
            Ok(Page {
                items: docs.into_iter().map(into_user).collect(),
                continuation_token,
            })
        })
        .instrument(span("list", USERS, tenant.as_str()))
        .await
    }

    async fn replace(&self, user: &User, expected_etag: &str) -> Result<User> {
        let tenant = &user.tenant_id;
        timed("replace user", self.limit(), async {
            let current = self.read_user(tenant, user.id).await?;
            if bare(&current.etag) != expected_etag {
                return Err(Error::PreconditionFailed);
            }
            let old_key = current.email_key.clone();
            let renamed = old_key != user.email.key();
            let mut batch = TransactionalBatch::new(tenant.as_str().to_owned());
            if renamed {
                batch = batch.create_item(email_doc(user)).map_err(to_batch_error)?;
            }
            let user_index = usize::from(renamed);
            batch = batch
                .replace_item(user.id.to_string(), user_doc(user), if_match(&current.etag))
                .map_err(to_batch_error)?;
            if renamed {
                batch = batch.delete_item(email_id(&old_key), None);
            }
            let c = &self.containers().await?.users;
            match run_batch(c, batch).await? {
                Ok((etags, units)) => {
                    charge(units);
                    let mut stored = user.clone();
                    stored.etag = etags.get(user_index).cloned().flatten().ok_or_else(|| {
                        Error::Internal("the batch returned no ETag for the user".into())
                    })?;
                    Ok(stored)
                }
                Err(BatchFailure { status: 409, .. }) => Err(email_taken()),
                Err(BatchFailure { status: 412, .. }) => Err(Error::PreconditionFailed),
                Err(BatchFailure { status: 404, .. }) => Err(Error::NotFound),
                Err(BatchFailure { status, .. }) => Err(Error::Internal(format!(
                    "replacing a user failed with {status}"
                ))),
            }
        })
        .instrument(span("replace", USERS, tenant.as_str()))
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions and refresh tokens

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct SessionDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    user_id: String,
    created_ms: i64,
    expires_ms: i64,
    /// 0 while live (so `c.revokedMs = 0` finds the live ones without `IS_NULL`).
    revoked_ms: i64,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct RefreshDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    hash: String,
    session_id: String,
    issued_ms: i64,
    expires_ms: i64,
    /// 0 while unused.
    used_ms: i64,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

/// Just enough of a document to delete it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocKey {
    id: String,
    tenant_id: String,
}

fn session_doc(s: &Session) -> SessionDoc {
    SessionDoc {
        id: s.id.clone(),
        tenant_id: s.tenant_id.as_str().to_owned(),
        kind: TYPE_SESSION.into(),
        user_id: s.user_id.to_string(),
        created_ms: ms(s.created_at),
        expires_ms: ms(s.expires_at),
        revoked_ms: s.revoked_at.map_or(0, ms),
        ttl: ttl_until(s.expires_at),
        etag: String::new(),
    }
}

fn session_from(doc: &SessionDoc) -> Result<Session> {
    Ok(Session {
        id: doc.id.clone(),
        tenant_id: TenantId::parse(&doc.tenant_id)
            .map_err(|_| Error::Internal("stored session has a bad tenant id".into()))?,
        user_id: UserId::parse(&doc.user_id)
            .map_err(|_| Error::Internal("stored session has a bad user id".into()))?,
        created_at: time(doc.created_ms),
        expires_at: time(doc.expires_ms),
        revoked_at: (doc.revoked_ms != 0).then(|| time(doc.revoked_ms)),
    })
}

/// The refresh token document of `token` in `session`'s family, its end capped at the
/// session's.
fn refresh_doc(tenant: &str, session: &SessionDoc, token: &RefreshToken) -> RefreshDoc {
    let expires_ms = ms(token.expires_at).min(session.expires_ms);
    RefreshDoc {
        id: refresh_id(&token.hash),
        tenant_id: tenant.to_owned(),
        kind: TYPE_REFRESH.into(),
        hash: token.hash.clone(),
        session_id: session.id.clone(),
        issued_ms: ms(token.issued_at),
        expires_ms,
        used_ms: 0,
        ttl: ttl_until(time(expires_ms)),
        etag: String::new(),
    }
}

/// What one attempt at a rotation came to.
enum Attempt {
    Done(RefreshOutcome),
    /// Lost a race (412): read again.
    Again,
}

impl Cosmos {
    async fn read_session(&self, tenant: &str, id: &str) -> Result<Option<SessionDoc>> {
        let c = &self.containers().await?.sessions;
        let doc: Option<SessionDoc> = read_doc(c, tenant, id).await?;
        Ok(doc.filter(|d| d.kind == TYPE_SESSION && d.tenant_id == tenant))
    }

    /// One read-check-write of a rotation.
    async fn rotate_once(
        &self,
        presented: &str,
        next: &RefreshToken,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Result<Attempt> {
        let c = &self.containers().await?.sessions;
        // The token names no tenant: an indexed equality on `hash` over the whole container.
        let q = query_of(
            "SELECT * FROM c WHERE c.type = @type AND c.hash = @hash",
            vec![("@type", json!(TYPE_REFRESH)), ("@hash", json!(presented))],
        )?;
        let found: Vec<RefreshDoc> = query_in(c, q, FeedScope::full_container(), 1).await?;
        let Some(token) = found.into_iter().next() else {
            return Ok(Attempt::Done(RefreshOutcome::Invalid));
        };
        let tenant = token.tenant_id.clone();
        let Some(session) = self.read_session(&tenant, &token.session_id).await? else {
            return Ok(Attempt::Done(RefreshOutcome::Invalid));
        };
        let now_ms = ms(now);
        if session.revoked_ms != 0 || session.expires_ms <= now_ms || token.expires_ms <= now_ms {
            return Ok(Attempt::Done(RefreshOutcome::Invalid));
        }
        let live = session_from(&session)?;
        if token.used_ms != 0 && now_ms - token.used_ms >= grace.num_milliseconds() {
            // Reuse outside the grace window: the family is revoked.
            let mut revoked = session.clone();
            revoked.revoked_ms = now_ms;
            return match c
                .replace_item(
                    tenant.clone(),
                    &session.id,
                    &revoked,
                    write_if_match(&session.etag),
                )
                .await
            {
                Ok(response) => {
                    charge(units_of(response.headers()));
                    Ok(Attempt::Done(RefreshOutcome::Reused(Session {
                        revoked_at: Some(now),
                        ..live
                    })))
                }
                Err(e) if e.status().status_code() == 412 => Ok(Attempt::Again),
                Err(e) => Err(map_error(e, "revoking a session")),
            };
        }
        // Rotated: the token marked used (if it was not), the session unchanged but checked,
        // and the successor, in one batch. The operations that can lose a race go first.
        let mut batch = TransactionalBatch::new(tenant.clone());
        if token.used_ms == 0 {
            let mut used = token.clone();
            used.used_ms = now_ms;
            batch = batch
                .replace_item(token.id.clone(), &used, if_match(&token.etag))
                .map_err(to_batch_error)?;
        }
        batch = batch
            .replace_item(session.id.clone(), &session, if_match(&session.etag))
            .map_err(to_batch_error)?
            .create_item(refresh_doc(&tenant, &session, next))
            .map_err(to_batch_error)?;
        match run_batch(c, batch).await? {
            Ok((_, units)) => {
                charge(units);
                Ok(Attempt::Done(RefreshOutcome::Rotated(live)))
            }
            Err(BatchFailure {
                status: 412 | 404, ..
            }) => Ok(Attempt::Again),
            Err(BatchFailure { status: 409, .. }) => {
                Err(Error::Conflict("refresh token hash collision".into()))
            }
            Err(BatchFailure { status, .. }) => Err(Error::Internal(format!(
                "rotating a refresh token failed with {status}"
            ))),
        }
    }

    /// Sets `revokedMs` of the session (If-Match, retried); `None` when it does not exist.
    async fn revoke_session(&self, doc: SessionDoc, now: DateTime<Utc>) -> Result<SessionDoc> {
        let c = &self.containers().await?.sessions;
        let mut doc = doc;
        for _ in 0..ATTEMPTS {
            if doc.revoked_ms != 0 {
                return Ok(doc);
            }
            let mut revoked = doc.clone();
            revoked.revoked_ms = ms(now);
            match c
                .replace_item(
                    doc.tenant_id.clone(),
                    &doc.id,
                    &revoked,
                    write_if_match(&doc.etag),
                )
                .await
            {
                Ok(response) => {
                    charge(units_of(response.headers()));
                    return Ok(revoked);
                }
                Err(e) if e.status().status_code() == 412 => {
                    doc = self
                        .read_session(&doc.tenant_id, &doc.id)
                        .await?
                        .ok_or(Error::NotFound)?;
                }
                Err(e) => return Err(map_error(e, "revoking a session")),
            }
        }
        Err(Error::Unavailable(
            "cosmos: the session kept changing while being revoked".into(),
        ))
    }
}

#[async_trait::async_trait]
impl SessionStore for Cosmos {
    async fn create(&self, session: &Session, first: &RefreshToken) -> Result<()> {
        let tenant = session.tenant_id.as_str();
        timed("create session", self.limit(), async {
            let doc = session_doc(session);
            let batch = TransactionalBatch::new(tenant.to_owned())
                .create_item(refresh_doc(tenant, &doc, first))
                .and_then(|b| b.create_item(&doc))
                .map_err(to_batch_error)?;
            let c = &self.containers().await?.sessions;
            match run_batch(c, batch).await? {
                Ok((_, units)) => {
                    charge(units);
                    Ok(())
                }
                Err(BatchFailure { status: 409, .. }) => Err(Error::Conflict(
                    "The session or its refresh token exists.".into(),
                )),
                Err(BatchFailure { status, .. }) => Err(Error::Internal(format!(
                    "creating a session failed with {status}"
                ))),
            }
        })
        .instrument(span("create", SESSIONS, tenant))
        .await
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Session> {
        timed("get session", self.limit(), async {
            let doc = self
                .read_session(tenant.as_str(), id)
                .await?
                .ok_or(Error::NotFound)?;
            session_from(&doc)
        })
        .instrument(span("get", SESSIONS, tenant.as_str()))
        .await
    }

    async fn rotate(
        &self,
        presented: &str,
        next: &RefreshToken,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Result<RefreshOutcome> {
        timed("rotate", self.limit(), async {
            for _ in 0..ATTEMPTS {
                if let Attempt::Done(outcome) =
                    self.rotate_once(presented, next, now, grace).await?
                {
                    return Ok(outcome);
                }
            }
            Err(Error::Unavailable(
                "cosmos: the session kept changing during a refresh".into(),
            ))
        })
        .instrument(span("rotate", SESSIONS, ""))
        .await
    }

    async fn revoke(&self, tenant: &TenantId, id: &str, now: DateTime<Utc>) -> Result<Session> {
        timed("revoke session", self.limit(), async {
            let doc = self
                .read_session(tenant.as_str(), id)
                .await?
                .ok_or(Error::NotFound)?;
            session_from(&self.revoke_session(doc, now).await?)
        })
        .instrument(span("revoke", SESSIONS, tenant.as_str()))
        .await
    }

    /// On real Cosmos TTL removes these documents by itself (`ttl` = their end plus a margin);
    /// this scan removes them at once, across tenants, and is what the emulator relies on.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        timed("purge sessions", self.limit(), async {
            let c = &self.containers().await?.sessions;
            // Tokens end no later than their session, so an ended session's tokens are
            // expired too and this one condition covers both.
            let q = query_of(
                "SELECT c.id, c.tenantId FROM c WHERE (c.type = @session OR c.type = @token) \
                 AND c.expiresMs < @now",
                vec![
                    ("@session", json!(TYPE_SESSION)),
                    ("@token", json!(TYPE_REFRESH)),
                    ("@now", json!(ms(now))),
                ],
            )?;
            let ended: Vec<DocKey> =
                query_in(c, q, FeedScope::full_container(), usize::MAX).await?;
            let mut n = 0;
            for d in ended {
                if delete_doc(c, &d.tenant_id, &d.id).await? {
                    n += 1;
                }
            }
            Ok(n)
        })
        .instrument(span("purge_expired", SESSIONS, ""))
        .await
    }

    async fn revoke_all_of_user(
        &self,
        tenant: &TenantId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>> {
        timed("revoke sessions of a user", self.limit(), async {
            let c = &self.containers().await?.sessions;
            let q = query_of(
                "SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND c.userId = @user AND c.revokedMs = 0",
                vec![
                    ("@tenant", json!(tenant.as_str())),
                    ("@type", json!(TYPE_SESSION)),
                    ("@user", json!(user.to_string())),
                ],
            )?;
            let docs: Vec<SessionDoc> = query_in(
                c,
                q,
                FeedScope::partition(tenant.as_str().to_owned()),
                usize::MAX,
            )
            .await?;
            let mut revoked = Vec::new();
            for doc in docs {
                let live = doc.expires_ms > ms(now);
                let done = self.revoke_session(doc, now).await?;
                if live && done.revoked_ms == ms(now) {
                    revoked.push(session_from(&done)?);
                }
            }
            Ok(revoked)
        })
        .instrument(span("revoke_all_of_user", SESSIONS, tenant.as_str()))
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Signing keys (partition `_issuer` of `tokens`)

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct KeyDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    kid: String,
    alg: String,
    public_jwk: String,
    encrypted_private: String,
    kek_id: String,
    created_ms: i64,
    /// 0 while current.
    retired_ms: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

fn key_doc(k: &StoredSigningKey) -> KeyDoc {
    KeyDoc {
        id: key_id(&k.kid),
        tenant_id: ISSUER_PARTITION.into(),
        kind: TYPE_KEY.into(),
        kid: k.kid.clone(),
        alg: k.alg.clone(),
        public_jwk: k.public_jwk.clone(),
        encrypted_private: k.encrypted_private.clone(),
        kek_id: k.kek_id.clone(),
        created_ms: ms(k.created_at),
        retired_ms: k.retired_at.map_or(0, ms),
        etag: String::new(),
    }
}

fn key_from(d: KeyDoc) -> StoredSigningKey {
    StoredSigningKey {
        kid: d.kid,
        alg: d.alg,
        public_jwk: d.public_jwk,
        encrypted_private: d.encrypted_private,
        kek_id: d.kek_id,
        created_at: time(d.created_ms),
        retired_at: (d.retired_ms != 0).then(|| time(d.retired_ms)),
    }
}

impl Cosmos {
    /// Every key document, newest first (a handful: the current key and the retired ones
    /// still published).
    async fn key_docs(&self) -> Result<Vec<KeyDoc>> {
        let c = &self.containers().await?.tokens;
        let q: Query = query_of(
            "SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type",
            vec![
                ("@tenant", json!(ISSUER_PARTITION)),
                ("@type", json!(TYPE_KEY)),
            ],
        )?;
        let mut docs: Vec<KeyDoc> = query_in(
            c,
            q,
            FeedScope::partition(ISSUER_PARTITION.to_owned()),
            usize::MAX,
        )
        .await?;
        docs.sort_by(|a, b| (b.created_ms, &b.kid).cmp(&(a.created_ms, &a.kid)));
        Ok(docs)
    }
}

#[async_trait::async_trait]
impl SigningKeyStore for Cosmos {
    async fn insert(&self, key: &StoredSigningKey) -> Result<()> {
        timed("insert signing key", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let doc = key_doc(key);
            let response = c
                .create_item(ISSUER_PARTITION.to_owned(), &doc.id.clone(), doc, None)
                .await
                .map_err(|e| match map_error(e, "storing a signing key") {
                    Error::Conflict(_) => {
                        Error::Conflict("a signing key with this kid exists".into())
                    }
                    other => other,
                })?;
            charge(units_of(response.headers()));
            Ok(())
        })
        .instrument(span("insert", TOKENS, ISSUER_PARTITION))
        .await
    }

    async fn list(&self) -> Result<Vec<StoredSigningKey>> {
        timed("list signing keys", self.limit(), async {
            Ok(self.key_docs().await?.into_iter().map(key_from).collect())
        })
        .instrument(span("list", TOKENS, ISSUER_PARTITION))
        .await
    }

    async fn retire_all_except(&self, current: &str, now: DateTime<Utc>) -> Result<()> {
        timed("retire signing keys", self.limit(), async {
            let c = &self.containers().await?.tokens;
            for doc in self.key_docs().await? {
                if doc.kid == current || doc.retired_ms != 0 {
                    continue;
                }
                let mut retired = doc.clone();
                retired.retired_ms = ms(now);
                match c
                    .replace_item(
                        ISSUER_PARTITION.to_owned(),
                        &doc.id,
                        &retired,
                        write_if_match(&doc.etag),
                    )
                    .await
                {
                    Ok(response) => charge(units_of(response.headers())),
                    // Changed or deleted by another instance's rotation meanwhile: its write
                    // stands.
                    Err(e) if matches!(u16::from(e.status().status_code()), 404 | 412) => {}
                    Err(e) => return Err(map_error(e, "retiring a signing key")),
                }
            }
            Ok(())
        })
        .instrument(span("retire_all_except", TOKENS, ISSUER_PARTITION))
        .await
    }

    async fn delete_retired_before(&self, before: DateTime<Utc>) -> Result<u64> {
        timed("delete retired signing keys", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let mut n = 0;
            for doc in self.key_docs().await? {
                if doc.retired_ms != 0
                    && doc.retired_ms < ms(before)
                    && delete_doc(c, ISSUER_PARTITION, &doc.id).await?
                {
                    n += 1;
                }
            }
            Ok(n)
        })
        .instrument(span("delete_retired_before", TOKENS, ISSUER_PARTITION))
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// The session denylist (partition `_revoked` of `tokens`)

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct RevokedDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    sid: String,
    until_ms: i64,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

#[async_trait::async_trait]
impl RevocationStore for Cosmos {
    async fn revoke(&self, sid: &str, until: DateTime<Utc>) -> Result<()> {
        timed("deny a session", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let id = revoked_id(sid);
            let wanted = RevokedDoc {
                id: id.clone(),
                tenant_id: REVOKED_PARTITION.into(),
                kind: TYPE_REVOKED.into(),
                sid: sid.to_owned(),
                until_ms: ms(until),
                ttl: ttl_until(until),
                etag: String::new(),
            };
            for _ in 0..ATTEMPTS {
                let existing: Option<RevokedDoc> = read_doc(c, REVOKED_PARTITION, &id).await?;
                let result = match existing {
                    // Already denied at least that long: keep the later end.
                    Some(e) if e.until_ms >= wanted.until_ms => return Ok(()),
                    Some(e) => {
                        c.replace_item(
                            REVOKED_PARTITION.to_owned(),
                            &id,
                            &wanted,
                            write_if_match(&e.etag),
                        )
                        .await
                    }
                    None => {
                        c.create_item(REVOKED_PARTITION.to_owned(), &id, &wanted, None)
                            .await
                    }
                };
                match result {
                    Ok(response) => {
                        charge(units_of(response.headers()));
                        return Ok(());
                    }
                    Err(e) if matches!(u16::from(e.status().status_code()), 404 | 409 | 412) => {}
                    Err(e) => return Err(map_error(e, "denying a session")),
                }
            }
            Err(Error::Unavailable(
                "cosmos: the denylist entry kept changing".into(),
            ))
        })
        .instrument(span("revoke", TOKENS, REVOKED_PARTITION))
        .await
    }

    async fn is_revoked(&self, sid: &str) -> Result<bool> {
        timed("check the denylist", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let doc: Option<RevokedDoc> = read_doc(c, REVOKED_PARTITION, &revoked_id(sid)).await?;
            Ok(doc.is_some_and(|d| d.kind == TYPE_REVOKED && d.sid == sid))
        })
        .instrument(span("is_revoked", TOKENS, REVOKED_PARTITION))
        .await
    }

    /// TTL removes entries on real Cosmos (`ttl` = their end plus a margin); this removes the
    /// ended ones at once.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        timed("purge the denylist", self.limit(), async {
            let c = &self.containers().await?.tokens;
            let q = query_of(
                "SELECT c.id, c.tenantId FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND c.untilMs < @now",
                vec![
                    ("@tenant", json!(REVOKED_PARTITION)),
                    ("@type", json!(TYPE_REVOKED)),
                    ("@now", json!(ms(now))),
                ],
            )?;
            let ended: Vec<DocKey> = query_in(
                c,
                q,
                FeedScope::partition(REVOKED_PARTITION.to_owned()),
                usize::MAX,
            )
            .await?;
            let mut n = 0;
            for d in ended {
                if delete_doc(c, &d.tenant_id, &d.id).await? {
                    n += 1;
                }
            }
            Ok(n)
        })
        .instrument(span("purge_expired", TOKENS, REVOKED_PARTITION))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_valid_cosmos_ids_whatever_the_input() {
        for id in [
            email_id("a/b\\c?d#e@x"),
            refresh_id("a/b"),
            key_id("k/1"),
            revoked_id("s#1"),
        ] {
            assert!(!id.contains(['/', '\\', '?', '#']), "{id}");
            assert!(id.len() < 80, "{id}");
        }
    }

    #[test]
    fn ttls_cover_the_remaining_life_plus_a_margin_and_are_never_negative() {
        let past = Utc::now() - chrono::Duration::days(1);
        assert_eq!(ttl_until(past), TTL_MARGIN_SECS);
        let later = Utc::now() + chrono::Duration::seconds(100);
        let ttl = ttl_until(later);
        assert!((TTL_MARGIN_SECS + 98..=TTL_MARGIN_SECS + 100).contains(&ttl));
    }
}
