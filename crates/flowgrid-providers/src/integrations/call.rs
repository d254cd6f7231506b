//! One upstream call, with the rules every connector shares: the outbound guard, a timeout per
//! attempt, retries with exponential backoff and full jitter that honour `Retry-After`,
//! `X-RateLimit-Reset` and GitHub's secondary rate limits, credential errors (401/403) that are
//! reported and never retried, and, for creates, a look-up of the run's tag before retrying an
//! attempt whose outcome is unknown (timeout, connection cut after sending, 5xx).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::outbound::{self, OutboundError};

/// Retry and timeout settings of the connector layer.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// Time allowed for one attempt (connect, send, read the answer).
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Base of the exponential backoff.
    pub base_delay: Duration,
    /// Upper bound of one backoff wait.
    pub max_delay: Duration,
    /// Longest wait a rate limit may ask for; a longer one fails the call (retryable) instead.
    pub max_rate_limit_wait: Duration,
    /// Failures in a row that open the circuit.
    pub circuit_threshold: u32,
    /// How long an open circuit refuses calls.
    pub circuit_open_for: Duration,
    /// Largest upstream body read.
    pub max_body_bytes: u64,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            attempt_timeout: Duration::from_secs(15),
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_rate_limit_wait: Duration::from_secs(30),
            circuit_threshold: 5,
            circuit_open_for: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The connector layer's settings, with defaults: what [`CallSettings::from_env`] reads.
pub const SETTINGS: &[flowgrid_domain::config::Setting] = &[
    flowgrid_domain::config::Setting {
        name: "FLOWGRID_INTEGRATION_TIMEOUT_MS",
        default: "15000",
        meaning: "time allowed for one attempt of a connector call (connect, send, read)",
    },
    flowgrid_domain::config::Setting {
        name: "FLOWGRID_INTEGRATION_MAX_ATTEMPTS",
        default: "4",
        meaning: "attempts per connector call, the first included",
    },
    flowgrid_domain::config::Setting {
        name: "FLOWGRID_INTEGRATION_BACKOFF_MS",
        default: "250",
        meaning: "base of the exponential backoff between attempts (full jitter, capped at 8 s)",
    },
    flowgrid_domain::config::Setting {
        name: "FLOWGRID_INTEGRATION_CIRCUIT_THRESHOLD",
        default: "5",
        meaning: "upstream failures in a row that open a connection's circuit",
    },
    flowgrid_domain::config::Setting {
        name: "FLOWGRID_INTEGRATION_CIRCUIT_OPEN_SECS",
        default: "30",
        meaning: "how long an open circuit refuses calls before one trial call",
    },
];

impl CallSettings {
    /// Reads [`SETTINGS`] from the environment; a malformed value is an error naming it.
    pub fn from_env() -> flowgrid_domain::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads [`SETTINGS`] through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> flowgrid_domain::Result<Self> {
        let number = |name: &str| -> flowgrid_domain::Result<Option<u64>> {
            match get(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                    flowgrid_domain::config::setting_error(name, "must be a whole number")
                }),
            }
        };
        let mut s = CallSettings::default();
        if let Some(ms) = number("FLOWGRID_INTEGRATION_TIMEOUT_MS")? {
            s.attempt_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = number("FLOWGRID_INTEGRATION_MAX_ATTEMPTS")? {
            s.max_attempts = u32::try_from(n.clamp(1, 10)).unwrap_or(4);
        }
        if let Some(ms) = number("FLOWGRID_INTEGRATION_BACKOFF_MS")? {
            s.base_delay = Duration::from_millis(ms);
        }
        if let Some(n) = number("FLOWGRID_INTEGRATION_CIRCUIT_THRESHOLD")? {
            s.circuit_threshold = u32::try_from(n.max(1)).unwrap_or(5);
        }
        if let Some(secs) = number("FLOWGRID_INTEGRATION_CIRCUIT_OPEN_SECS")? {
            s.circuit_open_for = Duration::from_secs(secs.max(1));
        }
        Ok(s)
    }
}

/// What kind of failure a call ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The action's input is wrong (before any call).
    Input,
    /// The upstream refused the credentials (401/403): never retried.
    Credentials,
    /// The outbound guard refused the URL.
    Refused,
    /// The circuit is open for this connection.
    CircuitOpen,
    /// Rate limited beyond what the call may wait.
    RateLimited,
    /// The upstream refused the request (another 4xx).
    Rejected,
    /// The upstream failed or did not answer (5xx, timeout, connection).
    Unavailable,
    /// The connection cannot be used (secret cannot be opened, unknown action).
    Misconfigured,
}

/// A failed action: what to tell the caller and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind.
    pub kind: FailureKind,
    /// For the caller (a step's error, a problem's detail); never a secret.
    pub message: String,
    /// The last upstream HTTP status, 0 when none came.
    pub status: u16,
    /// Field errors (kind `Input`).
    pub fields: Vec<flowgrid_domain::FieldError>,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, status: u16, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            status,
            fields: Vec::new(),
        }
    }

    /// Whether another attempt later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::CircuitOpen | FailureKind::RateLimited | FailureKind::Unavailable
        )
    }

    /// Whether it counts against the circuit breaker (the upstream is unwell, not the request).
    pub fn counts_against_circuit(&self) -> bool {
        matches!(self.kind, FailureKind::Unavailable)
    }
}

impl From<Failure> for crate::CallError {
    fn from(f: Failure) -> Self {
        crate::CallError {
            retryable: f.retryable(),
            message: f.message,
        }
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: reqwest::Method,
    /// Absolute URL.
    pub url: url::Url,
    /// Headers (credentials included).
    pub headers: HeaderMap,
    /// JSON body.
    pub body: Option<Value>,
}

impl Request {
    /// A request without body.
    pub fn new(method: reqwest::Method, url: url::Url, headers: HeaderMap) -> Self {
        Request {
            method,
            url,
            headers,
            body: None,
        }
    }

    /// The same request with a JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// An upstream answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The body as text when it was not JSON (capped).
    pub text: String,
}

impl Reply {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The rate-limit figures of the answer (GitHub's and Jira's `X-RateLimit-*`).
    pub fn rate_limit(&self) -> Option<flowgrid_domain::store::connections::RateLimit> {
        let remaining = self
            .header("x-ratelimit-remaining")
            .and_then(|v| v.trim().parse().ok());
        let limit = self
            .header("x-ratelimit-limit")
            .and_then(|v| v.trim().parse().ok());
        let reset_at = self.header("x-ratelimit-reset").and_then(parse_reset);
        (remaining.is_some() || limit.is_some()).then(|| {
            flowgrid_domain::store::connections::RateLimit {
                remaining,
                limit,
                reset_at,
                seen_at: Utc::now(),
            }
        })
    }

    /// The upstream's own error message, from the vendors' documented error bodies:
    /// ServiceNow `{"error": {"message", "detail"}}`, Jira `{"errorMessages": [], "errors": {}}`,
    /// GitHub `{"message", "errors": [{"field", "code"}]}`.
    pub fn error_message(&self) -> String {
        let b = &self.body;
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = b.pointer("/error/message").and_then(Value::as_str) {
            parts.push(m.to_owned());
            if let Some(d) = b
                .pointer("/error/detail")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
            {
                parts.push(d.to_owned());
            }
        }
        if let Some(list) = b.get("errorMessages").and_then(Value::as_array) {
            parts.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        if let Some(map) = b.get("errors").and_then(Value::as_object) {
            parts.extend(
                map.iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("invalid"))),
            );
        }
        if let Some(m) = b.get("message").and_then(Value::as_str) {
            parts.push(m.to_owned());
        }
        if let Some(list) = b.get("errors").and_then(Value::as_array) {
            for e in list {
                let field = e.get("field").and_then(Value::as_str).unwrap_or("?");
                let code = e.get("code").and_then(Value::as_str).unwrap_or("invalid");
                parts.push(format!("{field}: {code}"));
            }
        }
        if parts.is_empty() && !self.text.is_empty() {
            parts.push(self.text.chars().take(200).collect());
        }
        parts.join("; ")
    }

    /// How long the upstream asks us to wait: `Retry-After` (seconds or an HTTP date), else,
    /// when the quota is spent (`X-RateLimit-Remaining: 0`), until `X-RateLimit-Reset`.
    pub fn wait_hint(&self, now: DateTime<Utc>) -> Option<Duration> {
        if let Some(v) = self.header("retry-after") {
            let v = v.trim();
            if let Ok(secs) = v.parse::<f64>() {
                return Some(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)));
            }
            if let Ok(at) = DateTime::parse_from_rfc2822(v) {
                return Some((at.with_timezone(&Utc) - now).to_std().unwrap_or_default());
            }
        }
        let spent = self
            .header("x-ratelimit-remaining")
            .is_some_and(|v| v.trim() == "0");
        if spent && let Some(reset) = self.header("x-ratelimit-reset").and_then(parse_reset) {
            return Some((reset - now).to_std().unwrap_or_default());
        }
        None
    }

    /// Whether this answer is a rate limit rather than a refusal: 429, or GitHub's 403 for a
    /// spent primary quota (`X-RateLimit-Remaining: 0`) or a secondary limit (`Retry-After`, or
    /// a message naming the secondary rate limit).
    pub fn is_rate_limited(&self) -> bool {
        if self.status == 429 {
            return true;
        }
        self.status == 403
            && (self.header("retry-after").is_some()
                || self
                    .header("x-ratelimit-remaining")
                    .is_some_and(|v| v.trim() == "0")
                || self
                    .body
                    .get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.to_ascii_lowercase().contains("rate limit")))
    }
}

/// `X-RateLimit-Reset`: epoch seconds (GitHub), epoch milliseconds (recorded fixtures), or an
/// ISO 8601 time (Jira).
fn parse_reset(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i64>() {
        return if n > 10_000_000_000 {
            DateTime::from_timestamp_millis(n)
        } else {
            DateTime::from_timestamp(n, 0)
        };
    }
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How one attempt ended.
pub(crate) enum Sent {
    /// An answer came.
    Reply(Reply),
    /// The request may have reached the upstream but no answer came (timeout, cut).
    Unknown(String),
    /// The request never left (refused by the guard, connect failed).
    Unsent(FailureKind, String),
}

/// A lookup of a create's tag, run before retrying an attempt whose outcome is unknown.
#[async_trait::async_trait]
pub(crate) trait Lookup: Send + Sync {
    /// The record made by an earlier attempt, if any.
    async fn find(&self) -> Result<Option<Value>, Failure>;
}

/// What a call ended with.
pub(crate) enum Done {
    /// The upstream's answer (2xx).
    Reply(Reply),
    /// The record an earlier attempt created, found by its tag.
    Existing(Value),
}

/// Facts about a finished call, for the health record.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    /// Attempts made.
    pub attempts: u32,
    /// Last status seen.
    pub status: u16,
    /// Rate-limit figures seen last.
    pub rate_limit: Option<flowgrid_domain::store::connections::RateLimit>,
}

/// The HTTP machinery: a guarded client and the settings.
#[derive(Clone)]
pub struct Caller {
    pub(crate) client: reqwest::Client,
    pub(crate) policy: std::sync::Arc<outbound::OutboundPolicy>,
    pub(crate) settings: CallSettings,
}

impl Caller {
    /// Sends one attempt.
    pub(crate) async fn send_once(&self, request: &Request) -> Sent {
        if let Err(e) = self.policy.check_url(&request.url) {
            return Sent::Unsent(FailureKind::Refused, e.to_string());
        }
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone())
            .timeout(self.settings.attempt_timeout);
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let mut span = crate::otel::http_client_span(request.method.as_str(), &request.url);
        if let Some(span) = &span {
            builder = builder.header("traceparent", span.traceparent());
        }
        let sent = builder.send().await;
        crate::otel::http_client_result(&mut span, sent.as_ref().map(|r| r.status().as_u16()));
        drop(span);
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let text = outbound::describe(&e);
                if text.contains("refused by the outbound guard") {
                    return Sent::Unsent(FailureKind::Refused, text);
                }
                return if e.is_connect() {
                    Sent::Unsent(
                        FailureKind::Unavailable,
                        format!("cannot connect: {}", first_line(&text)),
                    )
                } else if e.is_timeout() {
                    Sent::Unknown("no answer within the timeout".into())
                } else {
                    Sent::Unknown(format!("the connection failed: {}", first_line(&text)))
                };
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match tokio::time::timeout(
            self.settings.attempt_timeout,
            outbound::read_capped(response, self.settings.max_body_bytes),
        )
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(OutboundError::TooLarge(cap))) => {
                return Sent::Unsent(
                    FailureKind::Rejected,
                    format!("the upstream's answer is larger than {cap} bytes"),
                );
            }
            Ok(Err(e)) => return Sent::Unknown(e.to_string()),
            Err(_) => return Sent::Unknown("the answer did not finish within the timeout".into()),
        };
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = if json.is_null() {
            String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()
        } else {
            String::new()
        };
        Sent::Reply(Reply {
            status,
            headers,
            body: json,
            text,
        })
    }

    /// The backoff before attempt `attempt + 1` (full jitter), at least `hint`.
    fn delay(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let exp = self
            .settings
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.settings.max_delay);
        let jittered = exp.mul_f64(jitter());
        match hint {
            Some(h) => h.max(jittered.min(self.settings.base_delay)),
            None => jittered,
        }
    }

    /// Sends `request` with retries. `lookup` marks a create: before a retry after an unknown
    /// outcome (timeout, cut connection, 5xx) it looks the tag up and returns what it finds.
    pub(crate) async fn execute(
        &self,
        request: &Request,
        lookup: Option<&dyn Lookup>,
        stats: &mut CallStats,
    ) -> Result<Done, Failure> {
        let max = self.settings.max_attempts.max(1);
        let mut outcome_unknown = false;
        let mut last = Failure::new(FailureKind::Unavailable, 0, "no attempt was made");
        for attempt in 0..max {
            if attempt > 0
                && outcome_unknown
                && let Some(lookup) = lookup
                && let Some(found) = lookup.find().await?
            {
                return Ok(Done::Existing(found));
            }
            stats.attempts = attempt + 1;
            let hint = match self.send_once(request).await {
                Sent::Reply(reply) => {
                    stats.status = reply.status;
                    if let Some(rl) = reply.rate_limit() {
                        stats.rate_limit = Some(rl);
                    }
                    if reply.ok() {
                        return Ok(Done::Reply(reply));
                    }
                    let upstream = reply.error_message();
                    let said = if upstream.is_empty() {
                        String::new()
                    } else {
                        format!(": {upstream}")
                    };
                    if reply.is_rate_limited() {
                        let wait = reply.wait_hint(Utc::now());
                        last = Failure::new(
                            FailureKind::RateLimited,
                            reply.status,
                            format!("rate limited by the upstream ({}){said}", reply.status),
                        );
                        match wait {
                            Some(w) if w > self.settings.max_rate_limit_wait => {
                                last.message = format!(
                                    "{}; it asks to wait {} s, longer than allowed",
                                    last.message,
                                    w.as_secs()
                                );
                                return Err(last);
                            }
                            w => w,
                        }
                    } else if matches!(reply.status, 401 | 403) {
                        return Err(Failure::new(
                            FailureKind::Credentials,
                            reply.status,
                            format!(
                                "the upstream refused the connection's credentials ({}){said}",
                                reply.status
                            ),
                        ));
                    } else if reply.status >= 500 || reply.status == 408 {
                        outcome_unknown = outcome_unknown || reply.status >= 500;
                        last = Failure::new(
                            FailureKind::Unavailable,
                            reply.status,
                            format!("the upstream failed ({}){said}", reply.status),
                        );
                        reply.wait_hint(Utc::now())
                    } else {
                        return Err(Failure::new(
                            FailureKind::Rejected,
                            reply.status,
                            format!("the upstream refused the request ({}){said}", reply.status),
                        ));
                    }
                }
                Sent::Unknown(why) => {
                    outcome_unknown = true;
                    last = Failure::new(FailureKind::Unavailable, 0, why);
                    None
                }
                Sent::Unsent(FailureKind::Unavailable, why) => {
                    last = Failure::new(FailureKind::Unavailable, 0, why);
                    None
                }
                Sent::Unsent(kind, why) => return Err(Failure::new(kind, 0, why)),
            };
            if attempt + 1 < max {
                tokio::time::sleep(self.delay(attempt, hint)).await;
            }
        }
        if outcome_unknown
            && let Some(lookup) = lookup
            && let Some(found) = lookup.find().await?
        {
            return Ok(Done::Existing(found));
        }
        Err(last)
    }

    /// Sends `request` with retries and answers the 2xx reply.
    pub(crate) async fn fetch(
        &self,
        request: &Request,
        stats: &mut CallStats,
    ) -> Result<Reply, Failure> {
        match self.execute(request, None, stats).await? {
            Done::Reply(r) => Ok(r),
            Done::Existing(_) => Err(Failure::new(
                FailureKind::Unavailable,
                0,
                "unexpected lookup",
            )),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// A factor in [0, 1) for full jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Milliseconds since `start`.
pub(crate) fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn reply(status: u16, headers: &[(&'static str, &str)], body: Value) -> Reply {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        Reply {
            status,
            headers: h,
            body,
            text: String::new(),
        }
    }

    #[test]
    fn waits_come_from_retry_after_or_the_rate_limit_reset() {
        let now = Utc::now();
        assert_eq!(
            reply(429, &[("retry-after", "3")], Value::Null).wait_hint(now),
            Some(Duration::from_secs(3))
        );
        let reset = (now + chrono::Duration::seconds(10))
            .timestamp()
            .to_string();
        let r = reply(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            Value::Null,
        );
        assert!(r.is_rate_limited());
        let w = r.wait_hint(now).unwrap();
        assert!(
            w <= Duration::from_secs(10) && w >= Duration::from_secs(8),
            "{w:?}"
        );
        assert_eq!(reply(500, &[], Value::Null).wait_hint(now), None);
    }

    #[test]
    fn a_github_secondary_limit_is_a_rate_limit_and_a_plain_403_is_a_credential_error() {
        let secondary = reply(
            403,
            &[],
            serde_json::json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}),
        );
        assert!(secondary.is_rate_limited());
        assert!(
            !reply(403, &[], serde_json::json!({"message": "Bad credentials"})).is_rate_limited()
        );
    }

    #[test]
    fn vendor_error_bodies_are_read() {
        let snow = reply(
            400,
            &[],
            serde_json::json!({"error": {"message": "Invalid table", "detail": "x"}, "status": "failure"}),
        );
        assert_eq!(snow.error_message(), "Invalid table; x");
        let jira = reply(
            400,
            &[],
            serde_json::json!({"errorMessages": [], "errors": {"summary": "You must specify a summary of the issue."}}),
        );
        assert_eq!(
            jira.error_message(),
            "summary: You must specify a summary of the issue."
        );
    }
}
