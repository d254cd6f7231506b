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

use super::document::{
    Attempt, BatchFailure, bare, batch_etag, charge, document, hashed_id, map_error, newest_first,
    query_in, query_of, query_partition, read_doc, replace_if_match, require_etag, retry,
    run_batch, sort_key_of, span, timed, to_batch_error, units_of, update_with_retry,
};
use super::{Cosmos, JOBS};
use crate::keyset::{self, BySortKey};
use azure_data_cosmos::FeedScope;
use azure_data_cosmos::models::TransactionalBatch;
use flowgrid_domain::store::Page;
use flowgrid_domain::store::jobs::{
    AgentRunStats, Created, IDEMPOTENCY_WINDOW_SECS, Job, JobId, JobQuery, JobStatus, JobStore,
    StaleJob,
};
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_domain::{Error, Result};

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
document!(JobDoc, TYPE_JOB, "job");

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
document!(KeyDoc, TYPE_KEY, "idempotency reservation");

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

/// The reservation id of an idempotency key.
fn key_id(key: &str) -> String {
    hashed_id("key", key)
}

fn into_job(doc: JobDoc) -> Job {
    let mut job = doc.job;
    job.etag = bare(&doc.etag);
    job
}

fn job_exists() -> Error {
    Error::Conflict("A job with this id already exists.".into())
}

impl Cosmos {
    /// The tenant's job document `id` (with the raw ETag it was read with), or `NotFound`.
    async fn read_job(&self, tenant: &TenantId, id: &str) -> Result<JobDoc> {
        let c = &self.containers().await?.jobs;
        read_doc(c, tenant.as_str(), id)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Runs a query in the tenant's partition of the jobs container.
    async fn job_query<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        q: azure_data_cosmos::Query,
        tenant: &TenantId,
        take: usize,
    ) -> Result<Vec<T>> {
        let c = &self.containers().await?.jobs;
        query_partition(c, q, tenant.as_str(), take).await
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
        Ok(Created::New(Job {
            etag,
            ..job.clone()
        }))
    }

    /// One attempt at storing a job with idempotency key `key`; `Again`: lost a race for the
    /// key.
    async fn create_keyed(&self, job: &Job, key: &str) -> Result<Attempt<Created>> {
        let tenant = &job.tenant_id;
        let window_start = job.created_at.timestamp_millis() - IDEMPOTENCY_WINDOW_SECS * 1000;
        let c = &self.containers().await?.jobs;
        let existing: Option<KeyDoc> = read_doc(c, tenant.as_str(), &key_id(key)).await?;
        if let Some(reservation) = &existing
            && reservation.created_ms >= window_start
        {
            match self.read_job(tenant, &reservation.job_id).await {
                Ok(found) => return Ok(Attempt::Done(Created::Existing(into_job(found)))),
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
                    replace_if_match(&old.etag),
                )
                .map_err(to_batch_error)?,
            None => batch.create_item(&reservation).map_err(to_batch_error)?,
        };
        let batch = batch.create_item(job_doc(job)).map_err(to_batch_error)?;
        match run_batch(c, batch).await? {
            Ok(etags) => Ok(Attempt::Done(Created::New(Job {
                etag: batch_etag(&etags, 1, "job")?,
                ..job.clone()
            }))),
            // The reservation was taken or changed meanwhile: read it again.
            Err(BatchFailure {
                index: 0 | usize::MAX,
                status: 409 | 412 | 404,
            }) => Ok(Attempt::Again),
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
            retry(
                CREATE_ATTEMPTS,
                || {
                    Error::Conflict(
                        "The idempotency key is being used by a concurrent request; try again."
                            .into(),
                    )
                },
                || self.create_keyed(job, key),
            )
            .await
        })
        .instrument(span("create", JOBS, job.tenant_id.as_str()))
        .await
    }

    async fn get(&self, tenant: &TenantId, id: JobId) -> Result<Job> {
        timed("get", self.limit(), async {
            Ok(into_job(self.read_job(tenant, &id.to_string()).await?))
        })
        .instrument(span("get", JOBS, tenant.as_str()))
        .await
    }

    /// A compare-and-swap on the caller's ETag: a replace conditioned on the ETag read, which
    /// must be the one expected.
    async fn replace(&self, next: &Job, expected_etag: &str) -> Result<Job> {
        let tenant = &next.tenant_id;
        timed("replace", self.limit(), async {
            let c = &self.containers().await?.jobs;
            let written = update_with_retry(
                c,
                tenant.as_str(),
                &next.id.to_string(),
                None,
                |current: Option<&JobDoc>| {
                    require_etag(current.ok_or(Error::NotFound)?, expected_etag)?;
                    Ok(Some(job_doc(next)))
                },
            )
            .await?
            .ok_or(Error::NotFound)?;
            if written.etag.is_empty() {
                return Err(Error::Internal("the replace returned no ETag".into()));
            }
            Ok(into_job(written))
        })
        .instrument(span("replace", JOBS, tenant.as_str()))
        .await
    }

    async fn list(&self, tenant: &TenantId, query: &JobQuery) -> Result<Page<Job>> {
        let after: Option<BySortKey> = keyset::after(query.continuation_token.as_deref())?;
        timed("list", self.limit(), async {
            let mut filters = Vec::new();
            if let Some(agent) = query.agent_id {
                filters.push(("c.agentId = @agent", "@agent", json!(agent.to_string())));
            }
            if let Some(status) = query.status {
                filters.push(("c.status = @status", "@status", json!(status.as_str())));
            }
            let c = &self.containers().await?.jobs;
            let sort_key = |d: &JobDoc| d.sort_key.clone();
            newest_first(
                c,
                tenant.as_str(),
                filters,
                after,
                query.limit,
                sort_key,
                into_job,
            )
            .await
        })
        .instrument(span("list", JOBS, tenant.as_str()))
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
        .instrument(span("counts", JOBS, tenant.as_str()))
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
        .instrument(span("oldest_queued", JOBS, tenant.as_str()))
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
        .instrument(span("stale", JOBS, ""))
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
        .instrument(span("agent_stats", JOBS, tenant.as_str()))
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
}
