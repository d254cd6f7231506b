//! Analytics: what the platform's events add up to.
//!
//! Ingestion turns a platform event (or a tenant's tracked event) into a [`RawEvent`], kept for
//! the retention period and keyed by the event id (so a redelivered event is stored once).
//! Rollups are *derived* data: [`rollup_hour`] computes an hour's [`Rollup`]s from its raw
//! events, [`merge_rollups`] turns hours into a day and days into a month. Every number is an
//! integer (cost in micro-dollars) and every latency is a fixed-bucket [`Histogram`], so sums and
//! percentiles are the same whichever way periods are merged.
//!
//! What counts where (one source per number, so nothing is counted twice):
//! - `flowgrid.job.finished`: a run (`runs`, `succeeded`, `failures` = failed or timed out,
//!   `cancelled`), its duration, and per step: `llm` steps add `llmCalls`, tokens by kind and
//!   cost (also under the step's model), `integration` steps add `integrationCalls` (and
//!   `integrationFailures`). These are the job records' own numbers.
//! - `flowgrid.llm.call` / `flowgrid.integration.call`: calls made outside a job (the Design
//!   app); a job's calls are counted from its `job.finished`, never from these.
//! - `flowgrid.api.requests`: `apiRequests`, `apiErrors` (status ≥ 500) under the app, and
//!   under the route dimension (`<app> <METHOD> <route> <status>`).
//! - `flowgrid.agent.*`, `flowgrid.job.submitted`/`started`: `events` only.
//! - tracked (custom) events: `customEvents`, and per event type its count and the count, sum,
//!   min and max of each of its numbers ([`Metrics::custom`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{CloudEvent, PlatformEvent, TokenUsage};
use crate::job::{JobStatus, StepStatus};
use crate::{AgentId, Error, FieldError, Result, TenantId};

/// The CloudEvents `type` of a tracked (custom) event.
pub const CUSTOM_EVENT_TYPE: &str = "flowgrid.custom";

/// Latency bucket upper bounds, in ms; a value above the last falls in the overflow bucket.
pub const BUCKETS_MS: [u64; 20] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000,
    120_000, 300_000, 600_000, 3_600_000,
];

/// A fixed-bucket latency histogram: `counts[i]` values ≤ `BUCKETS_MS[i]` (and above the one
/// before); the last entry counts values above every bound. Two histograms merge by adding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram(pub Vec<u64>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(vec![0; BUCKETS_MS.len() + 1])
    }
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, ms: u64) {
        let i = BUCKETS_MS.partition_point(|&b| b < ms);
        self.0[i] += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Histogram) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// How many values.
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q`-quantile (0 < q ≤ 1) as the upper bound of its bucket (the last bound for the
    /// overflow bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the value: ceil(q * total), at least 1.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKETS_MS[i.min(BUCKETS_MS.len() - 1)]);
            }
        }
        BUCKETS_MS.last().copied()
    }
}

/// What a period adds up to, for one dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Metrics {
    /// Events of any kind but the per-minute API request counts (those are summed in
    /// `api_requests`, and how many count events carried them says nothing a tenant asked).
    pub events: u64,
    /// Finished runs.
    pub runs: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed or timed out.
    pub failures: u64,
    /// Runs cancelled.
    pub cancelled: u64,
    /// Model calls.
    pub llm_calls: u64,
    /// Integration calls.
    pub integration_calls: u64,
    /// Integration calls that failed.
    pub integration_failures: u64,
    /// API requests served.
    pub api_requests: u64,
    /// API requests answered with a 5xx.
    pub api_errors: u64,
    /// Tracked (custom) events.
    pub custom_events: u64,
    /// Tokens by kind.
    pub tokens: TokenUsage,
    /// Cost in micro-dollars.
    pub cost_micro_usd: u64,
    /// Run durations.
    pub duration_ms: Histogram,
    /// Model and integration call latencies.
    pub latency_ms: Histogram,
    /// Tracked events by their type: how many, and their numbers summed per name. At most
    /// [`MAX_CUSTOM_KEYS`] types (and names per type); the rest are added under `*`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, CustomSums>,
}

/// At most this many tracked event types per rollup, and number names per type; further ones
/// are summed under [`OTHER_KEY`] (which no type or name can be), so a rollup stays bounded
/// whatever names tenants send.
pub const MAX_CUSTOM_KEYS: usize = 50;
/// The key further types or names are summed under.
pub const OTHER_KEY: &str = "*";

/// One tracked number summed over events: how many values, their sum, least and greatest.
/// Values are finite (checked when tracked), so equality is total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NumberSum {
    /// How many values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
}

impl Eq for NumberSum {}

impl NumberSum {
    /// The sum of one value.
    pub fn of(v: f64) -> Self {
        NumberSum {
            count: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &NumberSum) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// The tracked events of one type in a period: how many, and each number summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct CustomSums {
    /// Events of the type.
    pub events: u64,
    /// Their numbers by name.
    pub numbers: BTreeMap<String, NumberSum>,
}

impl CustomSums {
    fn merge(&mut self, o: &CustomSums) {
        self.events += o.events;
        for (name, n) in &o.numbers {
            let key = bounded_key(&self.numbers, name);
            match self.numbers.get_mut(key) {
                Some(mine) => mine.merge(n),
                None => {
                    self.numbers.insert(key.to_owned(), *n);
                }
            }
        }
    }
}

/// `key` if `map` has it or room for it, else [`OTHER_KEY`].
fn bounded_key<'k, V>(map: &BTreeMap<String, V>, key: &'k str) -> &'k str {
    if map.contains_key(key) || map.len() < MAX_CUSTOM_KEYS - 1 || key == OTHER_KEY {
        key
    } else {
        OTHER_KEY
    }
}

impl Metrics {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, o: &Metrics) {
        self.events += o.events;
        self.runs += o.runs;
        self.succeeded += o.succeeded;
        self.failures += o.failures;
        self.cancelled += o.cancelled;
        self.llm_calls += o.llm_calls;
        self.integration_calls += o.integration_calls;
        self.integration_failures += o.integration_failures;
        self.api_requests += o.api_requests;
        self.api_errors += o.api_errors;
        self.custom_events += o.custom_events;
        self.tokens.input += o.tokens.input;
        self.tokens.cached_input += o.tokens.cached_input;
        self.tokens.output += o.tokens.output;
        self.tokens.reasoning += o.tokens.reasoning;
        self.cost_micro_usd += o.cost_micro_usd;
        self.duration_ms.merge(&o.duration_ms);
        self.latency_ms.merge(&o.latency_ms);
        for (event_type, sums) in &o.custom {
            let key = bounded_key(&self.custom, event_type);
            self.custom.entry(key.to_owned()).or_default().merge(sums);
        }
    }

    fn add_tokens(&mut self, t: &TokenUsage) {
        self.tokens.input += t.input;
        self.tokens.cached_input += t.cached_input;
        self.tokens.output += t.output;
        self.tokens.reasoning += t.reasoning;
    }
}

/// The period a rollup covers.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One UTC hour.
    Hour,
    /// One UTC day.
    Day,
    /// One UTC calendar month.
    Month,
}

impl Granularity {
    /// Parses `hour`, `day` or `month`.
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            "month" => Some(Granularity::Month),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }

    /// The start of the period `t` falls in.
    pub fn start(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let date = t.date_naive();
        let naive = match self {
            Granularity::Hour => date.and_hms_opt(t.hour(), 0, 0),
            Granularity::Day => date.and_hms_opt(0, 0, 0),
            Granularity::Month => date.with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)),
        };
        naive.map_or(t, |n| Utc.from_utc_datetime(&n))
    }

    /// The start of the period after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Granularity::Hour => start + Duration::hours(1),
            Granularity::Day => start + Duration::days(1),
            Granularity::Month => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                    .single()
                    .unwrap_or(start + Duration::days(31))
            }
        }
    }

    /// The granularity a period of this one is merged into.
    pub fn parent(self) -> Option<Granularity> {
        match self {
            Granularity::Hour => Some(Granularity::Day),
            Granularity::Day => Some(Granularity::Month),
            Granularity::Month => None,
        }
    }
}

/// What a rollup is about: everything of the tenant, or one agent, model or app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "dimension", content = "key", rename_all = "lowercase")]
pub enum Dimension {
    /// All of the tenant.
    Overall,
    /// One agent.
    Agent(String),
    /// One model (`provider/model`).
    Model(String),
    /// One app.
    App(String),
    /// One route's answers with one status: `<app> <METHOD> <route> <status>` (API requests).
    Route(String),
}

impl Dimension {
    /// `overall`, `agent`, `model` or `app`.
    pub fn kind(&self) -> &'static str {
        match self {
            Dimension::Overall => "overall",
            Dimension::Agent(_) => "agent",
            Dimension::Model(_) => "model",
            Dimension::App(_) => "app",
            Dimension::Route(_) => "route",
        }
    }

    /// The key within the kind (empty for overall).
    pub fn key(&self) -> &str {
        match self {
            Dimension::Overall => "",
            Dimension::Agent(k) | Dimension::Model(k) | Dimension::App(k) | Dimension::Route(k) => {
                k
            }
        }
    }

    /// The dimension of `kind` and `key`.
    pub fn of(kind: &str, key: &str) -> Option<Dimension> {
        match kind {
            "overall" => Some(Dimension::Overall),
            "agent" => Some(Dimension::Agent(key.into())),
            "model" => Some(Dimension::Model(key.into())),
            "app" => Some(Dimension::App(key.into())),
            "route" => Some(Dimension::Route(key.into())),
            _ => None,
        }
    }
}

/// One period's numbers for one dimension of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollup {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The period's length.
    pub granularity: Granularity,
    /// The period's start (UTC).
    pub period: DateTime<Utc>,
    /// What it is about.
    #[serde(flatten)]
    pub dimension: Dimension,
    /// The numbers.
    pub metrics: Metrics,
}

/// An event as stored: the tenant, its id (the idempotency key), type, time, the producing app
/// and its data (a [`PlatformEvent`] or a tracked event's body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEvent {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The event id.
    pub id: String,
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The producing app (`execution`, ..., `custom` for tracked events).
    pub app: String,
    /// The agent it concerns, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The event's data.
    pub data: Value,
}

impl RawEvent {
    /// The raw event of a platform event.
    pub fn of_platform(event: &CloudEvent<PlatformEvent>) -> Result<RawEvent> {
        let app = event
            .source
            .strip_prefix("/flowgrid/")
            .unwrap_or(&event.source)
            .to_owned();
        let agent_id = match &event.data {
            PlatformEvent::AgentCreated { agent_id, .. }
            | PlatformEvent::AgentUpdated { agent_id, .. }
            | PlatformEvent::AgentDeleted { agent_id }
            | PlatformEvent::AgentCompiled { agent_id, .. }
            | PlatformEvent::JobSubmitted { agent_id, .. }
            | PlatformEvent::JobStarted { agent_id, .. }
            | PlatformEvent::JobFinished { agent_id, .. } => Some(agent_id.to_string()),
            PlatformEvent::LlmCall { agent_id, .. } => agent_id.map(|a| a.to_string()),
            PlatformEvent::IntegrationCall { .. } | PlatformEvent::ApiRequests { .. } => None,
        };
        Ok(RawEvent {
            tenant_id: event.tenant()?,
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            time: event.time,
            app,
            agent_id,
            data: serde_json::to_value(&event.data)
                .map_err(|e| Error::Internal(format!("encoding an event: {e}")))?,
        })
    }

    /// What the event adds to each dimension it concerns.
    pub fn contributions(&self) -> Vec<(Dimension, Metrics)> {
        let mut overall = Metrics {
            events: 1,
            ..Metrics::default()
        };
        let mut models: BTreeMap<String, Metrics> = BTreeMap::new();
        let mut app = self.app.clone();
        let mut route = None;
        if self.event_type == CUSTOM_EVENT_TYPE {
            overall.custom_events = 1;
            if let Some(sums) = custom_sums(&self.data) {
                overall.custom.extend(sums);
            }
        } else if let Ok(event) = serde_json::from_value::<PlatformEvent>(self.data.clone()) {
            match event {
                PlatformEvent::JobFinished {
                    status,
                    duration_ms,
                    steps,
                    ..
                } => {
                    overall.runs = 1;
                    match status {
                        JobStatus::Succeeded => overall.succeeded = 1,
                        JobStatus::Failed | JobStatus::TimedOut => overall.failures = 1,
                        JobStatus::Cancelled => overall.cancelled = 1,
                        _ => {}
                    }
                    overall.duration_ms.record(duration_ms);
                    for step in &steps {
                        let failed = matches!(step.status, StepStatus::Failed);
                        match step.kind.as_str() {
                            "llm" => {
                                let mut m = Metrics {
                                    llm_calls: 1,
                                    cost_micro_usd: step.cost_micro_usd.unwrap_or(0),
                                    ..Metrics::default()
                                };
                                if let Some(t) = &step.tokens {
                                    m.add_tokens(t);
                                }
                                if let Some(ms) = step.duration_ms {
                                    m.latency_ms.record(ms);
                                }
                                overall.merge(&m);
                                let model = match (&step.provider, &step.model) {
                                    (Some(p), Some(m)) => format!("{p}/{m}"),
                                    (None, Some(m)) => m.clone(),
                                    _ => "unknown".into(),
                                };
                                models.entry(model).or_default().merge(&m);
                            }
                            "integration" => {
                                overall.integration_calls += 1;
                                overall.integration_failures += u64::from(failed);
                                if let Some(ms) = step.duration_ms {
                                    overall.latency_ms.record(ms);
                                }
                            }
                            _ => {
                                if let Some(t) = &step.tokens {
                                    overall.add_tokens(t);
                                }
                            }
                        }
                    }
                }
                PlatformEvent::LlmCall {
                    provider,
                    model,
                    tokens,
                    cost_micro_usd,
                    latency_ms,
                    ..
                } => {
                    let mut m = Metrics {
                        llm_calls: 1,
                        cost_micro_usd,
                        ..Metrics::default()
                    };
                    m.add_tokens(&tokens);
                    m.latency_ms.record(latency_ms);
                    overall.merge(&m);
                    models
                        .entry(format!("{provider}/{model}"))
                        .or_default()
                        .merge(&m);
                }
                PlatformEvent::IntegrationCall {
                    status, latency_ms, ..
                } => {
                    overall.integration_calls = 1;
                    overall.integration_failures = u64::from(!(200..400).contains(&status));
                    overall.latency_ms.record(latency_ms);
                }
                PlatformEvent::ApiRequests {
                    app: counted,
                    route: path,
                    status,
                    count,
                    ..
                } => {
                    overall.events = 0;
                    overall.api_requests = count;
                    overall.api_errors = if status >= 500 { count } else { 0 };
                    route = Some(format!("{counted} {path} {status}"));
                    app = counted;
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(4 + models.len());
        if let Some(agent) = &self.agent_id {
            out.push((Dimension::Agent(agent.clone()), overall.clone()));
        }
        if let Some(route) = route {
            out.push((Dimension::Route(route), overall.clone()));
        }
        out.push((Dimension::App(app), overall.clone()));
        out.extend(
            models
                .into_iter()
                .map(|(model, m)| (Dimension::Model(model), m)),
        );
        out.insert(0, (Dimension::Overall, overall));
        out
    }
}

/// A tracked event's type and numbers (its stored data) as the sums of one event.
fn custom_sums(data: &Value) -> Option<BTreeMap<String, CustomSums>> {
    let event_type = data.get("type")?.as_str()?;
    let mut sums = CustomSums {
        events: 1,
        numbers: BTreeMap::new(),
    };
    if let Some(numbers) = data.get("numbers").and_then(Value::as_object) {
        for (name, v) in numbers {
            if let Some(v) = v.as_f64().filter(|v| v.is_finite()) {
                let key = bounded_key(&sums.numbers, name).to_owned();
                match sums.numbers.get_mut(&key) {
                    Some(n) => n.merge(&NumberSum::of(v)),
                    None => {
                        sums.numbers.insert(key, NumberSum::of(v));
                    }
                }
            }
        }
    }
    Some(BTreeMap::from([(event_type.to_owned(), sums)]))
}

/// The rollups of one hour of `tenant` from its raw events (those outside the hour are ignored).
pub fn rollup_hour(tenant: &TenantId, hour: DateTime<Utc>, events: &[RawEvent]) -> Vec<Rollup> {
    let hour = Granularity::Hour.start(hour);
    let end = Granularity::Hour.next(hour);
    let mut by: BTreeMap<Dimension, Metrics> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| &e.tenant_id == tenant && e.time >= hour && e.time < end)
    {
        for (d, m) in e.contributions() {
            by.entry(d).or_default().merge(&m);
        }
    }
    into_rollups(tenant, Granularity::Hour, hour, by)
}

/// The rollups of the `granularity` period starting at `period`, merged from the finer
/// rollups `parts` (those of other tenants or outside the period are ignored).
pub fn merge_rollups(
    tenant: &TenantId,
    granularity: Granularity,
    period: DateTime<Utc>,
    parts: &[Rollup],
) -> Vec<Rollup> {
    let end = granularity.next(period);
    let mut by: BTreeMap<Dimension, Metrics> = BTreeMap::new();
    for r in parts
        .iter()
        .filter(|r| &r.tenant_id == tenant && r.period >= period && r.period < end)
    {
        by.entry(r.dimension.clone()).or_default().merge(&r.metrics);
    }
    into_rollups(tenant, granularity, period, by)
}

fn into_rollups(
    tenant: &TenantId,
    granularity: Granularity,
    period: DateTime<Utc>,
    by: BTreeMap<Dimension, Metrics>,
) -> Vec<Rollup> {
    by.into_iter()
        .map(|(dimension, metrics)| Rollup {
            tenant_id: tenant.clone(),
            granularity,
            period,
            dimension,
            metrics,
        })
        .collect()
}

/// Limits of a tracked event (`POST /api/analytics/track`).
pub mod track {
    use super::*;

    /// Events per request.
    pub const MAX_BATCH: usize = 100;
    /// Bytes of an event's `properties`, as JSON.
    pub const MAX_PROPERTIES_BYTES: usize = 4096;
    /// Numbers per event.
    pub const MAX_NUMBERS: usize = 20;
    /// How far in the past a timestamp may be.
    pub const MAX_AGE: Duration = Duration::days(7);
    /// How far in the future a timestamp may be (clock skew).
    pub const MAX_AHEAD: Duration = Duration::minutes(5);

    /// One tracked event as sent.
    #[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct TrackedEvent {
        /// The caller's name of the event (`[A-Za-z0-9._-]`, 1-64).
        #[serde(rename = "type")]
        #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
        pub event_type: String,
        /// The agent it concerns.
        #[serde(default)]
        #[schema(value_type = Option<AgentId>)]
        pub agent_id: Option<String>,
        /// Named numbers (at most 20; names `[A-Za-z0-9._-]`, 1-64).
        #[serde(default)]
        pub numbers: BTreeMap<String, f64>,
        /// Free properties (at most 4096 bytes as JSON).
        #[serde(default)]
        #[schema(value_type = Object)]
        pub properties: serde_json::Map<String, Value>,
        /// When it happened (within the last 7 days, at most 5 minutes ahead).
        pub timestamp: DateTime<Utc>,
        /// The caller's id of the event, for idempotency (`[A-Za-z0-9._-]`, 1-128); one is
        /// made when absent.
        #[serde(default)]
        #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
        pub id: Option<String>,
    }

    fn is_name(s: &str, max: usize) -> bool {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// Checks a batch; every problem is a field error naming the item (`events[3].timestamp`).
    /// Nothing is returned unless every item is valid.
    pub fn check(
        tenant: &TenantId,
        events: &[TrackedEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<RawEvent>> {
        let mut errors = Vec::new();
        if events.is_empty() || events.len() > MAX_BATCH {
            errors.push(FieldError::new(
                "events",
                format!("A batch holds 1 to {MAX_BATCH} events."),
            ));
        }
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let field = |f: &str| format!("events[{i}].{f}");
            if !is_name(&e.event_type, 64) {
                errors.push(FieldError::new(
                    field("type"),
                    "A type is 1-64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            if let Some(a) = &e.agent_id
                && AgentId::parse(a).is_err()
            {
                errors.push(FieldError::new(field("agentId"), "Not an agent id."));
            }
            if e.numbers.len() > MAX_NUMBERS {
                errors.push(FieldError::new(
                    field("numbers"),
                    format!("At most {MAX_NUMBERS} numbers."),
                ));
            }
            for (k, v) in &e.numbers {
                if !is_name(k, 64) || !v.is_finite() {
                    errors.push(FieldError::new(
                        field(&format!("numbers.{k}")),
                        "A number's name is 1-64 characters of A-Z a-z 0-9 . _ - and its value finite.",
                    ));
                }
            }
            let size = serde_json::to_vec(&e.properties).map_or(usize::MAX, |v| v.len());
            if size > MAX_PROPERTIES_BYTES {
                errors.push(FieldError::new(
                    field("properties"),
                    format!("Properties are at most {MAX_PROPERTIES_BYTES} bytes of JSON."),
                ));
            }
            if e.timestamp < now - MAX_AGE || e.timestamp > now + MAX_AHEAD {
                errors.push(FieldError::new(
                    field("timestamp"),
                    "A timestamp is within the last 7 days and at most 5 minutes ahead.",
                ));
            }
            if let Some(id) = &e.id
                && !is_name(id, 128)
            {
                errors.push(FieldError::new(
                    field("id"),
                    "An id is 1-128 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            let id =
                e.id.clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            out.push(RawEvent {
                tenant_id: tenant.clone(),
                id: format!("{CUSTOM_EVENT_TYPE}:{id}"),
                event_type: CUSTOM_EVENT_TYPE.into(),
                time: e.timestamp,
                app: "custom".into(),
                agent_id: e.agent_id.clone(),
                data: serde_json::json!({
                    "type": e.event_type,
                    "numbers": e.numbers,
                    "properties": e.properties,
                }),
            });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(Error::Validation(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::StepUsage;

    fn tenant() -> TenantId {
        TenantId::parse("acme").expect("tenant")
    }

    #[test]
    fn histogram_quantiles_hold_across_merges() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for ms in [3, 4, 40, 90] {
            a.record(ms);
        }
        for ms in [900, 15_000, 7_200_000] {
            b.record(ms);
        }
        let mut all = Histogram::default();
        all.merge(&a);
        all.merge(&b);
        assert_eq!(all.count(), 7);
        assert_eq!(all.quantile(0.5), Some(100));
        assert_eq!(all.quantile(0.99), Some(3_600_000));
        assert_eq!(a.quantile(0.25), Some(5));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn periods_start_and_follow_on_utc_boundaries() {
        let t = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 1)
            .single()
            .expect("t");
        assert_eq!(
            Granularity::Month.next(Granularity::Month.start(t)),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                .single()
                .expect("t")
        );
        assert_eq!(
            Granularity::Hour.start(t),
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0)
                .single()
                .expect("t")
        );
    }

    #[test]
    fn a_finished_job_counts_its_run_tokens_and_cost_under_agent_model_and_app() {
        let agent = AgentId::new();
        let finished = |job: &str, status, cost| {
            let event = CloudEvent::new(
                "execution",
                &tenant(),
                Utc::now(),
                PlatformEvent::JobFinished {
                    job_id: job.into(),
                    agent_id: agent,
                    status,
                    duration_ms: 120,
                    steps: vec![StepUsage {
                        step_id: "ask".into(),
                        kind: "llm".into(),
                        status: StepStatus::Succeeded,
                        attempts: 1,
                        duration_ms: Some(10),
                        tokens: Some(TokenUsage {
                            input: 10,
                            output: 5,
                            ..TokenUsage::default()
                        }),
                        cost_micro_usd: Some(cost),
                        provider: Some("offline".into()),
                        model: Some("offline-1".into()),
                    }],
                },
            );
            RawEvent::of_platform(&event).expect("raw")
        };
        let events = vec![
            finished("j1", JobStatus::Succeeded, 7),
            finished("j2", JobStatus::Failed, 11),
        ];
        let hour = Granularity::Hour.start(Utc::now());
        let rollups = rollup_hour(&tenant(), hour, &events);
        let find = |d: Dimension| {
            rollups
                .iter()
                .find(|r| r.dimension == d)
                .expect("dimension")
                .metrics
                .clone()
        };
        let overall = find(Dimension::Overall);
        assert_eq!(
            (overall.runs, overall.failures, overall.succeeded),
            (2, 1, 1)
        );
        assert_eq!((overall.tokens.input, overall.tokens.output), (20, 10));
        assert_eq!(overall.cost_micro_usd, 18);
        assert_eq!(find(Dimension::Agent(agent.to_string())), overall);
        assert_eq!(find(Dimension::App("execution".into())), overall);
        let model = find(Dimension::Model("offline/offline-1".into()));
        assert_eq!(
            (model.runs, model.llm_calls, model.cost_micro_usd),
            (0, 2, 18)
        );
        let day = merge_rollups(
            &tenant(),
            Granularity::Day,
            Granularity::Day.start(hour),
            &rollups,
        );
        assert_eq!(day.len(), rollups.len());
        assert_eq!(day[0].metrics, rollups[0].metrics);
    }

    fn tracked(id: &str, event_type: &str, numbers: serde_json::Value) -> RawEvent {
        let batch: Vec<track::TrackedEvent> = serde_json::from_value(serde_json::json!([
            {"type": event_type, "timestamp": Utc::now(), "id": id, "numbers": numbers}
        ]))
        .expect("batch");
        track::check(&tenant(), &batch, Utc::now())
            .expect("valid")
            .remove(0)
    }

    #[test]
    fn tracked_numbers_sum_per_type_and_name_and_merge_into_days() {
        let hour = Granularity::Hour.start(Utc::now());
        let events = vec![
            tracked("a", "order", serde_json::json!({"total": 10.5, "lines": 2})),
            tracked("b", "order", serde_json::json!({"total": 4.5})),
            tracked("c", "signup", serde_json::json!({})),
        ];
        let rollups = rollup_hour(&tenant(), hour, &events);
        let overall = &rollups[0].metrics;
        assert_eq!(overall.custom_events, 3);
        let order = &overall.custom["order"];
        assert_eq!(order.events, 2);
        assert_eq!(
            order.numbers["total"],
            NumberSum {
                count: 2,
                sum: 15.0,
                min: 4.5,
                max: 10.5
            }
        );
        assert_eq!(order.numbers["lines"], NumberSum::of(2.0));
        assert_eq!(overall.custom["signup"].events, 1);
        let day = merge_rollups(
            &tenant(),
            Granularity::Day,
            Granularity::Day.start(hour),
            &rollups,
        );
        assert_eq!(day[0].metrics.custom, overall.custom);
    }

    #[test]
    fn tracked_types_beyond_the_bound_are_summed_under_the_other_key() {
        let hour = Granularity::Hour.start(Utc::now());
        let events: Vec<RawEvent> = (0..MAX_CUSTOM_KEYS + 10)
            .map(|i| {
                tracked(
                    &format!("e{i}"),
                    &format!("t{i:03}"),
                    serde_json::json!({"n": 1}),
                )
            })
            .collect();
        let rollups = rollup_hour(&tenant(), hour, &events);
        let custom = &rollups[0].metrics.custom;
        assert_eq!(custom.len(), MAX_CUSTOM_KEYS);
        let counted: u64 = custom.values().map(|c| c.events).sum();
        assert_eq!(counted, (MAX_CUSTOM_KEYS + 10) as u64, "nothing is lost");
        assert_eq!(custom[OTHER_KEY].events, 11);
        assert_eq!(custom[OTHER_KEY].numbers["n"].count, 11);
    }

    #[test]
    fn api_request_counts_go_under_their_app_and_route_with_status() {
        let event = CloudEvent::new(
            "agents",
            &tenant(),
            Utc::now(),
            PlatformEvent::ApiRequests {
                app: "agents".into(),
                instance: "i1".into(),
                minute: Granularity::Hour.start(Utc::now()),
                route: "GET /api/agents/{id}".into(),
                status: 503,
                count: 7,
            },
        );
        let raw = RawEvent::of_platform(&event).expect("raw");
        let parts = raw.contributions();
        let find = |d: Dimension| {
            parts
                .iter()
                .find(|(k, _)| *k == d)
                .map(|(_, m)| (m.api_requests, m.api_errors))
        };
        assert!(
            parts.iter().all(|(_, m)| m.events == 0),
            "a count event is a carrier, not an event of the tenant's: {parts:?}"
        );
        assert_eq!(find(Dimension::Overall), Some((7, 7)));
        assert_eq!(find(Dimension::App("agents".into())), Some((7, 7)));
        assert_eq!(
            find(Dimension::Route("agents GET /api/agents/{id} 503".into())),
            Some((7, 7))
        );
        assert_eq!(
            Dimension::of("route", "x"),
            Some(Dimension::Route("x".into()))
        );
    }

    #[test]
    fn a_bad_item_fails_the_whole_batch_naming_item_and_field() {
        let now = Utc::now();
        let good = serde_json::json!({"type": "clicked", "timestamp": now});
        let bad = serde_json::json!({"type": "clicked", "timestamp": now - Duration::days(30)});
        let batch: Vec<track::TrackedEvent> =
            serde_json::from_value(serde_json::json!([good, bad])).expect("batch");
        let Err(Error::Validation(errors)) = track::check(&tenant(), &batch, now) else {
            panic!("accepted");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "events[1].timestamp");
        assert_eq!(
            track::check(&tenant(), &batch[..1], now)
                .expect("good")
                .len(),
            1
        );
    }
}
