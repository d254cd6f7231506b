//! Analytics on Cosmos: raw events in the `events` container (TTL on: each document's `ttl`
//! is the retention), stale-hour marks and rollups in the `usage` container; both partitioned
//! by `/tenantId`.
//!
//! - `analyticsEvent`: `id` = `ev-<sha256 of the event id>` (event ids may hold `/`), created
//!   with `create_item`, so a redelivered event is a 409 and changes nothing.
//! - `staleHour`: `id` = `stale-<hour ms>`, upserted with a fresh `mark` by each ingestion that
//!   stored a new event of the hour; cleared (If-Match) only while the mark is the one read.
//! - `rollup`: `id` = `r-<granularity>-<period ms>-<sha256 of dimension and key>`, upserted;
//!   a period's rollups not in the new set are deleted.
//!
//! Cross-tenant by design: [`AnalyticsStore::stale_hours`] (the rollup timer serves every
//! tenant) and [`AnalyticsStore::purge_expired`] (what TTL does on real Cosmos; the emulator
//! keeps expired documents, so the timer deletes them too).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::document::{
    DocKey, charge, delete_all, document, hashed_id, map_error, query_in, query_of,
    query_partition, read_doc, span, timed, units_of, write_if_match,
};
use super::{Cosmos, EVENTS, USAGE};
use crate::codec::{ms, time};
use azure_data_cosmos::FeedScope;
use flowgrid_domain::analytics::{Granularity, RawEvent, Rollup};
use flowgrid_domain::store::AnalyticsStore;
use flowgrid_domain::store::analytics::StaleHour;
use flowgrid_domain::{Result, TenantId};

const TYPE_EVENT: &str = "analyticsEvent";
const TYPE_STALE: &str = "staleHour";
const TYPE_ROLLUP: &str = "rollup";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    time_ms: i64,
    expires_ms: i64,
    ttl: i64,
    event: RawEvent,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(EventDoc, TYPE_EVENT, "analytics event");

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StaleDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    hour_ms: i64,
    mark: String,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(StaleDoc, TYPE_STALE, "stale hour");

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RollupDoc {
    id: String,
    tenant_id: String,
    #[serde(rename = "type")]
    kind: String,
    granularity: String,
    period_ms: i64,
    dimension: String,
    rollup: Rollup,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: String,
}
document!(RollupDoc, TYPE_ROLLUP, "rollup");

fn stale_id(hour: DateTime<Utc>) -> String {
    format!("stale-{}", ms(hour))
}

fn rollup_id(r: &Rollup) -> String {
    let dim = format!("{}\u{1f}{}", r.dimension.kind(), r.dimension.key());
    hashed_id(
        &format!("r-{}-{}", r.granularity.as_str(), ms(r.period)),
        &dim,
    )
}

#[async_trait::async_trait]
impl AnalyticsStore for Cosmos {
    async fn ingest(&self, events: &[RawEvent], retention: Duration) -> Result<usize> {
        timed("ingest events", self.limit(), async {
            let containers = self.containers().await?;
            let mut new = 0;
            for e in events {
                let tenant = e.tenant_id.as_str().to_owned();
                let expires = e.time + retention;
                let doc = EventDoc {
                    id: hashed_id("ev", &e.id),
                    tenant_id: tenant.clone(),
                    kind: TYPE_EVENT.into(),
                    time_ms: ms(e.time),
                    expires_ms: ms(expires),
                    ttl: (expires - Utc::now()).num_seconds().max(1),
                    event: e.clone(),
                    etag: String::new(),
                };
                let id = doc.id.clone();
                match containers
                    .events
                    .create_item(tenant.clone(), &id, doc, None)
                    .await
                {
                    Ok(response) => charge(units_of(response.headers())),
                    Err(err) if err.status().is_conflict() => continue,
                    Err(err) => return Err(map_error(err, "storing an event")),
                }
                new += 1;
                let hour = Granularity::Hour.start(e.time);
                let mark = StaleDoc {
                    id: stale_id(hour),
                    tenant_id: tenant.clone(),
                    kind: TYPE_STALE.into(),
                    hour_ms: ms(hour),
                    mark: uuid::Uuid::new_v4().simple().to_string(),
                    etag: String::new(),
                };
                let response = containers
                    .usage
                    .upsert_item(tenant, &mark.id.clone(), mark, None)
                    .await
                    .map_err(|err| map_error(err, "marking an hour stale"))?;
                charge(units_of(response.headers()));
            }
            Ok(new)
        })
        .instrument(span("ingest", EVENTS, ""))
        .await
    }

    async fn events(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RawEvent>> {
        timed("read events", self.limit(), async {
            let c = &self.containers().await?.events;
            let q = query_of(
                "SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND c.timeMs >= @from AND c.timeMs < @to ORDER BY c.timeMs ASC",
                vec![
                    ("@tenant", json!(tenant.as_str())),
                    ("@type", json!(TYPE_EVENT)),
                    ("@from", json!(ms(from))),
                    ("@to", json!(ms(to))),
                ],
            )?;
            let docs: Vec<EventDoc> = query_partition(c, q, tenant.as_str(), usize::MAX).await?;
            Ok(docs.into_iter().map(|d| d.event).collect())
        })
        .instrument(span("events", EVENTS, tenant.as_str()))
        .await
    }

    async fn stale_hours(&self, limit: u32) -> Result<Vec<StaleHour>> {
        timed("read stale hours", self.limit(), async {
            let c = &self.containers().await?.usage;
            let q = query_of(
                "SELECT * FROM c WHERE c.type = @type ORDER BY c.hourMs ASC",
                vec![("@type", json!(TYPE_STALE))],
            )?;
            let docs: Vec<StaleDoc> =
                query_in(c, q, FeedScope::full_container(), limit as usize).await?;
            docs.into_iter()
                .map(|d| {
                    Ok(StaleHour {
                        tenant_id: TenantId::parse(&d.tenant_id)?,
                        hour: time(d.hour_ms),
                        mark: d.mark,
                    })
                })
                .collect()
        })
        .instrument(span("stale_hours", USAGE, ""))
        .await
    }

    async fn clear_stale(&self, hour: &StaleHour) -> Result<bool> {
        let tenant = hour.tenant_id.as_str();
        timed("clear a stale hour", self.limit(), async {
            let c = &self.containers().await?.usage;
            let id = stale_id(hour.hour);
            let Some(doc) = read_doc::<StaleDoc>(c, tenant, &id).await? else {
                return Ok(false);
            };
            if doc.mark != hour.mark {
                return Ok(false);
            }
            match c
                .delete_item(tenant.to_owned(), &id, write_if_match(&doc.etag))
                .await
            {
                Ok(response) => {
                    charge(units_of(response.headers()));
                    Ok(true)
                }
                Err(e) if e.status().is_not_found() => Ok(false),
                Err(e) if e.status().is_precondition_failed() => Ok(false),
                Err(e) => Err(map_error(e, "clearing a stale hour")),
            }
        })
        .instrument(span("clear_stale", USAGE, tenant))
        .await
    }

    async fn put_rollups(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        period: DateTime<Utc>,
        rollups: &[Rollup],
    ) -> Result<()> {
        timed("write rollups", self.limit(), async {
            let c = &self.containers().await?.usage;
            let q = query_of(
                "SELECT c.id, c.tenantId FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND c.granularity = @granularity AND c.periodMs = @period",
                vec![
                    ("@tenant", json!(tenant.as_str())),
                    ("@type", json!(TYPE_ROLLUP)),
                    ("@granularity", json!(granularity.as_str())),
                    ("@period", json!(ms(period))),
                ],
            )?;
            let existing: Vec<DocKey> = query_partition(c, q, tenant.as_str(), usize::MAX).await?;
            let mut kept = Vec::new();
            for r in rollups.iter().filter(|r| {
                &r.tenant_id == tenant && r.granularity == granularity && r.period == period
            }) {
                let doc = RollupDoc {
                    id: rollup_id(r),
                    tenant_id: tenant.as_str().to_owned(),
                    kind: TYPE_ROLLUP.into(),
                    granularity: granularity.as_str().into(),
                    period_ms: ms(period),
                    dimension: r.dimension.kind().into(),
                    rollup: r.clone(),
                    etag: String::new(),
                };
                kept.push(doc.id.clone());
                let response = c
                    .upsert_item(tenant.as_str().to_owned(), &doc.id.clone(), doc, None)
                    .await
                    .map_err(|e| map_error(e, "writing a rollup"))?;
                charge(units_of(response.headers()));
            }
            let gone = existing
                .into_iter()
                .filter(|d| !kept.contains(&d.id))
                .collect();
            delete_all(c, gone).await?;
            Ok(())
        })
        .instrument(span("put_rollups", USAGE, tenant.as_str()))
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
        timed("read rollups", self.limit(), async {
            let c = &self.containers().await?.usage;
            let mut text = String::from(
                "SELECT * FROM c WHERE c.tenantId = @tenant AND c.type = @type \
                 AND c.granularity = @granularity AND c.periodMs >= @from AND c.periodMs < @to",
            );
            let mut params = vec![
                ("@tenant", json!(tenant.as_str())),
                ("@type", json!(TYPE_ROLLUP)),
                ("@granularity", json!(granularity.as_str())),
                ("@from", json!(ms(from))),
                ("@to", json!(ms(to))),
            ];
            if let Some(d) = dimension {
                text.push_str(" AND c.dimension = @dimension");
                params.push(("@dimension", json!(d)));
            }
            let docs: Vec<RollupDoc> =
                query_partition(c, query_of(text, params)?, tenant.as_str(), usize::MAX).await?;
            let mut out: Vec<Rollup> = docs.into_iter().map(|d| d.rollup).collect();
            out.sort_by(|a, b| (a.period, &a.dimension).cmp(&(b.period, &b.dimension)));
            Ok(out)
        })
        .instrument(span("rollups", USAGE, tenant.as_str()))
        .await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        timed("purge expired events", self.limit(), async {
            let c = &self.containers().await?.events;
            let q = query_of(
                "SELECT c.id, c.tenantId FROM c WHERE c.type = @type AND c.expiresMs < @now",
                vec![("@type", json!(TYPE_EVENT)), ("@now", json!(ms(now)))],
            )?;
            let expired: Vec<DocKey> =
                query_in(c, q, FeedScope::full_container(), usize::MAX).await?;
            delete_all(c, expired).await
        })
        .instrument(span("purge_expired", EVENTS, ""))
        .await
    }
}
