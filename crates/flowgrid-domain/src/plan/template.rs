//! Templates and expressions over a run's context, with minijinja (Jinja2 syntax).
//!
//! A string template is rendered to a string, except a string that is one single `{{ expr }}`:
//! that one yields the expression's JSON value, so `"{{ steps.fetch.output }}"` passes an object
//! through unchanged. Undefined variables are errors, not empty strings.
//!
//! Bounded while it runs (docs/agents.md, "Limits"):
//! - minijinja's fuel charges every instruction and every byte or list slot a template builds
//!   (operators, literals, filter results, output written), and refuses an allocation of known
//!   size before it happens; one evaluation gets [`FUEL_INSTRUCTIONS`] plus four times the value
//!   cap in bytes, so a loop or a chain of concatenations stops early;
//! - the value a template yields is capped at `max_bytes` (`FLOWGRID_TEMPLATE_MAX_BYTES`): a
//!   rendered string is checked as it is, and an expression's value is converted to JSON item by
//!   item with the bytes counted, so a lazy `[1] * 100000000` stops after `max_bytes` instead of
//!   materialising a hundred million items.
//!
//! At save time [`Templates::check_template`] also names variables that do not exist (anything
//! but `input`, `steps` and the built-in functions; `steps.<id>` must be an earlier step) and
//! refuses ranges and repetitions whose literal size can only exceed the limits.

use std::collections::HashSet;

use minijinja::value::ValueKind;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

/// Instructions one template or expression may run (on top of the bytes it may build).
pub const FUEL_INSTRUCTIONS: u64 = 50_000;

/// Default of `FLOWGRID_TEMPLATE_MAX_BYTES`: the largest value one template may yield.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Longest `range(...)` a template may write as literals (longer ones run out of fuel anyway).
pub const MAX_STATIC_RANGE: i64 = 10_000;

/// The setting that caps template values, named in errors.
pub const MAX_BYTES_SETTING: &str = "FLOWGRID_TEMPLATE_MAX_BYTES";

/// Names a template may use besides `input` and `steps`: minijinja's global functions.
const GLOBALS: [&str; 5] = ["range", "dict", "namespace", "debug", "loop"];

/// Bytes of fuel a unit of minijinja fuel pays for.
const BYTES_PER_FUEL: u64 = 64;

/// A template or expression error, with the 1-based line and column when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What went wrong.
    pub message: String,
    /// Line of the error within the template, when known.
    pub line: Option<usize>,
    /// The undefined variable, when that is the error.
    pub variable: Option<String>,
}

impl TemplateError {
    fn new(message: impl Into<String>) -> Self {
        TemplateError {
            message: message.into(),
            line: None,
            variable: None,
        }
    }
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
        if e.kind() == ErrorKind::OutOfFuel {
            message = format!(
                "{message}: the template did more work or built more data than a template may \
                 ({FUEL_INSTRUCTIONS} instructions and four times {MAX_BYTES_SETTING} in bytes)"
            );
        }
        if let Some(detail) = e.detail() {
            message = format!("{message}: {detail}");
        }
        TemplateError {
            message,
            line: e.line(),
            variable: None,
        }
    }
}

/// What a template may refer to when it is checked at save time.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Ids of the steps that may have run before this one (`steps.<id>`); `None`: any.
    pub steps: Option<HashSet<String>>,
}

/// The template engine, configured once: strict undefined, fuel- and size-bounded, no
/// auto-escaping.
pub struct Templates {
    env: Environment<'static>,
    max_bytes: usize,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// A configured engine with the default value cap ([`DEFAULT_MAX_BYTES`]).
    pub fn new() -> Self {
        Self::with_max_bytes(DEFAULT_MAX_BYTES)
    }

    /// A configured engine whose templates yield at most `max_bytes` (as JSON) and build at
    /// most four times that on the way.
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let data_fuel = (max_bytes as u64).saturating_mul(4) / BYTES_PER_FUEL;
        env.set_fuel(Some(FUEL_INSTRUCTIONS.saturating_add(data_fuel)));
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // minijinja writes a container, `string`, `tojson` and `pprint` out in full before it
        // charges fuel for the bytes: these write through a cap instead.
        env.set_formatter(move |out, state, value| {
            if value.is_undefined() {
                return Err(minijinja::Error::from(ErrorKind::UndefinedError));
            }
            if value.as_object().is_none() {
                return minijinja::escape_formatter(out, state, value);
            }
            let text = capped_display(value, max_bytes)?;
            out.write_str(&text).map_err(minijinja::Error::from)
        });
        env.add_filter("string", move |value: &minijinja::Value| {
            match value.kind() {
                ValueKind::String => Ok(value.clone()),
                _ => capped_display(value, max_bytes).map(minijinja::Value::from),
            }
        });
        env.add_filter("pprint", move |value: &minijinja::Value| {
            let mut out = Capped::new(max_bytes);
            std::fmt::Write::write_fmt(&mut out, format_args!("{value:#?}"))
                .map_err(|_| too_large_error(max_bytes))?;
            Ok(out.text)
        });
        env.add_filter(
            "format",
            move |state: &mut minijinja::State,
                  format: &minijinja::Value,
                  args: minijinja::value::Rest<minijinja::value::ValueOrKwargs>| {
                for arg in args.0.iter().filter(|v| is_container(v)) {
                    capped_display(arg, max_bytes)?;
                }
                minijinja::filters::format(state, format, args)
            },
        );
        env.add_filter(
            "tojson",
            move |value: &minijinja::Value,
                  indent: Option<minijinja::Value>,
                  args: minijinja::value::Kwargs| {
                let mut out = Capped::new(max_bytes);
                if serde_json::to_writer(&mut out, value).is_err() && out.over {
                    return Err(too_large_error(max_bytes));
                }
                minijinja::filters::tojson(value, indent, args)
            },
        );
        Templates { env, max_bytes }
    }

    /// The cap on one template's value, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn too_large(&self) -> TemplateError {
        TemplateError::new(format!(
            "the value is larger than {} bytes ({MAX_BYTES_SETTING})",
            self.max_bytes
        ))
    }

    /// Checks that `template` parses (the first syntax error).
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

    /// Checks that `expr` parses as an expression (the first syntax error).
    pub fn check_expression(&self, expr: &str) -> Result<(), TemplateError> {
        self.env
            .compile_expression(expr)
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Every problem of `template` that can be seen before it runs: its syntax error, or else
    /// each variable it uses that `scope` does not define and each literal range or repetition
    /// too large to run.
    pub fn check_in_scope(&self, template: &str, scope: &Scope) -> Vec<TemplateError> {
        let (variables, code) = match single_expression(template) {
            Some(expr) => match self.env.compile_expression(expr) {
                Ok(e) => (e.undeclared_variables(true), vec![(0, expr)]),
                Err(e) => return vec![e.into()],
            },
            None => match self.env.template_from_str(template) {
                Ok(t) => (t.undeclared_variables(true), code_regions(template)),
                Err(e) => return vec![e.into()],
            },
        };
        let mut errors = undefined_variables(template, variables, scope);
        for (offset, code) in code {
            errors.extend(self.static_limits(template, offset, code));
        }
        errors
    }

    /// [`Templates::check_in_scope`] for an expression (a condition's `if`).
    pub fn check_expression_in_scope(&self, expr: &str, scope: &Scope) -> Vec<TemplateError> {
        match self.env.compile_expression(expr) {
            Err(e) => vec![e.into()],
            Ok(e) => {
                let mut errors = undefined_variables(expr, e.undeclared_variables(true), scope);
                errors.extend(self.static_limits(expr, 0, expr));
                errors
            }
        }
    }

    /// Every problem of every string template inside `value`, each with its JSON path.
    pub fn check_value_in_scope(
        &self,
        value: &Value,
        path: &str,
        scope: &Scope,
    ) -> Vec<(String, TemplateError)> {
        match value {
            Value::String(s) => self
                .check_in_scope(s, scope)
                .into_iter()
                .map(|e| (path.to_owned(), e))
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .flat_map(|(i, v)| self.check_value_in_scope(v, &format!("{path}[{i}]"), scope))
                .collect(),
            Value::Object(map) => map
                .iter()
                .flat_map(|(k, v)| self.check_value_in_scope(v, &format!("{path}.{k}"), scope))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Renders a string template against `context` (see the module doc for the single-expression
    /// rule); the value is at most `max_bytes`.
    pub fn render_str(&self, template: &str, context: &Value) -> Result<Value, TemplateError> {
        let mut budget = self.max_bytes;
        self.render_in(template, &context_value(context), &mut budget)
    }

    fn render_in(
        &self,
        template: &str,
        context: &minijinja::Value,
        budget: &mut usize,
    ) -> Result<Value, TemplateError> {
        if let Some(expr) = single_expression(template) {
            let compiled = self.env.compile_expression(expr)?;
            let value = compiled.eval(context.clone())?;
            if value.is_undefined() {
                return Err(TemplateError::new(format!("{expr} is undefined")));
            }
            return self.to_json(&value, budget);
        }
        let text =
            if !template.contains("{{") && !template.contains("{%") && !template.contains("{#") {
                template.to_owned()
            } else {
                self.env
                    .template_from_str(template)?
                    .render(context.clone())?
            };
        self.spend(budget, text.len().saturating_add(2))?;
        Ok(Value::String(text))
    }

    /// Renders every string inside `value` (objects and arrays recursively; keys are kept); the
    /// whole result is at most `max_bytes`.
    pub fn render_value(&self, value: &Value, context: &Value) -> Result<Value, TemplateError> {
        let mut budget = self.max_bytes;
        self.render_value_in(value, &context_value(context), &mut budget)
    }

    fn render_value_in(
        &self,
        value: &Value,
        context: &minijinja::Value,
        budget: &mut usize,
    ) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => self.render_in(s, context, budget)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| {
                        self.spend(budget, 1)?;
                        self.render_value_in(v, context, budget)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        self.spend(budget, k.len() + 4)?;
                        Ok((k.clone(), self.render_value_in(v, context, budget)?))
                    })
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => {
                self.spend(budget, other.to_string().len())?;
                other.clone()
            }
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

    /// Evaluates an expression to a JSON value of at most `max_bytes`.
    pub fn eval(&self, expr: &str, context: &Value) -> Result<Value, TemplateError> {
        let compiled = self.env.compile_expression(expr)?;
        let value = compiled.eval(context_value(context))?;
        if value.is_undefined() {
            return Err(TemplateError::new(format!("{expr} is undefined")));
        }
        let mut budget = self.max_bytes;
        self.to_json(&value, &mut budget)
    }

    /// Evaluates a condition: true when the expression's value is truthy.
    pub fn truthy(&self, expr: &str, context: &Value) -> Result<bool, TemplateError> {
        let compiled = self.env.compile_expression(expr)?;
        let value = compiled.eval(context_value(context))?;
        if value.is_undefined() {
            return Err(TemplateError::new(format!("{expr} is undefined")));
        }
        Ok(value.is_true())
    }

    fn spend(&self, budget: &mut usize, bytes: usize) -> Result<(), TemplateError> {
        match budget.checked_sub(bytes) {
            Some(left) => {
                *budget = left;
                Ok(())
            }
            None => Err(self.too_large()),
        }
    }

    /// A minijinja value as JSON, item by item, charging its encoded size to `budget`: a lazy
    /// sequence is read only as far as the budget allows.
    fn to_json(
        &self,
        value: &minijinja::Value,
        budget: &mut usize,
    ) -> Result<Value, TemplateError> {
        match value.kind() {
            ValueKind::Seq | ValueKind::Iterable => {
                self.spend(budget, 2)?;
                let mut items = Vec::new();
                for item in value.try_iter()? {
                    self.spend(budget, 1)?;
                    items.push(self.to_json(&item, budget)?);
                }
                Ok(Value::Array(items))
            }
            ValueKind::Map => {
                self.spend(budget, 2)?;
                let mut map = Map::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                    self.spend(budget, key.len() + 4)?;
                    let item = self.to_json(&item, budget)?;
                    map.insert(key, item);
                }
                Ok(Value::Object(map))
            }
            ValueKind::Undefined | ValueKind::None => {
                self.spend(budget, 4)?;
                Ok(Value::Null)
            }
            ValueKind::String => {
                let s = value.as_str().unwrap_or_default();
                self.spend(budget, s.len() + 2)?;
                Ok(Value::String(s.to_owned()))
            }
            _ => {
                let json =
                    serde_json::to_value(value).map_err(|e| TemplateError::new(e.to_string()))?;
                self.spend(budget, json.to_string().len())?;
                Ok(json)
            }
        }
    }

    /// Literal ranges and repetitions in `code` (at byte `offset` of `source`) that can only
    /// exceed the limits.
    fn static_limits(&self, source: &str, offset: usize, code: &str) -> Vec<TemplateError> {
        let tokens = tokens(code);
        let mut errors = Vec::new();
        let at = |pos: usize| TemplateError {
            message: String::new(),
            line: Some(line_of(source, offset + pos)),
            variable: None,
        };
        for (i, (pos, token)) in tokens.iter().enumerate() {
            match token {
                Token::Ident(name) if name == "range" => {
                    if let Some(len) = literal_range(&tokens[i + 1..])
                        && len > MAX_STATIC_RANGE
                    {
                        errors.push(TemplateError {
                            message: format!(
                                "range(...) has {len} items; a template may loop over at most \
                                 {MAX_STATIC_RANGE}"
                            ),
                            ..at(*pos)
                        });
                    }
                }
                Token::Punct('*') => {
                    let before = i.checked_sub(1).and_then(|j| tokens.get(j)).map(|t| &t.1);
                    let after = tokens.get(i + 1).map(|t| &t.1);
                    let repeated = |t: Option<&Token>| {
                        matches!(t, Some(Token::Str(_) | Token::Punct(']' | ')')))
                    };
                    let count = match (before, after) {
                        (Some(Token::Int(n)), a) if repeated(a) => Some(*n),
                        (b, Some(Token::Int(n))) if repeated(b) => Some(*n),
                        _ => None,
                    };
                    if let Some(n) = count
                        && n > self.max_bytes as i64
                    {
                        errors.push(TemplateError {
                            message: format!(
                                "repeats a value {n} times: the result cannot fit in {} bytes \
                                 ({MAX_BYTES_SETTING})",
                                self.max_bytes
                            ),
                            ..at(*pos)
                        });
                    }
                }
                _ => {}
            }
        }
        errors
    }
}

/// A string that refuses to grow past its cap.
struct Capped {
    text: String,
    /// Bytes written (as text, or only counted through `io::Write`).
    len: usize,
    cap: usize,
    over: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Capped {
            text: String::new(),
            len: 0,
            cap,
            over: false,
        }
    }

    fn push(&mut self, s: &str) -> bool {
        if self.len + s.len() > self.cap {
            self.over = true;
            return false;
        }
        self.len += s.len();
        self.text.push_str(s);
        true
    }
}

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.push(s) {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Only counts: used to measure a serialisation before minijinja makes it.
        if self.len + buf.len() > self.cap {
            self.over = true;
            return Err(std::io::Error::other("too large"));
        }
        self.len += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn too_large_error(max_bytes: usize) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("the value is larger than {max_bytes} bytes ({MAX_BYTES_SETTING})"),
    )
}

/// `value` as minijinja displays it, refused once it passes `max_bytes`: containers are walked
/// here item by item, so a lazy sequence is read no further than the cap.
fn capped_display(value: &minijinja::Value, max_bytes: usize) -> Result<String, minijinja::Error> {
    use std::fmt::Write;
    let mut out = Capped::new(max_bytes);
    let written = if is_container(value) {
        write_repr(value, &mut out)
    } else {
        write!(out, "{value}")
    };
    written.map_err(|_| too_large_error(max_bytes))?;
    Ok(out.text)
}

fn is_container(value: &minijinja::Value) -> bool {
    match value.kind() {
        ValueKind::Map => true,
        ValueKind::Seq | ValueKind::Iterable => value.len().is_some(),
        _ => false,
    }
}

/// A container as minijinja's `Display` writes it (`[1, "a"]`, `{"k": 1}`), stopping at the
/// first refused write.
fn write_repr(value: &minijinja::Value, out: &mut Capped) -> std::fmt::Result {
    use std::fmt::Write;
    if !is_container(value) {
        return write!(out, "{value:?}");
    }
    let map = value.kind() == ValueKind::Map;
    out.write_str(if map { "{" } else { "[" })?;
    let items = value.try_iter().map_err(|_| std::fmt::Error)?;
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        if map {
            write!(out, "{item:?}: ")?;
            let v = value.get_item(&item).map_err(|_| std::fmt::Error)?;
            write_repr(&v, out)?;
        } else {
            write_repr(&item, out)?;
        }
    }
    out.write_str(if map { "}" } else { "]" })
}

fn context_value(context: &Value) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(context))
}

/// The expression inside a string that is exactly one `{{ ... }}`.
fn single_expression(template: &str) -> Option<&str> {
    let inner = template.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then(|| inner.trim())
}

/// 1-based line of byte `pos` in `source`.
fn line_of(source: &str, pos: usize) -> usize {
    source
        .get(..pos.min(source.len()))
        .map_or(1, |s| s.matches('\n').count() + 1)
}

/// The variables among `used` (dotted, as minijinja lists them) that `scope` does not define.
fn undefined_variables(source: &str, used: HashSet<String>, scope: &Scope) -> Vec<TemplateError> {
    let mut used: Vec<String> = used.into_iter().collect();
    used.sort();
    let mut errors = Vec::new();
    for var in used {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let line = source.find(root).map(|pos| line_of(source, pos));
        if root == "steps" {
            if let (Some(id), Some(known)) = (parts.next(), &scope.steps)
                && !known.contains(id)
            {
                errors.push(TemplateError {
                    message: format!(
                        "undefined variable steps.{id}: no step {id:?} runs before this one"
                    ),
                    line: source
                        .find(&format!("steps.{id}"))
                        .map(|p| line_of(source, p)),
                    variable: Some(format!("steps.{id}")),
                });
            }
        } else if root != "input" && !GLOBALS.contains(&root) {
            errors.push(TemplateError {
                message: format!(
                    "undefined variable {root}: a template sees input, steps.<id>.output and \
                     range, dict, namespace"
                ),
                line,
                variable: Some(root.to_owned()),
            });
        }
    }
    errors
}

/// The code parts of a template (inside `{{ }}` and `{% %}`), with their byte offsets.
fn code_regions(template: &str) -> Vec<(usize, &str)> {
    let mut regions = Vec::new();
    let mut rest = 0;
    while let Some(start) = template[rest..]
        .find("{{")
        .into_iter()
        .chain(template[rest..].find("{%"))
        .min()
    {
        let open = rest + start;
        let close = if template[open..].starts_with("{{") {
            "}}"
        } else {
            "%}"
        };
        let Some(len) = template[open + 2..].find(close) else {
            break;
        };
        regions.push((open + 2, &template[open + 2..open + 2 + len]));
        rest = open + 2 + len + 2;
    }
    regions
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(usize),
    Punct(char),
}

/// A rough lexer of template code: enough to see literal ranges and repetitions.
fn tokens(code: &str) -> Vec<(usize, Token)> {
    let mut out = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '"' || c == '\'' {
            let mut len = 0;
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
                len += d.len_utf8();
            }
            out.push((pos, Token::Str(len)));
        } else if c.is_ascii_digit() {
            let mut text = c.to_string();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_ascii_digit() || d == '_' {
                    if d != '_' {
                        text.push(d);
                    }
                    chars.next();
                } else {
                    break;
                }
            }
            out.push((pos, Token::Int(text.parse().unwrap_or(i64::MAX))));
        } else if c.is_alphabetic() || c == '_' {
            let mut text = c.to_string();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' {
                    text.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push((pos, Token::Ident(text)));
        } else {
            out.push((pos, Token::Punct(c)));
        }
    }
    out
}

/// The length of `(a)`, `(a, b)` or `(a, b, step)` when all are integer literals.
fn literal_range(tokens: &[(usize, Token)]) -> Option<i64> {
    let mut it = tokens.iter().map(|t| &t.1);
    if it.next()? != &Token::Punct('(') {
        return None;
    }
    let mut args = Vec::new();
    loop {
        let negative = matches!(it.clone().next(), Some(Token::Punct('-')));
        if negative {
            it.next();
        }
        match it.next()? {
            Token::Int(n) => args.push(if negative { -n } else { *n }),
            _ => return None,
        }
        match it.next()? {
            Token::Punct(',') => {}
            Token::Punct(')') => break,
            _ => return None,
        }
    }
    let (start, end, step) = match args[..] {
        [n] => (0, n, 1),
        [a, b] => (a, b, 1),
        [a, b, s] if s != 0 => (a, b, s),
        _ => return None,
    };
    Some(((end - start) / step).max(0))
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

    #[test]
    fn a_lazy_repetition_stops_at_the_value_cap_instead_of_materialising() {
        let t = Templates::with_max_bytes(64 * 1024);
        let err = t.render_str("{{ [1] * 100000000 }}", &ctx()).unwrap_err();
        assert!(err.message.contains("65536 bytes"), "{err}");
        assert!(err.message.contains(MAX_BYTES_SETTING), "{err}");
        // Within the cap it still works.
        assert_eq!(
            t.render_str("{{ [1] * 3 }}", &ctx()).unwrap(),
            json!([1, 1, 1])
        );
    }

    #[test]
    fn every_way_of_building_a_large_value_is_refused() {
        let t = Templates::with_max_bytes(64 * 1024);
        for template in [
            "{{ [1] * 100000000 }}",
            "x{{ [1] * 100000000 }}",
            "{{ ([1] * 100000000)|list }}",
            "{{ ([1] * 100000000)|join(',') }}",
            "{{ 'x' * 100000000 }}",
            "{{ ('x' * 60000) ~ ('x' * 60000) }}",
            "{{ ([1] * 100000000)|tojson }}",
            "{% for i in range(10000) %}{{ 'abcdefgh' * 100 }}{% endfor %}",
        ] {
            let err = t.render_str(template, &ctx());
            assert!(err.is_err(), "{template} rendered");
        }
        let err = t
            .render_value(&json!(["{{ 'x' * 40000 }}", "{{ 'y' * 40000 }}"]), &ctx())
            .unwrap_err();
        assert!(
            err.message.contains("bytes"),
            "the whole value counts: {err}"
        );
    }

    #[test]
    fn save_time_checks_name_undefined_variables_and_unknown_steps() {
        let t = Templates::new();
        let scope = Scope {
            steps: Some(["fetch".to_owned()].into()),
        };
        let errors = t.check_in_scope("hello\n{{ user.name }} {{ steps.later.output }}", &scope);
        let vars: Vec<_> = errors.iter().filter_map(|e| e.variable.clone()).collect();
        assert_eq!(vars, ["steps.later", "user"], "{errors:?}");
        assert!(errors.iter().all(|e| e.line == Some(2)), "{errors:?}");
        assert!(
            t.check_in_scope(
                "{% for x in steps.fetch.output.items %}{{ x }}{{ input.n }}{% endfor %}",
                &scope
            )
            .is_empty()
        );
        assert!(t.check_in_scope("{{ range(3)|list }}", &scope).is_empty());
        let e = t.check_expression_in_scope("input.q ==", &scope);
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn save_time_checks_refuse_literal_ranges_and_repetitions_that_cannot_run() {
        let t = Templates::new();
        let scope = Scope::default();
        for bad in [
            "{{ [1] * 100000000 }}",
            "a {{ 100000000 * 'x' }}",
            "{% for i in range(1000000) %}{{ i }}{% endfor %}",
            "{{ range(0, 50000000, 2)|list }}",
        ] {
            assert_eq!(t.check_in_scope(bad, &scope).len(), 1, "{bad}");
        }
        for good in [
            "{{ input.n * 100000000 }}",
            "{{ range(10)|list }}",
            "{{ '*' * 3 }}",
        ] {
            assert!(t.check_in_scope(good, &scope).is_empty(), "{good}");
        }
    }

    #[test]
    fn containers_print_as_minijinja_prints_them() {
        let t = Templates::new();
        let plain = minijinja::Environment::new();
        for template in [
            "x{{ [1, 'a', {'b': [2, none, true]}] }}",
            "{{ {'k': 'v', 'n': [1.5]} }}!",
            "{{ [1, 'a'] ~ '' }}",
            "{{ '%s-%s'|format([1, 'x'], 3) }}",
            "{{ [1, 2]|string }}.",
            "{{ {'a': 1}|tojson }}",
        ] {
            let ours = t.render_str(template, &ctx()).unwrap();
            let theirs = plain.render_str(template, ()).unwrap();
            assert_eq!(ours, json!(theirs), "{template}");
        }
    }
}
