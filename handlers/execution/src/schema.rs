//! Run inputs checked against the agent's `definition.inputSchema`.
//!
//! A deliberate subset of JSON Schema (no full validator crate was available offline at a
//! reasonable dependency cost): `type` (a name or a list), `required`, `properties`,
//! `additionalProperties: false`, `items`, `enum`, `minLength`/`maxLength`,
//! `minimum`/`maximum`. Other keywords are ignored. Every problem is reported at once, as
//! field errors under `input`.

use flowgrid_domain::{Error, FieldError, Result};
use serde_json::Value;

/// Checks `input` against `schema` (none: anything goes).
pub fn validate(schema: Option<&Value>, input: &Value) -> Result<()> {
    let Some(schema) = schema else { return Ok(()) };
    let mut errors = Vec::new();
    check(schema, input, "input", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(s) = schema.as_object() else { return };
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
        errors.push(FieldError::new(
            path,
            format!("must be of type {}", types.join(" or ")),
        ));
        return;
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(v)
    {
        errors.push(FieldError::new(path, "must be one of the allowed values"));
    }
    if let Some(text) = v.as_str() {
        let len = text.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            errors.push(FieldError::new(path, "is too short"));
        }
        if s.get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            errors.push(FieldError::new(path, "is too long"));
        }
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errors.push(FieldError::new(path, "is below the minimum"));
        }
        if s.get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errors.push(FieldError::new(path, "is above the maximum"));
        }
    }
    if let Some(obj) = v.as_object() {
        if let Some(Value::Array(required)) = s.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(name) {
                    errors.push(FieldError::new(format!("{path}.{name}"), "is required"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, value) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check(sub, value, &format!("{path}.{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(FieldError::new(
                        format!("{path}.{k}"),
                        "is not an allowed field",
                    ));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(schema_items)) = (v.as_array(), s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(schema_items, item, &format!("{path}[{i}]"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_checked_for_types_required_fields_and_bounds() {
        let schema = json!({"type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"name": {"type": "string", "minLength": 1}, "n": {"type": "integer", "maximum": 5},
                           "tags": {"type": "array", "items": {"type": "string"}}}});
        assert!(validate(Some(&schema), &json!({"name": "a", "n": 3, "tags": ["x"]})).is_ok());
        let Err(Error::Validation(errors)) =
            validate(Some(&schema), &json!({"n": 9, "tags": [1], "extra": true}))
        else {
            panic!("expected validation errors")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"input.name"));
        assert!(fields.contains(&"input.n"));
        assert!(fields.contains(&"input.tags[0]"));
        assert!(fields.contains(&"input.extra"));
        assert!(validate(Some(&schema), &json!([1])).is_err());
        assert!(validate(None, &json!("anything")).is_ok());
    }
}
