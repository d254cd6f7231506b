//! Users on SQLite: table `users` (migration 2), the lower-cased email unique per tenant.

use rusqlite::{TransactionBehavior, params};

use super::{Sqlite, if_taken, load_doc, new_etag, require_etag};
use crate::codec::{from_doc, to_doc};
use crate::keyset::{self, ById};
use flowgrid_domain::Error;
use flowgrid_domain::store::{Page, UserStore};
use flowgrid_domain::{TenantId, User, UserId};

/// The stored user `doc` with its row's ETag.
fn user_from(doc: &str, etag: String) -> flowgrid_domain::Result<User> {
    Ok(User {
        etag,
        ..from_doc("user", doc)?
    })
}

fn email_taken() -> Error {
    Error::Conflict("A user with this email already exists in the tenant.".into())
}

#[async_trait::async_trait]
impl UserStore for Sqlite {
    async fn insert(&self, user: &User) -> flowgrid_domain::Result<User> {
        let mut user = user.clone();
        user.etag = new_etag();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO users (tenant_id, id, email_key, etag, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.tenant_id.as_str(),
                    user.id.to_string(),
                    user.email.key(),
                    user.etag,
                    to_doc("user", &user)?
                ],
            )
            .map_err(|e| if_taken(e, email_taken()))?;
            Ok(user)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: UserId) -> flowgrid_domain::Result<User> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let (doc, etag) = load_doc(conn, "users", tenant.as_str(), &id.to_string())?
                .ok_or(Error::NotFound)?;
            Ok(user_from(&doc, etag)?)
        })
        .await
    }

    async fn find_by_email(&self, email_key: &str) -> flowgrid_domain::Result<Vec<User>> {
        let key = email_key.to_owned();
        self.run(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT doc, etag FROM users WHERE email_key = ?1 ORDER BY tenant_id",
                )?
                .query_map(params![key], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .map(|(doc, etag)| user_from(&doc, etag))
                .collect::<flowgrid_domain::Result<_>>()?)
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> flowgrid_domain::Result<Page<User>> {
        let tenant = tenant.clone();
        let cursor: Option<ById> = keyset::after(continuation_token)?;
        self.run(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT doc, etag, id FROM users WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2)
                     ORDER BY id LIMIT ?3",
                )?
                .query_map(
                    params![tenant.as_str(), cursor.map(|c| c.i), i64::from(limit) + 1],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keyset::page(
                rows,
                limit as usize,
                |(_, _, id)| ById { i: id.clone() },
                |(doc, etag, _)| user_from(&doc, etag),
            )?)
        })
        .await
    }

    async fn replace(&self, user: &User, expected_etag: &str) -> flowgrid_domain::Result<User> {
        let mut user = user.clone();
        user.etag = new_etag();
        let expected = expected_etag.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_etag(&tx, "users", user.tenant_id.as_str(), &user.id.to_string(), &expected)?;
            tx.execute(
                "UPDATE users SET email_key = ?3, etag = ?4, doc = ?5 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    user.tenant_id.as_str(),
                    user.id.to_string(),
                    user.email.key(),
                    user.etag,
                    to_doc("user", &user)?
                ],
            )
            .map_err(|e| if_taken(e, email_taken()))?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }
}
