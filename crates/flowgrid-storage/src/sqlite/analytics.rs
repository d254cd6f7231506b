//! Analytics on SQLite: tables `analytics_events`, `analytics_stale` and `analytics_rollups`
//! (migration 6). An ingestion is one transaction: `INSERT OR IGNORE` of each event (so a
//! redelivered id changes nothing) and a new mark on each hour that got a new event.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{TransactionBehavior, params};

use super::{Sqlite, new_etag};
use crate::codec::{from_doc, ms, time, to_doc};
use flowgrid_domain::analytics::{Granularity, RawEvent, Rollup};
use flowgrid_domain::store::AnalyticsStore;
use flowgrid_domain::store::analytics::StaleHour;
use flowgrid_domain::{Result, TenantId};

#[async_trait::async_trait]
impl AnalyticsStore for Sqlite {
    async fn ingest(&self, events: &[RawEvent], retention: Duration) -> Result<usize> {
        let events = events.to_vec();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut new = 0;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO analytics_events (tenant_id, id, time_ms, expires_ms, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut stale = tx.prepare_cached(
                    "INSERT INTO analytics_stale (tenant_id, hour_ms, mark) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, hour_ms) DO UPDATE SET mark = excluded.mark",
                )?;
                for e in &events {
                    let added = insert.execute(params![
                        e.tenant_id.as_str(),
                        e.id,
                        ms(e.time),
                        ms(e.time + retention),
                        to_doc("event", e)?
                    ])?;
                    if added > 0 {
                        new += 1;
                        let hour = Granularity::Hour.start(e.time);
                        stale.execute(params![e.tenant_id.as_str(), ms(hour), new_etag()])?;
                    }
                }
            }
            tx.commit()?;
            Ok(new)
        })
        .await
    }

    async fn events(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RawEvent>> {
        let tenant = tenant.clone();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc FROM analytics_events
                 WHERE tenant_id = ?1 AND time_ms >= ?2 AND time_ms < ?3 ORDER BY time_ms, id",
            )?;
            let docs = stmt
                .query_map(params![tenant.as_str(), ms(from), ms(to)], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(docs
                .iter()
                .map(|d| from_doc("event", d))
                .collect::<Result<Vec<_>>>()?)
        })
        .await
    }

    async fn stale_hours(&self, limit: u32) -> Result<Vec<StaleHour>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT tenant_id, hour_ms, mark FROM analytics_stale ORDER BY hour_ms LIMIT ?1",
            )?;
            let rows = stmt
                .query_map(params![limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(|(t, h, mark)| {
                    Ok(StaleHour {
                        tenant_id: TenantId::parse(&t)?,
                        hour: time(h),
                        mark,
                    })
                })
                .collect::<Result<Vec<_>>>()?)
        })
        .await
    }

    async fn clear_stale(&self, hour: &StaleHour) -> Result<bool> {
        let hour = hour.clone();
        self.run(move |conn| {
            let n = conn.execute(
                "DELETE FROM analytics_stale WHERE tenant_id = ?1 AND hour_ms = ?2 AND mark = ?3",
                params![hour.tenant_id.as_str(), ms(hour.hour), hour.mark],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_rollups(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        period: DateTime<Utc>,
        rollups: &[Rollup],
    ) -> Result<()> {
        let (tenant, rollups) = (tenant.clone(), rollups.to_vec());
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM analytics_rollups
                 WHERE tenant_id = ?1 AND granularity = ?2 AND period_ms = ?3",
                params![tenant.as_str(), granularity.as_str(), ms(period)],
            )?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO analytics_rollups (tenant_id, granularity, period_ms, dimension, key, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for r in rollups.iter().filter(|r| {
                    r.tenant_id == tenant && r.granularity == granularity && r.period == period
                }) {
                    insert.execute(params![
                        tenant.as_str(),
                        granularity.as_str(),
                        ms(period),
                        r.dimension.kind(),
                        r.dimension.key(),
                        to_doc("rollup", r)?
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn rollups(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        dimension: Option<&str>,
    ) -> Result<Vec<Rollup>> {
        let (tenant, dimension) = (tenant.clone(), dimension.map(str::to_owned));
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc FROM analytics_rollups
                 WHERE tenant_id = ?1 AND granularity = ?2 AND period_ms >= ?3 AND period_ms < ?4
                   AND (?5 IS NULL OR dimension = ?5)
                 ORDER BY period_ms, dimension, key",
            )?;
            let docs = stmt
                .query_map(
                    params![
                        tenant.as_str(),
                        granularity.as_str(),
                        ms(from),
                        ms(to),
                        dimension
                    ],
                    |r| r.get::<_, String>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(docs
                .iter()
                .map(|d| from_doc("rollup", d))
                .collect::<Result<Vec<_>>>()?)
        })
        .await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        self.run(move |conn| {
            let n = conn.execute(
                "DELETE FROM analytics_events WHERE expires_ms < ?1",
                params![ms(now)],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
