//! Run inputs checked against the agent's `definition.inputSchema` with the shared JSON Schema
//! validator ([`flowgrid_domain::schema`]: draft 2020-12 by default, nothing fetched). Every
//! problem is reported at once, as field errors under `input` carrying their JSON Pointer
//! (`/input/...`).
//!
//! The schema is compiled on every submit rather than cached: compiling is a fraction of a
//! millisecond, small beside the plan compile and the store writes of a submit, and a cache
//! keyed by agent id and version would be memory to bound and evict for no visible gain.

use flowgrid_domain::schema::CompiledSchema;
use flowgrid_domain::{Error, Result};
use serde_json::Value;

/// Checks `input` against `schema` (none: anything goes). A schema that does not compile (saved
/// before schemas were checked at save) is a 422 on `definition.inputSchema`, like any other
/// definition that does not compile.
pub fn validate(schema: Option<&Value>, input: &Value) -> Result<()> {
    let Some(schema) = schema else { return Ok(()) };
    let compiled = CompiledSchema::compile(schema).map_err(|invalid| {
        Error::Validation(vec![invalid.field_error("definition.inputSchema")])
    })?;
    compiled.validate(input, "input").map_err(Error::Validation)
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

    #[test]
    fn a_stored_schema_that_does_not_compile_is_a_422_on_the_definition() {
        let Err(Error::Validation(errors)) = validate(Some(&json!({"type": "integr"})), &json!({}))
        else {
            panic!("expected validation errors")
        };
        assert_eq!(errors[0].field, "definition.inputSchema.type");
        assert_eq!(
            errors[0].pointer.as_deref(),
            Some("/definition/inputSchema/type")
        );
    }
}
