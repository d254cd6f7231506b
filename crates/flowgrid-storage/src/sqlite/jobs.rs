//! Jobs on SQLite: table `jobs` (migration 3), the fields queries filter on in columns and the
//! job itself in `doc`; an idempotency key is unique per tenant (a partial unique index).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Result, Sqlite, current_etag, if_taken, load_doc, new_etag, newest_first};
use crate::codec::{from_doc, to_doc};
use crate::keyset::{self, ByCreated};
use flowgrid_domain::Error;
use flowgrid_domain::store::Page;
use flowgrid_domain::store::jobs::{
    AgentRunStats, Created, IDEMPOTENCY_WINDOW_SECS, Job, JobId, JobQuery, JobStatus, JobStore,
    StaleJob,
};
use flowgrid_domain::{AgentId, TenantId};

/// The stored job `doc` with its row's ETag.
fn job_from(doc: &str, etag: String) -> flowgrid_domain::Result<Job> {
    Ok(Job {
        etag,
        ..from_doc("job", doc)?
    })
}

/// The tenant's job `id`; `None` when there is none.
fn get_job(conn: &rusqlite::Connection, tenant: &str, id: &str) -> Result<Option<Job>> {
    Ok(load_doc(conn, "jobs", tenant, id)?
        .map(|(doc, etag)| job_from(&doc, etag))
        .transpose()?)
}

#[async_trait::async_trait]
impl JobStore for Sqlite {
    async fn create(&self, job: &Job) -> flowgrid_domain::Result<Created> {
        let mut job = job.clone();
        job.etag = new_etag();
        self.run(move |conn| {
            let doc = to_doc("job", &job)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &job.idempotency_key {
                let found: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT id, created_ms FROM jobs WHERE tenant_id = ?1 AND idem_key = ?2",
                        params![job.tenant_id.as_str(), key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((id, created_ms)) = found {
                    let window_start = job.created_at.timestamp_millis() - IDEMPOTENCY_WINDOW_SECS * 1000;
                    if created_ms >= window_start {
                        let existing = get_job(&tx, job.tenant_id.as_str(), &id)?.ok_or(Error::NotFound)?;
                        return Ok(Created::Existing(existing));
                    }
                    // The key is older than the window: it may be used again.
                    tx.execute(
                        "UPDATE jobs SET idem_key = NULL WHERE tenant_id = ?1 AND id = ?2",
                        params![job.tenant_id.as_str(), id],
                    )?;
                }
            }
            tx.execute(
                "INSERT INTO jobs (tenant_id, id, agent_id, status, created_ms, updated_ms, lease_ms, idem_key, etag, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    job.tenant_id.as_str(),
                    job.id.to_string(),
                    job.agent_id.to_string(),
                    job.status.as_str(),
                    job.created_at.timestamp_millis(),
                    job.updated_at.timestamp_millis(),
                    job.lease_until.map(|t| t.timestamp_millis()),
                    job.idempotency_key,
                    job.etag,
                    doc
                ],
            )
            .map_err(|e| if_taken(e, Error::Conflict("A job with this id already exists.".into())))?;
            tx.commit()?;
            Ok(Created::New(job))
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: JobId) -> flowgrid_domain::Result<Job> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            get_job(conn, tenant.as_str(), &id.to_string())?.ok_or(Error::NotFound.into())
        })
        .await
    }

    async fn replace(&self, next: &Job, expected_etag: &str) -> flowgrid_domain::Result<Job> {
        let mut job = next.clone();
        job.etag = new_etag();
        let expected = expected_etag.to_owned();
        self.run(move |conn| {
            let doc = to_doc("job", &job)?;
            let changed = conn
                .prepare_cached(
                    "UPDATE jobs SET status = ?3, updated_ms = ?4, lease_ms = ?5, etag = ?6, doc = ?7
                     WHERE tenant_id = ?1 AND id = ?2 AND etag = ?8",
                )?
                .execute(params![
                    job.tenant_id.as_str(),
                    job.id.to_string(),
                    job.status.as_str(),
                    job.updated_at.timestamp_millis(),
                    job.lease_until.map(|t| t.timestamp_millis()),
                    job.etag,
                    doc,
                    expected
                ])?;
            if changed == 1 {
                return Ok(job);
            }
            // Nothing changed: the job is gone (not found) or has moved on.
            current_etag(conn, "jobs", job.tenant_id.as_str(), &job.id.to_string())?;
            Err(Error::PreconditionFailed.into())
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        query: &JobQuery,
    ) -> flowgrid_domain::Result<Page<Job>> {
        let tenant = tenant.clone();
        let cursor: Option<ByCreated> = keyset::after(query.continuation_token.as_deref())?;
        let agent = query.agent_id.map(|a| a.to_string());
        let status = query.status.map(JobStatus::as_str);
        let limit = query.limit;
        self.run(move |conn| {
            let (c, i) = cursor
                .map(|c| (Some(c.c), Some(c.i)))
                .unwrap_or((None, None));
            let mut stmt = conn.prepare_cached(
                "SELECT doc, etag, created_ms, id FROM jobs
                 WHERE tenant_id = ?1
                   AND (?2 IS NULL OR agent_id = ?2)
                   AND (?3 IS NULL OR status = ?3)
                   AND (?4 IS NULL OR created_ms < ?4 OR (created_ms = ?4 AND id < ?5))
                 ORDER BY created_ms DESC, id DESC
                 LIMIT ?6",
            )?;
            newest_first(
                &mut stmt,
                params![tenant.as_str(), agent, status, c, i, i64::from(limit) + 1],
                limit,
                job_from,
            )
        })
        .await
    }

    async fn counts(&self, tenant: &TenantId) -> flowgrid_domain::Result<(u64, u64)> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let (queued, running): (i64, i64) = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(status = 'queued'), 0), COALESCE(SUM(status IN ('running', 'cancelling')), 0)
                     FROM jobs WHERE tenant_id = ?1 AND status IN ('queued', 'running', 'cancelling')",
                )?
                .query_row(params![tenant.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((u64::try_from(queued).unwrap_or(0), u64::try_from(running).unwrap_or(0)))
        })
        .await
    }

    async fn oldest_queued(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> flowgrid_domain::Result<Vec<JobId>> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let ids = conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE status = 'queued' AND tenant_id = ?1 ORDER BY created_ms, id LIMIT ?2",
                )?
                .query_map(params![tenant.as_str(), limit], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids.iter().map(|id| JobId::parse(id)).collect::<flowgrid_domain::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn stale(
        &self,
        now: DateTime<Utc>,
        queued_before: DateTime<Utc>,
        limit: u32,
    ) -> flowgrid_domain::Result<Vec<StaleJob>> {
        self.run(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT tenant_id, id, status FROM jobs
                     WHERE (status IN ('running', 'cancelling') AND (lease_ms IS NULL OR lease_ms < ?1))
                        OR (status = 'queued' AND updated_ms < ?2)
                     ORDER BY created_ms LIMIT ?3",
                )?
                .query_map(params![now.timestamp_millis(), queued_before.timestamp_millis(), limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(t, id, status)| {
                    Ok(StaleJob { tenant_id: TenantId::parse(&t)?, id: JobId::parse(&id)?, status: JobStatus::parse(&status)? })
                })
                .collect()
        })
        .await
    }

    async fn agent_stats(
        &self,
        tenant: &TenantId,
        agent: AgentId,
        since: DateTime<Utc>,
    ) -> flowgrid_domain::Result<AgentRunStats> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let row: (Option<i64>, i64, i64, i64, i64) = conn
                .prepare_cached(
                    "SELECT MAX(created_ms),
                            COALESCE(SUM(created_ms >= ?3), 0),
                            COALESCE(SUM(created_ms >= ?3 AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out')), 0),
                            COALESCE(SUM(created_ms >= ?3 AND status = 'succeeded'), 0),
                            COALESCE(SUM(status IN ('running', 'cancelling')), 0)
                     FROM jobs WHERE tenant_id = ?1 AND agent_id = ?2",
                )?
                .query_row(params![tenant.as_str(), agent.to_string(), since.timestamp_millis()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?;
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(AgentRunStats {
                last_run_at: row.0.and_then(DateTime::from_timestamp_millis),
                runs_since: n(row.1),
                finished_since: n(row.2),
                succeeded_since: n(row.3),
                running: n(row.4),
            })
        })
        .await
    }
}
