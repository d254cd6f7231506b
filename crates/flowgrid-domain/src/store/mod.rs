//! Storage: one small async trait per aggregate, and the backends that implement them.
//!
//! Every call takes the tenant from the verified token (a [`TenantId`]) and every key includes
//! it, so no call can reach another tenant's data. Backends map their own failures to the domain
//! errors: missing → [`Error::NotFound`], stale ETag → [`Error::PreconditionFailed`], duplicate
//! → [`Error::Conflict`], unreachable → [`Error::Unavailable`].

mod agents;
mod identity;
pub mod jobs;

pub use agents::{AgentQuery, AgentStore, AgentVersionSummary, update_agent};
pub use identity::{
    RevocationStore, SessionStore, SigningKeyStore, StoredSigningKey, TenantStore, UserStore,
};
pub use jobs::{Job, JobId, JobQuery, JobStatus, JobStore};

use crate::{Error, Result};

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
