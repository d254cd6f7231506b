//! Offline checks of the Azure deployment in `infra/` (issue 7). Nothing can be deployed from a
//! test, so these read the real files on every run and check what can be checked without Azure:
//!
//! - every `.bicep` file parses with a real Bicep grammar (tree-sitter-bicep), and every file a
//!   Bicep file refers to (modules, imports, `loadJsonContent`/`loadTextContent`) exists;
//! - `infra/apps.json`, the per-app part of the deployment, equals what the `function.json`
//!   files under `functions/` imply: one entry per app, every Service Bus connection, queue,
//!   topic and subscription, every HTTP route of the gateway; so every app has a Function App and
//!   nothing is declared that no function uses;
//! - every setting the code reads (`local.settings.example.json`, cross-checked against the table
//!   in `crates/flowgrid-core/src/config.rs`) is deployed, apart from a short list of local-only
//!   settings (keys), and nothing else is;
//! - the Cosmos containers in the Bicep are exactly the storage layer's `CONTAINERS`;
//! - no keys: no `listKeys`, local auth off everywhere, data-plane roles only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tree_sitter::{Node, Parser, Tree};

/// Settings the code reads that are deliberately not deployed, with the reason.
const LOCAL_ONLY_SETTINGS: &[(&str, &str)] = &[
    (
        "COSMOS_KEY",
        "an account key; in Azure the apps use their managed identity (AZURE_CLIENT_ID)",
    ),
    (
        "BLOB_ACCOUNT_KEY",
        "a storage key; in Azure the apps use their managed identity (AZURE_CLIENT_ID)",
    ),
    (
        "FLOWGRID_OIDC_ALLOW_HTTP",
        "plain-http issuers are for tests and local identity servers only",
    ),
    (
        "FLOWGRID_OUTBOUND_ALLOWLIST",
        "lets http steps reach plain-http and private addresses: local development and tests only",
    ),
    (
        "FUNCTIONS_WORKER_RUNTIME",
        "on Flex Consumption the runtime lives in functionAppConfig (it is set only on Elastic Premium)",
    ),
];

/// Settings the Functions platform (not Flowgrid's code) reads, which the Bicep may set.
const PLATFORM_SETTINGS: &[&str] = &[
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID",
];

/// Settings of the config.rs table that the Functions host sets itself, not app settings.
const SET_BY_THE_HOST: &[&str] = &["FUNCTIONS_CUSTOMHANDLER_PORT"];

/// Data-plane roles (and the deployer's secrets role) the Bicep may assign; nothing that can
/// manage resources or read keys.
const ALLOWED_ROLES: &[&str] = &[
    "Storage Blob Data Owner",
    "Storage Blob Data Contributor",
    "Azure Service Bus Data Sender",
    "Azure Service Bus Data Receiver",
    "Key Vault Secrets User",
    "Key Vault Secrets Officer",
    "Monitoring Metrics Publisher",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Bicep parsing

fn parse(source: &str) -> Tree {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_bicep::LANGUAGE.into())
        .expect("the Bicep grammar matches the tree-sitter version");
    parser
        .parse(source, None)
        .expect("the parser returns a tree without a timeout or cancellation")
}

/// A syntax error: where (1-based line and column) and what.
#[derive(Debug)]
struct SyntaxError {
    line: usize,
    column: usize,
    what: String,
}

/// Every syntax error in `source`: the grammar's ERROR nodes (unexpected text) and MISSING
/// nodes (a token the grammar needed and did not find).
fn syntax_errors(source: &str) -> Vec<SyntaxError> {
    fn walk(node: Node, source: &str, out: &mut Vec<SyntaxError>) {
        if node.is_error() || node.is_missing() {
            let at = node.start_position();
            let what = if node.is_missing() {
                format!("missing `{}`", node.kind())
            } else {
                let text = &source[node.byte_range()];
                let first = text.lines().next().unwrap_or("").trim();
                format!(
                    "unexpected `{}`",
                    first.chars().take(60).collect::<String>()
                )
            };
            out.push(SyntaxError {
                line: at.row + 1,
                column: at.column + 1,
                what,
            });
            if node.is_error() {
                return;
            }
        }
        if node.has_error() {
            let mut cursor = node.walk();
            for child in node.children(&mut cursor) {
                walk(child, source, out);
            }
        }
    }
    let tree = parse(source);
    let mut out = Vec::new();
    walk(tree.root_node(), source, &mut out);
    out
}

/// Every `.bicep` file under `infra/`.
fn bicep_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "bicep") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("infra"), &mut out);
    out.sort();
    out
}

/// A parsed Bicep file.
struct Bicep {
    path: PathBuf,
    source: String,
    tree: Tree,
}

impl Bicep {
    fn load(relative_path: &str) -> Bicep {
        let path = root().join(relative_path);
        let source = read(&path);
        let tree = parse(&source);
        Bicep { path, source, tree }
    }

    fn text(&self, node: Node) -> &str {
        &self.source[node.byte_range()]
    }

    /// Every node of the given kind, in source order.
    fn nodes(&self, kind: &str) -> Vec<Node<'_>> {
        fn walk<'t>(node: Node<'t>, kind: &str, out: &mut Vec<Node<'t>>) {
            if node.kind() == kind {
                out.push(node);
            }
            let mut cursor = node.walk();
            for child in node.children(&mut cursor) {
                walk(child, kind, out);
            }
        }
        let mut out = Vec::new();
        walk(self.tree.root_node(), kind, &mut out);
        out
    }

    /// The value of a string literal without interpolation.
    fn literal(&self, node: Node) -> Option<String> {
        if node.kind() != "string" {
            return None;
        }
        let mut cursor = node.walk();
        let mut out = String::new();
        for child in node.named_children(&mut cursor) {
            match child.kind() {
                "string_content" => out.push_str(self.text(child)),
                "escape_sequence" => out.push_str(&self.text(child)[1..]),
                _ => return None,
            }
        }
        Some(out)
    }

    /// The key of an object property, whether an identifier or a quoted string.
    fn key(&self, property: Node) -> Option<String> {
        let key = property.named_child(0)?;
        match key.kind() {
            "string" => self.literal(key),
            _ => Some(self.text(key).to_owned()),
        }
    }

    /// Properties of an object node: (key, value node).
    fn properties<'t>(&'t self, object: Node<'t>) -> Vec<(String, Node<'t>)> {
        let mut cursor = object.walk();
        object
            .named_children(&mut cursor)
            .filter(|c| c.kind() == "object_property")
            .filter_map(|p| Some((self.key(p)?, p.named_child(p.named_child_count() - 1)?)))
            .collect()
    }

    /// The value of `var <name> = …`.
    fn variable(&self, name: &str) -> Option<Node<'_>> {
        self.nodes("variable_declaration")
            .into_iter()
            .find_map(|v| {
                let id = v.named_child(0)?;
                (self.text(id) == name).then(|| v.named_child(1))?
            })
    }

    /// The names of `param` declarations.
    fn parameters(&self) -> BTreeSet<String> {
        self.nodes("parameter_declaration")
            .into_iter()
            .filter_map(|p| p.named_child(0).map(|id| self.text(id).to_owned()))
            .collect()
    }

    /// The keys of every object literal that is the value of a variable or an object property
    /// whose name ends with `Settings`: the app settings this file declares.
    fn declared_settings(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut take = |value: Node| {
            // `flex ? {} : { … }` counts too.
            let objects: Vec<Node> = if value.kind() == "object" {
                vec![value]
            } else {
                let mut cursor = value.walk();
                value
                    .named_children(&mut cursor)
                    .filter(|c| c.kind() == "object")
                    .collect()
            };
            for object in objects {
                out.extend(self.properties(object).into_iter().map(|(k, _)| k));
            }
        };
        for v in self.nodes("variable_declaration") {
            if let (Some(id), Some(value)) = (v.named_child(0), v.named_child(1))
                && self.text(id).ends_with("Settings")
            {
                take(value);
            }
        }
        for p in self.nodes("object_property") {
            if let (Some(key), Some(value)) = (self.key(p), p.named_child(1))
                && key.ends_with("Settings")
            {
                take(value);
            }
        }
        out
    }

    /// Paths this file refers to: module sources, imports and `load*Content` arguments.
    fn referenced_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for kind in [
            "module_declaration",
            "import_statement",
            "import_functionality",
        ] {
            for node in self.nodes(kind) {
                let mut cursor = node.walk();
                out.extend(
                    node.named_children(&mut cursor)
                        .filter_map(|c| self.literal(c)),
                );
            }
        }
        for call in self.nodes("call_expression") {
            let Some(function) = call.child_by_field_name("function") else {
                continue;
            };
            if self.text(function).starts_with("load")
                && let Some(arguments) = call.child_by_field_name("arguments")
                && let Some(first) = arguments.named_child(0)
                && let Some(path) = self.literal(first)
            {
                out.push(path);
            }
        }
        out
    }

    /// Parameters: name → whether it has a default value.
    fn parameter_defaults(&self) -> BTreeMap<String, bool> {
        self.nodes("parameter_declaration")
            .into_iter()
            .filter_map(|p| {
                let name = self.text(p.named_child(0)?).to_owned();
                Some((name, p.named_child_count() >= 3))
            })
            .collect()
    }

    /// The names of `output` declarations.
    fn outputs(&self) -> BTreeSet<String> {
        self.nodes("output_declaration")
            .into_iter()
            .filter_map(|o| o.named_child(0).map(|id| self.text(id).to_owned()))
            .collect()
    }

    /// Module declarations: (symbol, path, the keys of its `params`).
    fn modules(&self) -> Vec<(String, String, BTreeSet<String>)> {
        let mut out = Vec::new();
        for m in self.nodes("module_declaration") {
            let mut cursor = m.walk();
            let children: Vec<Node> = m.named_children(&mut cursor).collect();
            let (Some(symbol), Some(path)) = (
                children.first().map(|c| self.text(*c).to_owned()),
                children.iter().find_map(|c| self.literal(*c)),
            ) else {
                continue;
            };
            // The body: `= {…}`, `= [for … : {…}]` or `= if (…) {…}`.
            let body = children.iter().find_map(|c| match c.kind() {
                "object" => Some(*c),
                "for_statement" => c.child_by_field_name("body"),
                "if_statement" => {
                    let mut cursor = c.walk();
                    c.named_children(&mut cursor).find(|n| n.kind() == "object")
                }
                _ => None,
            });
            let params = body
                .and_then(|b| {
                    self.properties(b)
                        .into_iter()
                        .find(|(k, _)| k == "params")
                        .map(|(_, v)| v)
                })
                .map(|p| self.properties(p).into_iter().map(|(k, _)| k).collect())
                .unwrap_or_default();
            out.push((symbol, path, params));
        }
        out
    }

    /// Every `<symbol>.outputs.<name>` and `<symbol>[…].outputs.<name>`: (symbol, name, line).
    fn output_references(&self) -> Vec<(String, String, usize)> {
        let mut out = Vec::new();
        for m in self.nodes("member_expression") {
            let (Some(object), Some(property)) = (
                m.child_by_field_name("object"),
                m.child_by_field_name("property"),
            ) else {
                continue;
            };
            if object.kind() != "member_expression"
                || object
                    .child_by_field_name("property")
                    .is_none_or(|p| self.text(p) != "outputs")
            {
                continue;
            }
            let Some(mut base) = object.child_by_field_name("object") else {
                continue;
            };
            if base.kind() == "subscript_expression"
                && let Some(inner) = base.child_by_field_name("object")
            {
                base = inner;
            }
            out.push((
                self.text(base).to_owned(),
                self.text(property).to_owned(),
                m.start_position().row + 1,
            ));
        }
        out
    }

    /// The declared type strings of resources (`'Microsoft.X/y@version'`).
    fn resource_types(&self) -> BTreeSet<String> {
        self.nodes("resource_declaration")
            .into_iter()
            .filter_map(|r| {
                let mut cursor = r.walk();
                let ty = r
                    .named_children(&mut cursor)
                    .find(|c| c.kind() == "string")?;
                let ty = self.literal(ty)?;
                Some(ty.split('@').next().unwrap_or_default().to_owned())
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// What the function definitions imply

fn app_names(dir: &Path) -> Vec<String> {
    let mut apps: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| {
            p.file_name()
                .expect("a folder name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    apps.sort();
    apps
}

fn string_field<'v>(binding: &'v Value, field: &str, file: &str) -> &'v str {
    binding[field]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: a {} binding without `{field}`", binding["type"]))
}

/// The per-app manifest (`infra/apps.json`) as the function.json files under `functions`
/// imply it; `secrets` and `settings` are taken from `current`, since no function definition
/// names them (every_setting_the_code_reads_is_deployed_and_nothing_else checks them).
fn expected_manifest(functions: &Path, current: &Value) -> Value {
    let mut apps = Vec::new();
    let mut operations = Vec::new();
    let mut queues = BTreeSet::new();
    let mut topics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for app in app_names(functions) {
        let mut connections = BTreeSet::new();
        let mut sends = BTreeSet::new();
        let mut receives = BTreeSet::new();
        let app_dir = functions.join(&app);
        let mut functions: Vec<PathBuf> = std::fs::read_dir(&app_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", app_dir.display()))
            .map(|e| e.expect("a readable directory entry").path())
            .filter(|p| p.join("function.json").is_file())
            .collect();
        functions.sort();
        for function_dir in functions {
            let function = function_dir
                .file_name()
                .expect("a folder name")
                .to_string_lossy()
                .into_owned();
            let path = function_dir.join("function.json");
            let file = relative(&path);
            let definition = read_json(&path);
            let bindings = definition["bindings"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: no bindings array"));
            for binding in bindings {
                match binding["type"].as_str().unwrap_or_default() {
                    "httpTrigger" => {
                        let route = binding["route"].as_str().unwrap_or(&function);
                        let (template, parameters) = url_template(route);
                        let methods = binding["methods"].as_array().unwrap_or_else(|| {
                            panic!(
                                "{file}: an httpTrigger without `methods` (the gateway needs them)"
                            )
                        });
                        for method in methods {
                            let method = method.as_str().unwrap_or_default().to_uppercase();
                            operations.push(json!({
                                "app": app, "function": function, "method": method,
                                "urlTemplate": template, "parameters": parameters,
                            }));
                        }
                    }
                    "http" | "timerTrigger" => {}
                    kind @ ("serviceBusTrigger" | "serviceBus") => {
                        connections.insert(string_field(binding, "connection", &file).to_owned());
                        let trigger = kind == "serviceBusTrigger";
                        let entity = if let Some(queue) = binding["queueName"].as_str() {
                            queues.insert(queue.to_owned());
                            queue.to_owned()
                        } else {
                            let topic = string_field(binding, "topicName", &file);
                            let subscriptions = topics.entry(topic.to_owned()).or_default();
                            if trigger {
                                let subscription = string_field(binding, "subscriptionName", &file);
                                subscriptions.insert(subscription.to_owned());
                                format!("{topic}/{subscription}")
                            } else {
                                topic.to_owned()
                            }
                        };
                        if trigger {
                            receives.insert(entity);
                        } else {
                            sends.insert(entity);
                        }
                    }
                    other => panic!(
                        "{file}: binding type {other:?} is not deployed by infra/ yet: add what it \
                         needs to the Bicep and to this check"
                    ),
                }
            }
        }
        // Hand-kept: which settings of the app come from Key Vault, and the app's own settings.
        let kept = |field: &str| {
            current["apps"]
                .as_array()
                .and_then(|apps| apps.iter().find(|a| a["name"] == app.as_str()))
                .and_then(|a| a.get(field).cloned())
                .unwrap_or_else(|| json!({}))
        };
        apps.push(json!({
            "name": app,
            "serviceBusConnections": connections,
            "sends": sends,
            "receives": receives,
            "secrets": kept("secrets"),
            "settings": kept("settings"),
        }));
    }
    operations.sort_by_key(|o| {
        (
            o["app"].to_string(),
            o["function"].to_string(),
            o["method"].to_string(),
        )
    });
    let topics: Vec<Value> = topics
        .into_iter()
        .map(|(name, subscriptions)| json!({ "name": name, "subscriptions": subscriptions }))
        .collect();
    json!({ "apps": apps, "queues": queues, "topics": topics, "operations": operations })
}

/// An ASP.NET route template as an API Management URL template, with its parameters:
/// `agents/{id}/versions/{version:int}` → `/agents/{id}/versions/{version}`, `[id, version]`.
fn url_template(route: &str) -> (String, Vec<String>) {
    let mut template = String::from("/");
    let mut parameters = Vec::new();
    let mut rest = route.trim_start_matches('/');
    while let Some(open) = rest.find('{') {
        template.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .unwrap_or_else(|| panic!("route {route:?}: unclosed `{{`"));
        let inner = &rest[open + 1..close];
        let (wildcard, inner) = match inner.strip_prefix('*') {
            Some(inner) => ("*", inner),
            None => ("", inner),
        };
        let name: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            !inner[name.len()..].ends_with('?'),
            "route {route:?}: optional parameters have no API Management equivalent"
        );
        template.push_str(&format!("{{{wildcard}{name}}}"));
        parameters.push(name);
        rest = &rest[close + 1..];
    }
    template.push_str(rest);
    (template, parameters)
}

// ---------------------------------------------------------------------------------------------
// Settings the code reads

/// Setting names a folder of Rust code reads: the rows of its doc-comment tables
/// (``//! | `NAME` | … |``) and the string literals `"FLOWGRID_…"`, `"COSMOS_…"`, `"BLOB_…"`.
fn settings_named_in(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut out = BTreeSet::new();
    for file in files {
        let source = read(&file);
        out.extend(
            source
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix("//! | `"))
                .filter_map(|l| l.split('`').next())
                .filter(|n| {
                    n.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
                .map(str::to_owned),
        );
        for prefix in ["\"FLOWGRID_", "\"COSMOS_", "\"BLOB_"] {
            for (at, _) in source.match_indices(prefix) {
                let name: String = source[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if source[at + 1 + name.len()..].starts_with('"') && !name.ends_with('_') {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// The names in `local.settings.example.json`.
fn local_settings() -> BTreeSet<String> {
    let doc = read_json(&root().join("local.settings.example.json"));
    doc["Values"]
        .as_object()
        .expect("local.settings.example.json has a Values object")
        .keys()
        .cloned()
        .collect()
}

/// The variables of the doc-comment table of `config.rs` (rows ``//! | `NAME` | … |``).
fn config_table() -> BTreeSet<String> {
    read(&root().join("crates/flowgrid-core/src/config.rs"))
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checks

#[test]
fn every_bicep_file_parses_with_the_bicep_grammar() {
    let files = bicep_files();
    let names: Vec<String> = files.iter().map(|f| relative(f)).collect();
    assert!(
        names.iter().any(|n| n == "infra/main.bicep") && names.len() > 1,
        "expected infra/main.bicep and its modules, found {names:?}"
    );
    let mut problems = Vec::new();
    for file in &files {
        let source = read(file);
        for e in syntax_errors(&source) {
            problems.push(format!(
                "{}:{}:{}: {}",
                relative(file),
                e.line,
                e.column,
                e.what
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "Bicep syntax errors:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let good = "param name string\nvar tags = {\n  app: name\n}\noutput id string = name\n";
    assert!(syntax_errors(good).is_empty(), "{:?}", syntax_errors(good));
    // Line 3 opens an array that never closes before the object does.
    let broken =
        "param name string\nvar tags = {\n  apps: [name, 'x'\n}\noutput id string = name\n";
    let errors = syntax_errors(broken);
    assert!(!errors.is_empty(), "a broken file passed the check");
    assert!(
        errors.iter().all(|e| (3..=4).contains(&e.line)),
        "expected the error on line 3 or 4, got {errors:?}"
    );
    // A resource body with a stray token.
    let stray = "resource st 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n  location: = 'y'\n}\n";
    let errors = syntax_errors(stray);
    assert!(
        errors.iter().any(|e| e.line == 3),
        "expected an error on line 3, got {errors:?}"
    );
}

#[test]
fn every_file_a_bicep_file_refers_to_exists() {
    for file in bicep_files() {
        let bicep = Bicep {
            source: read(&file),
            tree: parse(&read(&file)),
            path: file.clone(),
        };
        let dir = bicep.path.parent().expect("a file in a folder");
        for reference in bicep.referenced_files() {
            assert!(
                dir.join(&reference).is_file(),
                "{} refers to {reference}, which does not exist",
                relative(&file)
            );
        }
    }
}

#[test]
fn every_app_in_functions_has_a_function_app() {
    let apps = app_names(&root().join("functions"));
    assert!(!apps.is_empty(), "no apps under functions/");
    let manifest = read_json(&root().join("infra/apps.json"));
    let declared: Vec<String> = manifest["apps"]
        .as_array()
        .expect("infra/apps.json has an apps array")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        declared, apps,
        "infra/apps.json must list every app in functions/, in order"
    );

    // main.bicep deploys one Function App per manifest entry.
    let main = Bicep::load("infra/main.bicep");
    assert!(
        main.referenced_files().iter().any(|f| f == "apps.json"),
        "main.bicep must load apps.json"
    );
    let looped = main.nodes("module_declaration").into_iter().any(|m| {
        let mut cursor = m.walk();
        let children: Vec<Node> = m.named_children(&mut cursor).collect();
        children
            .iter()
            .any(|c| main.literal(*c).as_deref() == Some("modules/functionapp.bicep"))
            && children
                .iter()
                .any(|c| c.kind() == "for_statement" && main.text(*c).contains("in apps"))
    });
    assert!(
        looped,
        "main.bicep must deploy modules/functionapp.bicep for each app in apps"
    );
    let app = Bicep::load("infra/modules/functionapp.bicep");
    let types = app.resource_types();
    for ty in ["Microsoft.Web/sites", "Microsoft.Web/serverfarms"] {
        assert!(types.contains(ty), "functionapp.bicep declares no {ty}");
    }
    assert!(
        app.source.contains("name: 'custom'") && app.source.contains("version: '1.0'"),
        "the Flex runtime must be custom 1.0"
    );
}

#[test]
fn the_deployment_manifest_matches_the_function_definitions() {
    let path = root().join("infra/apps.json");
    let current = read_json(&path);
    let expected = expected_manifest(&root().join("functions"), &current);
    // API Management refuses two operations with one method and URL template (parameter names
    // aside), and operation names must be unique.
    let mut routes = BTreeMap::new();
    for op in expected["operations"].as_array().expect("operations") {
        let template = op["urlTemplate"].as_str().unwrap_or_default();
        let shape: String = template
            .split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let key = (op["method"].to_string(), shape.to_lowercase());
        let name = format!("{}/{}", op["app"], op["function"]);
        if let Some(other) = routes.insert(key, name.clone()) {
            panic!("{name} and {other} both answer {} {template}", op["method"]);
        }
    }

    assert!(
        current == expected,
        "infra/apps.json does not match the function.json files; it should read:\n{}",
        serde_json::to_string_pretty(&expected).expect("JSON serializes")
    );

    // The Bicep turns every entry into resources: Service Bus entities and roles, connection
    // settings, gateway operations routed to the app.
    let sb = Bicep::load("infra/modules/servicebus.bicep");
    let types = sb.resource_types();
    for ty in [
        "Microsoft.ServiceBus/namespaces/queues",
        "Microsoft.ServiceBus/namespaces/topics",
        "Microsoft.ServiceBus/namespaces/topics/subscriptions",
        "Microsoft.Authorization/roleAssignments",
    ] {
        assert!(types.contains(ty), "servicebus.bicep declares no {ty}");
    }
    let all: String = bicep_files().iter().map(|f| read(f)).collect();
    for used in [
        "manifest.queues",
        "manifest.topics",
        "manifest.operations",
        ".sends",
        ".receives",
        ".serviceBusConnections",
        ".secrets",
        ".settings",
    ] {
        assert!(
            all.contains(used),
            "the Bicep does not use {used} of apps.json"
        );
    }
    let app = Bicep::load("infra/modules/functionapp.bicep");
    for suffix in ["__fullyQualifiedNamespace", "__credential", "__clientId"] {
        assert!(
            app.source.contains(&format!("'${{c}}{suffix}'")),
            "functionapp.bicep must set <connection>{suffix} for each Service Bus connection"
        );
    }
    let apim = Bicep::load("infra/modules/apim.bicep");
    assert!(
        apim.resource_types()
            .contains("Microsoft.ApiManagement/service/apis/operations")
            && apim.source.contains("for op in operations"),
        "apim.bicep must declare one operation per entry of operations"
    );
}

#[test]
fn every_setting_the_code_reads_is_deployed_and_nothing_else() {
    let local = local_settings();
    let table = config_table();
    assert!(
        table.contains("FLOWGRID_STORE"),
        "config.rs table not found: {table:?}"
    );

    // local.settings.example.json lists what config.rs reads, and nothing of Flowgrid's that
    // config.rs does not document.
    let missing: Vec<&String> = table
        .iter()
        .filter(|n| !SET_BY_THE_HOST.contains(&n.as_str()) && !local.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "config.rs reads {missing:?}, which local.settings.example.json does not list"
    );
    // Every setting the shared library or an app's handler names is listed too; an app's own
    // settings (named in handlers/<app>/ only) are deployed to that app through apps.json.
    let core = settings_named_in(&root().join("crates/flowgrid-core/src"));
    let mut own: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for app in app_names(&root().join("functions")) {
        let dir = root().join("handlers").join(&app).join("src");
        if dir.is_dir() {
            own.insert(
                app,
                settings_named_in(&dir).difference(&core).cloned().collect(),
            );
        }
    }
    for name in core.iter().chain(own.values().flatten()) {
        assert!(
            local.contains(name) || SET_BY_THE_HOST.contains(&name.as_str()),
            "the code reads {name}, which local.settings.example.json does not list"
        );
    }

    let undocumented: Vec<&String> = local
        .iter()
        .filter(|n| {
            ["FLOWGRID_", "COSMOS_", "BLOB_", "AZURE_"]
                .iter()
                .any(|p| n.starts_with(p))
                && !table.contains(*n)
                && !core.contains(*n)
                && !own.values().any(|o| o.contains(*n))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "local.settings.example.json lists {undocumented:?}, which neither config.rs nor a handler's settings table documents"
    );

    // What the Bicep sets: the *Settings objects, and the Key Vault references of apps.json.
    let mut deployed = BTreeSet::new();
    // Connection prefixes the function.json files name: the Functions host reads them.
    let mut connections = BTreeSet::new();
    for file in ["infra/main.bicep", "infra/modules/functionapp.bicep"] {
        deployed.extend(Bicep::load(file).declared_settings());
    }
    let manifest = read_json(&root().join("infra/apps.json"));
    for app in manifest["apps"].as_array().expect("an apps array") {
        // Service Bus connections are set identity-based by functionapp.bicep (checked in
        // the_deployment_manifest_matches_the_function_definitions).
        for connection in app["serviceBusConnections"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let connection = connection.as_str().unwrap_or_default();
            connections.insert(connection.to_owned());
            for suffix in ["fullyQualifiedNamespace", "credential", "clientId"] {
                deployed.insert(format!("{connection}__{suffix}"));
            }
        }
        let name = app["name"].as_str().unwrap_or_default();
        let reads = own.get(name).cloned().unwrap_or_default();
        let settings = app["settings"]
            .as_object()
            .expect("a settings object per app");
        for (setting, value) in settings {
            assert!(
                reads.contains(setting),
                "infra/apps.json sets {setting} for {name}, which only handlers/{name} should read: \
                 it reads none such, or the shared library reads it too (then it belongs in \
                 flowgridSettings in infra/main.bicep)"
            );
            assert!(
                value.is_string(),
                "{name}: {setting}: app settings are strings"
            );
            deployed.insert(setting.clone());
        }
        let secrets = app["secrets"]
            .as_object()
            .expect("a secrets object per app");
        for (setting, secret) in secrets {
            let secret = secret.as_str().unwrap_or_default();
            assert!(
                !secret.is_empty()
                    && secret
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{setting}: Key Vault secret names are letters, digits and dashes: {secret:?}"
            );
            deployed.insert(setting.clone());
        }
    }
    assert!(
        deployed.contains("FLOWGRID_STORE"),
        "no settings found in the Bicep"
    );
    for (app, reads) in &own {
        let entry = manifest["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == app.as_str()))
            .expect("every app is in apps.json");
        for name in reads {
            let here = |field: &str| entry[field].get(name).is_some();
            let excused = LOCAL_ONLY_SETTINGS.iter().any(|(n, _)| n == name);
            assert!(
                here("settings") || here("secrets") || excused,
                "handlers/{app} reads {name}: add it to the app's settings (or secrets) in infra/apps.json"
            );
        }
    }

    for (name, why) in LOCAL_ONLY_SETTINGS {
        assert!(
            local.contains(*name),
            "{name} is excused from deployment ({why}) but the code no longer reads it; drop it \
             from LOCAL_ONLY_SETTINGS"
        );
    }
    for name in ["COSMOS_KEY", "BLOB_ACCOUNT_KEY", "FLOWGRID_OIDC_ALLOW_HTTP"] {
        assert!(!deployed.contains(name), "{name} must not be deployed");
    }

    let excused = |n: &str| LOCAL_ONLY_SETTINGS.iter().any(|(name, _)| *name == n);
    let undeployed: Vec<&String> = local
        .iter()
        .filter(|n| !excused(n))
        .filter(|n| {
            // A connection (AzureWebJobsStorage) is deployed identity-based, as `<name>__…`.
            !deployed.contains(*n) && !deployed.iter().any(|d| d.starts_with(&format!("{n}__")))
        })
        .collect();
    assert!(
        undeployed.is_empty(),
        "the code reads {undeployed:?}, which the Bicep does not set"
    );

    let unused: Vec<&String> = deployed
        .iter()
        .filter(|d| {
            !local.contains(*d)
                && !PLATFORM_SETTINGS.contains(&d.as_str())
                && !local
                    .iter()
                    .chain(&connections)
                    .any(|n| d.starts_with(&format!("{n}__")))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "the Bicep sets {unused:?}, which neither the code nor the Functions platform reads"
    );
}

#[test]
fn every_cosmos_container_the_storage_layer_uses_is_declared() {
    use flowgrid_storage::cosmos::{CONTAINERS, PARTITION_KEY, TTL_CONTAINERS};
    let cosmos = Bicep::load("infra/modules/cosmos.bicep");
    let list = cosmos
        .variable("containers")
        .expect("cosmos.bicep has `var containers = [...]`");
    let mut declared = BTreeSet::new();
    let mut cursor = list.walk();
    for entry in list
        .named_children(&mut cursor)
        .filter(|c| c.kind() == "object")
    {
        let properties = cosmos.properties(entry);
        let name = properties
            .iter()
            .find(|(k, _)| k == "name")
            .and_then(|(_, v)| cosmos.literal(*v))
            .expect("every container has a literal name");
        let indexed = properties
            .iter()
            .find(|(k, _)| k == "indexedPaths")
            .map(|(_, v)| cosmos.text(*v).to_owned())
            .unwrap_or_default();
        assert!(
            indexed.contains("'/tenantId/?'"),
            "container {name}: every query filters on tenantId, so it must be indexed"
        );
        let ttl = properties
            .iter()
            .find(|(k, _)| k == "defaultTtl")
            .map(|(_, v)| cosmos.text(*v).trim().to_owned())
            .unwrap_or_default();
        let expires = TTL_CONTAINERS.contains(&name.as_str());
        assert_eq!(
            ttl,
            if expires { "-1" } else { "null" },
            "container {name}: `defaultTtl` must be -1 (TTL on, set per document) exactly for the \
             containers in TTL_CONTAINERS ({TTL_CONTAINERS:?}), and null for the others"
        );
        declared.insert(name);
    }
    let used: BTreeSet<String> = CONTAINERS.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(
        declared, used,
        "the Cosmos containers in infra/modules/cosmos.bicep must be exactly the storage layer's \
         CONTAINERS"
    );
    let key = cosmos
        .variable("partitionKeyPath")
        .and_then(|v| cosmos.literal(v));
    assert_eq!(key.as_deref(), Some(PARTITION_KEY));
    let main = Bicep::load("infra/main.bicep");
    assert!(
        main.source.contains("COSMOS_CREATE_CONTAINERS: 'false'"),
        "the apps hold a data-plane role only, so they must not try to create containers"
    );
}

#[test]
fn the_deployment_uses_no_keys_and_data_plane_roles_only() {
    let mut all = String::new();
    for file in bicep_files() {
        let source = read(&file);
        for forbidden in [
            "listKeys(",
            "listConnectionStrings(",
            "AccountKey=",
            "SharedAccessKey",
            "primaryMasterKey",
            "instrumentationKey",
        ] {
            assert!(
                !source.contains(forbidden),
                "{} uses {forbidden}: the deployment must use managed identities, not keys",
                relative(&file)
            );
        }
        all.push_str(&source);
    }
    for required in [
        "allowSharedKeyAccess: false",
        "disableLocalAuth: true",
        "DisableLocalAuth: true",
        "enableRbacAuthorization: true",
    ] {
        assert!(all.contains(required), "no `{required}` in the Bicep");
    }
    // Every role the Bicep assigns is one of the data-plane roles.
    let roles = Bicep::load("infra/modules/roles.bicep");
    let ids = roles.variable("roleIds").expect("roles.bicep has roleIds");
    let names: BTreeSet<String> = roles.properties(ids).into_iter().map(|(k, _)| k).collect();
    let allowed: BTreeSet<String> = ALLOWED_ROLES.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(
        names, allowed,
        "roles.bicep must hold data-plane roles only"
    );
    for file in bicep_files() {
        let bicep = Bicep {
            source: read(&file),
            tree: parse(&read(&file)),
            path: file.clone(),
        };
        for property in bicep.nodes("object_property") {
            if bicep.key(property).as_deref() == Some("roleDefinitionId") {
                let value = bicep.text(property);
                assert!(
                    value.contains("roleIds[")
                        || value.contains("sqlRoleDefinitions/${dataContributor}"),
                    "{}: a role outside roles.bicep: {value}",
                    relative(&bicep.path)
                );
            }
        }
    }
}

#[test]
fn the_parameters_file_sets_only_declared_parameters_and_no_secrets() {
    let main = Bicep::load("infra/main.bicep");
    let declared = main.parameters();
    let file = read_json(&root().join("infra/main.parameters.json"));
    let parameters = file["parameters"]
        .as_object()
        .expect("main.parameters.json has a parameters object");
    assert!(!parameters.is_empty());
    for (name, value) in parameters {
        assert!(
            declared.contains(name),
            "main.parameters.json sets {name}, which main.bicep does not declare"
        );
        assert!(
            value.get("reference").is_none(),
            "{name}: no secrets in the parameters file"
        );
        let lower = name.to_lowercase();
        assert!(
            !["key", "secret", "password"]
                .iter()
                .any(|w| lower.contains(w)),
            "{name}: no secrets in the parameters file"
        );
    }
}

#[test]
fn service_bus_bindings_become_entities_connections_and_roles_in_the_manifest() {
    // No app uses Service Bus yet; this pins how the first ones will be derived.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let write = |function: &str, bindings: Value| {
        let folder = dir.path().join("execution").join(function);
        std::fs::create_dir_all(&folder).expect("a function folder");
        std::fs::write(
            folder.join("function.json"),
            json!({ "bindings": bindings }).to_string(),
        )
        .expect("function.json written");
    };
    write(
        "RunJob",
        json!([
            { "type": "serviceBusTrigger", "direction": "in", "name": "msg",
              "queueName": "executions", "connection": "ServiceBusConnection" },
            { "type": "serviceBus", "direction": "out", "name": "events",
              "topicName": "platform-events", "connection": "ServiceBusConnection" }
        ]),
    );
    write(
        "OnAgentCompiled",
        json!([{ "type": "serviceBusTrigger", "direction": "in", "name": "msg",
                 "topicName": "agent-compiled", "subscriptionName": "execution",
                 "connection": "ServiceBusConnection" }]),
    );
    write(
        "Schedules",
        json!([{ "type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 * * * * *" }]),
    );
    write(
        "CancelJob",
        json!([
            { "type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous",
              "methods": ["post"], "route": "execute/cancel/{jobId:guid}" },
            { "type": "http", "direction": "out", "name": "res" }
        ]),
    );
    let manifest = expected_manifest(dir.path(), &json!({}));
    assert_eq!(
        manifest,
        json!({
            "apps": [{
                "name": "execution",
                "serviceBusConnections": ["ServiceBusConnection"],
                "sends": ["platform-events"],
                "receives": ["agent-compiled/execution", "executions"],
                "secrets": {},
                "settings": {},
            }],
            "queues": ["executions"],
            "topics": [
                { "name": "agent-compiled", "subscriptions": ["execution"] },
                { "name": "platform-events", "subscriptions": [] },
            ],
            "operations": [{
                "app": "execution", "function": "CancelJob", "method": "POST",
                "urlTemplate": "/execute/cancel/{jobId}", "parameters": ["jobId"],
            }],
        })
    );
}

#[test]
fn every_module_gets_the_parameters_it_declares_and_has_the_outputs_used() {
    let mut checked = 0;
    for file in bicep_files() {
        let bicep = Bicep {
            source: read(&file),
            tree: parse(&read(&file)),
            path: file.clone(),
        };
        let dir = file.parent().expect("a file in a folder");
        let mut outputs_of = BTreeMap::new();
        for (symbol, path, passed) in bicep.modules() {
            let module = Bicep::load(&relative(&dir.join(&path)));
            let declared = module.parameter_defaults();
            for name in &passed {
                assert!(
                    declared.contains_key(name),
                    "{}: module {symbol} passes {name}, which {path} does not declare",
                    relative(&file)
                );
            }
            for (name, has_default) in &declared {
                assert!(
                    *has_default || passed.contains(name),
                    "{}: module {symbol} does not pass {name}, which {path} requires",
                    relative(&file)
                );
            }
            outputs_of.insert(symbol, (path, module.outputs()));
            checked += 1;
        }
        for (symbol, name, line) in bicep.output_references() {
            let (path, outputs) = outputs_of.get(&symbol).unwrap_or_else(|| {
                panic!(
                    "{}:{line}: {symbol}.outputs, but {symbol} is no module",
                    relative(&file)
                )
            });
            assert!(
                outputs.contains(&name),
                "{}:{line}: {symbol}.outputs.{name}, which {path} does not output",
                relative(&file)
            );
        }
    }
    assert!(
        checked >= 7,
        "expected main.bicep's modules, checked {checked}"
    );
}
