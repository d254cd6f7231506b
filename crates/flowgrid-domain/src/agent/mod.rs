//! The Agent aggregate: what users create, version and run.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AgentId, Schedule, TenantId};
use crate::{Error, FieldError, Result};

/// Lifecycle status of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Being designed; not runnable yet.
    Draft,
    /// Compiled into a plan (set by compile, never by input).
    Compiled,
    /// Live: may be triggered.
    Active,
    /// Switched off.
    Disabled,
}

impl AgentStatus {
    /// The status's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Draft => "draft",
            AgentStatus::Compiled => "compiled",
            AgentStatus::Active => "active",
            AgentStatus::Disabled => "disabled",
        }
    }

    /// Parses a status name (for query filters).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "draft" => Ok(AgentStatus::Draft),
            "compiled" => Ok(AgentStatus::Compiled),
            "active" => Ok(AgentStatus::Active),
            "disabled" => Ok(AgentStatus::Disabled),
            other => Err(Error::BadRequest(format!(
                "status {other:?} is not one of draft, compiled, active, disabled"
            ))),
        }
    }
}

pub use crate::definition::{AgentDefinition, Interaction, ModelSettings, TriggerKind};

/// The body of `POST /api/agents` and `PUT /api/agents/{id}`. Server-owned fields (`id`,
/// `tenantId`, `version`, timestamps, `compiledVersion`) are unknown fields here, so rejected.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentInput {
    /// 1–100 characters, unique per tenant (case-insensitive).
    pub name: String,
    /// Free text, up to 2,000 characters.
    #[serde(default)]
    pub description: String,
    /// `draft` (default), `active` or `disabled`.
    #[serde(default)]
    pub status: Option<AgentStatus>,
    /// The definition.
    pub definition: AgentDefinition,
    /// Six-field NCRONTAB (UTC) for scheduled runs.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// An agent as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Id.
    pub id: AgentId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Lifecycle status.
    pub status: AgentStatus,
    /// Version number: 1 at creation, +1 on every change.
    pub version: u32,
    /// Definition.
    pub definition: AgentDefinition,
    /// Schedule for scheduled runs.
    pub schedule: Option<Schedule>,
    /// The version last compiled into a plan.
    pub compiled_version: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Subject that created it.
    pub created_by: String,
    /// Time of the last change (= creation time of this version).
    pub updated_at: DateTime<Utc>,
    /// Subject that made the last change.
    pub updated_by: String,
    /// Opaque concurrency token; changes on every write. Set by the store; absent on versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

/// Limits on an agent's content.
pub mod limits {
    /// Longest name, in characters.
    pub const NAME: usize = 100;
    /// Longest description, in characters.
    pub const DESCRIPTION: usize = 2_000;
    /// Longest instructions, in characters.
    pub const INSTRUCTIONS: usize = 32_000;
    /// Most entries in any list of the definition.
    pub const LIST: usize = 100;
    /// Longest short string (capability, integration, interaction name, step id).
    pub const SHORT: usize = 100;
}

/// Step kinds the compiler knows.
pub const STEP_KINDS: [&str; 5] = ["llm", "integration", "http", "transform", "condition"];
const PROVIDERS: [&str; 5] = [
    "offline",
    "openai",
    "openai-chat",
    "azure-openai",
    "anthropic",
];

mod offered;
mod validate;

pub use offered::{OfferedProviders, PROVIDERS_SETTING};

/// Input that passed validation.
#[derive(Debug, Clone)]
pub struct ValidAgentInput {
    name: String,
    description: String,
    status: AgentStatus,
    definition: AgentDefinition,
    schedule: Option<Schedule>,
}

impl Agent {
    /// Compiles this version into a plan (see [`crate::plan::compile`]).
    pub fn compile(&self) -> Result<crate::plan::Plan> {
        crate::plan::compile(self.id, self.version, &self.definition)
    }

    /// A new agent at version 1.
    pub fn create(tenant: TenantId, input: ValidAgentInput, by: &str, now: DateTime<Utc>) -> Agent {
        Agent {
            id: AgentId::new(),
            tenant_id: tenant,
            name: input.name,
            description: input.description,
            status: input.status,
            version: 1,
            definition: input.definition,
            schedule: input.schedule,
            compiled_version: None,
            created_at: now,
            created_by: by.to_owned(),
            updated_at: now,
            updated_by: by.to_owned(),
            etag: String::new(),
        }
    }

    /// This agent fully replaced by `input`, as the next version.
    pub fn replaced(&self, input: ValidAgentInput, by: &str, now: DateTime<Utc>) -> Agent {
        Agent {
            name: input.name,
            description: input.description,
            status: input.status,
            definition: input.definition,
            schedule: input.schedule,
            ..self.next_version(by, now)
        }
    }

    /// This agent with the content of `old` (an earlier version), as the next version.
    /// A restored agent is a draft again unless it was compiled content that is still current.
    pub fn restored_from(&self, old: &Agent, by: &str, now: DateTime<Utc>) -> Agent {
        Agent {
            name: old.name.clone(),
            description: old.description.clone(),
            status: match old.status {
                AgentStatus::Compiled => AgentStatus::Draft,
                s => s,
            },
            definition: old.definition.clone(),
            schedule: old.schedule.clone(),
            ..self.next_version(by, now)
        }
    }

    /// The `agent-compiled` transition: `version`, one of the agent's versions, is compiled and
    /// is what runs use; the agent moves to its next version (a draft becomes `compiled`).
    /// `Ok(false)`, changing nothing, when that version is already the compiled one; a version
    /// the agent never had is a [`Error::BadRequest`].
    pub fn mark_compiled(&mut self, version: u32, now: DateTime<Utc>) -> Result<bool> {
        if version == 0 || version > self.version {
            return Err(Error::BadRequest(format!(
                "version {version} of the agent does not exist"
            )));
        }
        if self.compiled_version == Some(version) {
            return Ok(false);
        }
        let status = match self.status {
            AgentStatus::Draft => AgentStatus::Compiled,
            s => s,
        };
        *self = Agent {
            compiled_version: Some(version),
            status,
            ..self.next_version("design:compile", now)
        };
        Ok(true)
    }

    fn next_version(&self, by: &str, now: DateTime<Utc>) -> Agent {
        Agent {
            version: self.version + 1,
            updated_at: now,
            updated_by: by.to_owned(),
            ..self.clone()
        }
    }

    /// The case-insensitive key under which names are unique per tenant.
    pub fn name_key(&self) -> String {
        self.name.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: Value) -> Result<ValidAgentInput> {
        serde_json::from_value::<AgentInput>(json)
            .map_err(|e| Error::BadRequest(e.to_string()))?
            .validate()
    }

    #[test]
    fn the_smallest_agent_is_a_name_and_instructions() {
        let v = input(serde_json::json!({"name": "a", "definition": {"instructions": "be nice"}}))
            .unwrap();
        let agent = Agent::create(TenantId::parse("t").unwrap(), v, "u", Utc::now());
        assert_eq!(agent.version, 1);
        assert_eq!(agent.status, AgentStatus::Draft);
        assert_eq!(agent.definition.model.provider, "offline");
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let err = input(serde_json::json!({
            "name": "", "status": "compiled", "schedule": "* * *",
            "definition": {"instructions": " ", "model": {"temperature": 3.0},
                "steps": [{"id": "a", "kind": "http"}, {"id": "a", "kind": "nope"}, 7]}
        }))
        .unwrap_err();
        let Error::Validation(errors) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for expected in [
            "name",
            "status",
            "schedule",
            "definition.instructions",
            "definition.model.temperature",
            "definition.steps[1].id",
            "definition.steps[1].kind",
            "definition.steps[2]",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn an_input_schema_must_compile() {
        let with_schema = |schema: Value| {
            input(serde_json::json!({"name": "a",
                "definition": {"instructions": "x", "inputSchema": schema}}))
        };
        assert!(with_schema(serde_json::json!({"type": "object", "required": ["a"]})).is_ok());
        for (schema, field) in [
            (serde_json::json!("object"), "definition.inputSchema"),
            (
                serde_json::json!({"minLength": -1}),
                "definition.inputSchema.minLength",
            ),
            (
                serde_json::json!({"$ref": "https://example.com/s.json"}),
                "definition.inputSchema",
            ),
        ] {
            let Err(Error::Validation(errors)) = with_schema(schema.clone()) else {
                panic!("{schema} is refused")
            };
            assert_eq!(errors[0].field, field, "{schema}");
        }
    }

    #[test]
    fn marking_a_version_compiled_makes_one_new_version_and_a_repeat_changes_nothing() {
        let mut agent = Agent::create(
            TenantId::parse("t").unwrap(),
            input(serde_json::json!({"name": "a", "definition": {"instructions": "x"}})).unwrap(),
            "u1",
            Utc::now(),
        );
        for bad in [0, 2] {
            assert!(matches!(
                agent.mark_compiled(bad, Utc::now()),
                Err(Error::BadRequest(_))
            ));
        }
        assert!(agent.mark_compiled(1, Utc::now()).unwrap());
        assert_eq!((agent.version, agent.compiled_version), (2, Some(1)));
        assert_eq!(
            (agent.status, agent.updated_by.as_str()),
            (AgentStatus::Compiled, "design:compile")
        );
        let before = agent.clone();
        assert!(!agent.mark_compiled(1, Utc::now()).unwrap());
        assert_eq!(agent, before);
        agent.status = AgentStatus::Disabled;
        assert!(agent.mark_compiled(2, Utc::now()).unwrap());
        assert_eq!(
            (agent.status, agent.compiled_version),
            (AgentStatus::Disabled, Some(2))
        );
    }

    #[test]
    fn replacing_bumps_the_version_and_keeps_identity() {
        let t = TenantId::parse("t").unwrap();
        let a = Agent::create(
            t,
            input(serde_json::json!({"name": "a", "definition": {"instructions": "x"}})).unwrap(),
            "u1",
            Utc::now(),
        );
        let b = a.replaced(
            input(serde_json::json!({"name": "b", "definition": {"instructions": "y"}})).unwrap(),
            "u2",
            Utc::now(),
        );
        assert_eq!(
            (
                b.id,
                b.version,
                b.name.as_str(),
                b.created_by.as_str(),
                b.updated_by.as_str()
            ),
            (a.id, 2, "b", "u1", "u2")
        );
    }
}
