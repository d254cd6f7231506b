//! Sessions and their refresh tokens on Cosmos: the `sessions` container, partition
//! `/tenantId`, TTL on.
//!
//! `session` documents (`id` = the session id; `revokedMs` 0 while live) and `refreshToken`
//! documents (`id` = `rt-<sha256 of the token hash>`, `hash`; `usedMs` 0 while unused) share
//! the tenant's partition; both carry a `ttl` that ends them when they expire. A rotation is one
//! batch: the presented token marked used (If-Match), the session (If-Match, unchanged: a
//! concurrent revoke makes the rotation lose), and the next token; a lost race reads again.
//!
//! Cross-tenant by design (each result names its tenant): the presented refresh token
//! ([`SessionStore::rotate`] knows only its hash, an indexed equality over the whole container)
//! and [`SessionStore::purge_expired`] (a full-container scan on `expiresMs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::document::{
    ATTEMPTS, Attempt, BatchFailure, DocKey, charge, delete_all, document, hashed_id, map_error,
    query_in, query_of, query_partition, read_doc, replace_if_match, retry, run_batch, span, timed,
    to_batch_error, ttl_until, units_of, update_with_retry, write_if_match,
};
use super::{Cosmos, SESSIONS};
use crate::codec::{ms, time};
use azure_data_cosmos::FeedScope;
use azure_data_cosmos::models::TransactionalBatch;
use flowgrid_domain::store::SessionStore;
use flowgrid_domain::{Error, Result};
use flowgrid_domain::{RefreshOutcome, RefreshToken, Session, TenantId, UserId};

const TYPE_SESSION: &str = "session";
const TYPE_REFRESH: &str = "refreshToken";

/// The id of the document of a refresh token, by the token's hash.
pub(super) fn refresh_id(hash: &str) -> String {
    hashed_id("rt", hash)
}

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
document!(SessionDoc, TYPE_SESSION, "session");

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

impl Cosmos {
    /// The session document `id` of `tenant`, if any.
    async fn read_session(&self, tenant: &str, id: &str) -> Result<Option<SessionDoc>> {
        let c = &self.containers().await?.sessions;
        read_doc(c, tenant, id).await
    }

    /// One read-check-write of a rotation.
    async fn rotate_once(
        &self,
        presented: &str,
        next: &RefreshToken,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Result<Attempt<RefreshOutcome>> {
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
                .replace_item(token.id.clone(), &used, replace_if_match(&token.etag))
                .map_err(to_batch_error)?;
        }
        batch = batch
            .replace_item(
                session.id.clone(),
                &session,
                replace_if_match(&session.etag),
            )
            .map_err(to_batch_error)?
            .create_item(refresh_doc(&tenant, &session, next))
            .map_err(to_batch_error)?;
        match run_batch(c, batch).await? {
            Ok(_) => Ok(Attempt::Done(RefreshOutcome::Rotated(live))),
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

    /// Sets `revokedMs` of the session `doc` (just read) unless it is revoked already: the
    /// session as it then stands, `NotFound` when it is gone.
    async fn revoke_session(&self, doc: SessionDoc, now: DateTime<Utc>) -> Result<SessionDoc> {
        let c = &self.containers().await?.sessions;
        let (tenant, id) = (doc.tenant_id.clone(), doc.id.clone());
        update_with_retry(c, &tenant, &id, Some(doc), |current| {
            Ok(current.filter(|d| d.revoked_ms == 0).map(|d| SessionDoc {
                revoked_ms: ms(now),
                ..d.clone()
            }))
        })
        .await?
        .ok_or(Error::NotFound)
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
                Ok(_) => Ok(()),
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
            retry(
                ATTEMPTS,
                || Error::Unavailable("cosmos: the session kept changing during a refresh".into()),
                || self.rotate_once(presented, next, now, grace),
            )
            .await
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
            delete_all(c, ended).await
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
            let docs: Vec<SessionDoc> = query_partition(c, q, tenant.as_str(), usize::MAX).await?;
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
