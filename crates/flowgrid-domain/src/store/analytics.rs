//! The Analytics store: raw events (kept for the retention period, stored once per id), the
//! hours whose rollups are stale, and the rollups themselves (derived, overwritten whole).

use chrono::{DateTime, Duration, Utc};

use crate::analytics::{Granularity, RawEvent, Rollup, merge_rollups, rollup_hour};
use crate::{Result, TenantId};

/// An hour of a tenant whose rollups must be recomputed, with the mark it had when read: a
/// clear succeeds only while the mark is unchanged, so an event ingested meanwhile keeps the
/// hour stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleHour {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// The mark (changes on every ingestion into the hour).
    pub mark: String,
}

/// Where Analytics keeps its data.
#[async_trait::async_trait]
pub trait AnalyticsStore: Send + Sync {
    /// Stores the events whose `(tenant, id)` is not stored yet, to expire `retention` after
    /// their time, and marks their hours stale. Returns how many were new (a redelivered event
    /// changes nothing and counts 0).
    async fn ingest(&self, events: &[RawEvent], retention: Duration) -> Result<usize>;
    /// The tenant's raw events with `from <= time < to`, oldest first.
    async fn events(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RawEvent>>;
    /// Up to `limit` stale hours of any tenant.
    async fn stale_hours(&self, limit: u32) -> Result<Vec<StaleHour>>;
    /// Clears a stale hour if its mark is still `hour.mark`; `false` when it moved on.
    async fn clear_stale(&self, hour: &StaleHour) -> Result<bool>;
    /// Replaces every rollup of the tenant's `granularity` period starting at `period` by
    /// `rollups` (a dimension not among them is removed).
    async fn put_rollups(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        period: DateTime<Utc>,
        rollups: &[Rollup],
    ) -> Result<()>;
    /// The tenant's rollups of `granularity` with `from <= period < to`, only of the dimension
    /// kind `dimension` (`overall`, `agent`, `model`, `app`) when given, ordered by period.
    async fn rollups(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        dimension: Option<&str>,
    ) -> Result<Vec<Rollup>>;
    /// Removes raw events that expired before `now` (SQLite; Cosmos expires them by TTL and
    /// answers 0). Returns how many.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64>;
}

/// Recomputes the rollups of up to `limit` stale hours: each hour from its raw events, then
/// its day from the day's hours and its month from the month's days, each overwritten whole;
/// then clears the hour's mark (kept when an event came meanwhile, so the next pass redoes it).
/// Returns how many hours were recomputed. Safe to run twice or in two processes at once: the
/// result is a function of the raw events.
pub async fn refresh(store: &dyn AnalyticsStore, limit: u32) -> Result<usize> {
    let stale = store.stale_hours(limit).await?;
    for hour in &stale {
        let tenant = &hour.tenant_id;
        let start = Granularity::Hour.start(hour.hour);
        let end = Granularity::Hour.next(start);
        let events = store.events(tenant, start, end).await?;
        let hours = rollup_hour(tenant, start, &events);
        store
            .put_rollups(tenant, Granularity::Hour, start, &hours)
            .await?;
        let mut child = (Granularity::Hour, start);
        while let Some(parent) = child.0.parent() {
            let period = parent.start(child.1);
            let parts = store
                .rollups(tenant, child.0, period, parent.next(period), None)
                .await?;
            let merged = merge_rollups(tenant, parent, period, &parts);
            store.put_rollups(tenant, parent, period, &merged).await?;
            child = (parent, period);
        }
        store.clear_stale(hour).await?;
    }
    Ok(stale.len())
}
