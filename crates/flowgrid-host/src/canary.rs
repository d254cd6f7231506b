//! A canary: a second build of one app running beside the current one as its own instances,
//! taking a share of the app's HTTP traffic, sticky per tenant (docs/scaling.md, "Canary and
//! cutover").
//!
//! - A tenant's bucket is FNV-1a of its id modulo 100; a request goes to the canary when its
//!   verified tenant's bucket is below the weight. A tenant therefore always lands on the same
//!   version for a given weight, and raising the weight only moves tenants to the canary.
//! - A request without a verified tenant goes to the current version, and so does every request
//!   while the canary has no ready instance.
//! - The canary receives HTTP only: Service Bus messages and timers stay on the current version
//!   until it is promoted (as the green Function App's non-HTTP functions stay disabled in
//!   Azure until promotion).
//!
//! Per version, while a canary runs: requests, errors (5xx answers, which include transport
//! failures) and their rate since the canary started, and latency p50/p99 over the last
//! [`WINDOW`] requests.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::balance::fnv1a;
use crate::instances::Pool;

/// Requests the latency percentiles are computed over (per version).
pub const WINDOW: usize = 1000;

/// Changes kept in health's `history` per app.
const HISTORY: usize = 20;

/// The bucket (0–99) of a tenant.
pub fn bucket(tenant: &str) -> u8 {
    u8::try_from(fnv1a(tenant) % 100).unwrap_or(0)
}

/// Whether a request of `tenant` (verified; `None` when it has none) goes to a canary of
/// `weight` percent.
pub fn to_canary(tenant: Option<&str>, weight: u8) -> bool {
    tenant.is_some_and(|t| bucket(t) < weight)
}

/// Which build answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The app's current binary.
    Current,
    /// The canary's binary.
    Canary,
}

impl Version {
    /// The name in health and in the `x-flowgrid-version` answer header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Canary => "canary",
        }
    }
}

/// What one version answered while the canary runs.
#[derive(Debug, Default)]
pub struct VersionStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<VecDeque<Duration>>,
}

impl VersionStats {
    /// Counts one answer of `status` after `latency`.
    pub fn record(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if l.len() == WINDOW {
            l.pop_front();
        }
        l.push_back(latency);
    }

    /// Health's figures of this version.
    pub fn json(&self) -> Value {
        let requests = self.requests.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let mut window: Vec<Duration> = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        window.sort();
        let ms = |q: f64| percentile(&window, q).map(|d| d.as_secs_f64() * 1000.0);
        #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
        let rate = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        json!({
            "requests": requests,
            "errors": errors,
            "errorRate": rate,
            "latencyMs": {"p50": ms(0.50), "p99": ms(0.99), "window": window.len()},
        })
    }
}

/// The nearest-rank percentile `q` of sorted `v`.
fn percentile(v: &[Duration], q: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within the window"
    )]
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied()
}

/// A running canary of one app.
pub struct Canary {
    /// Its binary.
    pub binary: PathBuf,
    /// Its instances (HTTP only).
    pub pool: Arc<Pool>,
    weight: AtomicU8,
    /// Being promoted: no other change is taken meanwhile.
    promoting: AtomicBool,
    /// When it started (RFC 3339).
    pub started: String,
    /// What the current version answered since it started.
    pub current: VersionStats,
    /// What the canary answered.
    pub canary: VersionStats,
}

impl Canary {
    /// A canary of `binary` running on `pool` with `weight` percent.
    pub fn new(binary: PathBuf, pool: Arc<Pool>, weight: u8) -> Self {
        Self {
            binary,
            pool,
            weight: AtomicU8::new(weight.min(100)),
            promoting: AtomicBool::new(false),
            started: chrono::Utc::now().to_rfc3339(),
            current: VersionStats::default(),
            canary: VersionStats::default(),
        }
    }

    /// Its share of HTTP traffic in percent.
    pub fn weight(&self) -> u8 {
        self.weight.load(Ordering::SeqCst)
    }

    pub(crate) fn set_weight(&self, w: u8) {
        self.weight.store(w.min(100), Ordering::SeqCst);
    }

    /// Whether a promotion is under way.
    pub fn promoting(&self) -> bool {
        self.promoting.load(Ordering::SeqCst)
    }

    /// Marks the start of its promotion; false when one is already under way.
    pub(crate) fn begin_promotion(&self) -> bool {
        !self.promoting.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn end_promotion(&self) {
        self.promoting.store(false, Ordering::SeqCst);
    }

    /// The version a request of `tenant` goes to: the canary when the tenant's bucket is below
    /// the weight and the canary has a ready instance.
    pub(crate) fn route(&self, tenant: Option<&str>) -> Version {
        if to_canary(tenant, self.weight()) && self.pool.has_available() {
            Version::Canary
        } else {
            Version::Current
        }
    }

    /// The figures of `version`.
    pub fn stats(&self, version: Version) -> &VersionStats {
        match version {
            Version::Current => &self.current,
            Version::Canary => &self.canary,
        }
    }
}

/// An app's canary (if one runs) and the record of changes.
#[derive(Default)]
pub struct Slot {
    inner: Mutex<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    active: Option<Arc<Canary>>,
    history: VecDeque<Value>,
}

impl Slot {
    fn inner(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The running canary.
    pub fn active(&self) -> Option<Arc<Canary>> {
        self.inner().active.clone()
    }

    /// Installs `canary` unless one runs already (then gives it back).
    pub(crate) fn install(&self, canary: Arc<Canary>) -> Result<(), Arc<Canary>> {
        let mut i = self.inner();
        if i.active.is_some() {
            return Err(canary);
        }
        i.active = Some(canary);
        Ok(())
    }

    /// Takes the running canary out: every request goes to the current version from now on.
    pub(crate) fn take(&self) -> Option<Arc<Canary>> {
        self.inner().active.take()
    }

    /// Logs a change at info and keeps it for health.
    pub(crate) fn note(&self, app: &str, change: &str, detail: Value) {
        tracing::info!(target: "canary", app = %app, "{app}: canary {change}: {detail}");
        let mut i = self.inner();
        if i.history.len() == HISTORY {
            i.history.pop_front();
        }
        i.history.push_back(json!({
            "at": chrono::Utc::now().to_rfc3339(),
            "change": change,
            "detail": detail,
        }));
    }

    /// Health's `canary` object of an app whose current binary is `current_binary`.
    pub fn json(&self, current_binary: &std::path::Path) -> Value {
        let i = self.inner();
        let history: Vec<Value> = i.history.iter().cloned().collect();
        let current_binary = current_binary.display().to_string();
        match &i.active {
            None => json!({
                "active": false,
                "current": {"binary": current_binary},
                "history": history,
            }),
            Some(c) => {
                let mut current = c.current.json();
                let mut canary = c.canary.json();
                current["binary"] = json!(current_binary);
                canary["binary"] = json!(c.binary.display().to_string());
                canary["instances"] = c.pool.instances_json();
                json!({
                    "active": true,
                    "weight": c.weight(),
                    "promoting": c.promoting(),
                    "started": c.started,
                    "current": current,
                    "canary": canary,
                    "history": history,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_keeps_its_version_and_raising_the_weight_only_moves_tenants_to_the_canary() {
        let tenants: Vec<String> = (0..1000).map(|i| format!("tenant-{i}")).collect();
        let mut before: Vec<bool> = vec![false; tenants.len()];
        for w in [0u8, 10, 50, 100] {
            let now: Vec<bool> = tenants.iter().map(|t| to_canary(Some(t), w)).collect();
            for (b, n) in before.iter().zip(&now) {
                assert!(!*b || *n, "a tenant moved back to current at weight {w}");
            }
            let share = now.iter().filter(|c| **c).count();
            let want = usize::from(w) * 10;
            assert!(
                share.abs_diff(want) <= 40,
                "weight {w}: {share} of 1000 tenants on the canary"
            );
            before = now;
        }
        assert!(!to_canary(None, 100), "no tenant: always the current");
        assert_eq!(bucket("acme"), bucket("acme"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&[], 0.5), None);
        let s = VersionStats::default();
        s.record(200, Duration::from_millis(4));
        s.record(503, Duration::from_millis(8));
        let j = s.json();
        assert_eq!(j["requests"], 2);
        assert_eq!(j["errors"], 1);
        assert_eq!(j["errorRate"], 0.5);
    }
}
