//! The scale controller: one per app, each on its own, following the documented target-based
//! rules of Azure Functions (Flex Consumption scales each app this way):
//!
//! - HTTP: instances = requests in flight ÷ the per-instance HTTP concurrency (rounded up);
//! - Service Bus: instances = queue length ÷ `maxConcurrentCalls` (rounded up), per trigger;
//! - the needs of an app's functions are added up ("a sum across those functions"), clamped to
//!   the app's minimum and maximum;
//! - at most 4 instances are added per decision;
//! - scale in only when the target has stayed lower for the scale-in delay, and only instances
//!   that are idle (nothing in flight) are removed.
//!
//! [`Controller::decide`] is a pure function of what it observes and the time it is given, so
//! the tests drive it with a fake clock; `autoscale::run` applies its decisions to the app's pool.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// At most this many instances are added in one decision (target-based scaling).
pub const MAX_ADDED_PER_DECISION: usize = 4;
/// Decisions kept for `/api/health`.
const KEPT_DECISIONS: usize = 20;

/// One app's scaling rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Fewest instances (always running).
    pub min: usize,
    /// Most instances.
    pub max: usize,
    /// Requests in flight one instance is meant to take (Flex Consumption's HTTP concurrency).
    pub http_concurrency: usize,
    /// `maxConcurrentCalls`: messages one instance handles at once.
    pub max_concurrent_calls: usize,
    /// How long the target must stay below the instance count before instances are removed.
    pub scale_in_after: Duration,
}

/// What the controller sees of an app at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Instances running (or starting).
    pub instances: usize,
    /// HTTP requests in flight to the app.
    pub http_in_flight: usize,
    /// The length of each Service Bus entity the app's triggers read.
    pub queues: Vec<(String, u64)>,
}

/// One decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Instances before.
    pub from: usize,
    /// Instances the decision asks for (`from` when it holds).
    pub to: usize,
    /// The target the rules give (clamped to min..max).
    pub target: usize,
    /// Why, with the figures.
    pub reason: String,
}

/// The controller's memory between decisions.
#[derive(Debug, Default)]
pub struct Controller {
    below_since: Option<Instant>,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    if b == 0 { 0 } else { a.div_ceil(b) }
}

impl Controller {
    /// The decision for what is observed at `now`.
    pub fn decide(&mut self, rules: &Rules, seen: &Observed, now: Instant) -> Decision {
        let conc = rules.http_concurrency.max(1) as u64;
        let calls = rules.max_concurrent_calls.max(1) as u64;
        let http = div_ceil(seen.http_in_flight as u64, conc);
        let mut parts = vec![format!(
            "http {} in flight ÷ {conc} per instance = {http}",
            seen.http_in_flight
        )];
        let mut need = http;
        for (entity, len) in &seen.queues {
            let n = div_ceil(*len, calls);
            need += n;
            parts.push(format!(
                "{entity} {len} messages ÷ maxConcurrentCalls {calls} = {n}"
            ));
        }
        let target = usize::try_from(need)
            .unwrap_or(usize::MAX)
            .clamp(rules.min, rules.max.max(rules.min));
        let figures = format!(
            "{}; target {target} (min {}, max {})",
            parts.join(", "),
            rules.min,
            rules.max
        );
        let from = seen.instances;
        if target > from {
            self.below_since = None;
            let to = from + (target - from).min(MAX_ADDED_PER_DECISION);
            let capped = if to < target {
                format!(" (at most {MAX_ADDED_PER_DECISION} added per decision)")
            } else {
                String::new()
            };
            return Decision {
                from,
                to,
                target,
                reason: format!("scale out: {figures}{capped}"),
            };
        }
        if target == from {
            self.below_since = None;
            return Decision {
                from,
                to: from,
                target,
                reason: format!("steady: {figures}"),
            };
        }
        let since = *self.below_since.get_or_insert(now);
        let low_for = now.saturating_duration_since(since);
        if low_for >= rules.scale_in_after {
            self.below_since = None;
            Decision {
                from,
                to: target,
                target,
                reason: format!(
                    "scale in: {figures} for {:.1} s (scale-in delay {:.1} s)",
                    low_for.as_secs_f64(),
                    rules.scale_in_after.as_secs_f64()
                ),
            }
        } else {
            Decision {
                from,
                to: from,
                target,
                reason: format!(
                    "holding: {figures} for {:.1} s of the {:.1} s scale-in delay",
                    low_for.as_secs_f64(),
                    rules.scale_in_after.as_secs_f64()
                ),
            }
        }
    }
}

/// What `/api/health` shows of an app's scaling.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleView {
    /// The last target.
    pub target: usize,
    /// The reason of the last decision.
    pub reason: String,
    /// The decisions that changed the instance count, newest last.
    pub decisions: VecDeque<DecisionRecord>,
}

/// A decision as kept for health.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    /// When (RFC 3339).
    pub at: String,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
    /// Instances after applying it (busy instances are not removed).
    pub applied: usize,
}

impl ScaleView {
    pub(crate) fn record(&mut self, decision: &Decision, applied: usize) {
        // Kept: the decisions that changed the instance count (a target that moves without
        // changing it shows in `target` and `reason`).
        let changed = decision.to != decision.from;
        self.target = decision.target;
        self.reason.clone_from(&decision.reason);
        if changed {
            self.decisions.push_back(DecisionRecord {
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                decision: decision.clone(),
                applied,
            });
            while self.decisions.len() > KEPT_DECISIONS {
                self.decisions.pop_front();
            }
        }
    }
}
