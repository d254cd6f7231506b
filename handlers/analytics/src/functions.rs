//! The non-HTTP functions: `IngestEvent` (subscription `analytics` on topic
//! `platform-events`) and `RefreshRollups` (timer). A storage failure answers 503, so the host
//! abandons the message and delivers it again; ingestion is idempotent by event id, so a
//! redelivery (or a duplicate the producer sent) changes nothing.

use axum::extract::State;
use chrono::Utc;
use flowgrid_domain::analytics::RawEvent;
use flowgrid_domain::events::PlatformEvent;
use flowgrid_domain::store::analytics::refresh;
use flowgrid_http::trigger::{Event, Failed, Outputs, Tick};

use crate::AppState;

/// The subscription of this app on `platform-events`.
pub const SUBSCRIPTION: &str = "analytics";
/// Stale hours recomputed per timer tick (the rest wait for the next tick).
pub const REFRESH_BATCH: u32 = 500;

/// `IngestEvent`: stores one platform event (once per id) and marks its hour stale. An event
/// older than the retention is completed unstored (it would be purged at once, and would
/// reopen an hour whose raw events are gone).
pub async fn ingest_event(
    State(state): State<AppState>,
    Event(event): Event<PlatformEvent>,
) -> Result<Outputs, Failed> {
    let raw = RawEvent::of_platform(&event)?;
    if raw.time < Utc::now() - state.retention {
        return Ok(Outputs::new().log(format!(
            "ignored event {}: older than the retention",
            raw.id
        )));
    }
    let new = state
        .analytics
        .ingest(std::slice::from_ref(&raw), state.retention)
        .await?;
    let what = if new == 0 { "duplicate" } else { "stored" };
    Ok(Outputs::new().log(format!("{what} event {}", raw.id)))
}

/// `RefreshRollups`: recomputes the rollups of stale hours (then their days and months) from
/// the raw events, and purges raw events past their retention.
pub async fn refresh_rollups(
    State(state): State<AppState>,
    _tick: Tick,
) -> Result<Outputs, Failed> {
    let hours = refresh(state.analytics.as_ref(), REFRESH_BATCH).await?;
    let purged = state.analytics.purge_expired(Utc::now()).await?;
    Ok(Outputs::new().log(format!(
        "recomputed {hours} hour(s), purged {purged} expired event(s)"
    )))
}
