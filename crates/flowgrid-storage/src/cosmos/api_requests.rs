//! Pending API request counts on Cosmos: the `requestCounts` container, one logical partition
//! per app (`tenantId` = `_app:<app>`, a value no tenant id can take: tenant ids have no `:`),
//! so an app's listing is a single-partition query ordered by minute, whichever instance wrote
//! the rows. Only these documents live in the container.
//!
//! - `apiRequestCount`: `id` = `c-<sha256 of the key>` (routes hold `/`), created, so a
//!   repeated write of a key is a 409 and changes nothing; marked sent by a replace; deleted by
//!   id.
//!
//! Writes go in transactional batches of up to 100 rows (one partition), each batch with its
//! own time limit, so a timer run over a thousand rows costs tens of requests, not thousands.
//! When one of a batch's rows fails (a key already written, a row another run deleted), its
//! rows are redone one by one, where a 409 or a 404 is no error; each step is idempotent, so
//! this holds whether the batch changed nothing (Cosmos: batches are atomic) or some of it (the
//! local emulator does not roll back).

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use azure_data_cosmos::models::TransactionalBatch;

use super::document::{
    charge, delete_doc, document, hashed_id, map_error, query_of, query_partition, read_doc,
    run_batch, span, timed, to_batch_error, units_of, write_if_match,
};
use super::{Cosmos, REQUEST_COUNTS};
use crate::codec::{ms, time};
use flowgrid_domain::store::api_requests::MAX_PENDING;
use flowgrid_domain::store::{ApiRequestCount, ApiRequestCountStore, PendingCount};
use flowgrid_domain::{Result, TenantId};

const TYPE_COUNT: &str = "apiRequestCount";

/// The most operations of one transactional batch.
const BATCH_LIMIT: usize = 100;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    app: String,
    instance: String,
    tenant: String,
    minute_ms: i64,
    route: String,
    status: u16,
    count: u64,
    sent: bool,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(CountDoc, TYPE_COUNT, "API request count");

/// The partition of `app`'s counts.
fn partition(app: &str) -> String {
    format!("_app:{app}")
}

fn doc_id(c: &ApiRequestCount) -> String {
    hashed_id("c", &c.key())
}

fn doc_of(c: &ApiRequestCount) -> CountDoc {
    CountDoc {
        id: doc_id(c),
        tenant_id: partition(&c.app),
        kind: TYPE_COUNT.into(),
        app: c.app.clone(),
        instance: c.instance.clone(),
        tenant: c.tenant.as_str().to_owned(),
        minute_ms: ms(c.minute),
        route: c.route.clone(),
        status: c.status,
        count: c.count,
        sent: false,
        etag: String::new(),
    }
}

/// `counts` in chunks of one app's rows (one partition), at most [`BATCH_LIMIT`] each.
fn chunks(counts: &[ApiRequestCount]) -> Vec<(String, Vec<&ApiRequestCount>)> {
    let mut out: Vec<(String, Vec<&ApiRequestCount>)> = Vec::new();
    for c in counts {
        let pk = partition(&c.app);
        match out.last_mut() {
            Some((last, rows)) if *last == pk && rows.len() < BATCH_LIMIT => rows.push(c),
            _ => out.push((pk, vec![c])),
        }
    }
    out
}

impl Cosmos {
    /// Runs `batch` in the `requestCounts` container; whether every operation succeeded.
    async fn count_batch(&self, batch: TransactionalBatch) -> Result<bool> {
        let c = &self.containers().await?.request_counts;
        Ok(run_batch(c, batch).await?.is_ok())
    }

    /// Creates the rows of `rows` one by one; a key already there is left as it is.
    async fn put_one_by_one(&self, rows: &[&ApiRequestCount]) -> Result<()> {
        let c = &self.containers().await?.request_counts;
        for count in rows {
            let doc = doc_of(count);
            let (pk, id) = (doc.tenant_id.clone(), doc.id.clone());
            match c.create_item(pk, &id, doc, None).await {
                Ok(response) => charge(units_of(response.headers())),
                Err(e) if e.status().is_conflict() => {}
                Err(e) => return Err(map_error(e, "storing an API request count")),
            }
        }
        Ok(())
    }

    /// Marks the stored rows of `rows` sent one by one (read, then replace on that ETag).
    async fn mark_one_by_one(&self, rows: &[&ApiRequestCount]) -> Result<()> {
        let c = &self.containers().await?.request_counts;
        for count in rows {
            let (pk, id) = (partition(&count.app), doc_id(count));
            let Some(mut doc) = read_doc::<CountDoc>(c, &pk, &id).await? else {
                continue;
            };
            if doc.sent {
                continue;
            }
            doc.sent = true;
            let etag = doc.etag.clone();
            match c.replace_item(pk, &id, doc, write_if_match(&etag)).await {
                Ok(response) => charge(units_of(response.headers())),
                // Deleted or changed meanwhile (another run marked it): nothing to mark.
                Err(e) if matches!(u16::from(e.status().status_code()), 404 | 412) => {}
                Err(e) => return Err(map_error(e, "marking an API request count sent")),
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ApiRequestCountStore for Cosmos {
    async fn put_counts(&self, counts: &[ApiRequestCount]) -> Result<()> {
        for (pk, rows) in chunks(counts) {
            timed("store API request counts", self.limit(), async {
                let mut batch = TransactionalBatch::new(pk);
                for count in &rows {
                    batch = batch.create_item(doc_of(count)).map_err(to_batch_error)?;
                }
                if !self.count_batch(batch).await? {
                    self.put_one_by_one(&rows).await?;
                }
                Ok(())
            })
            .instrument(span("put_counts", REQUEST_COUNTS, ""))
            .await?;
        }
        Ok(())
    }

    async fn pending_counts(&self, app: &str, limit: u32) -> Result<Vec<PendingCount>> {
        let limit = limit.clamp(1, MAX_PENDING) as usize;
        timed("read API request counts", self.limit(), async {
            let c = &self.containers().await?.request_counts;
            let pk = partition(app);
            // `c.tenantId` in the text too: the emulator ignores the partition scope.
            let q = query_of(
                "SELECT * FROM c WHERE c.tenantId = @pk AND c.type = @type ORDER BY c.minuteMs ASC",
                vec![("@pk", json!(pk)), ("@type", json!(TYPE_COUNT))],
            )?;
            let docs: Vec<CountDoc> = query_partition(c, q, &pk, limit).await?;
            docs.into_iter()
                .map(|d| {
                    Ok(PendingCount {
                        count: ApiRequestCount {
                            app: d.app,
                            instance: d.instance,
                            tenant: TenantId::parse(&d.tenant)?,
                            minute: time(d.minute_ms),
                            route: d.route,
                            status: d.status,
                            count: d.count,
                        },
                        sent: d.sent,
                    })
                })
                .collect()
        })
        .instrument(span("pending_counts", REQUEST_COUNTS, ""))
        .await
    }

    async fn mark_counts_sent(&self, counts: &[ApiRequestCount]) -> Result<()> {
        for (pk, rows) in chunks(counts) {
            timed("mark API request counts sent", self.limit(), async {
                let mut batch = TransactionalBatch::new(pk);
                for count in &rows {
                    let mut doc = doc_of(count);
                    doc.sent = true;
                    batch = batch
                        .replace_item(doc.id.clone(), doc, None)
                        .map_err(to_batch_error)?;
                }
                if !self.count_batch(batch).await? {
                    self.mark_one_by_one(&rows).await?;
                }
                Ok(())
            })
            .instrument(span("mark_counts_sent", REQUEST_COUNTS, ""))
            .await?;
        }
        Ok(())
    }

    async fn delete_counts(&self, counts: &[ApiRequestCount]) -> Result<()> {
        for (pk, rows) in chunks(counts) {
            timed("delete API request counts", self.limit(), async {
                let mut batch = TransactionalBatch::new(pk.clone());
                for count in &rows {
                    batch = batch.delete_item(doc_id(count), None);
                }
                if !self.count_batch(batch).await? {
                    let c = &self.containers().await?.request_counts;
                    for count in &rows {
                        delete_doc(c, &pk, &doc_id(count)).await?;
                    }
                }
                Ok(())
            })
            .instrument(span("delete_counts", REQUEST_COUNTS, ""))
            .await?;
        }
        Ok(())
    }
}
