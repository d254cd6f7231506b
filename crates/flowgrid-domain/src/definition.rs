//! What an agent is made of (its definition), apart from the Agent aggregate itself, so that
//! both the aggregate (the `agent` module checks a definition when it is saved) and the plan
//! compiler (the `plan` module) depend on it without depending on each other.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Model settings of an agent's LLM steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelSettings {
    /// `offline` (default), `openai`, `openai-chat`, `azure-openai` or `anthropic`.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// The provider's model name.
    #[serde(default = "default_model")]
    pub model: String,
    /// Sampling temperature, 0–2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Upper bound of generated tokens per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// An OpenAI- or Anthropic-compatible server of the tenant's own, instead of the
    /// deployment's; reached through the outbound guard, and never sent a deployment's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

fn default_provider() -> String {
    "offline".into()
}
fn default_model() -> String {
    "offline".into()
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            provider: default_provider(),
            model: default_model(),
            temperature: None,
            max_tokens: None,
            base_url: None,
        }
    }
}

/// How an interaction starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// Started by a user or an API call.
    Manual,
    /// Started on a schedule.
    Schedule,
    /// Started by a platform event.
    Event,
}

/// One way users or systems interact with the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Interaction {
    /// Name, unique within the agent.
    pub name: String,
    /// What starts it.
    pub trigger: TriggerKind,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// For `schedule` triggers: six-field NCRONTAB, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// For `event` triggers: the event type that starts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// What an agent is: instructions, model, inputs, capabilities, interactions, steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentDefinition {
    /// The system instructions.
    pub instructions: String,
    /// Model settings.
    #[serde(default)]
    pub model: ModelSettings,
    /// JSON Schema (an object; draft 2020-12 by default, see [`crate::schema`]) that run inputs
    /// must satisfy; checked to compile when the agent is saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// Capability names.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Interactions and their triggers.
    #[serde(default)]
    pub interactions: Vec<Interaction>,
    /// Steps a run executes: objects with a unique `id`, a `kind` (`llm`, `integration`, `http`,
    /// `transform`, `condition`) and the kind's fields; checked in full by the compiler.
    #[serde(default)]
    pub steps: Vec<Value>,
    /// Names of the tenant's integration connections the agent uses.
    #[serde(default)]
    pub integrations: Vec<String>,
}
