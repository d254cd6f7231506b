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
