//! What every aggregate module of the Cosmos backend shares: the time limit and error
//! translation of a call ([`timed`], [`map_error`]), the [`Document`] types it stores, point
//! reads and deletes, queries, transactional batches, the one compare-and-swap step
//! ([`update_with_retry`]) and the retry of a read-check-write that lost a race ([`retry`]),
//! request charges, spans and derived ids.
//!
//! Documents decode through the crate's codec ([`crate::codec`]), as SQLite's do.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use azure_core::http::Etag;
use azure_data_cosmos::models::{ResponseHeaders, TransactionalBatch};
use azure_data_cosmos::options::{
    BatchDeleteOptions, BatchReplaceOptions, ItemWriteOptions, Precondition, QueryOptions,
};
use azure_data_cosmos::{ContainerClient, CosmosError, FeedScope, Query};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::keyset::{self, BySortKey};
use flowgrid_domain::store::Page;
use flowgrid_domain::{Error, Result};
use serde_json::json;

/// Attempts of a read-check-write that lost a race (412) before giving up.
pub(super) const ATTEMPTS: usize = 8;

/// Kept a little past its end, so that a clock a little behind never sees a document vanish
/// early: TTL deletes it `TTL_MARGIN_SECS` after it stopped mattering.
pub(super) const TTL_MARGIN_SECS: i64 = 3600;

/// A document type: its `type`, the partition it is in (`tenantId`) and the ETag it was read
/// with. Reads check the first two, so a point read never returns another type's document or
/// another partition's.
pub(super) trait Document: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The value of its `type` field.
    const TYPE: &'static str;
    /// What it is, in errors (`"agent"`).
    const WHAT: &'static str;
    /// Its `type`, as stored.
    fn kind(&self) -> &str;
    /// Its partition key (`tenantId`), as stored.
    fn partition(&self) -> &str;
    /// The raw ETag it was read with (empty on a document not read from Cosmos).
    fn etag(&self) -> &str;
    /// Sets the raw ETag (from a write's response).
    fn set_etag(&mut self, etag: String);
}

/// Implements [`Document`] for a struct with `kind`, `tenant_id` and `etag` fields.
macro_rules! document {
    ($doc:ty, $type:expr, $what:expr) => {
        impl $crate::cosmos::document::Document for $doc {
            const TYPE: &'static str = $type;
            const WHAT: &'static str = $what;
            fn kind(&self) -> &str {
                &self.kind
            }
            fn partition(&self) -> &str {
                &self.tenant_id
            }
            fn etag(&self) -> &str {
                &self.etag
            }
            fn set_etag(&mut self, etag: String) {
                self.etag = etag;
            }
        }
    };
}
pub(super) use document;

/// Just enough of a document to delete it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DocKey {
    pub(super) id: String,
    pub(super) tenant_id: String,
}

/// Only the id of a document.
#[derive(Deserialize)]
pub(super) struct IdOnly {
    pub(super) id: String,
}

/// Cosmos ETags come quoted (`"0000-..."`); the domain keeps the bare value.
pub(super) fn bare(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// The ETag to send back in `If-Match`: exactly what the service gave (real Cosmos quotes
/// its ETags, the emulator does not, and both compare byte for byte).
pub(super) fn raw(etag: &str) -> Etag {
    Etag::from(etag.to_owned())
}

/// The compare step of a compare-and-swap on the caller's ETag: [`Error::PreconditionFailed`]
/// unless `doc` was read with ETag `expected` (bare, as callers hold it).
pub(super) fn require_etag(doc: &impl Document, expected: &str) -> Result<()> {
    if bare(doc.etag()) == expected {
        Ok(())
    } else {
        Err(Error::PreconditionFailed)
    }
}

/// A batch replace conditioned on `etag` (raw).
pub(super) fn replace_if_match(etag: &str) -> Option<BatchReplaceOptions> {
    Some(BatchReplaceOptions::default().with_precondition(Precondition::if_match(raw(etag))))
}

/// A write conditioned on `etag` (raw).
pub(super) fn write_if_match(etag: &str) -> Option<ItemWriteOptions> {
    Some(ItemWriteOptions::default().with_precondition(Precondition::if_match(raw(etag))))
}

/// A batch delete conditioned on `etag` (raw).
pub(super) fn delete_if_match(etag: &str) -> Option<BatchDeleteOptions> {
    Some(BatchDeleteOptions::default().with_precondition(Precondition::if_match(raw(etag))))
}

tokio::task_local! {
    /// The request units of the storage call running in this task (see [`charge`]).
    static CHARGED: Cell<f64>;
}

/// Runs `f`, one storage call, under `limit`: running out of time is `Unavailable`. The call's
/// request charge is counted from zero ([`charge`]).
pub(super) async fn timed<T>(
    what: &str,
    limit: Duration,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, CHARGED.scope(Cell::new(0.0), f))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "cosmos: {what} took longer than {} s",
                limit.as_secs()
            )))
        })
}

/// Translates an SDK error into the domain error of the same meaning.
pub(super) fn map_error(e: CosmosError, doing: &str) -> Error {
    let status = e.status();
    let code = u16::from(status.status_code());
    match code {
        404 => Error::NotFound,
        409 => Error::Conflict("The resource already exists.".into()),
        412 => Error::PreconditionFailed,
        // Throttled even after the driver's retries, timeouts, service errors, a wrong key or a
        // forbidden identity, and transport failures (no status from the wire): Cosmos is not
        // serving us right now.
        401 | 403 | 408 | 429 | 449 => Error::Unavailable(format!("cosmos {doing}: {e}")),
        c if c >= 500 || !e.is_from_wire() => Error::Unavailable(format!("cosmos {doing}: {e}")),
        _ => Error::Internal(format!("cosmos {doing}: {e}")),
    }
}

/// Adds the request units of one request to the call's, and records the sum on the current
/// span (`db.cosmos.request_charge`).
pub(super) fn charge(units: f64) {
    let total = CHARGED
        .try_with(|c| {
            c.set(c.get() + units);
            c.get()
        })
        .unwrap_or(units);
    tracing::Span::current().record("db.cosmos.request_charge", total);
}

/// The request charge of a response.
pub(super) fn units_of(headers: &ResponseHeaders) -> f64 {
    headers.request_charge().map_or(0.0, |r| r.value())
}

/// The span of one storage call on `collection` (`tenant` empty for cross-tenant calls and the
/// fixed partitions').
pub(super) fn span(
    operation: &'static str,
    collection: &'static str,
    tenant: &str,
) -> tracing::Span {
    tracing::info_span!(
        "cosmos",
        db.system = "cosmosdb",
        db.operation = operation,
        db.collection = collection,
        tenant.id = tenant,
        db.cosmos.request_charge = tracing::field::Empty,
    )
}

/// `<prefix>-<sha256 of text, hex>`: the id of a document named by a value that may hold
/// characters Cosmos ids may not (`/`, `\`, `?`, `#`) or be longer than is comfortable.
pub(super) fn hashed_id(prefix: &str, text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// Creation time (milliseconds, shifted to be non-negative, 20 digits) then id: sorts as
/// `(created_at, id)` does, like the SQLite backend's order.
pub(super) fn sort_key_of(created_ms: i64, id: &str) -> String {
    let ms = i128::from(created_ms) + (1i128 << 62);
    format!("{ms:020}|{id}")
}

/// The `ttl` (seconds) of a document that stops mattering at `end`.
pub(super) fn ttl_until(end: DateTime<Utc>) -> i64 {
    (end - Utc::now()).num_seconds().max(0) + TTL_MARGIN_SECS
}

/// Point-reads document `id` of partition `pk`; `None` when absent or not a `D`.
pub(super) async fn read_doc<D: Document>(
    c: &ContainerClient,
    pk: &str,
    id: &str,
) -> Result<Option<D>> {
    match c.read_item(pk.to_owned(), id, None).await {
        Ok(response) => {
            charge(units_of(response.headers()));
            let body: serde_json::Value = response
                .into_model()
                .map_err(|e| Error::Internal(format!("decoding stored {}: {e}", D::WHAT)))?;
            let doc: D = codec::from_value(D::WHAT, body)?;
            Ok((doc.kind() == D::TYPE && doc.partition() == pk).then_some(doc))
        }
        Err(e) if e.status().is_not_found() => Ok(None),
        Err(e) => Err(map_error(e, &format!("reading {}", D::WHAT))),
    }
}

/// Deletes document `id` of partition `pk`; `false` when it was already gone.
pub(super) async fn delete_doc(c: &ContainerClient, pk: &str, id: &str) -> Result<bool> {
    match c.delete_item(pk.to_owned(), id, None).await {
        Ok(response) => {
            charge(units_of(response.headers()));
            Ok(true)
        }
        Err(e) if e.status().is_not_found() => Ok(false),
        Err(e) => Err(map_error(e, "deleting a document")),
    }
}

/// Deletes the documents `keys` names, one by one; how many were still there.
pub(super) async fn delete_all(c: &ContainerClient, keys: Vec<DocKey>) -> Result<u64> {
    let mut n = 0;
    for d in keys {
        if delete_doc(c, &d.tenant_id, &d.id).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// What one attempt of a read-check-write came to.
pub(super) enum Attempt<T> {
    /// Decided.
    Done(T),
    /// Lost a race (another writer got in between): read again.
    Again,
}

/// Runs `attempt` until it is done, at most `attempts` times; `exhausted` when every one lost
/// its race.
pub(super) async fn retry<T, F, Fut>(
    attempts: usize,
    exhausted: impl FnOnce() -> Error,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    for _ in 0..attempts {
        if let Attempt::Done(done) = attempt().await? {
            return Ok(done);
        }
    }
    Err(exhausted())
}

/// The compare-and-swap of one document: reads document `id` of partition `pk` (or starts
/// from `known`, a copy just read), asks `change` what it should become (`None`: leave it as
/// it is), and writes that conditioned on the ETag it was read with (a create when it was
/// absent). A write that lost a race (404, 409, 412) reads again and asks again, up to
/// [`ATTEMPTS`] times. Returns the document as it now stands (`None`: absent and left so); a
/// written one carries its new ETag.
pub(super) async fn update_with_retry<D: Document>(
    c: &ContainerClient,
    pk: &str,
    id: &str,
    known: Option<D>,
    mut change: impl FnMut(Option<&D>) -> Result<Option<D>>,
) -> Result<Option<D>> {
    let mut known = known;
    for _ in 0..ATTEMPTS {
        let current = match known.take() {
            Some(doc) => Some(doc),
            None => read_doc::<D>(c, pk, id).await?,
        };
        let Some(mut next) = change(current.as_ref())? else {
            return Ok(current);
        };
        let written = match &current {
            Some(current) => {
                c.replace_item(pk.to_owned(), id, &next, write_if_match(current.etag()))
                    .await
            }
            None => c.create_item(pk.to_owned(), id, &next, None).await,
        };
        match written {
            Ok(response) => {
                charge(units_of(response.headers()));
                let etag = response.headers().etag().map(|e| {
                    let e: &str = e.as_ref();
                    e.to_owned()
                });
                next.set_etag(etag.unwrap_or_default());
                return Ok(Some(next));
            }
            // Another writer got in between: read again.
            Err(e) if matches!(u16::from(e.status().status_code()), 404 | 409 | 412) => {}
            Err(e) => return Err(map_error(e, &format!("writing {}", D::WHAT))),
        }
    }
    Err(Error::Unavailable(format!(
        "cosmos: the {} kept changing",
        D::WHAT
    )))
}

/// Which operation of a batch failed, and with what status.
pub(super) struct BatchFailure {
    /// Index of the failing operation (`usize::MAX`: the service did not say).
    pub(super) index: usize,
    /// Its HTTP status.
    pub(super) status: u16,
}

/// A batch that ran: the ETag of each operation, or which one failed.
pub(super) type BatchOutcome = std::result::Result<Vec<Option<String>>, BatchFailure>;

/// Runs `batch` in container `c` (charging its units); `Ok(Err(..))` names the operation that
/// failed.
pub(super) async fn run_batch(
    c: &ContainerClient,
    batch: TransactionalBatch,
) -> Result<BatchOutcome> {
    let response = match c.execute_transactional_batch(batch, None).await {
        Ok(r) => r,
        // A failed batch may come back as an error carrying the failing status and no
        // per-operation detail; report it against the first operation that could fail so.
        Err(e) if matches!(u16::from(e.status().status_code()), 404 | 409 | 412) => {
            return Ok(Err(BatchFailure {
                index: usize::MAX,
                status: u16::from(e.status().status_code()),
            }));
        }
        Err(e) => return Err(map_error(e, "running a batch")),
    };
    let units = units_of(response.headers());
    let results = response
        .into_model()
        .map_err(|e| Error::Internal(format!("decoding a batch response: {e}")))?;
    let mut etags = Vec::new();
    for (index, result) in results.results().iter().enumerate() {
        let status = result.status_code();
        if !result.is_success() && status != 424 {
            return Ok(Err(BatchFailure { index, status }));
        }
        etags.push(result.etag().map(bare));
    }
    if results.results().iter().any(|r| !r.is_success()) {
        return Err(Error::Internal("a batch failed without a cause".into()));
    }
    charge(units);
    Ok(Ok(etags))
}

/// The (bare) ETag operation `index` of a batch that ran returned for `what`.
pub(super) fn batch_etag(etags: &[Option<String>], index: usize, what: &str) -> Result<String> {
    etags
        .get(index)
        .cloned()
        .flatten()
        .ok_or_else(|| Error::Internal(format!("the batch returned no ETag for the {what}")))
}

/// A batch that could not be built.
pub(super) fn to_batch_error(e: CosmosError) -> Error {
    Error::Internal(format!("building a batch: {e}"))
}

/// Runs a parameterized query over `scope` of container `c`, returning up to `take` items.
/// The scope is a partition for every query but the few cross-tenant scans (docs/storage.md
/// lists them), which pass [`FeedScope::full_container`].
pub(super) async fn query_in<T: DeserializeOwned + Send + 'static>(
    c: &ContainerClient,
    query: Query,
    scope: FeedScope,
    take: usize,
) -> Result<Vec<T>> {
    let mut pages = c
        .query_items::<T>(query, scope, Some(QueryOptions::default()))
        .await
        .map_err(|e| map_error(e, "querying"))?
        .into_pages();
    let mut items = Vec::new();
    while items.len() < take {
        let Some(page) = pages.next().await else {
            break;
        };
        let page = page.map_err(|e| map_error(e, "querying"))?;
        charge(units_of(page.headers()));
        items.extend(page.into_items());
    }
    items.truncate(take);
    Ok(items)
}

/// Runs a parameterized query in partition `pk` of container `c`.
pub(super) async fn query_partition<T: DeserializeOwned + Send + 'static>(
    c: &ContainerClient,
    query: Query,
    pk: &str,
    take: usize,
) -> Result<Vec<T>> {
    query_in(c, query, FeedScope::partition(pk.to_owned()), take).await
}

/// A newest-first page (by `sortKey`) of the tenant's `D` documents in `c` that pass `filters`
/// (each a fixed condition naming one parameter, and that parameter's value), after the
/// position `after` when it is not the first page. The same keyset paging as SQLite's.
pub(super) async fn newest_first<D: Document, T>(
    c: &ContainerClient,
    tenant: &str,
    filters: Vec<(&'static str, &'static str, serde_json::Value)>,
    after: Option<BySortKey>,
    limit: u32,
    sort_key: impl Fn(&D) -> String,
    item: impl Fn(D) -> T,
) -> Result<Page<T>> {
    // Fixed text fragments only; every value is a parameter.
    let mut text = String::from("SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type");
    let mut params = vec![("@tenant", json!(tenant)), ("@type", json!(D::TYPE))];
    for (condition, name, value) in filters {
        text.push_str(" AND ");
        text.push_str(condition);
        params.push((name, value));
    }
    if let Some(after) = after {
        text.push_str(" AND c.sortKey < @after");
        params.push(("@after", json!(after.s)));
    }
    text.push_str(" ORDER BY c.sortKey DESC");
    let limit = limit as usize;
    let docs: Vec<D> = query_partition(c, query_of(text, params)?, tenant, limit + 1).await?;
    keyset::page(
        docs,
        limit,
        |d| BySortKey { s: sort_key(d) },
        |d| Ok(item(d)),
    )
}

/// Builds a query from fixed text and parameters (values never enter the text).
pub(super) fn query_of(
    text: impl Into<String>,
    params: Vec<(&'static str, serde_json::Value)>,
) -> Result<Query> {
    let mut q = Query::from(text.into());
    for (name, value) in params {
        q = q
            .with_parameter(name, value)
            .map_err(|e| Error::Internal(format!("query parameter: {e}")))?;
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_order_as_creation_time_then_id() {
        assert!(sort_key_of(999, "b") < sort_key_of(1_000, "a"));
        assert!(sort_key_of(-5, "z") < sort_key_of(0, "a"));
        assert!(sort_key_of(1_000, "a") < sort_key_of(1_000, "b"));
        assert!(sort_key_of(99_999_999_999_999, "a") > sort_key_of(1_000, "a"));
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
