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
//! - no value built on the way is larger than `max_bytes` when it is turned into text: minijinja
//!   formats a container into a string in full before charging fuel for it (`~`, `in` on a
//!   string, every filter and test that takes a string), and a lazily repeated list
//!   (`[1] * input.n`) or a list holding the same list many times costs almost nothing to build
//!   but hundreds of MB to print. So templates are compiled here ([`Templates`] keeps its own
//!   compiler pipeline over minijinja's `machinery`): `~` and `in` run as guarded filters (the
//!   instruction is replaced one for one), the string-taking filters and tests are wrapped to
//!   measure a container argument against the cap before minijinja prints it, and constant
//!   expressions, which minijinja folds while compiling (at save time too), are sized first and
//!   refused when their value could not fit;
//! - `range(...)` yields at most [`MAX_STATIC_RANGE`] items, whatever its bounds come from.
//!
//! At save time [`Templates::check_template`] also names variables that do not exist (anything
//! but `input`, `steps` and the built-in functions; `steps.<id>` must be an earlier step) and
//! refuses ranges and repetitions whose literal size can only exceed the limits.

use std::collections::{BTreeMap, HashSet};

use minijinja::machinery::{self, CodeGenerator, Instruction, Instructions, ast};
use minijinja::value::{Kwargs, Rest, ValueKind, ValueOrKwargs};
use minijinja::{AutoEscape, Environment, ErrorKind, State, UndefinedBehavior};
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

/// The guarded `~`: the compiled `StringConcat` instruction is replaced by this filter.
const CONCAT_FILTER: &str = "__flowgrid_concat";

/// The guarded `in`: the compiled `In` instruction is replaced by this filter.
const IN_FILTER: &str = "__flowgrid_in";

/// Built-in filters that turn their arguments into text (every argument is measured first).
const STRING_FILTERS: [&str; 12] = [
    "safe",
    "escape",
    "e",
    "lower",
    "upper",
    "title",
    "capitalize",
    "trim",
    "join",
    "split",
    "urlencode",
    "lines",
];

/// Built-in filters whose arguments after the value are names turned into text.
const NAME_FILTERS: [&str; 5] = ["map", "select", "reject", "selectattr", "rejectattr"];

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
            // Measured first: once the cap refuses a write, `Debug` still walks every item.
            measure(value, max_bytes)?;
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
                measure(format, max_bytes)?;
                for arg in args.0.iter() {
                    measure(arg, max_bytes)?;
                }
                minijinja::filters::format(state, format, args)
            },
        );
        guard_operators_and_strings(&mut env, max_bytes);
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

    /// Checks that `template` parses (the first syntax error) and that its constants fit.
    pub fn check_template(&self, template: &str) -> Result<(), TemplateError> {
        match single_expression(template) {
            Some(expr) => self.check_expression(expr),
            None => self.compile_template(template).map(|_| ()),
        }
    }

    /// Checks that `expr` parses as an expression (the first syntax error) and that its
    /// constants fit.
    pub fn check_expression(&self, expr: &str) -> Result<(), TemplateError> {
        self.compile_expression(expr).map(|_| ())
    }

    /// Compiles a template through the guarded pipeline (see the module doc).
    fn compile_template<'s>(&self, source: &'s str) -> Result<Program<'s>, TemplateError> {
        let ast = machinery::parse(source, "<template>", Default::default())?;
        self.constants_in_stmt(&ast)?;
        let mut generator = CodeGenerator::new("<template>", source);
        generator.compile_stmt(&ast);
        Program::guarded(generator.finish())
    }

    /// Compiles an expression through the guarded pipeline.
    fn compile_expression<'s>(&self, source: &'s str) -> Result<Program<'s>, TemplateError> {
        let ast = machinery::parse_expr(source)?;
        self.constant(&ast)?;
        let mut generator = CodeGenerator::new("<expression>", source);
        generator.compile_expr(&ast);
        Program::guarded(generator.finish())
    }

    /// Runs a compiled program: its output and, for an expression, its value.
    fn run(
        &self,
        program: &Program<'_>,
        context: &minijinja::Value,
    ) -> Result<(String, Option<minijinja::Value>), TemplateError> {
        let mut out = String::new();
        let (value, _state) = machinery::eval(
            &self.env,
            &program.instructions,
            context.clone(),
            &program.blocks,
            &mut machinery::make_string_output(&mut out),
            AutoEscape::None,
        )?;
        Ok((out, value))
    }

    /// Evaluates an expression to its minijinja value (undefined is an error).
    fn evaluate(
        &self,
        expr: &str,
        context: &minijinja::Value,
    ) -> Result<minijinja::Value, TemplateError> {
        let program = self.compile_expression(expr)?;
        match self.run(&program, context)?.1 {
            Some(value) if !value.is_undefined() => Ok(value),
            _ => Err(TemplateError::new(format!("{expr} is undefined"))),
        }
    }

    /// Every problem of `template` that can be seen before it runs: its syntax error, or else
    /// each variable it uses that `scope` does not define and each literal range or repetition
    /// too large to run.
    pub fn check_in_scope(&self, template: &str, scope: &Scope) -> Vec<TemplateError> {
        // The guarded compile first: it refuses constants that minijinja would fold into
        // something too large before minijinja's own compiler (below) folds them.
        let (variables, code) = match single_expression(template) {
            Some(expr) => match self
                .compile_expression(expr)
                .and_then(|_| Ok(self.env.compile_expression(expr)?))
            {
                Ok(e) => (e.undeclared_variables(true), vec![(0, expr)]),
                Err(e) => return vec![e],
            },
            None => match self
                .compile_template(template)
                .and_then(|_| Ok(self.env.template_from_str(template)?))
            {
                Ok(t) => (t.undeclared_variables(true), code_regions(template)),
                Err(e) => return vec![e],
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
        match self
            .compile_expression(expr)
            .and_then(|_| Ok(self.env.compile_expression(expr)?))
        {
            Err(e) => vec![e],
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
            let value = self.evaluate(expr, context)?;
            return self.to_json(&value, budget);
        }
        let text =
            if !template.contains("{{") && !template.contains("{%") && !template.contains("{#") {
                template.to_owned()
            } else {
                let program = self.compile_template(template)?;
                self.run(&program, context)?.0
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
        let value = self.evaluate(expr, &context_value(context))?;
        let mut budget = self.max_bytes;
        self.to_json(&value, &mut budget)
    }

    /// Evaluates a condition: true when the expression's value is truthy.
    pub fn truthy(&self, expr: &str, context: &Value) -> Result<bool, TemplateError> {
        Ok(self.evaluate(expr, &context_value(context))?.is_true())
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

/// A template or expression compiled with `~` and `in` guarded.
struct Program<'s> {
    instructions: Instructions<'s>,
    blocks: BTreeMap<&'s str, Instructions<'s>>,
}

impl<'s> Program<'s> {
    /// Replaces, one for one (jump targets stay valid), each `StringConcat` and `In` instruction
    /// by the guarded filter that does the same with the cap.
    fn guarded(
        (mut instructions, blocks): (Instructions<'s>, BTreeMap<&'s str, Instructions<'s>>),
    ) -> Result<Self, TemplateError> {
        let mut pc = 0;
        while let Some(instruction) = instructions.get_mut(pc) {
            match instruction {
                Instruction::StringConcat => {
                    *instruction = Instruction::ApplyFilter(CONCAT_FILTER, Some(2), !0);
                }
                Instruction::In => *instruction = Instruction::ApplyFilter(IN_FILTER, Some(2), !0),
                Instruction::CompareAndPreserve(op)
                    if matches!(format!("{op:?}").as_str(), "In" | "NotIn") =>
                {
                    return Err(TemplateError {
                        line: instructions.get_line(pc),
                        ..TemplateError::new(CHAINED_IN)
                    });
                }
                _ => {}
            }
            pc += 1;
        }
        Ok(Program {
            instructions,
            blocks,
        })
    }
}

const CHAINED_IN: &str = "`in` inside a chain of comparisons (`a in b in c`) is not supported: \
                          write `a in b and b in c`";

/// What constant folding would make of an expression: the size of its text and, for numbers,
/// the number itself.
#[derive(Clone)]
struct Folded {
    bytes: u64,
    kind: FoldedKind,
}

#[derive(Clone)]
enum FoldedKind {
    Number(minijinja::Value),
    Text,
    Sequence,
    Other,
}

impl Templates {
    /// Walks a statement's expressions (see [`Templates::constant`]).
    fn constants_in_stmt(&self, stmt: &ast::Stmt<'_>) -> Result<(), TemplateError> {
        let body =
            |stmts: &[ast::Stmt<'_>]| stmts.iter().try_for_each(|s| self.constants_in_stmt(s));
        match stmt {
            ast::Stmt::Template(t) => body(&t.children),
            ast::Stmt::EmitExpr(e) => self.constant(&e.expr).map(drop),
            ast::Stmt::EmitRaw(_) => Ok(()),
            ast::Stmt::ForLoop(f) => {
                self.constant(&f.target)?;
                self.constant(&f.iter)?;
                if let Some(e) = &f.filter_expr {
                    self.constant(e)?;
                }
                body(&f.body)?;
                body(&f.else_body)
            }
            ast::Stmt::IfCond(c) => {
                self.constant(&c.expr)?;
                body(&c.true_body)?;
                body(&c.false_body)
            }
            ast::Stmt::WithBlock(w) => {
                for (target, expr) in &w.assignments {
                    self.constant(target)?;
                    self.constant(expr)?;
                }
                body(&w.body)
            }
            ast::Stmt::Set(set) => {
                self.constant(&set.target)?;
                self.constant(&set.expr).map(drop)
            }
            ast::Stmt::SetBlock(set) => {
                self.constant(&set.target)?;
                if let Some(f) = &set.filter {
                    self.constant(f)?;
                }
                body(&set.body)
            }
            ast::Stmt::AutoEscape(a) => {
                self.constant(&a.enabled)?;
                body(&a.body)
            }
            ast::Stmt::FilterBlock(f) => {
                self.constant(&f.filter)?;
                body(&f.body)
            }
            ast::Stmt::Do(d) => {
                self.constant(&d.call.expr)?;
                self.constant_args(&d.call.args)
            }
        }
    }

    fn constant_args(&self, args: &[ast::CallArg<'_>]) -> Result<(), TemplateError> {
        for arg in args {
            match arg {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => self.constant(e).map(drop)?,
            }
        }
        Ok(())
    }

    /// What minijinja's compiler would fold `expr` into (`None`: not a constant), refusing, before
    /// anything is built, a constant whose text would be larger than `max_bytes` (minijinja folds
    /// `[1] * 100000000` into a lazy list and `'a' ~ that` into 300 MB of text, without fuel) and
    /// `in` inside a chain of comparisons (which the guarded `in` cannot replace).
    fn constant(&self, expr: &ast::Expr<'_>) -> Result<Option<Folded>, TemplateError> {
        let folded = match expr {
            ast::Expr::Var(_) => None,
            ast::Expr::Const(c) => Some(folded_value(&c.value)),
            ast::Expr::Slice(s) => {
                self.constant(&s.expr)?;
                for e in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.constant(e)?;
                }
                None
            }
            ast::Expr::UnaryOp(u) => self.constant(&u.expr)?.map(|_| match expr.as_const() {
                Some(v) => folded_value(&v),
                None => Folded {
                    bytes: 8,
                    kind: FoldedKind::Other,
                },
            }),
            ast::Expr::BinOp(b) => {
                let (left, right) = (self.constant(&b.left)?, self.constant(&b.right)?);
                match (left, right) {
                    (Some(l), Some(r)) => Some(fold_binop(b.op, expr, l, r)),
                    _ => None,
                }
            }
            ast::Expr::Compare(c) => {
                if c.ops.len() > 1
                    && c.ops.iter().any(|op| {
                        matches!(op.op, ast::CompareOpKind::In | ast::CompareOpKind::NotIn)
                    })
                {
                    return Err(TemplateError {
                        line: Some(usize::from(expr.span().start_line)),
                        ..TemplateError::new(CHAINED_IN)
                    });
                }
                let mut all = self.constant(&c.expr)?.is_some();
                for op in &c.ops {
                    all &= self.constant(&op.expr)?.is_some();
                }
                all.then_some(Folded {
                    bytes: 5,
                    kind: FoldedKind::Other,
                })
            }
            ast::Expr::IfExpr(i) => {
                self.constant(&i.test_expr)?;
                self.constant(&i.true_expr)?;
                if let Some(e) = &i.false_expr {
                    self.constant(e)?;
                }
                None
            }
            ast::Expr::Filter(f) => {
                if let Some(e) = &f.expr {
                    self.constant(e)?;
                }
                self.constant_args(&f.args)?;
                None
            }
            ast::Expr::Test(t) => {
                self.constant(&t.expr)?;
                self.constant_args(&t.args)?;
                None
            }
            ast::Expr::GetAttr(g) => {
                self.constant(&g.expr)?;
                None
            }
            ast::Expr::GetItem(g) => {
                self.constant(&g.expr)?;
                self.constant(&g.subscript_expr)?;
                None
            }
            ast::Expr::Call(c) => {
                self.constant(&c.expr)?;
                self.constant_args(&c.args)?;
                None
            }
            ast::Expr::List(l) => self.constant_items(&l.items, FoldedKind::Sequence)?,
            ast::Expr::Tuple(t) => self.constant_items(&t.items, FoldedKind::Sequence)?,
            ast::Expr::Map(m) => {
                let keys = self.constant_items(&m.keys, FoldedKind::Other)?;
                let values = self.constant_items(&m.values, FoldedKind::Other)?;
                keys.zip(values).map(|(k, v)| Folded {
                    bytes: k.bytes.saturating_add(v.bytes),
                    kind: FoldedKind::Other,
                })
            }
        };
        if let Some(f) = &folded
            && f.bytes > self.max_bytes as u64
        {
            return Err(TemplateError {
                line: Some(usize::from(expr.span().start_line)),
                ..TemplateError::new(format!(
                    "this constant expression builds a value larger than {} bytes \
                     ({MAX_BYTES_SETTING})",
                    self.max_bytes
                ))
            });
        }
        Ok(folded)
    }

    /// A list, tuple or the keys or values of a map: constant when every item is.
    fn constant_items(
        &self,
        items: &[ast::Expr<'_>],
        kind: FoldedKind,
    ) -> Result<Option<Folded>, TemplateError> {
        let mut bytes = Some(2u64);
        for item in items {
            let item = self.constant(item)?;
            bytes = bytes
                .zip(item)
                .map(|(total, item)| total.saturating_add(item.bytes).saturating_add(2));
        }
        Ok(bytes.map(|bytes| Folded { bytes, kind }))
    }
}

/// The folded size of a literal value.
fn folded_value(value: &minijinja::Value) -> Folded {
    let mut out = Capped::counting(usize::MAX);
    let _ = write_text(value, &mut out);
    let kind = match value.kind() {
        ValueKind::Number => FoldedKind::Number(value.clone()),
        ValueKind::String | ValueKind::Bytes => FoldedKind::Text,
        ValueKind::Seq | ValueKind::Iterable => FoldedKind::Sequence,
        _ => FoldedKind::Other,
    };
    Folded {
        bytes: out.len as u64 + 2,
        kind,
    }
}

/// What folding a binary operator over two constants yields, sized without building it.
fn fold_binop(op: ast::BinOpKind, expr: &ast::Expr<'_>, l: Folded, r: Folded) -> Folded {
    use FoldedKind::{Number, Sequence, Text};
    let sum = l.bytes.saturating_add(r.bytes);
    match (op, &l.kind, &r.kind) {
        // Numbers only: minijinja's own folding builds nothing.
        (_, Number(_), Number(_)) => match expr.as_const() {
            Some(v) => folded_value(&v),
            None => Folded {
                bytes: 8,
                kind: FoldedKind::Other,
            },
        },
        (ast::BinOpKind::Mul, Text | Sequence, Number(n))
        | (ast::BinOpKind::Mul, Number(n), Text | Sequence) => {
            let times = i64::try_from(n.clone()).unwrap_or(i64::MAX).max(0) as u64;
            let repeated = if matches!(l.kind, Number(_)) { &r } else { &l };
            Folded {
                bytes: repeated.bytes.saturating_mul(times),
                kind: repeated.kind.clone(),
            }
        }
        (ast::BinOpKind::Concat, _, _) => Folded {
            bytes: sum,
            kind: Text,
        },
        (ast::BinOpKind::Add | ast::BinOpKind::ScAnd | ast::BinOpKind::ScOr, _, _) => Folded {
            bytes: sum,
            kind: l.kind.clone(),
        },
        // `in` prints a container needle to search a string: the needle's size counts.
        (ast::BinOpKind::In, _, Text) => Folded {
            bytes: l.bytes,
            kind: FoldedKind::Other,
        },
        _ => Folded {
            bytes: 8,
            kind: FoldedKind::Other,
        },
    }
}

/// A string that refuses to grow past its cap.
struct Capped {
    text: String,
    /// Bytes written (as text, or only counted through `io::Write`).
    len: usize,
    cap: usize,
    over: bool,
    /// Whether the text is kept (else only counted).
    keep: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Capped {
            text: String::new(),
            len: 0,
            cap,
            over: false,
            keep: true,
        }
    }

    /// Only counts: measures a text without keeping it.
    fn counting(cap: usize) -> Self {
        Capped {
            keep: false,
            ..Self::new(cap)
        }
    }

    fn push(&mut self, s: &str) -> bool {
        if self.len.saturating_add(s.len()) > self.cap {
            self.over = true;
            return false;
        }
        self.len += s.len();
        if self.keep {
            self.text.push_str(s);
        }
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

/// Registers the guarded `~` and `in`, wraps the built-in filters and tests that turn a value
/// into text so a container is measured against `max_bytes` before minijinja prints it, and
/// caps `range`.
fn guard_operators_and_strings(env: &mut Environment<'static>, max_bytes: usize) {
    use minijinja::Value as V;
    env.add_filter(CONCAT_FILTER, move |left: &V, right: &V| {
        let mut out = Capped::new(max_bytes);
        for value in [left, right] {
            if value.is_undefined() {
                return Err(minijinja::Error::from(ErrorKind::UndefinedError));
            }
            write_text(value, &mut out).map_err(|_| too_large_error(max_bytes))?;
        }
        Ok(V::from(out.text))
    });
    env.add_filter(IN_FILTER, move |state: &State, needle: &V, haystack: &V| {
        contains(state, needle, haystack, max_bytes).map(V::from)
    });
    env.add_test("in", move |state: &State, needle: &V, haystack: &V| {
        contains(state, needle, haystack, max_bytes)
    });
    let builtins: [(&str, V); STRING_FILTERS.len()] = [
        ("safe", V::from_function(minijinja::filters::safe)),
        ("escape", V::from_function(minijinja::filters::escape)),
        ("e", V::from_function(minijinja::filters::escape)),
        ("lower", V::from_function(minijinja::filters::lower)),
        ("upper", V::from_function(minijinja::filters::upper)),
        ("title", V::from_function(minijinja::filters::title)),
        (
            "capitalize",
            V::from_function(minijinja::filters::capitalize),
        ),
        ("trim", V::from_function(minijinja::filters::trim)),
        ("join", V::from_function(minijinja::filters::join)),
        ("split", V::from_function(minijinja::filters::split)),
        ("urlencode", V::from_function(minijinja::filters::urlencode)),
        ("lines", V::from_function(minijinja::filters::lines)),
    ];
    for (name, builtin) in builtins {
        debug_assert!(STRING_FILTERS.contains(&name));
        env.add_filter(name, measured(builtin, 0, max_bytes));
    }
    let named: [(&str, V); NAME_FILTERS.len()] = [
        ("map", V::from_function(minijinja::filters::map)),
        ("select", V::from_function(minijinja::filters::select)),
        ("reject", V::from_function(minijinja::filters::reject)),
        (
            "selectattr",
            V::from_function(minijinja::filters::selectattr),
        ),
        (
            "rejectattr",
            V::from_function(minijinja::filters::rejectattr),
        ),
    ];
    for (name, builtin) in named {
        env.add_filter(name, measured(builtin, 1, max_bytes));
    }
    for (name, builtin) in [
        (
            "startingwith",
            V::from_function(minijinja::tests::is_startingwith),
        ),
        (
            "endingwith",
            V::from_function(minijinja::tests::is_endingwith),
        ),
    ] {
        let call = measured(builtin, 0, max_bytes);
        env.add_test(name, move |state: &mut State, args: Rest<ValueOrKwargs>| {
            call(state, args).map(|v| v.is_true())
        });
    }
    env.add_filter(
        "replace",
        move |state: &mut State, args: Rest<ValueOrKwargs>| -> Result<V, minijinja::Error> {
            let args = args.into_values();
            for arg in &args {
                measure(arg, max_bytes)?;
            }
            let (value, from, to, count, kwargs): (V, V, V, Option<i64>, Kwargs) =
                minijinja::value::from_args(&args)?;
            let count = match count {
                Some(count) => Some(count),
                None => kwargs.get::<Option<i64>>("count")?,
            };
            kwargs.assert_all_used()?;
            let (value, from, to) = (text_of(&value)?, text_of(&from)?, text_of(&to)?);
            let count = count.map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(0));
            if to.len() > from.len() {
                let matches = value.matches(from.as_str()).take(count).count();
                let size = matches
                    .saturating_mul(to.len() - from.len())
                    .saturating_add(value.len());
                if size > max_bytes {
                    return Err(too_large_error(max_bytes));
                }
            }
            state.consume_fuel((value.len() as u64) / BYTES_PER_FUEL)?;
            Ok(V::from(value.replacen(from.as_str(), &to, count)))
        },
    );
    env.add_filter(
        "indent",
        move |state: &State, args: Rest<ValueOrKwargs>| -> Result<V, minijinja::Error> {
            let args = args.into_values();
            for arg in &args {
                measure(arg, max_bytes)?;
            }
            let (value, width, first, blank, kwargs): (
                V,
                Option<usize>,
                Option<bool>,
                Option<bool>,
                Kwargs,
            ) = minijinja::value::from_args(&args)?;
            let text = text_of(&value)?;
            let each = match width {
                Some(w) => w,
                None => kwargs.peek::<Option<usize>>("width")?.unwrap_or(4),
            };
            let size = each
                .saturating_mul(text.lines().count() + 1)
                .saturating_add(text.len());
            if size > max_bytes {
                return Err(too_large_error(max_bytes));
            }
            let value = V::from(text);
            minijinja::filters::indent(
                minijinja::value::StringInput::new(state, &value)?,
                width,
                first,
                blank,
                kwargs,
            )
        },
    );
    env.add_function(
        "range",
        |lower: isize, upper: Option<isize>, step: Option<isize>| {
            let (start, end) = match upper {
                Some(upper) => (lower, upper),
                None => (0, lower),
            };
            let step = step.unwrap_or(1);
            let (span, by) = match step {
                0 => (0, 1),
                s if s > 0 => (end.saturating_sub(start).max(0), s),
                s => (start.saturating_sub(end).max(0), s.saturating_neg()),
            };
            let len = span / by + isize::from(span % by != 0);
            if len as i64 > MAX_STATIC_RANGE {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "range(...) has {len} items; a template may loop over at most \
                         {MAX_STATIC_RANGE}"
                    ),
                ));
            }
            minijinja::functions::range(lower, upper, Some(step))
        },
    );
}

/// A built-in filter or test behind a measure of its arguments from `skip` on: a container whose
/// text would be larger than `max_bytes` is refused before the built-in prints it.
fn measured(
    builtin: minijinja::Value,
    skip: usize,
    max_bytes: usize,
) -> impl Fn(&mut State, Rest<ValueOrKwargs>) -> Result<minijinja::Value, minijinja::Error>
+ Send
+ Sync
+ Clone
+ 'static {
    move |state: &mut State, args: Rest<ValueOrKwargs>| {
        let args = args.into_values();
        for arg in args.iter().skip(skip) {
            measure(arg, max_bytes)?;
        }
        builtin.call(state, &args)
    }
}

/// Refuses `value` when its text (as minijinja prints it) is larger than `max_bytes`; only
/// containers are walked (item by item, stopping at the cap), nothing is kept.
fn measure(value: &minijinja::Value, max_bytes: usize) -> Result<(), minijinja::Error> {
    if value.as_object().is_none() {
        return Ok(());
    }
    let mut out = Capped::counting(max_bytes);
    write_text(value, &mut out).map_err(|_| too_large_error(max_bytes))
}

/// The text of a filter argument, measured first.
fn text_of(value: &minijinja::Value) -> Result<String, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::from(ErrorKind::UndefinedError));
    }
    Ok(match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    })
}

/// `needle in haystack` as minijinja's `in` (strict about undefined, an error for a haystack that
/// holds nothing), with a container needle measured before it is printed to search a string.
fn contains(
    state: &State,
    needle: &minijinja::Value,
    haystack: &minijinja::Value,
    max_bytes: usize,
) -> Result<bool, minijinja::Error> {
    if needle.is_undefined() || haystack.is_undefined() {
        return Err(minijinja::Error::from(ErrorKind::UndefinedError));
    }
    match haystack.kind() {
        ValueKind::String | ValueKind::Bytes => measure(needle, max_bytes)?,
        _ if haystack.as_object().is_some() => {}
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "cannot perform a containment check on this value",
            ));
        }
    }
    minijinja::tests::is_in(state, needle, haystack)
}

/// `value` as minijinja's `Display` writes it at the top level (strings bare, containers as
/// their repr), into a capped buffer.
fn write_text(value: &minijinja::Value, out: &mut Capped) -> std::fmt::Result {
    use std::fmt::Write;
    if let Some(s) = value.as_str() {
        return out.write_str(s);
    }
    if is_container(value) {
        return write_repr(value, out);
    }
    write!(out, "{value}")
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
    matches!(
        value.kind(),
        ValueKind::Map | ValueKind::Seq | ValueKind::Iterable
    )
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
            write_repr(&item, out)?;
            out.write_str(": ")?;
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
            .render_str(
                "{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}",
                &ctx(),
            )
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

    /// Hostile templates whose size comes from the run's input: each must fail, fast, naming
    /// the setting, whatever path turns the value into text.
    #[test]
    fn values_printed_into_text_are_capped_while_they_are_built() {
        let t = Templates::with_max_bytes(64 * 1024);
        let ctx = json!({"input": {"n": 100_000_000, "k": 30, "s": "abc"}, "steps": {}});
        let nested = "{% set ns = namespace(a='x' * 1000) %}\
                      {% for i in range(input.k) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}";
        // Unguarded, each of these takes seconds and hundreds of MB to GBs (docs/agents.md has
        // the figures); the Execution tests bound the process's memory while such steps run.
        for template in [
            "{{ 'a' ~ ([1] * input.n) }}",
            "x{{ 'a' ~ ([1] * input.n) }}",
            "{{ ([1] * input.n) ~ 'a' }}",
            "{{ 'a' ~ ([[1] * input.n] * input.n) }}",
            "{% set x = 'a' ~ ([1] * input.n) %}{{ x|length }}",
            "{{ ([1] * input.n)|lower }}",
            "{{ ([1] * input.n)|upper }}",
            "{{ ([1] * input.n)|title }}",
            "{{ ([1] * input.n)|capitalize }}",
            "{{ ([1] * input.n)|trim }}",
            "{{ ([1] * input.n)|safe }}",
            "{{ ([1] * input.n)|e }}",
            "{{ ([1] * input.n)|escape }}",
            "{{ ([1] * input.n)|urlencode }}",
            "{{ ([1] * input.n)|split }}",
            "{{ ([1] * input.n)|replace('1', '2') }}",
            "{{ 'abc'|replace('b', [1] * input.n) }}",
            "{{ input.s|replace('', 'x' * 60000) }}",
            "{{ ([1] * input.n)|indent }}",
            "{{ input.s|indent(input.n) }}",
            "{{ ([[1] * input.n])|join }}",
            "{{ [1, 2]|join([1] * input.n) }}",
            "{{ ([1] * input.n)|string }}",
            "{{ ([1] * input.n)|pprint }}",
            "{{ ([1] * input.n)|tojson }}",
            "{{ '%s'|format([1] * input.n) }}",
            "{{ ([1] * input.n) in 'abc' }}",
            "{{ ([1] * input.n) not in 'abc' }}",
            "{{ ([1] * input.n) is in 'abc' }}",
            "{{ ([1] * input.n) is startingwith 'a' }}",
            "{{ 'abc' is endingwith([1] * input.n) }}",
            "{{ ['a']|map(attribute=[1] * input.n)|list }}",
            "{{ {'k': [1] * input.n}|string }}",
            "{{ {([1] * 100000): 1} ~ '' }}",
            "{{ range(input.n)|list }}",
            "{% for i in range(input.n) %}{% endfor %}",
            &format!("{nested}{{{{ ns.a ~ '' }}}}"),
            &format!("{nested}{{{{ ns.a|lower }}}}"),
            &format!("{nested}{{{{ ns.a }}}}"),
            &format!("{nested}{{{{ [ns.a]|join }}}}"),
        ] {
            let err = t
                .render_str(template, &ctx)
                .expect_err(&format!("{template} rendered"));
            assert!(
                err.message.contains(MAX_BYTES_SETTING) || err.message.contains("at most"),
                "{template}: {err}"
            );
        }
        // The same operators and filters still work within the cap.
        for (template, expected) in [
            ("{{ 'a' ~ [1, 2] }}", json!("a[1, 2]")),
            ("{{ 'b' in 'abc' }}", json!(true)),
            ("{{ 'x' not in ['a'] }}", json!(true)),
            ("{{ 2 in [1, 2] and 'k' in {'k': 1} }}", json!(true)),
            ("{{ [1, 2] in 'x[1, 2]y' }}", json!(true)),
            ("{{ 'aXbX'|replace('X', '-', 1) }}", json!("a-bX")),
            ("{{ 'aXbX'|replace('X', '-', count=1) }}", json!("a-bX")),
            ("{{ 'a\nb'|indent(2, true) }}", json!("  a\n  b")),
            ("{{ ['a', 'b']|map('upper')|join(',') }}", json!("A,B")),
            ("{{ range(3)|list }}", json!([0, 1, 2])),
            ("{{ range(10, 0, -3)|list }}", json!([10, 7, 4, 1])),
            ("{{ 'ab' is startingwith 'a' }}", json!(true)),
        ] {
            assert_eq!(
                t.render_str(template, &ctx).unwrap(),
                expected,
                "{template}"
            );
        }
        assert!(t.render_str("{{ 1 in 5 }}", &ctx).is_err());
        assert!(t.render_str("{{ 'a' ~ input.missing }}", &ctx).is_err());
    }

    /// minijinja folds constant expressions while it compiles, without fuel: at save time and at
    /// run time alike, one whose value could not fit is refused before it is built.
    #[test]
    fn constant_expressions_too_large_to_fold_are_refused_before_they_are_built() {
        let t = Templates::new();
        let scope = Scope::default();
        for template in [
            "{{ 'a' ~ ([1] * 100000000) }}",
            "x{{ 'a' ~ ([1] * 100000000) }}",
            "{{ 'a' ~ ([[[1] * 1000] * 1000] * 1000) }}",
            "{{ ([[[1] * 1000] * 1000] * 1000) in 'abc' }}",
            "{{ ('x' * 1000) * 2000 }}",
            "{% if 'a' ~ ([[1] * 1000] * 1000) %}{% endif %}",
        ] {
            assert!(t.check_template(template).is_err(), "{template}");
            assert!(!t.check_in_scope(template, &scope).is_empty(), "{template}");
            let err = t.render_str(template, &ctx()).unwrap_err();
            assert!(err.message.contains(MAX_BYTES_SETTING), "{template}: {err}");
        }
        let errors = t.check_in_scope("{{ 1 < 2 in [true] }}", &scope);
        assert!(errors[0].message.contains("chain"), "{errors:?}");
        for good in [
            "{{ 'a' ~ [1] * 3 }}",
            "{{ 2 ** 10 * 'ab' }}",
            "{{ [1, 2] + [3] }}",
        ] {
            assert!(t.check_in_scope(good, &scope).is_empty(), "{good}");
            t.render_str(good, &ctx()).unwrap();
        }
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
            "{{ 'a' ~ 1 ~ none ~ true ~ 2.5 ~ {'k': [none]} }}",
            "{{ [1, 2] in 'x[1, 2]y' }}, {{ 'b' in 'abc' }}, {{ 3 not in [1] }}",
            "{{ ['a', 'b']|join('-') }} {{ 'Ab'|lower }} {{ 'x  '|trim }} {{ [1]|e }}",
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
