//! Users on Cosmos: the `users` container, partition `/tenantId`.
//!
//! Two document types share the tenant's partition: `user` (`id` = the user id, `emailKey`,
//! `sortKey` = the id, so listing pages by id as SQLite does) and `userEmail`, the reservation
//! of a lower-cased email (`id` = `email-<sha256 of it>`), so that emails are unique per tenant
//! by create-if-absent, in the same batch as the user. A create is one batch (reservation,
//! user); an email change is one batch (new reservation, If-Match replace of the user, delete
//! of the old reservation).
//!
//! Login by email ([`UserStore::find_by_email`]) names no tenant: it is a full-container query
//! on an indexed equality (`emailKey`); docs/storage.md says why it is not a lookup document.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::document::{
    BatchFailure, bare, batch_etag, document, hashed_id, query_in, query_of, query_partition,
    read_doc, replace_if_match, require_etag, run_batch, span, timed, to_batch_error,
};
use super::{Cosmos, USERS};
use crate::keyset::{self, ById};
use azure_data_cosmos::FeedScope;
use azure_data_cosmos::models::TransactionalBatch;
use flowgrid_domain::store::{Page, UserStore};
use flowgrid_domain::{Error, Result};
use flowgrid_domain::{TenantId, User, UserId};

const TYPE_USER: &str = "user";
const TYPE_EMAIL: &str = "userEmail";

/// The reservation id of a lower-cased email.
pub(super) fn email_id(email_key: &str) -> String {
    hashed_id("email", email_key)
}

fn email_taken() -> Error {
    Error::Conflict("A user with this email already exists in the tenant.".into())
}

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
document!(UserDoc, TYPE_USER, "user");

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
        read_doc(c, tenant.as_str(), &id.to_string())
            .await?
            .ok_or(Error::NotFound)
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
                Ok(etags) => Ok(User {
                    etag: batch_etag(&etags, 1, "user")?,
                    ..user.clone()
                }),
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
        let cursor: Option<ById> = keyset::after(continuation_token)?;
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
            let docs: Vec<UserDoc> =
                query_partition(c, query_of(text, params)?, tenant.as_str(), limit + 1).await?;
            keyset::page(
                docs,
                limit,
                |d| ById {
                    i: d.sort_key.clone(),
                },
                |d| Ok(into_user(d)),
            )
        })
        .instrument(span("list", USERS, tenant.as_str()))
        .await
    }

    async fn replace(&self, user: &User, expected_etag: &str) -> Result<User> {
        let tenant = &user.tenant_id;
        timed("replace user", self.limit(), async {
            let current = self.read_user(tenant, user.id).await?;
            require_etag(&current, expected_etag)?;
            let old_key = current.email_key.clone();
            let renamed = old_key != user.email.key();
            let mut batch = TransactionalBatch::new(tenant.as_str().to_owned());
            if renamed {
                batch = batch.create_item(email_doc(user)).map_err(to_batch_error)?;
            }
            let user_index = usize::from(renamed);
            batch = batch
                .replace_item(
                    user.id.to_string(),
                    user_doc(user),
                    replace_if_match(&current.etag),
                )
                .map_err(to_batch_error)?;
            if renamed {
                batch = batch.delete_item(email_id(&old_key), None);
            }
            let c = &self.containers().await?.users;
            match run_batch(c, batch).await? {
                Ok(etags) => Ok(User {
                    etag: batch_etag(&etags, user_index, "user")?,
                    ..user.clone()
                }),
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
