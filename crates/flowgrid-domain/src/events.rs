//! Platform events: every topic Flowgrid's apps publish to, and the typed payload of each, in
//! one place.
//!
//! Events travel as CloudEvents 1.0 structured-mode JSON (`specversion`, `id`, `source`, `type`,
//! `time`, `subject`, `datacontenttype`, `data`), with three extension attributes in the body
//! because a Functions output binding can set only the body of a Service Bus message:
//! `tenantid`, and `traceparent`/`tracestate` (the CloudEvents distributed-tracing extension),
//! so a consumer continues the producer's trace.
//!
//! The `id` is deterministic where an event describes a fact that may be produced twice (a
//! redelivered job message finishing the same job, a compile repeated): the same fact gives the
//! same id, which is what Service Bus duplicate detection and every consumer's idempotency key
//! compare. Producers send events through output bindings only; consumers are idempotent by `id`.
//!
//! | topic | producer → consumers | event types |
//! |---|---|---|
//! | `agent-compiled` | Design → Execution | `flowgrid.agent.compiled` |
//! | `platform-events` | every app → Analytics | `flowgrid.agent.*`, `flowgrid.job.*`, `flowgrid.llm.call`, `flowgrid.integration.call`, `flowgrid.api.requests` |

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::job::{JobStatus, StepStatus, Tokens};
use crate::{AgentId, Error, Result, TenantId};

mod job;

/// Topic names (Service Bus topics; the same names in `function.json` and Bicep).
pub mod topics {
    /// A compiled plan of an agent is ready (Design → Execution).
    pub const AGENT_COMPILED: &str = "agent-compiled";
    /// Everything that happened on the platform, for Analytics.
    pub const PLATFORM_EVENTS: &str = "platform-events";
}

/// The CloudEvents version every event carries.
pub const SPEC_VERSION: &str = "1.0";

/// A typed event payload: its CloudEvents `type`, the topic it is published to, and its `id`.
pub trait Payload: Serialize + DeserializeOwned {
    /// The topic this payload is published to.
    const TOPIC: &'static str;
    /// The CloudEvents `type` (`flowgrid.<aggregate>.<fact>`), or the family prefix for an enum
    /// of several types.
    fn event_type(&self) -> &'static str;
    /// The event id: the same for the same fact, so duplicates are detected.
    fn event_id(&self) -> String;
    /// The CloudEvents `subject`: the resource the event is about.
    fn subject(&self) -> Option<String>;
}

/// A CloudEvents 1.0 event in structured JSON mode, with Flowgrid's extension attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T> {
    /// Always `1.0`.
    pub specversion: String,
    /// The duplicate-detection key.
    pub id: String,
    /// The producing app, as a URI reference (`/flowgrid/<app>`).
    pub source: String,
    /// `flowgrid.<aggregate>.<fact>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the fact happened.
    pub time: DateTime<Utc>,
    /// The resource the event is about (`agents/<id>`, `jobs/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The tenant the event belongs to (extension attribute).
    pub tenantid: String,
    /// W3C trace context of the producing request (distributed-tracing extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C trace state, when the producer had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The payload.
    pub data: T,
}

impl<T: Payload> CloudEvent<T> {
    /// The event of `data` for `tenant`, produced by `app` at `time`.
    pub fn new(app: &str, tenant: &TenantId, time: DateTime<Utc>, data: T) -> Self {
        CloudEvent {
            specversion: SPEC_VERSION.into(),
            id: data.event_id(),
            source: format!("/flowgrid/{app}"),
            event_type: data.event_type().into(),
            time,
            subject: data.subject(),
            datacontenttype: "application/json".into(),
            tenantid: tenant.as_str().into(),
            traceparent: None,
            tracestate: None,
            data,
        }
    }

    /// The same event carrying the producer's W3C trace context.
    pub fn with_trace(mut self, traceparent: Option<String>, tracestate: Option<String>) -> Self {
        self.traceparent = traceparent;
        self.tracestate = tracestate;
        self
    }

    /// The topic the event goes to.
    pub fn topic(&self) -> &'static str {
        T::TOPIC
    }

    /// The event as the JSON body of a Service Bus message.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| Error::Internal(format!("encoding an event: {e}")))
    }

    /// Reads an event from a message body, checking the envelope: CloudEvents 1.0, a non-empty
    /// id, a valid tenant, and the `type` its payload says. A body that fails is a 400
    /// (a consumer completes such a message with a log line: it will never be readable).
    pub fn from_slice(body: &[u8]) -> Result<Self> {
        let bad = |why: String| Error::BadRequest(format!("not a Flowgrid event: {why}"));
        let event: CloudEvent<T> = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        if event.specversion != SPEC_VERSION {
            return Err(bad(format!("specversion {:?}", event.specversion)));
        }
        if event.id.is_empty() {
            return Err(bad("an empty id".into()));
        }
        if event.event_type != event.data.event_type() {
            return Err(bad(format!(
                "type {:?} does not match its data",
                event.event_type
            )));
        }
        TenantId::parse(&event.tenantid).map_err(|_| bad("a malformed tenantid".into()))?;
        Ok(event)
    }

    /// The event's tenant (checked by [`CloudEvent::from_slice`]).
    pub fn tenant(&self) -> Result<TenantId> {
        TenantId::parse(&self.tenantid)
    }
}

/// `agent-compiled`: a compiled plan of an agent's version is stored and may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCompiled {
    /// The agent.
    pub agent_id: AgentId,
    /// The agent version the plan was compiled from.
    pub version: u32,
}

impl Payload for AgentCompiled {
    const TOPIC: &'static str = topics::AGENT_COMPILED;
    fn event_type(&self) -> &'static str {
        "flowgrid.agent.compiled"
    }
    fn event_id(&self) -> String {
        format!("agent-compiled:{}:{}", self.agent_id, self.version)
    }
    fn subject(&self) -> Option<String> {
        Some(format!("agents/{}", self.agent_id))
    }
}

/// Token counts of one model call, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// Prompt tokens not served from a cache.
    pub input: u64,
    /// Prompt tokens served from the provider's cache.
    #[serde(default)]
    pub cached_input: u64,
    /// Generated tokens (reasoning included in the provider's count or not, as it reports).
    pub output: u64,
    /// Reasoning tokens, when the provider reports them.
    #[serde(default)]
    pub reasoning: u64,
}

impl From<Tokens> for TokenUsage {
    fn from(t: Tokens) -> Self {
        TokenUsage {
            input: t.input,
            output: t.output,
            ..TokenUsage::default()
        }
    }
}

/// What one step of a finished job used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepUsage {
    /// The step's id in the plan.
    pub step_id: String,
    /// Its kind (`llm`, `http`, ...).
    pub kind: String,
    /// How it ended.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Duration, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Tokens, for `llm` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenUsage>,
    /// Cost in micro-dollars, for `llm` steps whose model has a known price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
    /// The provider, for `llm` steps (Analytics' per-model rollups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model or deployment, for `llm` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Everything published to `platform-events`, one variant per event type. Serialized with the
/// CloudEvents `type` as the `kind` tag of `data`, so a consumer reads any of them as one enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum PlatformEvent {
    /// An agent was created (version 1).
    #[serde(rename = "flowgrid.agent.created")]
    AgentCreated {
        /// The agent.
        agent_id: AgentId,
        /// Its version.
        version: u32,
    },
    /// An agent was changed (a new version).
    #[serde(rename = "flowgrid.agent.updated")]
    AgentUpdated {
        /// The agent.
        agent_id: AgentId,
        /// Its new version.
        version: u32,
    },
    /// An agent was deleted.
    #[serde(rename = "flowgrid.agent.deleted")]
    AgentDeleted {
        /// The agent.
        agent_id: AgentId,
    },
    /// An agent's version was compiled.
    #[serde(rename = "flowgrid.agent.compiled")]
    AgentCompiled {
        /// The agent.
        agent_id: AgentId,
        /// The compiled version.
        version: u32,
    },
    /// A run was accepted.
    #[serde(rename = "flowgrid.job.submitted")]
    JobSubmitted {
        /// The job.
        job_id: String,
        /// Its agent.
        agent_id: AgentId,
        /// `manual`, `schedule` or `event`.
        trigger: String,
    },
    /// A worker claimed a run (one event per claim: a takeover after a lost lease is another).
    #[serde(rename = "flowgrid.job.started")]
    JobStarted {
        /// The job.
        job_id: String,
        /// Its agent.
        agent_id: AgentId,
        /// Which claim this is (1 for the first run).
        attempt: u32,
    },
    /// A run reached its terminal state (written once, so published once per job).
    #[serde(rename = "flowgrid.job.finished")]
    JobFinished {
        /// The job.
        job_id: String,
        /// Its agent.
        agent_id: AgentId,
        /// The terminal status.
        status: JobStatus,
        /// From creation to the terminal state, in ms.
        duration_ms: u64,
        /// What each step used.
        steps: Vec<StepUsage>,
    },
    /// One model call (Design or an `llm` step).
    #[serde(rename = "flowgrid.llm.call")]
    LlmCall {
        /// A unique id of the call (the retry of a step is another call).
        call_id: String,
        /// The agent, when the call was made for one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<AgentId>,
        /// `openai`, `azure-openai`, `anthropic`, `offline`.
        provider: String,
        /// The model or deployment.
        model: String,
        /// Tokens by kind.
        tokens: TokenUsage,
        /// Cost in micro-dollars (integer, so sums are exact).
        cost_micro_usd: u64,
        /// Latency, in ms.
        latency_ms: u64,
    },
    /// One call of an integration connector.
    #[serde(rename = "flowgrid.integration.call")]
    IntegrationCall {
        /// A unique id of the call.
        call_id: String,
        /// `servicenow`, `jira`, `github`, `http`.
        connector: String,
        /// The action (`create-incident`, ...).
        action: String,
        /// The HTTP status the connector got, or 0 when no answer came.
        status: u16,
        /// Latency, in ms.
        latency_ms: u64,
    },
    /// API requests of one app instance in one minute, by route and status.
    #[serde(rename = "flowgrid.api.requests")]
    ApiRequests {
        /// The app.
        app: String,
        /// The instance that counted them (so two instances' counts are two events).
        instance: String,
        /// The minute (UTC, seconds zero).
        minute: DateTime<Utc>,
        /// The route template.
        route: String,
        /// The status code.
        status: u16,
        /// How many.
        count: u64,
    },
}

impl Payload for PlatformEvent {
    const TOPIC: &'static str = topics::PLATFORM_EVENTS;

    fn event_type(&self) -> &'static str {
        match self {
            PlatformEvent::AgentCreated { .. } => "flowgrid.agent.created",
            PlatformEvent::AgentUpdated { .. } => "flowgrid.agent.updated",
            PlatformEvent::AgentDeleted { .. } => "flowgrid.agent.deleted",
            PlatformEvent::AgentCompiled { .. } => "flowgrid.agent.compiled",
            PlatformEvent::JobSubmitted { .. } => "flowgrid.job.submitted",
            PlatformEvent::JobStarted { .. } => "flowgrid.job.started",
            PlatformEvent::JobFinished { .. } => "flowgrid.job.finished",
            PlatformEvent::LlmCall { .. } => "flowgrid.llm.call",
            PlatformEvent::IntegrationCall { .. } => "flowgrid.integration.call",
            PlatformEvent::ApiRequests { .. } => "flowgrid.api.requests",
        }
    }

    fn event_id(&self) -> String {
        match self {
            PlatformEvent::AgentCreated { agent_id, version }
            | PlatformEvent::AgentUpdated { agent_id, version }
            | PlatformEvent::AgentCompiled { agent_id, version } => {
                format!("{}:{agent_id}:{version}", self.event_type())
            }
            PlatformEvent::AgentDeleted { agent_id } => {
                format!("{}:{agent_id}", self.event_type())
            }
            PlatformEvent::JobSubmitted { job_id, .. }
            | PlatformEvent::JobFinished { job_id, .. } => {
                format!("{}:{job_id}", self.event_type())
            }
            PlatformEvent::JobStarted {
                job_id, attempt, ..
            } => format!("{}:{job_id}:{attempt}", self.event_type()),
            PlatformEvent::LlmCall { call_id, .. }
            | PlatformEvent::IntegrationCall { call_id, .. } => {
                format!("{}:{call_id}", self.event_type())
            }
            PlatformEvent::ApiRequests {
                app,
                instance,
                minute,
                route,
                status,
                ..
            } => format!(
                "{}:{app}:{instance}:{}:{route}:{status}",
                self.event_type(),
                minute.timestamp()
            ),
        }
    }

    fn subject(&self) -> Option<String> {
        match self {
            PlatformEvent::AgentCreated { agent_id, .. }
            | PlatformEvent::AgentUpdated { agent_id, .. }
            | PlatformEvent::AgentDeleted { agent_id }
            | PlatformEvent::AgentCompiled { agent_id, .. } => Some(format!("agents/{agent_id}")),
            PlatformEvent::JobSubmitted { job_id, .. }
            | PlatformEvent::JobStarted { job_id, .. }
            | PlatformEvent::JobFinished { job_id, .. } => Some(format!("jobs/{job_id}")),
            PlatformEvent::LlmCall { agent_id, .. } => agent_id.map(|a| format!("agents/{a}")),
            PlatformEvent::IntegrationCall { connector, .. } => {
                Some(format!("integrations/{connector}"))
            }
            PlatformEvent::ApiRequests { app, .. } => Some(format!("apps/{app}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn an_event_is_cloudevents_json_with_the_trace_context_in_the_body() {
        let agent = AgentId::new();
        let event = CloudEvent::new(
            "design",
            &tenant(),
            Utc::now(),
            AgentCompiled {
                agent_id: agent,
                version: 3,
            },
        )
        .with_trace(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            None,
        );
        let json = event.to_json().unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "flowgrid.agent.compiled");
        assert_eq!(json["source"], "/flowgrid/design");
        assert_eq!(json["tenantid"], "acme");
        assert_eq!(json["subject"], format!("agents/{agent}"));
        assert_eq!(
            json["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(json["data"]["version"], 3);
        assert_eq!(event.topic(), "agent-compiled");
        let back: CloudEvent<AgentCompiled> =
            CloudEvent::from_slice(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn the_same_fact_gives_the_same_id_and_another_fact_another() {
        let agent = AgentId::new();
        let compiled = |version| AgentCompiled {
            agent_id: agent,
            version,
        };
        let at = |minutes| Utc::now() - chrono::Duration::minutes(minutes);
        let a = CloudEvent::new("design", &tenant(), at(5), compiled(1));
        let b = CloudEvent::new("design", &tenant(), at(0), compiled(1));
        let c = CloudEvent::new("design", &tenant(), at(0), compiled(2));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        let started = |attempt| PlatformEvent::JobStarted {
            job_id: "j1".into(),
            agent_id: agent,
            attempt,
        };
        assert_ne!(started(1).event_id(), started(2).event_id());
    }

    #[test]
    fn a_platform_event_reads_back_as_its_variant() {
        let event = CloudEvent::new(
            "execution",
            &tenant(),
            Utc::now(),
            PlatformEvent::JobFinished {
                job_id: "j1".into(),
                agent_id: AgentId::new(),
                status: JobStatus::Succeeded,
                duration_ms: 12,
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
                    cost_micro_usd: None,
                    provider: None,
                    model: None,
                }],
            },
        );
        let json = event.to_json().unwrap();
        assert_eq!(json["type"], "flowgrid.job.finished");
        assert_eq!(json["data"]["kind"], "flowgrid.job.finished");
        assert_eq!(json["data"]["steps"][0]["tokens"]["input"], 10);
        assert_eq!(event.topic(), "platform-events");
        let back: CloudEvent<PlatformEvent> =
            CloudEvent::from_slice(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_body_that_is_not_a_valid_event_is_refused() {
        let agent = AgentId::new();
        let good = CloudEvent::new(
            "design",
            &tenant(),
            Utc::now(),
            AgentCompiled {
                agent_id: agent,
                version: 1,
            },
        )
        .to_json()
        .unwrap();
        let read = |json: &serde_json::Value| {
            CloudEvent::<AgentCompiled>::from_slice(&serde_json::to_vec(json).unwrap())
        };
        assert!(read(&good).is_ok());
        for (field, value) in [
            ("specversion", serde_json::json!("0.3")),
            ("id", serde_json::json!("")),
            ("type", serde_json::json!("flowgrid.agent.deleted")),
            ("tenantid", serde_json::json!("not a tenant!")),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            assert!(
                matches!(read(&bad), Err(Error::BadRequest(_))),
                "{field} accepted"
            );
        }
        assert!(
            read(&serde_json::json!({"tenantId": "acme", "agentId": agent, "version": 1})).is_err()
        );
    }
}
