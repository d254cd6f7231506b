//! Jobs on Cosmos: the `jobs` container, partition `/tenantId`.
//!
//! Two document types share the tenant's partition:
//! - `job`: the job (`id` = the job id), with the fields queries filter on copied to the top
//!   (`agentId`, `status`, `createdMs`, `updatedMs`, `leaseMs`) and `sortKey` (creation time
//!   then id, fixed width), so one `ORDER BY` gives SQLite's `created_ms, id` order;
//! - `jobKey`: the reservation of an `Idempotency-Key` (`id` = `key-<sha256 of the key>`),
//!   naming the job that holds it and when it was taken.
//!
//! A create with a key is one transactional batch: the reservation (create-if-absent, or an
//! If-Match replace of a reservation older than the window) then the job. Two concurrent
//! submissions with one key cannot both store a job: the loser's reservation answers 409 or
//! 412, it reads the winner's reservation again and returns that job. State changes are an
//! If-Match replace of the job document, so exactly one of two concurrent claims wins.
//!
//! The reaper's scan ([`JobStore::stale`]) is the one cross-tenant query: a full-container
//! query filtered in its text by `type`, `status` and the lease/update times, which on real
//! Cosmos fans out over the physical partitions. It runs once a minute and returns few rows;
//! every row carries its `tenantId`, and the reaper then works on each job in its partition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::{
    BatchFailure, Cosmos, bare, charge, map_error, query_in, query_of, raw, run_batch, timed,
    units_of,
};
use azure_data_cosmos::models::TransactionalBatch;
use azure_data_cosmos::options::{BatchReplaceOptions, ItemWriteOptions, Precondition};
use azure_data_cosmos::{FeedScope, Query};
use flowgrid_domain::store::jobs::{
    AgentRunStats, Created, IDEMPOTENCY_WINDOW_SECS, Job, JobId, JobQuery, JobStatus, JobStore,
    StaleJob,
};
use flowgrid_domain::store::{Page, decode_token, encode_token};
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_domain::{Error, Result};

/// The container's name.
pub(super) const CONTAINER: &str = "jobs";

const TYPE_JOB: &str = "job";
const TYPE_KEY: &str = "jobKey";

/// How many times a create retries after losing a race for its idempotency key.
const CREATE_ATTEMPTS: usize = 5;

/// A job.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    agent_id: String,
    status: String,
    created_ms: i64,
    updated_ms: i64,
    /// The lease end; 0 when there is none, so `leaseMs < @now` also finds a running job
    /// without a lease (SQLite: `lease_ms IS NULL OR lease_ms < ?`).
    lease_ms: i64,
    sort_key: String,
    job: Job,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

/// An idempotency-key reservation.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    job_id: String,
    created_ms: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}

/// Projection of a job for counts and scans.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobRow {
    #[serde(default)]
    id: String,
    #[serde(default)]
    tenant_id: String,
    status: String,
    #[serde(default)]
    created_ms: i64,
    #[serde(default)]
    sort_key: String,
}

/// Where a listing page ended: the `sortKey` of its last job.
#[derive(Serialize, Deserialize)]
struct JobCursor {
    s: String,
}

fn job_doc(job: &Job) -> JobDoc {
    let mut stored = job.clone();
    stored.etag = String::new();
    JobDoc {
        id: job.id.to_string(),
        tenant_id: job.tenant_id.as_str().to_owned(),
        kind: TYPE_JOB.into(),
        agent_id: job.agent_id.to_string(),
        status: job.status.as_str().into(),
        created_ms: job.created_at.timestamp_millis(),
        updated_ms: job.updated_at.timestamp_millis(),
        lease_ms: job.lease_until.map_or(0, |t| t.timestamp_millis()),
        sort_key: sort_key_of(job.created_at.timestamp_millis(), &job.id.to_string()),
        job: stored,
        etag: String::new(),
    }
}

/// Creation time (milliseconds, shifted to be non-negative, 20 digits) then id.
fn sort_key_of(created_ms: i64, id: &str) -> String {
    let ms = i128::from(created_ms) + (1i128 << 62);
    format!("{ms:020}|{id}")
}

/// The reservation id of an idempotency key: a hash, since keys may hold characters Cosmos ids
/// may not.
fn key_id(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("key-{hex}")
}

fn into_job(doc: JobDoc) -> Job {
    let mut job = doc.job;
    job.etag = bare(&doc.etag);
    job
}

fn span(operation: &'static str, tenant: Option<&TenantId>) -> tracing::Span {
    tracing::info_span!(
        "cosmos",
        db.system = "cosmosdb",
        db.operation = operation,
        db.collection = CONTAINER,
        tenant.id = tenant.map(|t| t.as_str().to_owned()).unwrap_or_default(),
        db.cosmos.request_charge = tracing::field::Empty,
    )
}

fn to_batch_error(e: azure_data_cosmos::CosmosError) -> Error {
    Error::Internal(format!("building a batch: {e}"))
}

fn job_exists() -> Error {
    Error::Conflict("A job with this id already exists.".into())
}

impl Cosmos {
    /// The job, the raw ETag of its document, and the request charge.
    async fn read_job(&self, tenant: &TenantId, id: &str) -> Result<(Job, String, f64)> {
        let c = &self.containers().await?.jobs;
        let response = c
            .read_item(tenant.as_str().to_owned(), id, None)
            .await
            .map_err(|e| map_error(e, "reading a job"))?;
        let units = units_of(response.headers());
        let doc: JobDoc = response
            .into_model()
            .map_err(|e| Error::Internal(format!("decoding a stored job: {e}")))?;
        if doc.kind != TYPE_JOB || doc.tenant_id != tenant.as_str() {
            return Err(Error::NotFound);
        }
        let raw_etag = doc.etag.clone();
        Ok((into_job(doc), raw_etag, units))
    }

    /// The reservation of `key` in the tenant's partition, if any.
    async fn read_key(&self, tenant: &TenantId, key: &str) -> Result<Option<KeyDoc>> {
        let c = &self.containers().await?.jobs;
        match c
            .read_item(tenant.as_str().to_owned(), &key_id(key), None)
            .await
        {
            Ok(response) => {
                charge(units_of(response.headers()));
                let doc: KeyDoc = response.into_model().map_err(|e| {
                    Error::Internal(format!("decoding an idempotency reservation: {e}"))
                })?;
                Ok((doc.kind == TYPE_KEY && doc.tenant_id == tenant.as_str()).then_some(doc))
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(map_error(e, "reading an idempotency reservation")),
        }
    }

    /// Runs a query in the tenant's partition of the jobs container.
    async fn job_query<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        q: Query,
        tenant: &TenantId,
        take: usize,
    ) -> Result<Vec<T>> {
        let c = &self.containers().await?.jobs;
        query_in(c, q, FeedScope::partition(tenant.as_str().to_owned()), take).await
    }

    /// Stores a job without an idempotency key.
    async fn create_plain(&self, job: &Job) -> Result<Created> {
        let c = &self.containers().await?.jobs;
        let response = c
            .create_item(
                job.tenant_id.as_str().to_owned(),
                &job.id.to_string(),
                job_doc(job),
                None,
            )
            .await
            .map_err(|e| match map_error(e, "creating a job") {
                Error::Conflict(_) => job_exists(),
                other => other,
            })?;
        charge(units_of(response.headers()));
        let etag = response
            .headers()
            .etag()
            .map(|e| bare(e.as_ref()))
            .ok_or_else(|| Error::Internal("the create returned no ETag".into()))?;
        let mut stored = job.clone();
        stored.etag = etag;
        Ok(Created::New(stored))
    }

    /// One attempt at storing a job with idempotency key `key`; `None`: lost a race for the
    /// key, try again.
    async fn create_keyed(&self, job: &Job, key: &str) -> Result<Option<Created>> {
        let tenant = &job.tenant_id;
        let window_start = job.created_at.timestamp_millis() - IDEMPOTENCY_WINDOW_SECS * 1000;
        let existing = self.read_key(tenant, key).await?;
        if let Some(reservation) = &existing
            && reservation.created_ms >= window_start
        {
            match self.read_job(tenant, &reservation.job_id).await {
                Ok((found, _, _)) => return Ok(Some(Created::Existing(found))),
                // The job the key named is gone: the key is free again.
                Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let reservation = KeyDoc {
            id: key_id(key),
            tenant_id: tenant.as_str().to_owned(),
            kind: TYPE_KEY.into(),
            job_id: job.id.to_string(),
            created_ms: job.created_at.timestamp_millis(),
            etag: String::new(),
        };
        let batch = TransactionalBatch::new(tenant.as_str().to_owned());
        let batch = match &existing {
            // An old reservation: take it over, conditioned on it not having moved.
            Some(old) => batch
                .replace_item(
                    reservation.id.clone(),
                    &reservation,
                    Some(
                        BatchReplaceOptions::default()
                            .with_precondition(Precondition::if_match(raw(&old.etag))),
                    ),
                )
                .map_err(to_batch_error)?,
            None => batch.create_item(&reservation).map_err(to_batch_error)?,
        };
        let batch = batch.create_item(job_doc(job)).map_err(to_batch_error)?;
        let c = &self.containers().await?.jobs;
        match run_batch(c, batch).await? {
            Ok((etags, units)) => {
                charge(units);
                let mut stored = job.clone();
                stored.etag = etags.get(1).cloned().flatten().ok_or_else(|| {
                    Error::Internal("the batch returned no ETag for the job".into())
                })?;
                Ok(Some(Created::New(stored)))
            }
            // The reservation was taken or changed meanwhile: read it again.
            Err(BatchFailure {
                index: 0 | usize::MAX,
                status: 409 | 412 | 404,
            }) => Ok(None),
            Err(BatchFailure { status: 409, .. }) => Err(job_exists()),
            Err(BatchFailure { status, .. }) => Err(Error::Internal(format!(
                "creating a job failed with {status}"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl JobStore for Cosmos {
    async fn create(&self, job: &Job) -> Result<Created> {
        timed("create", self.limit(), async {
            let Some(key) = &job.idempotency_key else {
                return self.create_plain(job).await;
            };
            for _ in 0..CREATE_ATTEMPTS {
                if let Some(created) = self.create_keyed(job, key).await? {
                    return Ok(created);
                }
            }
            Err(Error::Conflict(
                "The idempotency key is being used by a concurrent request; try again.".into(),
            ))
        })
        .instrument(span("create", Some(&job.tenant_id)))
        .await
    }

    async fn get(&self, tenant: &TenantId, id: JobId) -> Result<Job> {
        timed("get", self.limit(), async {
            let (job, _, units) = self.read_job(tenant, &id.to_string()).await?;
            charge(units);
            Ok(job)
        })
        .instrument(span("get", Some(tenant)))
        .await
    }

    async fn replace(&self, next: &Job, expected_etag: &str) -> Result<Job> {
        let tenant = &next.tenant_id;
        timed("replace", self.limit(), async {
            let (current, current_raw, read_units) =
                self.read_job(tenant, &next.id.to_string()).await?;
            if current.etag != expected_etag {
                charge(read_units);
                return Err(Error::PreconditionFailed);
            }
            let c = &self.containers().await?.jobs;
            let options = ItemWriteOptions::default()
                .with_precondition(Precondition::if_match(raw(&current_raw)));
            let response = c
                .replace_item(
                    tenant.as_str().to_owned(),
                    &next.id.to_string(),
                    job_doc(next),
                    Some(options),
                )
                .await
                .map_err(|e| map_error(e, "replacing a job"))?;
            charge(read_units + units_of(response.headers()));
            let mut stored = next.clone();
            stored.etag = response
                .headers()
                .etag()
                .map(|e| bare(e.as_ref()))
                .ok_or_else(|| Error::Internal("the replace returned no ETag".into()))?;
            Ok(stored)
        })
        .instrument(span("replace", Some(tenant)))
        .await
    }

    async fn list(&self, tenant: &TenantId, query: &JobQuery) -> Result<Page<Job>> {
        let cursor: Option<JobCursor> = query
            .continuation_token
            .as_deref()
            .map(decode_token)
            .transpose()?;
        let limit = query.limit as usize;
        timed("list", self.limit(), async {
            // Fixed text fragments only; every value is a parameter.
            let mut text =
                String::from("SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type");
            let mut params = vec![
                ("@tenant", json!(tenant.as_str())),
                ("@type", json!(TYPE_JOB)),
            ];
            if let Some(agent) = query.agent_id {
                text.push_str(" AND c.agentId = @agent");
                params.push(("@agent", json!(agent.to_string())));
            }
            if let Some(status) = query.status {
                text.push_str(" AND c.status = @status");
                params.push(("@status", json!(status.as_str())));
            }
            if let Some(c) = &cursor {
                text.push_str(" AND c.sortKey < @after");
                params.push(("@after", json!(c.s)));
            }
            text.push_str(" ORDER BY c.sortKey DESC");
            let docs: Vec<JobDoc> = self
                .job_query(query_of(text, params)?, tenant, limit + 1)
                .await?;
            let more = docs.len() > limit;
            let docs: Vec<JobDoc> = docs.into_iter().take(limit).collect();
            let continuation_token = match (more, docs.last()) {
                (true, Some(last)) => Some(encode_token(&JobCursor {
                    s: last.sort_key.clone(),
                })),
                _ => None,
            };
            Ok(Page {
                items: docs.into_iter().map(into_job).collect(),
                continuation_token,
            })
        })
        .instrument(span("list", Some(tenant)))
        .await
    }

    async fn counts(&self, tenant: &TenantId) -> Result<(u64, u64)> {
        timed("counts", self.limit(), async {
            // Only the jobs in flight are read (a handful per tenant), and counted here.
            let q = query_of(
                "SELECT c.status FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND (c.status = @queued OR c.status = @running OR c.status = @cancelling)",
                vec![
                    ("@tenant", json!(tenant.as_str())),
                    ("@type", json!(TYPE_JOB)),
                    ("@queued", json!(JobStatus::Queued.as_str())),
                    ("@running", json!(JobStatus::Running.as_str())),
                    ("@cancelling", json!(JobStatus::Cancelling.as_str())),
                ],
            )?;
            let rows: Vec<JobRow> = self.job_query(q, tenant, usize::MAX).await?;
            let queued = rows
                .iter()
                .filter(|r| r.status == JobStatus::Queued.as_str())
                .count() as u64;
            Ok((queued, rows.len() as u64 - queued))
        })
        .instrument(span("counts", Some(tenant)))
        .await
    }

    async fn oldest_queued(&self, tenant: &TenantId, limit: u32) -> Result<Vec<JobId>> {
        timed("oldest_queued", self.limit(), async {
            let q = query_of(
                "SELECT c.id, c.status FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND c.status = @queued ORDER BY c.sortKey ASC",
                vec![
                    ("@tenant", json!(tenant.as_str())),
                    ("@type", json!(TYPE_JOB)),
                    ("@queued", json!(JobStatus::Queued.as_str())),
                ],
            )?;
            let rows: Vec<JobRow> = self.job_query(q, tenant, limit as usize).await?;
            rows.iter().map(|r| JobId::parse(&r.id)).collect()
        })
        .instrument(span("oldest_queued", Some(tenant)))
        .await
    }

    async fn stale(
        &self,
        now: DateTime<Utc>,
        queued_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StaleJob>> {
        timed("stale", self.limit(), async {
            // Cross-tenant by design (see the module docs): no tenant filter, every row names
            // its tenant. Ordered by creation after the read, as a cross-partition ORDER BY
            // needs the query plan the SDK does not run.
            let q = query_of(
                "SELECT c.tenantId, c.id, c.status, c.sortKey FROM c WHERE c.type = @type \
                 AND (((c.status = @running OR c.status = @cancelling) AND c.leaseMs < @now) \
                 OR (c.status = @queued AND c.updatedMs < @before))",
                vec![
                    ("@type", json!(TYPE_JOB)),
                    ("@running", json!(JobStatus::Running.as_str())),
                    ("@cancelling", json!(JobStatus::Cancelling.as_str())),
                    ("@queued", json!(JobStatus::Queued.as_str())),
                    ("@now", json!(now.timestamp_millis())),
                    ("@before", json!(queued_before.timestamp_millis())),
                ],
            )?;
            let c = &self.containers().await?.jobs;
            let mut rows: Vec<JobRow> =
                query_in(c, q, FeedScope::full_container(), usize::MAX).await?;
            rows.sort_by(|a, b| a.sort_key.cmp(&b.sort_key));
            rows.truncate(limit as usize);
            rows.into_iter()
                .map(|r| {
                    Ok(StaleJob {
                        tenant_id: TenantId::parse(&r.tenant_id)?,
                        id: JobId::parse(&r.id)?,
                        status: JobStatus::parse(&r.status)?,
                    })
                })
                .collect()
        })
        .instrument(span("stale", None))
        .await
    }

    async fn agent_stats(
        &self,
        tenant: &TenantId,
        agent: AgentId,
        since: DateTime<Utc>,
    ) -> Result<AgentRunStats> {
        timed("agent_stats", self.limit(), async {
            let base = || {
                vec![
                    ("@tenant", json!(tenant.as_str())),
                    ("@type", json!(TYPE_JOB)),
                    ("@agent", json!(agent.to_string())),
                ]
            };
            let filter =
                "FROM c WHERE c.tenantId = @tenant AND c.type = @type AND c.agentId = @agent";
            // The newest job: the first row of the newest-first order.
            let newest: Vec<JobRow> = self
                .job_query(
                    query_of(
                        format!("SELECT c.status, c.createdMs {filter} ORDER BY c.sortKey DESC"),
                        base(),
                    )?,
                    tenant,
                    1,
                )
                .await?;
            // The jobs since `since`, and the ones in flight, counted here.
            let mut params = base();
            params.push(("@since", json!(since.timestamp_millis())));
            params.push(("@running", json!(JobStatus::Running.as_str())));
            params.push(("@cancelling", json!(JobStatus::Cancelling.as_str())));
            let rows: Vec<JobRow> = self
                .job_query(
                    query_of(
                        format!(
                            "SELECT c.status, c.createdMs {filter} AND (c.createdMs >= @since \
                             OR c.status = @running OR c.status = @cancelling)"
                        ),
                        params,
                    )?,
                    tenant,
                    usize::MAX,
                )
                .await?;
            let since_ms = since.timestamp_millis();
            let status = |r: &JobRow| JobStatus::parse(&r.status).ok();
            let recent = || rows.iter().filter(|r| r.created_ms >= since_ms);
            Ok(AgentRunStats {
                last_run_at: newest
                    .first()
                    .and_then(|r| DateTime::from_timestamp_millis(r.created_ms)),
                runs_since: recent().count() as u64,
                finished_since: recent()
                    .filter(|r| status(r).is_some_and(JobStatus::is_terminal))
                    .count() as u64,
                succeeded_since: recent()
                    .filter(|r| status(r) == Some(JobStatus::Succeeded))
                    .count() as u64,
                running: rows
                    .iter()
                    .filter(|r| {
                        matches!(status(r), Some(JobStatus::Running | JobStatus::Cancelling))
                    })
                    .count() as u64,
            })
        })
        .instrument(span("agent_stats", Some(tenant)))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_valid_cosmos_ids_whatever_the_key() {
        let id = key_id("a/b\\c?d#e");
        assert!(!id.contains(['/', '\\', '?', '#']));
        assert_eq!(id.len(), "key-".len() + 64);
    }

    #[test]
    fn sort_keys_order_as_creation_time_then_id() {
        assert!(sort_key_of(999, "b") < sort_key_of(1_000, "a"));
        assert!(sort_key_of(1_000, "a") < sort_key_of(1_000, "b"));
    }
}
