//! Storage of the Integrations app: a tenant's connections to ServiceNow, Jira, GitHub and plain
//! HTTP, and each connection's health (recent calls, circuit breaker, rate limit).
//!
//! A connection is keyed by its name within the tenant (`[a-z0-9][a-z0-9_-]{0,62}`), so a step
//! names it (`"connection": "jira"`) and a route carries it. Its secret is kept sealed under the
//! key-encryption key (the sealing is the connector layer's; this layer stores the text). The
//! health record is separate from the connection, so that calls (many, from any instance) and
//! an admin's edits (rare, with `If-Match`) never contend for one ETag.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Page, Versioned};
use crate::{Error, FieldError, Result, TenantId};

/// Connection kinds Flowgrid has connectors for.
pub const KINDS: [&str; 4] = ["servicenow", "jira", "github", "http"];

/// Names a connection may not take: they are path segments of the Integrations routes.
const RESERVED: [&str; 2] = ["catalog", "connections"];

/// Checks a connection name: 1 to 63 of `a-z 0-9 _ -`, starting with a letter or digit, and
/// not a reserved route segment.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !RESERVED.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(vec![FieldError::new(
            "name",
            "must be 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit, and not 'catalog' or 'connections'",
        )]))
    }
}

/// A connection's secret as stored: sealed, never the plain text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecret {
    /// AES-256-GCM under the key-encryption key: base64 of nonce ‖ ciphertext ‖ tag, bound to
    /// the connection's tenant and name.
    pub sealed: String,
    /// Which key-encryption key sealed it (a fingerprint), for rotation.
    pub kek_id: String,
    /// What may be shown: the last 4 characters, masked (`••••abcd`), or `••••` for short ones.
    pub masked: String,
    /// When it was set last.
    pub set_at: DateTime<Utc>,
}

/// The result of the last `POST /api/integrations/{name}/test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// Whether the authenticated call succeeded.
    pub ok: bool,
    /// When it ran.
    pub at: DateTime<Utc>,
    /// How long it took.
    pub latency_ms: u64,
    /// The upstream's HTTP status, 0 when no answer came.
    pub status: u16,
    /// What went wrong (never a secret).
    pub error: Option<String>,
}

/// A tenant's connection to an outside system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// Its name, unique in the tenant.
    pub name: String,
    /// Owner.
    pub tenant_id: TenantId,
    /// One of [`KINDS`].
    pub kind: String,
    /// The auth mode (one of the kind's, see the catalog).
    pub auth: String,
    /// Non-secret settings (base URL, user name, ...), checked against the kind's schema.
    pub config: Map<String, Value>,
    /// Whether it is the tenant's default connection of its kind.
    pub is_default: bool,
    /// The credential, sealed; absent for auth mode `none`.
    pub secret: Option<SealedSecret>,
    /// The last connection test.
    pub last_test: Option<TestResult>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Concurrency token set by the store.
    #[serde(default, skip_serializing)]
    pub etag: String,
}

impl Versioned for Connection {
    fn etag(&self) -> &str {
        &self.etag
    }
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    #[default]
    Closed,
    /// Calls fail at once until `open_until`.
    Open,
    /// One trial call is let through; its outcome closes or re-opens the circuit.
    HalfOpen,
}

/// One call a connector made, for the status page (no bodies, no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The action (`create-incident`, `test`, ...).
    pub action: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The last HTTP status, 0 when none came.
    pub status: u16,
    /// Total time with retries.
    pub latency_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// What went wrong.
    pub error: Option<String>,
}

/// The rate-limit figures the upstream reported last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests left in the window.
    pub remaining: Option<u64>,
    /// The window's size.
    pub limit: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<DateTime<Utc>>,
    /// When these figures were seen.
    pub seen_at: DateTime<Utc>,
}

/// How many recent calls a health record keeps.
pub const RECENT_CALLS: usize = 10;

/// A connection's health: the circuit breaker shared by every instance, recent calls, rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionHealth {
    /// The connection's name.
    pub name: String,
    /// Owner.
    pub tenant_id: TenantId,
    /// Circuit state.
    pub circuit: CircuitState,
    /// Failures in a row (reset by a success).
    pub consecutive_failures: u32,
    /// Until when an open circuit refuses calls.
    pub open_until: Option<DateTime<Utc>>,
    /// Newest first, at most [`RECENT_CALLS`].
    pub recent: Vec<CallRecord>,
    /// Last rate-limit figures.
    pub rate_limit: Option<RateLimit>,
    /// Concurrency token set by the store.
    #[serde(default, skip_serializing)]
    pub etag: String,
}

impl Versioned for ConnectionHealth {
    fn etag(&self) -> &str {
        &self.etag
    }
}

impl ConnectionHealth {
    /// A closed circuit with no history.
    pub fn new(tenant: TenantId, name: &str) -> Self {
        ConnectionHealth {
            name: name.to_owned(),
            tenant_id: tenant,
            circuit: CircuitState::Closed,
            consecutive_failures: 0,
            open_until: None,
            recent: Vec::new(),
            rate_limit: None,
            etag: String::new(),
        }
    }

    /// The circuit as seen at `now`: an open circuit past `open_until` is half-open.
    pub fn circuit_at(&self, now: DateTime<Utc>) -> CircuitState {
        match (self.circuit, self.open_until) {
            (CircuitState::Open, Some(until)) if now >= until => CircuitState::HalfOpen,
            (state, _) => state,
        }
    }

    /// Records a call's outcome: a success closes the circuit; `threshold` failures in a row
    /// (or a failed half-open trial) open it for `open_for`.
    pub fn record(
        &mut self,
        call: CallRecord,
        counts_as_failure: bool,
        threshold: u32,
        open_for: chrono::Duration,
    ) {
        let now = call.at;
        if call.ok || !counts_as_failure {
            if call.ok {
                self.circuit = CircuitState::Closed;
                self.consecutive_failures = 0;
                self.open_until = None;
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            let trial_failed = self.circuit_at(now) == CircuitState::HalfOpen;
            if trial_failed || self.consecutive_failures >= threshold {
                self.circuit = CircuitState::Open;
                self.open_until = Some(now + open_for);
            }
        }
        self.recent.insert(0, call);
        self.recent.truncate(RECENT_CALLS);
    }
}

/// Connections and their health records.
#[async_trait::async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Stores a new connection and returns it with its ETag; [`Error::Conflict`] when the
    /// tenant has one of that name.
    async fn insert(&self, connection: &Connection) -> Result<Connection>;
    /// The tenant's connection `name`, or [`Error::NotFound`] (also for other tenants').
    async fn get(&self, tenant: &TenantId, name: &str) -> Result<Connection>;
    /// The tenant's connections by name, `limit` at a time.
    async fn list(
        &self,
        tenant: &TenantId,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<Connection>>;
    /// Replaces the connection if its ETag is still `expected_etag`
    /// ([`Error::PreconditionFailed`] otherwise, [`Error::NotFound`] when gone).
    async fn replace(&self, connection: &Connection, expected_etag: &str) -> Result<Connection>;
    /// Deletes the connection and its health record; [`Error::NotFound`] when there is none,
    /// [`Error::PreconditionFailed`] when `expected_etag` is given and does not match.
    async fn delete(
        &self,
        tenant: &TenantId,
        name: &str,
        expected_etag: Option<&str>,
    ) -> Result<()>;
    /// The connection's health record, `None` before its first call.
    async fn health(&self, tenant: &TenantId, name: &str) -> Result<Option<ConnectionHealth>>;
    /// Writes a health record: created when `expected_etag` is `None` ([`Error::Conflict`] if
    /// one exists), else replaced if its ETag still matches ([`Error::PreconditionFailed`]).
    async fn save_health(
        &self,
        health: &ConnectionHealth,
        expected_etag: Option<&str>,
    ) -> Result<ConnectionHealth>;
}

/// Read-modify-write of a health record from any instance: creates it when missing, retries on
/// a concurrent write. `change` gets the current record (a fresh one when none exists).
pub async fn update_health(
    store: &dyn ConnectionStore,
    tenant: &TenantId,
    name: &str,
    mut change: impl FnMut(&mut ConnectionHealth),
) -> Result<ConnectionHealth> {
    for _ in 0..8 {
        let current = store.health(tenant, name).await?;
        let expected = current.as_ref().map(|h| h.etag.clone());
        let mut next = current.unwrap_or_else(|| ConnectionHealth::new(tenant.clone(), name));
        change(&mut next);
        match store.save_health(&next, expected.as_deref()).await {
            Err(Error::PreconditionFailed | Error::Conflict(_)) => continue,
            other => return other,
        }
    }
    Err(Error::Unavailable(
        "the connection's health record keeps changing".into(),
    ))
}

/// The tenant's default connection of `kind`: the one marked default, else the only one of
/// that kind; [`Error::NotFound`] when there is none or it is ambiguous.
pub async fn default_of_kind(
    store: &dyn ConnectionStore,
    tenant: &TenantId,
    kind: &str,
) -> Result<Connection> {
    let mut of_kind = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .list(tenant, super::paging::MAX_LIMIT, token.as_deref())
            .await?;
        of_kind.extend(page.items.into_iter().filter(|c| c.kind == kind));
        match page.continuation_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if let Some(default) = of_kind.iter().find(|c| c.is_default) {
        return Ok(default.clone());
    }
    match of_kind.len() {
        1 => Ok(of_kind.remove(0)),
        _ => Err(Error::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ok: bool, at: DateTime<Utc>) -> CallRecord {
        CallRecord {
            at,
            action: "test".into(),
            ok,
            status: if ok { 200 } else { 503 },
            latency_ms: 1,
            attempts: 1,
            error: None,
        }
    }

    #[test]
    fn failures_in_a_row_open_the_circuit_and_a_success_after_the_wait_closes_it() {
        let t = TenantId::parse("t1").unwrap();
        let mut h = ConnectionHealth::new(t, "c");
        let now = Utc::now();
        let wait = chrono::Duration::seconds(30);
        h.record(call(false, now), true, 2, wait);
        assert_eq!(h.circuit_at(now), CircuitState::Closed);
        h.record(call(false, now), true, 2, wait);
        assert_eq!(h.circuit_at(now), CircuitState::Open);
        let later = now + chrono::Duration::seconds(31);
        assert_eq!(h.circuit_at(later), CircuitState::HalfOpen);
        h.record(call(false, later), true, 2, wait);
        assert_eq!(
            h.circuit_at(later),
            CircuitState::Open,
            "a failed trial re-opens"
        );
        let much_later = later + chrono::Duration::seconds(31);
        h.record(call(true, much_later), true, 2, wait);
        assert_eq!(h.circuit_at(much_later), CircuitState::Closed);
        assert_eq!(h.recent.len(), 4);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("jira-prod_1").is_ok());
        for bad in [
            "",
            "Jira",
            "-x",
            "a/b",
            "catalog",
            "connections",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
