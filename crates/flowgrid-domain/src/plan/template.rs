//! Templates and expressions over a run's context, with minijinja (Jinja2 syntax).
//!
//! A string template is rendered to a string, except a string that is one single `{{ expr }}`:
//! that one yields the expression's JSON value, so `"{{ steps.fetch.output }}"` passes an object
//! through unchanged. Undefined variables are errors, not empty strings. Rendering is bounded by
//! fuel, so a template cannot loop for ever.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// How much work one template or expression may do.
const FUEL: u64 = 50_000;

/// A template or expression error, with the 1-based line and column when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What went wrong.
    pub message: String,
    /// Line of the error within the template, when known.
    pub line: Option<usize>,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {line})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let mut message = e.kind().to_string();
        if let Some(detail) = e.detail() {
            message = format!("{message}: {detail}");
        }
        TemplateError {
            message,
            line: e.line(),
        }
    }
}

/// The template engine, configured once: strict undefined, fuel-bounded, no auto-escaping.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// A configured engine.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        Templates { env }
    }

    /// Checks that `template` parses.
    pub fn check_template(&self, template: &str) -> Result<(), TemplateError> {
        match single_expression(template) {
            Some(expr) => self.check_expression(expr),
            None => self
                .env
                .template_from_str(template)
                .map(|_| ())
                .map_err(Into::into),
        }
    }

    /// Checks that `expr` parses as an expression.
    pub fn check_expression(&self, expr: &str) -> Result<(), TemplateError> {
        self.env
            .compile_expression(expr)
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Renders a string template against `context` (see the module doc for the single-expression rule).
    pub fn render_str(&self, template: &str, context: &Value) -> Result<Value, TemplateError> {
        if let Some(expr) = single_expression(template) {
            return self.eval(expr, context);
        }
        if !template.contains("{{") && !template.contains("{%") && !template.contains("{#") {
            return Ok(Value::String(template.to_owned()));
        }
        let tmpl = self.env.template_from_str(template)?;
        Ok(Value::String(tmpl.render(minijinja::Value::from(
            minijinja::value::Serde(context),
        ))?))
    }

    /// Renders every string inside `value` (objects and arrays recursively; keys are kept).
    pub fn render_value(&self, value: &Value, context: &Value) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => self.render_str(s, context)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_value(v, context))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(v, context)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Checks every string template inside `value`; the error names the JSON path.
    pub fn check_value(&self, value: &Value, path: &str) -> Result<(), (String, TemplateError)> {
        match value {
            Value::String(s) => self.check_template(s).map_err(|e| (path.to_owned(), e)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| self.check_value(v, &format!("{path}[{i}]"))),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(k, v)| self.check_value(v, &format!("{path}.{k}"))),
            _ => Ok(()),
        }
    }

    /// Evaluates an expression to a JSON value.
    pub fn eval(&self, expr: &str, context: &Value) -> Result<Value, TemplateError> {
        let compiled = self.env.compile_expression(expr)?;
        let value = compiled.eval(minijinja::Value::from(minijinja::value::Serde(context)))?;
        if value.is_undefined() {
            return Err(TemplateError {
                message: format!("{expr} is undefined"),
                line: None,
            });
        }
        serde_json::to_value(&value).map_err(|e| TemplateError {
            message: e.to_string(),
            line: None,
        })
    }

    /// Evaluates a condition: true when the expression's value is truthy.
    pub fn truthy(&self, expr: &str, context: &Value) -> Result<bool, TemplateError> {
        let compiled = self.env.compile_expression(expr)?;
        let value = compiled.eval(minijinja::Value::from(minijinja::value::Serde(context)))?;
        if value.is_undefined() {
            return Err(TemplateError {
                message: format!("{expr} is undefined"),
                line: None,
            });
        }
        Ok(value.is_true())
    }
}

/// The expression inside a string that is exactly one `{{ ... }}`.
fn single_expression(template: &str) -> Option<&str> {
    let inner = template.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then(|| inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({"input": {"name": "Ada", "n": 3}, "steps": {"fetch": {"output": {"items": [1, 2]}}}})
    }

    #[test]
    fn strings_render_and_single_expressions_keep_their_type() {
        let t = Templates::new();
        assert_eq!(
            t.render_str("hello {{ input.name }}", &ctx()).unwrap(),
            json!("hello Ada")
        );
        assert_eq!(t.render_str("{{ input.n + 1 }}", &ctx()).unwrap(), json!(4));
        assert_eq!(
            t.render_str("{{ steps.fetch.output }}", &ctx()).unwrap(),
            json!({"items": [1, 2]})
        );
        assert_eq!(t.render_str("plain", &ctx()).unwrap(), json!("plain"));
    }

    #[test]
    fn values_render_recursively() {
        let t = Templates::new();
        let out = t
            .render_value(
                &json!({"greeting": "hi {{ input.name }}", "list": ["{{ input.n }}"]}),
                &ctx(),
            )
            .unwrap();
        assert_eq!(out, json!({"greeting": "hi Ada", "list": [3]}));
    }

    #[test]
    fn undefined_variables_are_errors() {
        let t = Templates::new();
        assert!(
            t.render_str("hi {{ input.missing.deeper }}", &ctx())
                .is_err()
        );
        assert!(t.render_str("{{ nothing }}", &ctx()).is_err());
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let t = Templates::new();
        let err = t.check_template("line one\n{{ input.name ").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(t.check_expression("input.n >").is_err());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = Templates::new();
        let err = t
            .render_str("{% for i in range(100000) %}{{ i }}{% endfor %}", &ctx())
            .unwrap_err();
        assert!(err.message.to_lowercase().contains("fuel"), "{err}");
    }

    #[test]
    fn conditions_are_truthy_or_not() {
        let t = Templates::new();
        assert!(t.truthy("input.n > 2", &ctx()).unwrap());
        assert!(!t.truthy("input.name == 'Bob'", &ctx()).unwrap());
    }
}
