//! JSON Schema: compile a schema once, check values against it, report problems as
//! [`FieldError`]s.
//!
//! Used for agents' `definition.inputSchema` (checked when an agent is saved, applied to run
//! inputs on submit); meant as well for structured model output and connector inputs.
//!
//! What is supported, on top of the `jsonschema` crate (built without its remote-reference
//! features):
//! - The dialect is JSON Schema draft 2020-12 unless the root's `$schema` names another draft
//!   the crate knows (2019-09, 7, 6, 4). Any other `$schema` at the root is an invalid schema:
//!   a custom meta-schema would need fetching.
//! - Every keyword of the draft, including `$defs` with local `$ref`s (`#/$defs/x`, anchors,
//!   `$id`-relative references to resources embedded in the same document), `oneOf`/`anyOf`/
//!   `allOf`/`not`, `if`/`then`/`else`, `const`, `pattern`, `patternProperties`,
//!   `unevaluatedProperties`.
//! - Nothing is ever fetched: a `$ref` to anything outside the document (`https://…`, a file)
//!   makes the schema invalid at compile time, with no network or file access.
//! - `format` is an annotation only, whatever the draft (the 2019-09/2020-12 default, applied
//!   to drafts 4–7 too so that a schema's meaning does not change with its `$schema`).
//! - `pattern` and `patternProperties` use the `regex` crate (linear time, so a tenant's pattern
//!   cannot make a check backtrack for ever); look-around and back-references are not
//!   supported and make the schema invalid.
//!
//! Errors: a schema that is not valid against its draft's meta-schema, or that cannot be
//! compiled, is an [`InvalidSchema`] (place within the schema and the crate's text). A value
//! that fails the schema gives one [`FieldError`] per problem (at most [`MAX_ERRORS`]), whose
//! `field` follows the request convention (`input.tags[0]`) and whose `pointer` is the RFC 6901
//! JSON Pointer of the same place in the request body (`/input/tags/0`). A missing required
//! property, and each property refused by `additionalProperties` or `unevaluatedProperties`, is
//! reported at that property rather than at its object. Messages are the validator's text with
//! the offending value masked as `value`, so that a 422 neither echoes (possibly large or
//! secret) input nor grows with it.

use std::fmt;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{Draft, PatternOptions, Validator};
use serde_json::Value;

use crate::FieldError;

/// The most field errors one check reports; a value failing in more places is cut there.
pub const MAX_ERRORS: usize = 100;

/// One step of a path: an object member or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(location: &Location) -> Vec<Segment> {
    location
        .iter()
        .map(|s| match s {
            LocationSegment::Property(name) => Segment::Key(name.into_owned()),
            LocationSegment::Index(i) => Segment::Index(i),
        })
        .collect()
}

/// The JSON Pointer of a field path written the request way (`definition.steps[2].with`).
fn pointer_of_field(field: &str) -> String {
    let mut pointer = String::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (name, indices) = part
            .split_once('[')
            .map_or((part, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            push_pointer_segment(&mut pointer, name);
        }
        for index in indices.split('[') {
            let index = index.trim_end_matches(']');
            if !index.is_empty() {
                push_pointer_segment(&mut pointer, index);
            }
        }
    }
    pointer
}

fn push_pointer_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
}

/// A field error at `at` followed by `path`, with its JSON Pointer.
fn field_error(at: &str, path: &[Segment], message: String) -> FieldError {
    let mut field = at.to_owned();
    let mut pointer = pointer_of_field(at);
    for segment in path {
        match segment {
            Segment::Key(name) => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(name);
                push_pointer_segment(&mut pointer, name);
            }
            Segment::Index(i) => {
                field.push_str(&format!("[{i}]"));
                push_pointer_segment(&mut pointer, &i.to_string());
            }
        }
    }
    FieldError::new(field, message).with_pointer(pointer)
}

/// A schema that cannot be used: not valid against its draft's meta-schema, an unsupported
/// `$schema`, a reference that does not resolve within the document, a pattern the regex engine
/// refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchema {
    path: Vec<Segment>,
    message: String,
}

impl InvalidSchema {
    /// What is wrong, for a human.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The field error for a schema found at `at` in the request (`definition.inputSchema`):
    /// the field and pointer name the offending place within the schema.
    pub fn field_error(&self, at: &str) -> FieldError {
        field_error(at, &self.path, self.message.clone())
    }
}

impl fmt::Display for InvalidSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = field_error("", &self.path, String::new()).pointer;
        match pointer.as_deref() {
            Some("") | None => write!(f, "invalid JSON Schema: {}", self.message),
            Some(p) => write!(f, "invalid JSON Schema at {p}: {}", self.message),
        }
    }
}

impl std::error::Error for InvalidSchema {}

/// A compiled JSON Schema: compile once, validate many values.
pub struct CompiledSchema {
    validator: Validator,
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("draft", &self.validator.draft())
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compiles `schema` (an object or a boolean schema), fetching nothing.
    pub fn compile(schema: &Value) -> Result<Self, InvalidSchema> {
        if let Some(uri) = schema.get("$schema").and_then(Value::as_str)
            && Draft::default().detect(schema) == Draft::Unknown
        {
            return Err(InvalidSchema {
                path: vec![Segment::Key("$schema".into())],
                message: format!(
                    "{uri:?} is not a supported dialect; use JSON Schema draft 2020-12 (the \
                     default), 2019-09, 7, 6 or 4"
                ),
            });
        }
        jsonschema::options()
            .offline()
            .should_validate_formats(false)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map(|validator| Self { validator })
            .map_err(|e| InvalidSchema {
                path: segments(e.instance_path()),
                message: e.to_string(),
            })
    }

    /// Checks `instance`, found at field path `at` of the request (`input`; empty for the
    /// whole body). Every problem is returned at once, up to [`MAX_ERRORS`].
    pub fn validate(&self, instance: &Value, at: &str) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        for error in self.validator.iter_errors(instance) {
            let mut path = segments(error.instance_path());
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned);
                    path.push(Segment::Key(name));
                    errors.push(field_error(at, &path, error.masked().to_string()));
                }
                ValidationErrorKind::AdditionalProperties { unexpected }
                | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                    let what = if matches!(
                        error.kind(),
                        ValidationErrorKind::AdditionalProperties { .. }
                    ) {
                        "Additional"
                    } else {
                        "Unevaluated"
                    };
                    for name in unexpected {
                        let mut path = path.clone();
                        path.push(Segment::Key(name.clone()));
                        errors.push(field_error(
                            at,
                            &path,
                            format!("{what} properties are not allowed ('{name}' was unexpected)"),
                        ));
                    }
                }
                _ => errors.push(field_error(at, &path, error.masked().to_string())),
            }
            if errors.len() >= MAX_ERRORS {
                errors.truncate(MAX_ERRORS);
                break;
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(schema: Value) -> CompiledSchema {
        CompiledSchema::compile(&schema).expect("a valid schema")
    }

    fn problems(schema: &CompiledSchema, instance: Value) -> Vec<(String, String, String)> {
        schema
            .validate(&instance, "input")
            .expect_err("the instance fails")
            .into_iter()
            .map(|e| (e.field, e.pointer.unwrap_or_default(), e.message))
            .collect()
    }

    #[test]
    fn fields_follow_the_request_convention_and_pointers_name_the_same_place() {
        let schema = compile(json!({"type": "object", "required": ["name"],
            "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "n": {"type": "integer", "maximum": 5},
                           "tags": {"type": "array", "items": {"type": "string"}},
                           "a/b.c": {"const": 1}}}));
        assert!(
            schema
                .validate(&json!({"name": "x", "tags": ["t"]}), "input")
                .is_ok()
        );
        let mut got = problems(
            &schema,
            json!({"n": 9, "tags": ["t", 1], "extra": 1, "a/b.c": 2}),
        );
        got.sort();
        let fields: Vec<(&str, &str)> = got
            .iter()
            .map(|(f, p, _)| (f.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("input.a/b.c", "/input/a~1b.c"),
                ("input.extra", "/input/extra"),
                ("input.n", "/input/n"),
                ("input.name", "/input/name"),
                ("input.tags[1]", "/input/tags/1"),
            ]
        );
        let message = |field: &str| {
            got.iter()
                .find(|(f, _, _)| f == field)
                .map(|(_, _, m)| m.as_str())
                .unwrap_or_default()
        };
        assert_eq!(message("input.name"), "\"name\" is a required property");
        assert_eq!(
            message("input.extra"),
            "Additional properties are not allowed ('extra' was unexpected)"
        );
        assert_eq!(message("input.n"), "value is greater than the maximum of 5");
    }

    #[test]
    fn the_prefix_may_be_nested_or_empty() {
        let schema = compile(json!({"items": {"type": "string"}}));
        let errors = schema
            .validate(&json!(["a", 2]), "definition.steps[3].with")
            .unwrap_err();
        assert_eq!(errors[0].field, "definition.steps[3].with[1]");
        assert_eq!(
            errors[0].pointer.as_deref(),
            Some("/definition/steps/3/with/1")
        );
        let errors = compile(json!({"required": ["a"]}))
            .validate(&json!({}), "")
            .unwrap_err();
        assert_eq!(errors[0].field, "a");
        assert_eq!(errors[0].pointer.as_deref(), Some("/a"));
    }

    #[test]
    fn draft_2020_12_keywords_the_old_subset_ignored_are_enforced() {
        let schema = compile(json!({
            "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "type": "object",
            "properties": {
                "code": {"$ref": "#/$defs/code"},
                "kind": {"const": "incident"},
                "target": {"oneOf": [
                    {"type": "object", "required": ["host"], "properties": {"host": {"type": "string"}}},
                    {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}
                ]},
                "when": {"type": "string", "format": "date-time"},
                "level": {"type": "integer", "multipleOf": 10},
                "labels": {"type": "array", "uniqueItems": true, "prefixItems": [{"const": "first"}]}
            },
            "if": {"properties": {"kind": {"const": "incident"}}, "required": ["kind"]},
            "then": {"required": ["code"]}
        }));
        let ok = json!({"code": "ABC", "kind": "incident", "target": {"host": "h"},
            "when": "not a date: format is an annotation", "level": 20, "labels": ["first", "x"]});
        assert_eq!(schema.validate(&ok, "input"), Ok(()));
        let got = problems(
            &schema,
            json!({"code": "abcd", "kind": "other", "target": {"host": "h", "url": "u"},
                "level": 15, "labels": ["x", "x"]}),
        );
        let fields: Vec<&str> = got.iter().map(|(f, _, _)| f.as_str()).collect();
        for field in [
            "input.code",
            "input.kind",
            "input.target",
            "input.level",
            "input.labels",
            "input.labels[0]",
        ] {
            assert!(fields.contains(&field), "{field} in {got:?}");
        }
        // `if`/`then`: an incident needs a code.
        let got = problems(&schema, json!({"kind": "incident"}));
        assert_eq!(got[0].0, "input.code");
    }

    #[test]
    fn messages_mask_the_value() {
        let schema = compile(json!({"type": "string", "maxLength": 3}));
        let got = problems(&schema, json!("a secret that is long"));
        assert_eq!(got[0].2, "value is longer than 3 characters");
        assert!(!got[0].2.contains("secret"));
    }

    #[test]
    fn errors_are_capped() {
        let schema = compile(json!({"items": {"type": "string"}}));
        let many: Vec<u32> = (0..1000).collect();
        let errors = schema.validate(&json!(many), "input").unwrap_err();
        assert_eq!(errors.len(), MAX_ERRORS);
    }

    #[test]
    fn invalid_schemas_are_refused_with_their_place() {
        let bad = CompiledSchema::compile(&json!({"properties": {"n": {"type": "integr"}}}))
            .expect_err("an unknown type name");
        let error = bad.field_error("definition.inputSchema");
        assert_eq!(error.field, "definition.inputSchema.properties.n.type");
        assert_eq!(
            error.pointer.as_deref(),
            Some("/definition/inputSchema/properties/n/type")
        );
        assert!(!error.message.is_empty());
        for schema in [
            json!({"minLength": -1}),
            json!({"required": "name"}),
            json!({"$ref": "#/$defs/missing"}),
            json!({"pattern": "(unclosed"}),
            json!({"pattern": "(?=look-ahead)"}),
            json!({"$schema": "https://example.com/my-dialect"}),
        ] {
            assert!(
                CompiledSchema::compile(&schema).is_err(),
                "{schema} is refused"
            );
        }
        let dialect =
            CompiledSchema::compile(&json!({"$schema": "https://example.com/d"})).unwrap_err();
        assert_eq!(dialect.field_error("s").field, "s.$schema");
    }

    #[test]
    fn remote_references_are_invalid_and_never_fetched() {
        // A listener that counts connections: the compile must not make one.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        for reference in [
            format!("http://127.0.0.1:{port}/schema.json"),
            format!("https://127.0.0.1:{port}/schema.json#/$defs/x"),
            "file:///etc/passwd".to_owned(),
        ] {
            let error = CompiledSchema::compile(&json!({"$ref": reference}))
                .expect_err("a remote reference is refused");
            assert!(!error.message().is_empty(), "{reference}");
        }
        let error = CompiledSchema::compile(
            &json!({"$id": "https://flowgrid.test/root", "properties": {"a": {"$ref": "other.json"}}}),
        )
        .expect_err("a relative reference outside the document");
        assert!(error.to_string().starts_with("invalid JSON Schema"));
        assert!(
            listener.accept().is_err(),
            "no connection was made to the referenced host"
        );
    }

    #[test]
    fn known_drafts_are_honoured_through_dollar_schema() {
        // Draft 4: `exclusiveMaximum` is a boolean modifier of `maximum`.
        let draft4 = compile(json!({"$schema": "http://json-schema.org/draft-04/schema#",
            "maximum": 5, "exclusiveMaximum": true}));
        assert!(draft4.validate(&json!(5), "").is_err());
        assert!(draft4.validate(&json!(4), "").is_ok());
        // 2020-12 (the default) refuses the draft 4 spelling.
        assert!(CompiledSchema::compile(&json!({"maximum": 5, "exclusiveMaximum": true})).is_err());
        // Formats stay annotations even where the draft would assert them.
        let draft7 = compile(json!({"$schema": "http://json-schema.org/draft-07/schema#",
            "format": "email"}));
        assert!(draft7.validate(&json!("not an email"), "").is_ok());
        assert!(
            compile(json!(true))
                .validate(&json!({"any": "thing"}), "")
                .is_ok()
        );
    }
}
