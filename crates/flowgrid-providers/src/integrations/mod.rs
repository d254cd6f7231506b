//! The connector layer: ServiceNow, Jira Cloud, GitHub and plain HTTP over their real wire
//! formats, used in-process by the Integrations app and by Execution's `integration` steps
//! ([`Integrations`] implements [`crate::connector::Connectors`]).
//!
//! - Secrets are sealed with AES-256-GCM under the key-encryption key ([`crate::crypto`]),
//!   bound to the tenant and the connection's name; they are opened only to build a request's
//!   credentials, never returned, logged or put in an output.
//! - Every call goes through the outbound guard, with a timeout per attempt and retries
//!   ([`call`]); 401/403 are credential errors and never retried.
//! - A circuit breaker per tenant and connection lives in the connection's health record in the
//!   store, so every instance sees it: an open circuit fails calls at once until it half-opens.
//! - Creates happen once per idempotency key: the create carries a tag made from the key
//!   (ServiceNow `correlation_id`, a Jira label, a marker in a GitHub issue's body), and before
//!   an attempt whose outcome is unknown is retried, the tag is looked up.

pub mod adf;
pub mod call;
pub mod catalog;
mod github;
mod http;
mod jira;
mod servicenow;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use flowgrid_domain::store::connections::{
    CallRecord, CircuitState, SealedSecret, TestResult, default_of_kind, update_health,
};
use flowgrid_domain::store::{Connection, ConnectionStore};
use flowgrid_domain::{Error, FieldError, TenantId};
use serde_json::{Map, Value};

pub use call::{CallSettings, CallStats, Failure, FailureKind};
pub use jira::issue_fields as jira_fields;

use crate::crypto::KeyEncryptionKey;
use crate::outbound::OutboundPolicy;
use call::Caller;

/// The connector layer over one store.
#[derive(Clone)]
pub struct Integrations {
    store: Arc<dyn ConnectionStore>,
    kek: KeyEncryptionKey,
    caller: Caller,
    tokens: Arc<servicenow::TokenCache>,
}

/// What a connector needs for one call.
pub(crate) struct Ctx<'a> {
    pub caller: &'a Caller,
    pub connection: &'a Connection,
    pub secret: Option<&'a str>,
    pub base: url::Url,
    pub tokens: &'a servicenow::TokenCache,
}

impl Ctx<'_> {
    /// A config string.
    pub fn config(&self, field: &str) -> &str {
        self.connection
            .config
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The secret, or a misconfiguration failure.
    pub fn secret(&self) -> Result<&str, Failure> {
        self.secret.ok_or_else(|| {
            Failure::new(
                FailureKind::Misconfigured,
                0,
                "the connection has no secret; set one",
            )
        })
    }

    /// `path` under the base URL (whose own path is kept as a prefix).
    pub fn url(&self, path: &str) -> Result<url::Url, Failure> {
        let mut base = self.base.clone();
        let prefix = base.path().trim_end_matches('/').to_owned();
        base.set_path(&format!("{prefix}{path}"));
        base.set_query(None);
        Ok(base)
    }
}

/// A tag made from an idempotency key: short, safe in every vendor's query syntax.
pub fn tag_of(idempotency_key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, idempotency_key.as_bytes());
    format!("flowgrid-{}", crate::crypto::hex(&digest.as_ref()[..16]))
}

/// What may be shown of a secret: its last 4 characters behind a mask, only when it is long
/// enough that they give little away.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 12 {
        format!(
            "••••{}",
            chars[chars.len() - 4..].iter().collect::<String>()
        )
    } else {
        "••••".into()
    }
}

fn aad(tenant: &TenantId, name: &str) -> Vec<u8> {
    format!("connection:{}:{name}", tenant.as_str()).into_bytes()
}

impl Integrations {
    /// The layer over `store`, sealing with `kek`, calling out through `policy`.
    pub fn new(
        store: Arc<dyn ConnectionStore>,
        kek: KeyEncryptionKey,
        policy: OutboundPolicy,
        settings: CallSettings,
    ) -> flowgrid_domain::Result<Self> {
        let policy = Arc::new(policy);
        Ok(Integrations {
            store,
            kek,
            caller: Caller {
                client: crate::outbound::client(policy.clone())?,
                policy,
                settings,
            },
            tokens: Arc::new(servicenow::TokenCache::default()),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ConnectionStore> {
        &self.store
    }

    /// Seals `plain` for the tenant's connection `name`.
    pub fn seal(
        &self,
        tenant: &TenantId,
        name: &str,
        plain: &str,
    ) -> flowgrid_domain::Result<SealedSecret> {
        Ok(SealedSecret {
            sealed: self.kek.seal(plain.as_bytes(), &aad(tenant, name))?,
            kek_id: self.kek.id().to_owned(),
            masked: mask(plain),
            set_at: Utc::now(),
        })
    }

    fn open(&self, c: &Connection) -> Result<Option<String>, Failure> {
        let Some(secret) = &c.secret else {
            return Ok(None);
        };
        let bytes = self
            .kek
            .open(&secret.sealed, &aad(&c.tenant_id, &c.name))
            .map_err(|_| {
                Failure::new(
                    FailureKind::Misconfigured,
                    0,
                    "the connection's secret cannot be decrypted with the current key-encryption key; set it again",
                )
            })?;
        String::from_utf8(bytes).map(Some).map_err(|_| {
            Failure::new(
                FailureKind::Misconfigured,
                0,
                "the stored secret is not text",
            )
        })
    }

    /// Checks a connection's kind, auth mode, config and base URL (the outbound guard), as
    /// field errors naming `kind`, `auth`, `config.<field>`.
    pub fn check_connection(
        &self,
        kind: &str,
        auth: &str,
        config: &Map<String, Value>,
    ) -> flowgrid_domain::Result<()> {
        let Some(k) = catalog::kind(kind) else {
            return Err(Error::Validation(vec![FieldError::new(
                "kind",
                "must be one of servicenow, jira, github, http",
            )]));
        };
        k.check(auth, config).map_err(Error::Validation)?;
        if let Some(base) = config.get(k.base_url_field).and_then(Value::as_str) {
            let field = format!("config.{}", k.base_url_field);
            let url = url::Url::parse(base).map_err(|e| {
                Error::Validation(vec![FieldError::new(&field, format!("is not a URL: {e}"))])
            })?;
            self.caller
                .policy
                .check_url(&url)
                .map_err(|e| Error::Validation(vec![FieldError::new(&field, e.to_string())]))?;
        }
        Ok(())
    }

    /// The tenant's connection `name`, or, when no connection has that name and it is a kind,
    /// the tenant's default connection of that kind.
    pub async fn resolve(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> flowgrid_domain::Result<Connection> {
        match self.store.get(tenant, name).await {
            Err(Error::NotFound) if catalog::kind(name).is_some() => {
                default_of_kind(self.store.as_ref(), tenant, name).await
            }
            other => other,
        }
    }

    fn ctx<'a>(&'a self, c: &'a Connection, secret: Option<&'a str>) -> Result<Ctx<'a>, Failure> {
        let kind = catalog::kind(&c.kind)
            .ok_or_else(|| Failure::new(FailureKind::Misconfigured, 0, "unknown kind"))?;
        let base = c
            .config
            .get(kind.base_url_field)
            .and_then(Value::as_str)
            .unwrap_or(if c.kind == "github" {
                "https://api.github.com"
            } else {
                ""
            });
        let base = url::Url::parse(base).map_err(|_| {
            Failure::new(
                FailureKind::Misconfigured,
                0,
                "the connection's base URL is not a URL",
            )
        })?;
        Ok(Ctx {
            caller: &self.caller,
            connection: c,
            secret,
            base,
            tokens: &self.tokens,
        })
    }

    /// Fails at once when the connection's circuit is open (as stored, so as every instance
    /// sees it).
    async fn circuit_allows(&self, c: &Connection) -> Result<(), Failure> {
        let health = self
            .store
            .health(&c.tenant_id, &c.name)
            .await
            .map_err(|e| {
                Failure::new(
                    FailureKind::Unavailable,
                    0,
                    format!("reading the circuit: {e}"),
                )
            })?;
        if let Some(h) = health
            && h.circuit_at(Utc::now()) == CircuitState::Open
        {
            let until = h.open_until.map(|t| t.to_rfc3339()).unwrap_or_default();
            return Err(Failure::new(
                FailureKind::CircuitOpen,
                0,
                format!(
                    "the circuit for connection {:?} is open after repeated upstream failures; calls resume after {until}",
                    c.name
                ),
            ));
        }
        Ok(())
    }

    /// Records a finished call in the connection's health record (circuit, recent calls, rate
    /// limit). A failure to record is logged, not returned: the call's outcome stands.
    async fn record(
        &self,
        c: &Connection,
        action: &str,
        start: Instant,
        stats: &CallStats,
        result: Result<(), &Failure>,
    ) {
        let call = CallRecord {
            at: Utc::now(),
            action: action.to_owned(),
            ok: result.is_ok(),
            status: stats.status,
            latency_ms: call::elapsed_ms(start),
            attempts: stats.attempts,
            error: result.err().map(|f| f.message.clone()),
        };
        let counts = result.err().is_some_and(Failure::counts_against_circuit);
        let threshold = self.caller.settings.circuit_threshold;
        let open_for = chrono::Duration::from_std(self.caller.settings.circuit_open_for)
            .unwrap_or(chrono::Duration::seconds(30));
        let rate_limit = stats.rate_limit.clone();
        let saved = update_health(self.store.as_ref(), &c.tenant_id, &c.name, |h| {
            h.record(call.clone(), counts, threshold, open_for);
            if rate_limit.is_some() {
                h.rate_limit = rate_limit.clone();
            }
        })
        .await;
        if let Err(e) = saved {
            tracing::warn!(connection.name = %c.name, error = %e, "recording a connector call failed");
        }
    }

    /// Runs `action` on connection `c` with `input`, once per `idempotency_key` for creates.
    pub async fn perform(
        &self,
        c: &Connection,
        action: &str,
        input: &Value,
        idempotency_key: &str,
    ) -> Result<Value, Failure> {
        let kind = catalog::kind(&c.kind)
            .ok_or_else(|| Failure::new(FailureKind::Misconfigured, 0, "unknown kind"))?;
        let Some(spec) = kind.action(action) else {
            let names: Vec<&str> = kind.actions.iter().map(|a| a.name).collect();
            return Err(Failure::new(
                FailureKind::Input,
                0,
                format!(
                    "{} has no action {action:?}; it has {}",
                    kind.name,
                    names.join(", ")
                ),
            ));
        };
        let schema = flowgrid_domain::schema::CompiledSchema::compile(&spec.input)
            .map_err(|e| Failure::new(FailureKind::Misconfigured, 0, e.message().to_owned()))?;
        if let Err(fields) = schema.validate(input, "input") {
            let mut f = Failure::new(
                FailureKind::Input,
                0,
                format!(
                    "the input of {action} is invalid: {}",
                    fields
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
            f.fields = fields;
            return Err(f);
        }
        self.circuit_allows(c).await?;
        let secret = self.open(c)?;
        let ctx = self.ctx(c, secret.as_deref())?;
        let start = Instant::now();
        let mut stats = CallStats::default();
        let result = match c.kind.as_str() {
            "servicenow" => servicenow::run(&ctx, action, input, idempotency_key, &mut stats).await,
            "jira" => jira::run(&ctx, action, input, idempotency_key, &mut stats).await,
            "github" => github::run(&ctx, action, input, idempotency_key, &mut stats).await,
            "http" => http::run(&ctx, action, input, idempotency_key, &mut stats).await,
            other => Err(Failure::new(
                FailureKind::Misconfigured,
                0,
                format!("unknown kind {other}"),
            )),
        };
        self.record(c, action, start, &stats, result.as_ref().map(|_| ()))
            .await;
        result
    }

    /// The connection test: one real authenticated call (ServiceNow one `sys_user` row, Jira
    /// `myself`, GitHub `user`, HTTP a GET of the test path). Not stopped by an open circuit
    /// (it is how an admin checks a repaired upstream); its outcome feeds the circuit.
    pub async fn test(&self, c: &Connection) -> TestResult {
        let start = Instant::now();
        let mut stats = CallStats::default();
        let result = match self.open(c) {
            Err(f) => Err(f),
            Ok(secret) => match self.ctx(c, secret.as_deref()) {
                Err(f) => Err(f),
                Ok(ctx) => match c.kind.as_str() {
                    "servicenow" => servicenow::test(&ctx, &mut stats).await,
                    "jira" => jira::test(&ctx, &mut stats).await,
                    "github" => github::test(&ctx, &mut stats).await,
                    _ => http::test(&ctx, &mut stats).await,
                },
            },
        };
        let latency_ms = call::elapsed_ms(start);
        self.record(c, "test", start, &stats, result.as_ref().map(|_| ()))
            .await;
        TestResult {
            ok: result.is_ok(),
            at: Utc::now(),
            latency_ms,
            status: stats.status,
            error: result.err().map(|f| f.message),
        }
    }
}

#[async_trait::async_trait]
impl crate::connector::Connectors for Integrations {
    async fn run(
        &self,
        tenant: &TenantId,
        connection: &str,
        action: &str,
        input: &Value,
        idempotency_key: &str,
    ) -> Result<Value, crate::CallError> {
        let c = match self.resolve(tenant, connection).await {
            Ok(c) => c,
            Err(Error::NotFound) => {
                return Err(crate::CallError::permanent(format!(
                    "integration {connection:?} is not available: the tenant has no such connection"
                )));
            }
            Err(e) => {
                return Err(crate::CallError::transient(format!(
                    "reading connection {connection:?}: {e}"
                )));
            }
        };
        Ok(self.perform(&c, action, input, idempotency_key).await?)
    }
}

/// A string input field.
pub(crate) fn input_str<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input.get(field).and_then(Value::as_str)
}

/// Builds a header value, or a misconfiguration failure.
pub(crate) fn header_value(v: &str) -> Result<reqwest::header::HeaderValue, Failure> {
    let mut h = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
        Failure::new(
            FailureKind::Misconfigured,
            0,
            "a credential is not a valid header value",
        )
    })?;
    h.set_sensitive(true);
    Ok(h)
}

/// `Basic base64(user:password)`.
pub(crate) fn basic(user: &str, password: &str) -> Result<reqwest::header::HeaderValue, Failure> {
    use base64::Engine;
    header_value(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_show_at_most_the_last_four_characters_of_long_secrets() {
        assert_eq!(mask("ghp_abcdefghijklmnop1234"), "••••1234");
        assert_eq!(mask("short"), "••••");
    }

    #[test]
    fn tags_are_stable_and_safe() {
        let t = tag_of("job-1:step-2");
        assert_eq!(t, tag_of("job-1:step-2"));
        assert_ne!(t, tag_of("job-1:step-3"));
        assert!(
            t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{t}"
        );
    }
}
