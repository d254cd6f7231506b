//! Pending API request counts: the finished minutes of each app instance's per-minute request
//! counts (`flowgrid_http::api_requests`), kept in the app's own store until its
//! `FlushApiRequests` timer — which runs on one instance of a scaled-out app — has published
//! them as `flowgrid.api.requests` events.
//!
//! A row is keyed by (app, instance, tenant, minute, route, status). Writing a key that is
//! already stored changes nothing (a retried write after a failure that was not one), so a
//! row's count is the one first written. A row is sent, marked [`PendingCount::sent`], sent
//! once more by the next run and deleted then: the timer's messages leave through an output
//! binding after its invocation answers, so a run cannot know its own send succeeded, and the
//! next run (after the previous one's send ended) deletes what two runs sent. Event ids come
//! from the key, so a repeated send is detected as a duplicate.

use chrono::{DateTime, Utc};

use crate::{Result, TenantId};

/// The most rows one listing returns.
pub const MAX_PENDING: u32 = 1_000;

/// One count: how many requests of `tenant` one instance of `app` answered on `route` with
/// `status` during `minute`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiRequestCount {
    /// The app (`agents`, `auth`, ...).
    pub app: String,
    /// The instance that counted them.
    pub instance: String,
    /// The tenant the requests were authenticated for.
    pub tenant: TenantId,
    /// The minute's start (UTC, seconds zero).
    pub minute: DateTime<Utc>,
    /// The method and route template (`GET /api/agents/{id}`).
    pub route: String,
    /// The status answered.
    pub status: u16,
    /// How many.
    pub count: u64,
}

impl ApiRequestCount {
    /// The key as one string (what the event id and the stored row's id derive from).
    pub fn key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.app,
            self.instance,
            self.tenant.as_str(),
            self.minute.timestamp(),
            self.route,
            self.status
        )
    }
}

/// A stored count and whether a timer run has sent it already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCount {
    /// The count.
    pub count: ApiRequestCount,
    /// Sent by an earlier run (the next one sends it again and deletes it).
    pub sent: bool,
}

/// Where an app keeps its instances' pending API request counts.
#[async_trait::async_trait]
pub trait ApiRequestCountStore: Send + Sync {
    /// Stores `counts`; a key already stored keeps its row (count and sent mark) unchanged.
    async fn put_counts(&self, counts: &[ApiRequestCount]) -> Result<()>;
    /// Up to `limit` (at most [`MAX_PENDING`]) of `app`'s stored counts, oldest minute first,
    /// whichever instance wrote them.
    async fn pending_counts(&self, app: &str, limit: u32) -> Result<Vec<PendingCount>>;
    /// Marks the stored rows of `counts`' keys as sent (absent keys are skipped).
    async fn mark_counts_sent(&self, counts: &[ApiRequestCount]) -> Result<()>;
    /// Deletes the rows of `counts`' keys (absent keys are skipped).
    async fn delete_counts(&self, counts: &[ApiRequestCount]) -> Result<()>;
}
