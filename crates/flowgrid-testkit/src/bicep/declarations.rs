//! What a Bicep file declares: parameters, outputs, modules, resources, app settings, and the
//! files it refers to.

use std::collections::BTreeSet;

use super::{Bicep, Node};

/// A `module` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its symbolic name (`module <symbol> '…' = …`).
    pub symbol: String,
    /// The path of its file, relative to the declaring file's folder.
    pub path: String,
    /// The keys of its `params`.
    pub params: BTreeSet<String>,
    /// For `= [for … in <collection>: {…}]`: the text of the collection.
    pub looped_over: Option<String>,
}

/// A `resource` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource<'t> {
    /// Its symbolic name (`resource <symbol> '…' = …`).
    pub symbol: String,
    /// Its type without the API version (`Microsoft.Web/sites`).
    pub type_name: String,
    /// The API version after `@`.
    pub api_version: String,
    /// For `= [for … in <collection>: {…}]`: the text of the collection.
    pub looped_over: Option<String>,
    /// The body object (`{…}` of `= {…}`, of a loop or of a condition).
    pub body: Option<Node<'t>>,
}

/// A use of a module's output: `<symbol>.outputs.<name>` or `<symbol>[…].outputs.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputReference {
    /// The module's symbolic name.
    pub symbol: String,
    /// The output's name.
    pub name: String,
    /// 1-based line of the use.
    pub line: usize,
}

impl Bicep {
    /// The names of `param` declarations.
    pub fn parameters(&self) -> BTreeSet<String> {
        self.nodes("parameter_declaration")
            .into_iter()
            .filter_map(|p| p.named_child(0).map(|id| self.text(id).to_owned()))
            .collect()
    }

    /// The names of `param` declarations without a default value: those a caller must pass.
    pub fn required_parameters(&self) -> BTreeSet<String> {
        self.nodes("parameter_declaration")
            .into_iter()
            .filter(|p| p.named_child_count() < 3)
            .filter_map(|p| p.named_child(0).map(|id| self.text(id).to_owned()))
            .collect()
    }

    /// The names of `output` declarations.
    pub fn outputs(&self) -> BTreeSet<String> {
        self.nodes("output_declaration")
            .into_iter()
            .filter_map(|o| o.named_child(0).map(|id| self.text(id).to_owned()))
            .collect()
    }

    /// The `module` declarations, in source order.
    pub fn modules(&self) -> Vec<Module> {
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
            let looped = children.iter().find(|c| c.kind() == "for_statement");
            let body = Self::declaration_body(&children);
            let params = body
                .and_then(|b| self.property(b, "params"))
                .map(|p| self.properties(p).into_iter().map(|(k, _)| k).collect())
                .unwrap_or_default();
            out.push(Module {
                symbol,
                path,
                params,
                looped_over: looped.and_then(|l| self.loop_collection(*l)),
            });
        }
        out
    }

    /// The body of a module or resource declaration (its named children): `= {…}`,
    /// `= [for … : {…}]` or `= if (…) {…}`.
    fn declaration_body<'t>(children: &[Node<'t>]) -> Option<Node<'t>> {
        children.iter().find_map(|c| match c.kind() {
            "object" => Some(*c),
            "for_statement" => c.child_by_field_name("body"),
            "if_statement" => {
                let mut cursor = c.walk();
                c.named_children(&mut cursor).find(|n| n.kind() == "object")
            }
            _ => None,
        })
    }

    /// The body object of the module or resource declared as `symbol`.
    pub fn body_of(&self, symbol: &str) -> Option<Node<'_>> {
        ["module_declaration", "resource_declaration"]
            .iter()
            .flat_map(|kind| self.nodes(kind))
            .find_map(|d| {
                let mut cursor = d.walk();
                let children: Vec<Node> = d.named_children(&mut cursor).collect();
                (children.first().map(|c| self.text(*c)) == Some(symbol))
                    .then(|| Self::declaration_body(&children))?
            })
    }

    /// The `resource` declarations (not `existing` ones), in source order.
    pub fn resources(&self) -> Vec<Resource<'_>> {
        let mut out = Vec::new();
        for r in self.nodes("resource_declaration") {
            if self.text(r).contains("' existing =") {
                continue;
            }
            let mut cursor = r.walk();
            let children: Vec<Node> = r.named_children(&mut cursor).collect();
            let (Some(symbol), Some(ty)) = (
                children.first().map(|c| self.text(*c).to_owned()),
                children.iter().find_map(|c| self.literal(*c)),
            ) else {
                continue;
            };
            let (type_name, api_version) = ty.split_once('@').unwrap_or((ty.as_str(), ""));
            out.push(Resource {
                symbol,
                type_name: type_name.to_owned(),
                api_version: api_version.to_owned(),
                looped_over: children
                    .iter()
                    .find(|c| c.kind() == "for_statement")
                    .and_then(|l| self.loop_collection(*l)),
                body: Self::declaration_body(&children),
            });
        }
        out
    }

    /// The collection of a `for` expression: its one named child that is neither the loop
    /// variable(s) nor the body.
    fn loop_collection(&self, for_statement: Node) -> Option<String> {
        let mut cursor = for_statement.walk();
        if !cursor.goto_first_child() {
            return None;
        }
        loop {
            let node = cursor.node();
            if node.is_named()
                && cursor.field_name().is_none()
                && !matches!(node.kind(), "for_loop_parameters" | "comment")
            {
                return Some(self.text(node).to_owned());
            }
            if !cursor.goto_next_sibling() {
                return None;
            }
        }
    }

    /// Every `<symbol>.outputs.<name>` and `<symbol>[…].outputs.<name>`, in source order.
    pub fn output_references(&self) -> Vec<OutputReference> {
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
            out.push(OutputReference {
                symbol: self.text(base).to_owned(),
                name: self.text(property).to_owned(),
                line: m.start_position().row + 1,
            });
        }
        out
    }

    /// The declared types of resources, without the API version (`'Microsoft.X/y@version'`
    /// → `Microsoft.X/y`).
    pub fn resource_types(&self) -> BTreeSet<String> {
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

    /// The keys of every object literal that is the value of a variable or an object property
    /// whose name ends with `Settings`: the app settings this file declares. A conditional
    /// (`flex ? {} : { … }`) counts with both branches.
    pub fn declared_settings(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut take = |value: Node| {
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

    /// Paths this file refers to, relative to its folder: module sources, imports and
    /// `load*Content` arguments.
    pub fn referenced_files(&self) -> Vec<String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bicep(source: &str) -> Bicep {
        let file = Bicep::parse("main.bicep", source);
        let errors = file.syntax_errors();
        assert!(errors.is_empty(), "the snippet must parse: {errors:?}");
        file
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    const MODULE: &str = "\
@description('Where.')
param location string
param name string
@minValue(0)
param count int = 1
param tags object = {}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' existing = {
  name: 'plan'
}

output id string = site.id
output hostName string = site.properties.defaultHostName
";

    #[test]
    fn resources_are_read_with_their_bodies_and_loops() {
        let file = bicep(
            "param names array\n\
             resource site 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'a'\n  properties: {\n    httpsOnly: true\n  }\n}\n\
             resource plan 'Microsoft.Web/serverfarms@2024-04-01' existing = {\n  name: 'plan'\n}\n\
             resource many 'Microsoft.Web/sites/config@2023-01-01' = [for n in names: {\n  name: n\n}]\n",
        );
        let resources = file.resources();
        let summary: Vec<(String, String, String, Option<String>)> = resources
            .iter()
            .map(|r| {
                (
                    r.symbol.clone(),
                    r.type_name.clone(),
                    r.api_version.clone(),
                    r.looped_over.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "site".to_owned(),
                    "Microsoft.Web/sites".to_owned(),
                    "2024-04-01".to_owned(),
                    None
                ),
                (
                    "many".to_owned(),
                    "Microsoft.Web/sites/config".to_owned(),
                    "2023-01-01".to_owned(),
                    Some("names".to_owned())
                ),
            ],
            "an existing resource is no declaration of one"
        );
        let site = resources[0].body.expect("a body");
        let properties = file.property(site, "properties").expect("properties");
        assert_eq!(
            file.property(properties, "httpsOnly").map(|v| file.text(v)),
            Some("true")
        );
        let many = file.body_of("many").expect("the loop's body");
        assert_eq!(file.property(many, "name").map(|v| file.text(v)), Some("n"));
        assert!(file.body_of("nothing").is_none());
    }

    #[test]
    fn a_modules_parameters_and_outputs_are_read() {
        let module = bicep(MODULE);
        assert_eq!(
            module.parameters(),
            set(&["count", "location", "name", "tags"])
        );
        assert_eq!(
            module.required_parameters(),
            set(&["location", "name"]),
            "a parameter with a default is optional, decorated or not"
        );
        assert_eq!(module.outputs(), set(&["hostName", "id"]));
        assert_eq!(
            module.resource_types(),
            set(&["Microsoft.Web/serverfarms", "Microsoft.Web/sites"])
        );
    }

    const MAIN: &str = "\
param apps array
var first = 'x'

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: 'westeurope'
    'name': first
  }
}

module apps_ 'modules/app.bicep' = [for (app, i) in apps: {
  name: 'app-${i}'
  params: {
    name: app.name
    storageId: storage.outputs.id
  }
}]

module bus 'modules/bus.bicep' = if (length(apps) > 0) {
  name: 'bus'
}

output names array = [for (app, i) in apps: apps_[i].outputs.hostName]
output bus string = bus.outputs.namespace
";

    #[test]
    fn modules_are_read_with_their_params_whatever_their_form() {
        let main = bicep(MAIN);
        let modules = main.modules();
        let summary: Vec<(&str, &str, Vec<&str>, Option<&str>)> = modules
            .iter()
            .map(|m| {
                (
                    m.symbol.as_str(),
                    m.path.as_str(),
                    m.params.iter().map(String::as_str).collect(),
                    m.looped_over.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "storage",
                    "modules/storage.bicep",
                    vec!["location", "name"],
                    None
                ),
                (
                    "apps_",
                    "modules/app.bicep",
                    vec!["name", "storageId"],
                    Some("apps")
                ),
                ("bus", "modules/bus.bicep", vec![], None),
            ]
        );
    }

    #[test]
    fn a_loop_over_a_single_variable_names_its_collection() {
        let main =
            bicep("param apps array\nmodule a 'a.bicep' = [for app in apps: {\n  name: app\n}]\n");
        let looped: Vec<Option<String>> =
            main.modules().into_iter().map(|m| m.looped_over).collect();
        assert_eq!(looped, [Some("apps".to_owned())]);
    }

    #[test]
    fn uses_of_module_outputs_are_found_with_their_lines() {
        let main = bicep(MAIN);
        let uses: Vec<(String, String, usize)> = main
            .output_references()
            .into_iter()
            .map(|r| (r.symbol, r.name, r.line))
            .collect();
        assert_eq!(
            uses,
            [
                ("storage".to_owned(), "id".to_owned(), 16),
                ("apps_".to_owned(), "hostName".to_owned(), 24),
                ("bus".to_owned(), "namespace".to_owned(), 25),
            ]
        );
    }

    #[test]
    fn settings_are_read_from_settings_variables_and_properties() {
        let file = bicep(
            "\
param flex bool
var hostSettings = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  'AzureWebJobsStorage__accountName': 'st'
}
var premiumSettings = flex ? {} : {
  FUNCTIONS_WORKER_RUNTIME: 'custom'
}
var other = {
  NOT_A_SETTING: 'x'
}
module app 'app.bicep' = {
  name: 'app'
  params: {
    flowgridSettings: {
      FLOWGRID_STORE: 'cosmos'
    }
    ownSettings: other
  }
}
",
        );
        assert_eq!(
            file.declared_settings(),
            set(&[
                "AzureWebJobsStorage__accountName",
                "FLOWGRID_STORE",
                "FUNCTIONS_EXTENSION_VERSION",
                "FUNCTIONS_WORKER_RUNTIME",
            ])
        );
    }

    #[test]
    fn referenced_files_are_modules_imports_and_loaded_files() {
        let file = bicep(
            "\
import { tags } from 'shared/types.bicep'
var manifest = loadJsonContent('apps.json')
var policy = loadTextContent('modules/policy.xml')
var dynamic = loadTextContent('${manifest.name}.xml')
module a 'modules/a.bicep' = {
  name: 'a'
}
",
        );
        let mut found = file.referenced_files();
        found.sort();
        assert_eq!(
            found,
            [
                "apps.json",
                "modules/a.bicep",
                "modules/policy.xml",
                "shared/types.bicep"
            ],
            "an interpolated path is not followed"
        );
    }

    #[test]
    fn a_file_without_declarations_has_none() {
        let file = bicep("// nothing here\n");
        assert!(file.parameters().is_empty());
        assert!(file.outputs().is_empty());
        assert!(file.modules().is_empty());
        assert!(file.output_references().is_empty());
        assert!(file.resource_types().is_empty());
        assert!(file.declared_settings().is_empty());
        assert!(file.referenced_files().is_empty());
    }
}
