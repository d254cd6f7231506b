//! Storage: one small async trait per aggregate, and the backends that implement them.
//!
//! Every call takes the tenant from the verified token (a [`TenantId`]) and every key includes
//! it, so no call can reach another tenant's data. Backends map their own failures to the domain
//! errors: missing → [`Error::NotFound`], stale ETag → [`Error::PreconditionFailed`], duplicate
//! → [`Error::Conflict`], unreachable → [`Error::Unavailable`].

mod agents;
pub mod analytics;
pub mod api_requests;
pub mod connections;
mod identity;
pub mod jobs;
pub mod spend;

pub use agents::{
    AgentDocument, AgentQuery, AgentStore, AgentVersionSummary, DueAgent, next_fire,
    record_compiled, update_agent,
};
pub use analytics::AnalyticsStore;
pub use api_requests::{ApiRequestCount, ApiRequestCountStore, PendingCount};
pub use connections::{Connection, ConnectionHealth, ConnectionStore};
pub use identity::{
    RevocationStore, SessionStore, SigningKeyStore, StoredSigningKey, TenantStore, UserStore,
};
pub use jobs::{Job, JobId, JobQuery, JobStatus, JobStore};
pub use spend::SpendStore;

use crate::{Error, Result};

/// A record kept under optimistic concurrency: its ETag is what a conditional replace compares.
pub trait Versioned {
    /// The opaque concurrency token the store set on the last write.
    fn etag(&self) -> &str;
}

/// Read-modify-write of one record with optimistic concurrency, retried on a stale ETag.
///
/// Each attempt `load`s the current record, asks `change` for the next one (`None`: nothing to
/// change, the current record is returned as is; an error is returned at once), and `save`s it
/// conditioned on the ETag it loaded (`save(next, etag)`, a store's `replace`). A save that fails
/// with [`Error::PreconditionFailed`] (someone wrote in between) starts the next attempt; after
/// `attempts` of them that error is returned, for the caller to word (a 409 "try again", or the
/// 412 of a caller's own `If-Match`). Any other error ends it at once.
///
/// ```ignore
/// let job = update_with_retry(
///     5,
///     || jobs.get(&tenant, id),
///     |job| { let mut next = job.clone(); Ok(next.cancel(now)?.then_some(next)) },
///     |next, etag| async move { jobs.replace(&next, &etag).await },
/// ).await?;
/// ```
pub async fn update_with_retry<T, Load, LoadFut, Change, Save, SaveFut>(
    attempts: usize,
    mut load: Load,
    mut change: Change,
    mut save: Save,
) -> Result<T>
where
    T: Versioned,
    Load: FnMut() -> LoadFut,
    LoadFut: Future<Output = Result<T>>,
    Change: FnMut(&T) -> Result<Option<T>>,
    Save: FnMut(T, String) -> SaveFut,
    SaveFut: Future<Output = Result<T>>,
{
    for _ in 0..attempts {
        let current = load().await?;
        let Some(next) = change(&current)? else {
            return Ok(current);
        };
        match save(next, current.etag().to_owned()).await {
            Err(Error::PreconditionFailed) => continue,
            other => return other,
        }
    }
    Err(Error::PreconditionFailed)
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass back as `continuationToken` for the next page; absent on the last page.
    pub continuation_token: Option<String>,
}

/// Page size limits shared by every list endpoint.
pub mod paging {
    /// Page size when the caller gives none.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page size; larger requests are clamped.
    pub const MAX_LIMIT: u32 = 200;

    /// The page size for a requested `limit`: default when absent, clamped to 1..=MAX.
    pub fn limit(requested: Option<u32>) -> u32 {
        requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// Encodes an opaque continuation token.
pub fn encode_token<T: serde::Serialize>(position: &T) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Decodes a continuation token made by [`encode_token`]; a forged or garbled one is a 400.
pub fn decode_token<T: serde::de::DeserializeOwned>(token: &str) -> Result<T> {
    use base64::Engine;
    let bad = || Error::BadRequest("continuationToken is not a token this API issued".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// A precondition on the stored version of a record (from `If-Match`; `If-None-Match` on reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current version.
    Any,
    /// One or more entity tags (weak tags compare by their opaque value).
    Tags(Vec<String>),
}

impl Condition {
    /// Whether `etag` (unquoted) satisfies this condition.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Record {
        value: u32,
        etag: String,
    }

    impl Versioned for Record {
        fn etag(&self) -> &str {
            &self.etag
        }
    }

    /// One record; `interfere` writes behind the caller's back before that many saves.
    struct Cell {
        record: Mutex<Record>,
        interfere: Mutex<u32>,
        saves: Mutex<u32>,
    }

    impl Cell {
        fn new(interfere: u32) -> Cell {
            Cell {
                record: Mutex::new(Record {
                    value: 0,
                    etag: "0".into(),
                }),
                interfere: Mutex::new(interfere),
                saves: Mutex::new(0),
            }
        }

        async fn load(&self) -> Result<Record> {
            Ok(self.record.lock().unwrap().clone())
        }

        async fn save(&self, next: Record, etag: String) -> Result<Record> {
            *self.saves.lock().unwrap() += 1;
            let mut stored = self.record.lock().unwrap();
            let mut interfere = self.interfere.lock().unwrap();
            if *interfere > 0 {
                *interfere -= 1;
                stored.value += 100;
                stored.etag = format!("{}x", stored.etag);
            }
            if stored.etag != etag {
                return Err(Error::PreconditionFailed);
            }
            *stored = Record {
                etag: format!("{}+", stored.etag),
                ..next
            };
            Ok(stored.clone())
        }

        async fn add_one(&self, attempts: usize) -> Result<Record> {
            update_with_retry(
                attempts,
                || self.load(),
                |r| {
                    Ok(Some(Record {
                        value: r.value + 1,
                        ..r.clone()
                    }))
                },
                |next, etag| self.save(next, etag),
            )
            .await
        }

        fn saves(&self) -> u32 {
            *self.saves.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn a_stale_etag_reloads_and_the_change_applies_to_what_is_stored() {
        let cell = Cell::new(2);
        let saved = cell.add_one(5).await.unwrap();
        assert_eq!(
            saved.value, 201,
            "the change applied to the other writers' value"
        );
        assert_eq!(cell.saves(), 3);
    }

    #[tokio::test]
    async fn after_the_last_attempt_the_stale_etag_is_returned() {
        let cell = Cell::new(10);
        assert!(matches!(
            cell.add_one(3).await,
            Err(Error::PreconditionFailed)
        ));
        assert_eq!(cell.saves(), 3, "bounded");
    }

    #[tokio::test]
    async fn no_change_writes_nothing_and_a_refused_change_ends_at_once() {
        let cell = Cell::new(0);
        let same = update_with_retry(3, || cell.load(), |_| Ok(None), |n, e| cell.save(n, e))
            .await
            .unwrap();
        assert_eq!(same.etag, "0");
        let refused = update_with_retry(
            3,
            || cell.load(),
            |_| Err::<Option<Record>, _>(Error::Conflict("no".into())),
            |n, e| cell.save(n, e),
        )
        .await;
        assert!(matches!(refused, Err(Error::Conflict(_))));
        assert_eq!(cell.saves(), 0);
    }
}
