//! Validation of agent input: every field checked at once, one field error each.

use super::*;

impl AgentInput {
    /// Checks every field and reports every problem at once (422 with field errors).
    pub fn validate(self) -> Result<ValidAgentInput> {
        let mut errors = Vec::new();
        let name = self.name.trim().to_owned();
        check_text(&mut errors, "name", &name, 1, limits::NAME);
        check_text(
            &mut errors,
            "description",
            &self.description,
            0,
            limits::DESCRIPTION,
        );
        let status = match self.status {
            None => AgentStatus::Draft,
            Some(AgentStatus::Compiled) => {
                errors.push(FieldError::new(
                    "status",
                    "compiled is set by compiling the agent, not by input",
                ));
                AgentStatus::Draft
            }
            Some(s) => s,
        };
        validate_definition(&mut errors, &self.definition);
        // The compiler's checks of the steps, as compile and submit run them (a field the
        // shape checks above already refused is not reported twice).
        let refused: HashSet<String> = errors.iter().map(|e| e.field.clone()).collect();
        errors.extend(
            crate::plan::check(&self.definition)
                .into_iter()
                .filter(|e| !refused.contains(&e.field)),
        );
        let schedule = match self
            .schedule
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => match Schedule::parse_new(s, chrono::Utc::now()) {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(FieldError::new("schedule", e));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(ValidAgentInput {
                name,
                description: self.description,
                status,
                definition: self.definition,
                schedule,
            })
        } else {
            Err(Error::Validation(errors))
        }
    }
}

/// The fields of each object of an agent body, as serde names them (a test pins them against
/// the structs' own `deny_unknown_fields` messages).
const INPUT_FIELDS: &[&str] = &["name", "description", "status", "definition", "schedule"];
const DEFINITION_FIELDS: &[&str] = &[
    "instructions",
    "model",
    "inputSchema",
    "capabilities",
    "interactions",
    "steps",
    "integrations",
];
const MODEL_FIELDS: &[&str] = &["provider", "model", "temperature", "maxTokens", "baseUrl"];
const INTERACTION_FIELDS: &[&str] = &["name", "trigger", "description", "schedule", "event"];

impl AgentInput {
    /// Every unknown field of an agent body at once (`POST`/`PUT /api/agents`), worded as serde
    /// words the first one: reading the body with serde stops at the first. Empty when there is
    /// none (or when the body is not even an object: reading it reports that).
    pub fn unknown_fields(body: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        unknown_in(&mut errors, "", body, INPUT_FIELDS);
        if let Some(definition) = body.get("definition") {
            unknown_in(&mut errors, "definition.", definition, DEFINITION_FIELDS);
            if let Some(model) = definition.get("model") {
                unknown_in(&mut errors, "definition.model.", model, MODEL_FIELDS);
            }
            if let Some(Value::Array(items)) = definition.get("interactions") {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("definition.interactions[{i}].");
                    unknown_in(&mut errors, &at, item, INTERACTION_FIELDS);
                }
            }
        }
        errors
    }
}

fn unknown_in(errors: &mut Vec<FieldError>, at: &str, value: &Value, known: &[&str]) {
    let Some(object) = value.as_object() else {
        return;
    };
    let expected = known
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.push(FieldError::new(
            format!("{at}{key}"),
            format!("unknown field `{key}`, expected one of {expected}"),
        ));
    }
}

#[cfg(test)]
impl AgentInput {
    /// The input as it is, unchecked: for tests of what the compiler says about definitions
    /// that saving refuses.
    pub(crate) fn unchecked(self) -> ValidAgentInput {
        ValidAgentInput {
            name: self.name,
            description: self.description,
            status: self.status.unwrap_or(AgentStatus::Draft),
            definition: self.definition,
            schedule: None,
        }
    }
}

fn check_text(errors: &mut Vec<FieldError>, field: &str, value: &str, min: usize, max: usize) {
    let len = value.chars().count();
    if len < min {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if len > max {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters (is {len})"),
        ));
    } else if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
}

fn check_list_len(errors: &mut Vec<FieldError>, field: &str, len: usize) {
    if len > limits::LIST {
        errors.push(FieldError::new(
            field,
            format!("must have at most {} entries", limits::LIST),
        ));
    }
}

fn validate_definition(errors: &mut Vec<FieldError>, d: &AgentDefinition) {
    let instructions = d.instructions.trim();
    check_text(
        errors,
        "definition.instructions",
        instructions,
        1,
        limits::INSTRUCTIONS,
    );
    if !PROVIDERS.contains(&d.model.provider.as_str()) {
        errors.push(FieldError::new(
            "definition.model.provider",
            format!("must be one of {}", PROVIDERS.join(", ")),
        ));
    }
    check_text(
        errors,
        "definition.model.model",
        &d.model.model,
        1,
        limits::SHORT,
    );
    if let Some(t) = d.model.temperature
        && !(0.0..=2.0).contains(&t)
    {
        errors.push(FieldError::new(
            "definition.model.temperature",
            "must be between 0 and 2",
        ));
    }
    if d.model.max_tokens == Some(0) {
        errors.push(FieldError::new(
            "definition.model.maxTokens",
            "must be at least 1",
        ));
    }
    if let Some(schema) = &d.input_schema {
        if !schema.is_object() {
            errors.push(FieldError::new(
                "definition.inputSchema",
                "must be a JSON Schema object",
            ));
        } else if let Err(invalid) = crate::schema::CompiledSchema::compile(schema) {
            errors.push(invalid.field_error("definition.inputSchema"));
        }
    }
    check_list_len(errors, "definition.capabilities", d.capabilities.len());
    for (i, c) in d.capabilities.iter().enumerate() {
        check_text(
            errors,
            &format!("definition.capabilities[{i}]"),
            c,
            1,
            limits::SHORT,
        );
    }
    check_list_len(errors, "definition.integrations", d.integrations.len());
    for (i, c) in d.integrations.iter().enumerate() {
        check_text(
            errors,
            &format!("definition.integrations[{i}]"),
            c,
            1,
            limits::SHORT,
        );
    }
    check_list_len(errors, "definition.interactions", d.interactions.len());
    let mut names = HashSet::new();
    for (i, it) in d.interactions.iter().enumerate() {
        let field = format!("definition.interactions[{i}]");
        check_text(errors, &format!("{field}.name"), &it.name, 1, limits::SHORT);
        if !names.insert(it.name.to_lowercase()) {
            errors.push(FieldError::new(
                format!("{field}.name"),
                "duplicates another interaction's name",
            ));
        }
        match (it.trigger, &it.schedule, &it.event) {
            (TriggerKind::Schedule, None, _) => {
                errors.push(FieldError::new(
                    format!("{field}.schedule"),
                    "is required for a schedule trigger",
                ));
            }
            (TriggerKind::Schedule, Some(s), _) => {
                if let Err(e) = Schedule::parse_new(s, chrono::Utc::now()) {
                    errors.push(FieldError::new(format!("{field}.schedule"), e));
                }
            }
            (TriggerKind::Event, _, None) => {
                errors.push(FieldError::new(
                    format!("{field}.event"),
                    "is required for an event trigger",
                ));
            }
            (_, Some(_), _) => {
                errors.push(FieldError::new(
                    format!("{field}.schedule"),
                    "is only for schedule triggers",
                ));
            }
            _ => {}
        }
    }
    check_list_len(errors, "definition.steps", d.steps.len());
    let mut ids = HashSet::new();
    for (i, step) in d.steps.iter().enumerate() {
        let field = format!("definition.steps[{i}]");
        let Some(obj) = step.as_object() else {
            errors.push(FieldError::new(field, "must be an object with id and kind"));
            continue;
        };
        match obj.get("id").and_then(Value::as_str) {
            Some(id) if is_step_id(id) => {
                if !ids.insert(id.to_owned()) {
                    errors.push(FieldError::new(
                        format!("{field}.id"),
                        format!("duplicates step id {id:?}"),
                    ));
                }
            }
            _ => errors.push(FieldError::new(
                format!("{field}.id"),
                "must be 1-64 characters of A-Z a-z 0-9 _ -",
            )),
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(kind) if STEP_KINDS.contains(&kind) => {}
            _ => errors.push(FieldError::new(
                format!("{field}.kind"),
                format!("must be one of {}", STEP_KINDS.join(", ")),
            )),
        }
    }
}

fn is_step_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod unknown_field_tests {
    use std::collections::HashMap;

    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    /// serde's own message for one unknown field `zz` of `T`.
    fn serde_says<T: DeserializeOwned + std::fmt::Debug>(body: Value) -> String {
        let err = serde_json::from_value::<T>(body).unwrap_err().to_string();
        err.split(" at line").next().unwrap().to_owned()
    }

    #[test]
    fn the_field_lists_are_the_structs_own() {
        let errors = AgentInput::unknown_fields(&json!({
            "zz": 1,
            "definition": {"zz": 1, "model": {"zz": 1}, "interactions": [{"zz": 1}]}
        }));
        let by_field: HashMap<&str, &str> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            by_field["zz"],
            serde_says::<AgentInput>(
                json!({"name": "a", "definition": {"instructions": "x"}, "zz": 1})
            )
        );
        assert_eq!(
            by_field["definition.zz"],
            serde_says::<AgentDefinition>(json!({"instructions": "x", "zz": 1}))
        );
        assert_eq!(
            by_field["definition.model.zz"],
            serde_says::<ModelSettings>(json!({"zz": 1}))
        );
        assert_eq!(
            by_field["definition.interactions[0].zz"],
            serde_says::<Interaction>(json!({"name": "n", "trigger": "manual", "zz": 1}))
        );
        assert_eq!(errors.len(), 4);
    }
}
