//! Keyset paging, the same on both backends: a listing query asks for one row more than the
//! page holds, in a fixed order; the page is the first `limit` rows, and when there was one
//! more, the continuation token (opaque to callers, base64 of JSON) names where the last item
//! ended so that the next query starts after it. Stable under concurrent inserts; a forged
//! token is a 400 ([`decode_token`]).
//!
//! The positions below are the tokens' contents; their field names are what tokens already
//! handed out hold, so they must not change.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use flowgrid_domain::Result;
use flowgrid_domain::store::{Page, decode_token, encode_token};

/// Newest first on SQLite: `(created_ms, id)` of the last item (agents, jobs).
#[derive(Serialize, Deserialize)]
pub(crate) struct ByCreated {
    pub(crate) c: i64,
    pub(crate) i: String,
}

/// Newest first on Cosmos: the `sortKey` of the last item (agents, jobs).
#[derive(Serialize, Deserialize)]
pub(crate) struct BySortKey {
    pub(crate) s: String,
}

/// In id order: the id of the last item (users).
#[derive(Serialize, Deserialize)]
pub(crate) struct ById {
    pub(crate) i: String,
}

/// Newest version first: the version number of the last item (an agent's history).
#[derive(Serialize, Deserialize)]
pub(crate) struct ByVersion {
    pub(crate) v: u32,
}

/// The position a continuation token names; `None` for the first page.
pub(crate) fn after<K: DeserializeOwned>(continuation_token: Option<&str>) -> Result<Option<K>> {
    continuation_token.map(decode_token).transpose()
}

/// One page from the rows of a query that asked for `limit + 1`: the first `limit` rows become
/// the items (`item`), and when there was one more, the token names the position of the last
/// of them (`key`).
pub(crate) fn page<R, T, K: Serialize>(
    mut rows: Vec<R>,
    limit: usize,
    key: impl Fn(&R) -> K,
    item: impl FnMut(R) -> Result<T>,
) -> Result<Page<T>> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let continuation_token = if more {
        rows.last().map(|last| encode_token(&key(last)))
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(item).collect::<Result<_>>()?,
        continuation_token,
    })
}
