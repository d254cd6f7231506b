//! Compiled plans: an agent's definition turned into the immutable, versioned list of steps a
//! run executes. One compiler serves the Design app (`compile`) and the Execution app.
//!
//! The public shape of a step in `definition.steps` (every string field may be a template):
//!
//! | kind | fields |
//! |---|---|
//! | `transform` | `output`: any JSON; its strings are templates over `{input, steps: {<id>: {output}}}` |
//! | `http` | `method` (default GET), `url`, `headers` (object), `body` (any JSON), `maxResponseBytes` |
//! | `condition` | `if` (expression); `then` / `else`: id of a later step to jump to, or `end`; absent: next step |
//! | `llm` | `prompt`, `system` (default: the agent's instructions), `maxTokens` |
//! | `integration` | `connection` (one of `definition.integrations`), `action`, `input` (any JSON) |
//!
//! Every step may also carry `retry: {maxAttempts, backoffMs}` and `timeoutMs`. The reference
//! for users is docs/agents.md. The same checks run when an agent is saved ([`check`]) and when
//! it is compiled ([`compile`]).

pub mod template;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::AgentId;
use crate::definition::{AgentDefinition, ModelSettings};
use crate::{Error, FieldError, Result};
use template::{Scope, TemplateError, Templates};

/// The plan format this build writes and runs.
pub const PLAN_FORMAT: u32 = 1;

/// Bounds on step settings.
pub mod limits {
    /// Most attempts of one step.
    pub const MAX_ATTEMPTS: u32 = 10;
    /// Longest backoff between attempts, in ms.
    pub const MAX_BACKOFF_MS: u64 = 60_000;
    /// Default step timeout, in ms.
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
    /// Longest step timeout, in ms (below the gateway's 230 s).
    pub const MAX_TIMEOUT_MS: u64 = 120_000;
    /// Default cap on an HTTP response body.
    pub const DEFAULT_RESPONSE_BYTES: u64 = 1024 * 1024;
    /// Largest cap on an HTTP response body.
    pub const MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;
}

/// How a failed step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, 1 = no retry.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time, with jitter.
    pub backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff_ms: 500,
        }
    }
}

/// Where a condition sends the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "to", content = "step")]
pub enum Jump {
    /// The next step in order.
    Next,
    /// The step with this index.
    Step(usize),
    /// The end of the run.
    End,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum StepAction {
    /// Renders `output` against the run context.
    Transform {
        /// Template tree.
        output: Value,
    },
    /// An outbound HTTP call through the outbound guard.
    #[serde(rename_all = "camelCase")]
    Http {
        /// HTTP method.
        method: String,
        /// URL template.
        url: String,
        /// Header templates.
        headers: Map<String, Value>,
        /// Body template.
        body: Option<Value>,
        /// Response size cap.
        max_response_bytes: u64,
    },
    /// Branches on an expression.
    Condition {
        /// Expression.
        #[serde(rename = "if")]
        condition: String,
        /// Where to go when true.
        then: Jump,
        /// Where to go when false.
        #[serde(rename = "else")]
        otherwise: Jump,
    },
    /// A call to the agent's model provider.
    #[serde(rename_all = "camelCase")]
    Llm {
        /// Prompt template.
        prompt: String,
        /// System prompt template.
        system: String,
        /// Upper bound of generated tokens.
        max_tokens: Option<u32>,
    },
    /// An action on one of the tenant's integration connections.
    Integration {
        /// Connection name.
        connection: String,
        /// Action name.
        action: String,
        /// Input template.
        input: Value,
    },
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanStep {
    /// Step id, unique in the plan.
    pub id: String,
    /// What it does.
    #[serde(flatten)]
    pub action: StepAction,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Timeout of one attempt, in ms.
    pub timeout_ms: u64,
}

/// A compiled agent: immutable, identified by the agent id and version it was compiled from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Plan format.
    pub format: u32,
    /// The agent.
    pub agent_id: AgentId,
    /// The agent version compiled.
    pub agent_version: u32,
    /// The agent's instructions.
    pub instructions: String,
    /// Model settings.
    pub model: ModelSettings,
    /// JSON Schema run inputs must satisfy.
    pub input_schema: Option<Value>,
    /// Steps in order.
    pub steps: Vec<PlanStep>,
}

/// Compiles version `agent_version` of agent `agent_id`, whose definition is `definition`, into a
/// plan (`Agent::compile` is the usual way in). Every problem is reported at once, as field
/// errors that point at the step and field (`definition.steps[2].url`), with the template
/// position when known.
pub fn compile(
    agent_id: AgentId,
    agent_version: u32,
    definition: &AgentDefinition,
) -> Result<Plan> {
    let (steps, mut errors) = compile_steps(definition);
    if steps.is_empty() && errors.is_empty() {
        errors.push(FieldError::new(
            "definition.steps",
            "a plan needs at least one step",
        ));
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    Ok(Plan {
        format: PLAN_FORMAT,
        agent_id,
        agent_version,
        instructions: definition.instructions.clone(),
        model: definition.model.clone(),
        input_schema: definition.input_schema.clone(),
        steps,
    })
}

/// Every problem of the steps of `definition`, as [`compile`] reports them (a definition with
/// no steps passes: it is a draft). Run when an agent is saved.
pub fn check(definition: &AgentDefinition) -> Vec<FieldError> {
    compile_steps(definition).1
}

/// The steps of `definition`, and every problem found in them.
fn compile_steps(definition: &AgentDefinition) -> (Vec<PlanStep>, Vec<FieldError>) {
    let templates = Templates::new();
    let raw = &definition.steps;
    let mut errors = Vec::new();
    let mut index_of = HashMap::new();
    for (i, step) in raw.iter().enumerate() {
        if let Some(id) = step.get("id").and_then(Value::as_str) {
            index_of.entry(id.to_owned()).or_insert(i);
        }
    }
    let mut steps = Vec::new();
    let mut earlier = std::collections::HashSet::new();
    for (i, step) in raw.iter().enumerate() {
        let first_error = errors.len();
        let mut reader = StepReader {
            i,
            obj: step.as_object(),
            errors: &mut errors,
            templates: &templates,
            scope: Scope {
                steps: Some(earlier.clone()),
            },
        };
        if let Some(compiled) = reader.step(definition, &index_of) {
            steps.push(compiled);
        }
        if let Some(id) = step.get("id").and_then(Value::as_str) {
            for e in &mut errors[first_error..] {
                e.step = Some(id.to_owned());
            }
            earlier.insert(id.to_owned());
        }
    }
    (steps, errors)
}

struct StepReader<'a> {
    i: usize,
    obj: Option<&'a Map<String, Value>>,
    errors: &'a mut Vec<FieldError>,
    templates: &'a Templates,
    /// What its templates may refer to: the steps before it.
    scope: Scope,
}

/// A template error as a field error at `field`.
fn template_error(field: String, kind: &str, e: TemplateError) -> FieldError {
    let mut error = FieldError::new(field, format!("{kind} error: {}", e.message));
    error.line = e.line;
    error.variable = e.variable;
    error
}

const COMMON_FIELDS: [&str; 4] = ["id", "kind", "retry", "timeoutMs"];

impl StepReader<'_> {
    fn field(&self, name: &str) -> String {
        format!("definition.steps[{}].{name}", self.i)
    }

    fn error(&mut self, name: &str, message: impl Into<String>) {
        let field = self.field(name);
        self.errors.push(FieldError::new(field, message));
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.obj.and_then(|o| o.get(name))
    }

    fn string(&mut self, name: &str, required: bool) -> Option<String> {
        match self.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            None if !required => None,
            _ => {
                self.error(name, "must be a non-empty string");
                None
            }
        }
    }

    fn template(&mut self, name: &str, required: bool) -> Option<String> {
        let s = self.string(name, required)?;
        for e in self.templates.check_in_scope(&s, &self.scope) {
            let error = template_error(self.field(name), "template", e);
            self.errors.push(error);
        }
        Some(s)
    }

    fn template_value(&mut self, name: &str) -> Option<Value> {
        let value = self.get(name)?.clone();
        for (path, e) in self
            .templates
            .check_value_in_scope(&value, &self.field(name), &self.scope)
        {
            self.errors.push(template_error(path, "template", e));
        }
        Some(value)
    }

    /// An `http` step's URL: a template, whose fixed start (before any `{{`) names http or https.
    fn url(&mut self) -> String {
        let url = self.template("url", true).unwrap_or_default();
        let fixed = url.split("{{").next().unwrap_or_default();
        if let Some((scheme, _)) = fixed.split_once("://") {
            let scheme = scheme.trim().to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                self.error(
                    "url",
                    format!(
                        "{scheme}:// is not allowed: an http step calls http:// or https:// URLs"
                    ),
                );
            }
        } else if !url.is_empty() && fixed.len() == url.len() {
            self.error("url", "must be an absolute http:// or https:// URL");
        }
        url
    }

    fn number(&mut self, name: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.get(name) {
            None => default,
            Some(v) => match v.as_u64().filter(|n| (min..=max).contains(n)) {
                Some(n) => n,
                None => {
                    self.error(name, format!("must be a whole number from {min} to {max}"));
                    default
                }
            },
        }
    }

    fn unknown_fields(&mut self, allowed: &[&str]) {
        let unknown: Vec<String> = self
            .obj
            .map(|o| {
                o.keys()
                    .filter(|k| {
                        !COMMON_FIELDS.contains(&k.as_str()) && !allowed.contains(&k.as_str())
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for key in unknown {
            self.error(&key, "is not a field of this step kind");
        }
    }

    fn retry(&mut self) -> RetryPolicy {
        let Some(retry) = self.get("retry").cloned() else {
            return RetryPolicy::default();
        };
        let Some(obj) = retry.as_object() else {
            self.error("retry", "must be an object with maxAttempts and backoffMs");
            return RetryPolicy::default();
        };
        let mut policy = RetryPolicy::default();
        for (key, value) in obj {
            match (key.as_str(), value.as_u64()) {
                ("maxAttempts", Some(n)) if (1..=u64::from(limits::MAX_ATTEMPTS)).contains(&n) => {
                    policy.max_attempts = u32::try_from(n).unwrap_or(1);
                }
                ("backoffMs", Some(n)) if n <= limits::MAX_BACKOFF_MS => policy.backoff_ms = n,
                ("maxAttempts", _) => {
                    self.error(
                        "retry.maxAttempts",
                        format!("must be from 1 to {}", limits::MAX_ATTEMPTS),
                    );
                }
                ("backoffMs", _) => self.error(
                    "retry.backoffMs",
                    format!("must be from 0 to {}", limits::MAX_BACKOFF_MS),
                ),
                (other, _) => self.error(&format!("retry.{other}"), "is not a retry setting"),
            }
        }
        policy
    }

    fn jump(&mut self, name: &str, index_of: &HashMap<String, usize>) -> Jump {
        match self.get(name) {
            None | Some(Value::Null) => Jump::Next,
            Some(Value::String(s)) if s == "end" => Jump::End,
            Some(Value::String(s)) => match index_of.get(s) {
                Some(&target) if target > self.i => Jump::Step(target),
                Some(_) => {
                    self.error(
                        name,
                        format!("step {s:?} is not after this one; conditions only jump forward"),
                    );
                    Jump::Next
                }
                None => {
                    self.error(name, format!("there is no step {s:?}"));
                    Jump::Next
                }
            },
            Some(_) => {
                self.error(name, "must be a step id or \"end\"");
                Jump::Next
            }
        }
    }

    fn step(
        &mut self,
        definition: &AgentDefinition,
        index_of: &HashMap<String, usize>,
    ) -> Option<PlanStep> {
        if self.obj.is_none() {
            // Shape errors (not an object, bad id) were reported when the agent was validated.
            let field = format!("definition.steps[{}]", self.i);
            self.errors
                .push(FieldError::new(field, "must be an object with id and kind"));
            return None;
        }
        let id = self.string("id", true)?;
        let kind = self.string("kind", true)?;
        let retry = self.retry();
        let timeout_ms = self.number(
            "timeoutMs",
            limits::DEFAULT_TIMEOUT_MS,
            1,
            limits::MAX_TIMEOUT_MS,
        );
        let action = match kind.as_str() {
            "transform" => {
                self.unknown_fields(&["output"]);
                let output = self.template_value("output");
                if output.is_none() {
                    self.error("output", "is required");
                }
                StepAction::Transform {
                    output: output.unwrap_or(Value::Null),
                }
            }
            "http" => {
                self.unknown_fields(&["method", "url", "headers", "body", "maxResponseBytes"]);
                let method = self
                    .string("method", false)
                    .unwrap_or_else(|| "GET".into())
                    .to_ascii_uppercase();
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
                    self.error("method", "must be GET, POST, PUT, PATCH, DELETE or HEAD");
                }
                let url = self.url();
                let headers = match self.template_value("headers") {
                    None => Map::new(),
                    Some(Value::Object(h)) if h.values().all(Value::is_string) => h,
                    Some(_) => {
                        self.error("headers", "must be an object of string values");
                        Map::new()
                    }
                };
                let body = self.template_value("body");
                let max_response_bytes = self.number(
                    "maxResponseBytes",
                    limits::DEFAULT_RESPONSE_BYTES,
                    1,
                    limits::MAX_RESPONSE_BYTES,
                );
                StepAction::Http {
                    method,
                    url,
                    headers,
                    body,
                    max_response_bytes,
                }
            }
            "condition" => {
                self.unknown_fields(&["if", "then", "else"]);
                let condition = self.string("if", true).unwrap_or_default();
                if !condition.is_empty() {
                    for e in self
                        .templates
                        .check_expression_in_scope(&condition, &self.scope)
                    {
                        let error = template_error(self.field("if"), "expression", e);
                        self.errors.push(error);
                    }
                }
                let then = self.jump("then", index_of);
                let otherwise = self.jump("else", index_of);
                StepAction::Condition {
                    condition,
                    then,
                    otherwise,
                }
            }
            "llm" => {
                self.unknown_fields(&["prompt", "system", "maxTokens"]);
                let prompt = self.template("prompt", true).unwrap_or_default();
                let system = self
                    .template("system", false)
                    .unwrap_or_else(|| definition.instructions.clone());
                let max_tokens = self
                    .get("maxTokens")
                    .is_some()
                    .then(|| self.number("maxTokens", 1, 1, 1_000_000));
                StepAction::Llm {
                    prompt,
                    system,
                    max_tokens: max_tokens.and_then(|n| u32::try_from(n).ok()),
                }
            }
            "integration" => {
                self.unknown_fields(&["connection", "action", "input"]);
                let connection = self.string("connection", true).unwrap_or_default();
                if !connection.is_empty() && !definition.integrations.contains(&connection) {
                    self.error(
                        "connection",
                        format!(
                            "{connection:?} is not declared in definition.integrations (declared: {})",
                            if definition.integrations.is_empty() {
                                "none".to_owned()
                            } else {
                                definition.integrations.join(", ")
                            }
                        ),
                    );
                }
                let action = self.string("action", true).unwrap_or_default();
                let input = self
                    .template_value("input")
                    .unwrap_or(Value::Object(Map::new()));
                StepAction::Integration {
                    connection,
                    action,
                    input,
                }
            }
            other => {
                self.error("kind", format!("{other:?} is not a step kind"));
                return None;
            }
        };
        Some(PlanStep {
            id,
            action,
            retry,
            timeout_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Agent, AgentInput, TenantId};
    use serde_json::json;

    fn compile_agent(agent: &Agent) -> Result<Plan> {
        agent.compile()
    }

    fn agent(definition: Value) -> Agent {
        let input: AgentInput =
            serde_json::from_value(json!({"name": "a", "definition": definition})).unwrap();
        Agent::create(
            TenantId::parse("t").unwrap(),
            input.unchecked(),
            "u",
            chrono::Utc::now(),
        )
    }

    #[test]
    fn a_definition_compiles_into_typed_steps() {
        let plan = compile_agent(&agent(json!({
            "instructions": "x",
            "integrations": ["jira"],
            "steps": [
                {"id": "greet", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}},
                {"id": "check", "kind": "condition", "if": "input.urgent", "then": "call", "else": "end"},
                {"id": "call", "kind": "http", "method": "post", "url": "https://example.org/{{ input.id }}",
                 "body": {"g": "{{ steps.greet.output }}"}, "retry": {"maxAttempts": 3, "backoffMs": 100}},
                {"id": "ask", "kind": "llm", "prompt": "Summarise {{ input.name }}"},
                {"id": "ticket", "kind": "integration", "connection": "jira", "action": "create-issue", "input": {}}
            ]
        })))
        .unwrap();
        assert_eq!(plan.steps.len(), 5);
        assert_eq!(plan.agent_version, 1);
        assert!(matches!(
            &plan.steps[1].action,
            StepAction::Condition {
                then: Jump::Step(2),
                otherwise: Jump::End,
                ..
            }
        ));
        assert!(
            matches!(&plan.steps[2].action, StepAction::Http { method, .. } if method == "POST")
        );
        assert_eq!(
            plan.steps[2].retry,
            RetryPolicy {
                max_attempts: 3,
                backoff_ms: 100
            }
        );
        assert!(matches!(&plan.steps[3].action, StepAction::Llm { system, .. } if system == "x"));
        let round_trip: Plan =
            serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
        assert_eq!(round_trip, plan);
    }

    #[test]
    fn errors_point_at_the_step_and_field_with_the_template_position() {
        let err = compile_agent(&agent(json!({
            "instructions": "x",
            "steps": [
                {"id": "a", "kind": "transform", "output": {"x": "line\n{{ input.name "}},
                {"id": "b", "kind": "http"},
                {"id": "c", "kind": "condition", "if": "input.n >", "then": "a"},
                {"id": "d", "kind": "integration", "connection": "nope", "action": "x", "bogus": 1},
                {"id": "e", "kind": "transform", "output": 1, "retry": {"maxAttempts": 99}}
            ]
        })))
        .unwrap_err();
        let Error::Validation(errors) = err else {
            panic!("{err:?}")
        };
        let by_field: HashMap<&str, &str> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        let first = &errors[0];
        assert_eq!(first.field, "definition.steps[0].output.x");
        assert_eq!(first.line, Some(2), "{first:?}");
        assert_eq!(first.step.as_deref(), Some("a"));
        assert!(by_field.contains_key("definition.steps[1].url"));
        assert!(by_field.contains_key("definition.steps[2].if"));
        assert!(by_field["definition.steps[2].then"].contains("forward"));
        assert!(by_field.contains_key("definition.steps[3].connection"));
        assert!(by_field.contains_key("definition.steps[3].bogus"));
        assert!(by_field.contains_key("definition.steps[4].retry.maxAttempts"));
    }

    /// Save-time limits name the field, the step and the line: a literal range or repetition
    /// too large to run, and a constant too large for minijinja to fold; a range bounded only
    /// by input is accepted here and capped when it runs.
    #[test]
    fn ranges_and_constants_too_large_to_run_are_refused_at_save_naming_field_and_line() {
        let err = compile_agent(&agent(json!({
            "instructions": "x",
            "steps": [
                {"id": "a", "kind": "transform", "output": {"x": "ok\n{% for i in range(1000000) %}{% endfor %}"}},
                {"id": "b", "kind": "transform", "output": {"y": "{{ 'a' ~ ([[[1] * 1000] * 1000] * 1000) }}"}},
                {"id": "c", "kind": "condition", "if": "input.n in ([1] * 100000000)", "then": "d"},
                {"id": "d", "kind": "transform", "output": {"z": "{% for i in range(input.n) %}{% endfor %}"}}
            ]
        })))
        .unwrap_err();
        let Error::Validation(errors) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<(&str, Option<usize>)> =
            errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(
            fields,
            [
                ("definition.steps[0].output.x", Some(2)),
                ("definition.steps[1].output.y", Some(1)),
                ("definition.steps[2].if", Some(1)),
            ],
            "{errors:?}"
        );
        assert!(errors[0].message.contains("at most 10000"), "{errors:?}");
        assert!(
            errors[1].message.contains(template::MAX_BYTES_SETTING),
            "{errors:?}"
        );
        let templates = template::Templates::new();
        let err = templates
            .render_str(
                "{% for i in range(input.n) %}{% endfor %}",
                &json!({"input": {"n": 20000}, "steps": {}}),
            )
            .unwrap_err();
        assert!(err.message.contains("at most 10000"), "{err}");
    }

    #[test]
    fn a_plan_needs_a_step() {
        let err = compile_agent(&agent(json!({"instructions": "x"}))).unwrap_err();
        assert!(matches!(err, Error::Validation(e) if e[0].field == "definition.steps"));
    }

    #[test]
    fn urls_variables_and_connections_are_checked_as_saving_checks_them() {
        let definition: AgentDefinition = serde_json::from_value(json!({
            "instructions": "x",
            "integrations": ["jira"],
            "steps": [
                {"id": "a", "kind": "http", "url": "ftp://example.org/x"},
                {"id": "b", "kind": "http", "url": "https://{{ input.host }}/{{ steps.c.output }}"},
                {"id": "c", "kind": "transform", "output": "{{ secret }}\n{{ steps.a.output }}"},
                {"id": "d", "kind": "http", "url": "example.org"},
                {"id": "e", "kind": "condition", "if": "input.q =="},
                {"id": "f", "kind": "integration", "connection": "slack", "action": "post"}
            ]
        }))
        .unwrap();
        let errors = check(&definition);
        let find = |field: &str| {
            errors
                .iter()
                .find(|e| e.field == field)
                .unwrap_or_else(|| panic!("no error at {field}: {errors:?}"))
        };
        assert!(find("definition.steps[0].url").message.contains("ftp://"));
        let later = find("definition.steps[1].url");
        assert_eq!(later.variable.as_deref(), Some("steps.c"), "{later:?}");
        assert_eq!(later.step.as_deref(), Some("b"));
        let secret = find("definition.steps[2].output");
        assert_eq!(secret.variable.as_deref(), Some("secret"));
        assert_eq!(secret.line, Some(1));
        assert!(find("definition.steps[3].url").message.contains("absolute"));
        assert!(
            find("definition.steps[4].if")
                .message
                .contains("expression error")
        );
        assert!(
            find("definition.steps[5].connection")
                .message
                .contains("jira")
        );
        assert_eq!(errors.len(), 6, "{errors:?}");
    }
}
