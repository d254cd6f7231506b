//! Offline analysis of an Azure deployment written in Bicep: what the infra tests of
//! `tests/tests/infra.rs` read out of `infra/`.
//!
//! - [`Bicep`]: one `.bicep` file parsed with a real Bicep grammar (tree-sitter-bicep): its
//!   syntax errors, and what it declares (parameters, outputs, modules and what they are
//!   passed, resources, app settings, the files it refers to); the queries are in
//!   `declarations.rs`;
//! - [`expected_manifest`]: the per-app deployment manifest (`infra/apps.json`) as a folder of
//!   `function.json` files implies it, with [`url_template`] for the gateway's routes.
//!
//! Nothing here knows this repository's layout: the callers pass the paths. Reading a file
//! that is not there panics with its path, as a failed test should.

mod declarations;
mod manifest;

use std::path::{Path, PathBuf};

use tree_sitter::{Parser, Tree};

pub use declarations::{Module, OutputReference, Resource};
pub use manifest::{app_names, expected_manifest, url_template};
/// A node of a parsed file, for the queries this module does not offer.
pub use tree_sitter::Node;

/// Every file under `dir` (recursively) whose name ends with `.<extension>`, sorted.
pub fn files_under(dir: &Path, extension: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                walk(&path, extension, out);
            } else if path.extension().is_some_and(|e| e == extension) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, extension, &mut out);
    out.sort();
    out
}

/// A syntax error: where (1-based line and column) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in bytes).
    pub column: usize,
    /// `unexpected `…`` or `missing `…``.
    pub what: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.what)
    }
}

/// A parsed Bicep file.
pub struct Bicep {
    path: PathBuf,
    source: String,
    tree: Tree,
}

impl Bicep {
    /// Parses `source`; `path` is where it came from (module and file references are relative
    /// to its folder). A file with syntax errors still parses: see [`Bicep::syntax_errors`].
    pub fn parse(path: impl Into<PathBuf>, source: impl Into<String>) -> Bicep {
        let source = source.into();
        let mut parser = Parser::new();
        parser
            .set_language(&tree_sitter_bicep::LANGUAGE.into())
            .expect("the Bicep grammar matches the tree-sitter version");
        let tree = parser
            .parse(&source, None)
            .expect("the parser returns a tree without a timeout or cancellation");
        Bicep {
            path: path.into(),
            source,
            tree,
        }
    }

    /// Reads and parses the file at `path`; panics with the path when it cannot be read.
    pub fn read(path: &Path) -> Bicep {
        let source =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Bicep::parse(path, source)
    }

    /// Where the file came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every syntax error: the grammar's ERROR nodes (unexpected text) and MISSING nodes (a
    /// token the grammar needed and did not find). Empty: the file parses.
    pub fn syntax_errors(&self) -> Vec<SyntaxError> {
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
        let mut out = Vec::new();
        walk(self.tree.root_node(), &self.source, &mut out);
        out
    }

    /// The text of a node of this file.
    pub fn text(&self, node: Node) -> &str {
        &self.source[node.byte_range()]
    }

    /// Every node of the given kind (a node type of the grammar), in source order.
    pub fn nodes(&self, kind: &str) -> Vec<Node<'_>> {
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

    /// The value of a string literal without interpolation; `None` for anything else.
    pub fn literal(&self, node: Node) -> Option<String> {
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
    pub fn key(&self, property: Node) -> Option<String> {
        let key = property.named_child(0)?;
        match key.kind() {
            "string" => self.literal(key),
            _ => Some(self.text(key).to_owned()),
        }
    }

    /// Properties of an object node: (key, value node).
    pub fn properties<'t>(&'t self, object: Node<'t>) -> Vec<(String, Node<'t>)> {
        let mut cursor = object.walk();
        object
            .named_children(&mut cursor)
            .filter(|c| c.kind() == "object_property")
            .filter_map(|p| Some((self.key(p)?, p.named_child(p.named_child_count() - 1)?)))
            .collect()
    }

    /// The value of the property `key` of an object node.
    pub fn property<'t>(&'t self, object: Node<'t>, key: &str) -> Option<Node<'t>> {
        self.properties(object)
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The objects among the elements of an array node (`[{…}, {…}]`).
    pub fn objects_in<'t>(&'t self, array: Node<'t>) -> Vec<Node<'t>> {
        let mut cursor = array.walk();
        array
            .named_children(&mut cursor)
            .filter(|c| c.kind() == "object")
            .collect()
    }

    /// The value of `var <name> = …`.
    pub fn variable(&self, name: &str) -> Option<Node<'_>> {
        self.nodes("variable_declaration")
            .into_iter()
            .find_map(|v| {
                let id = v.named_child(0)?;
                (self.text(id) == name).then(|| v.named_child(1))?
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bicep(source: &str) -> Bicep {
        Bicep::parse("snippet.bicep", source)
    }

    #[test]
    fn a_valid_file_has_no_syntax_errors() {
        let good = "param name string\nvar tags = {\n  app: name\n}\noutput id string = name\n";
        let errors = bicep(good).syntax_errors();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_syntax_error_is_reported_with_its_line() {
        // Line 3 opens an array that never closes before the object does.
        let broken =
            "param name string\nvar tags = {\n  apps: [name, 'x'\n}\noutput id string = name\n";
        let errors = bicep(broken).syntax_errors();
        assert!(!errors.is_empty(), "a broken file passed the check");
        assert!(
            errors.iter().all(|e| (3..=4).contains(&e.line)),
            "expected the error on line 3 or 4, got {errors:?}"
        );
        // A resource body with a stray token.
        let stray = "resource st 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n  location: = 'y'\n}\n";
        let errors = bicep(stray).syntax_errors();
        assert!(
            errors.iter().any(|e| e.line == 3),
            "expected an error on line 3, got {errors:?}"
        );
        let shown = errors
            .iter()
            .find(|e| e.line == 3)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(shown.starts_with("3:"), "{shown}");
    }

    #[test]
    fn text_that_is_no_bicep_is_an_error() {
        let errors = bicep("this is { not bicep\n").syntax_errors();
        assert!(!errors.is_empty());
    }

    #[test]
    fn literals_are_plain_strings_only() {
        let file =
            bicep("var a = 'plain'\nvar b = 'it\\'s'\nvar c = 'x-${a}'\nvar d = 42\nvar e = ''\n");
        let value = |name: &str| {
            let node = file.variable(name).expect("the variable");
            file.literal(node)
        };
        assert_eq!(value("a").as_deref(), Some("plain"));
        assert_eq!(value("b").as_deref(), Some("it's"));
        assert_eq!(value("c"), None, "an interpolated string is no literal");
        assert_eq!(value("d"), None, "a number is no string");
        assert_eq!(value("e").as_deref(), Some(""));
        assert!(file.variable("missing").is_none());
    }

    #[test]
    fn objects_are_read_by_key_quoted_or_not() {
        let file = bicep(
            "var roles = {\n  'Storage Blob Data Owner': 'b7e6'\n  plain: 'x'\n  nested: {\n    inner: 1\n  }\n}\n",
        );
        let roles = file.variable("roles").expect("roles");
        let keys: Vec<String> = file.properties(roles).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["Storage Blob Data Owner", "plain", "nested"]);
        let owner = file
            .property(roles, "Storage Blob Data Owner")
            .expect("a value");
        assert_eq!(file.literal(owner).as_deref(), Some("b7e6"));
        let nested = file.property(roles, "nested").expect("nested");
        assert_eq!(nested.kind(), "object");
        assert!(file.property(roles, "inner").is_none(), "only direct keys");
    }

    #[test]
    fn the_objects_of_an_array_are_listed() {
        let file = bicep(
            "var containers = [\n  {\n    name: 'a'\n  }\n  {\n    name: 'b'\n  }\n  'not an object'\n]\n",
        );
        let list = file.variable("containers").expect("containers");
        let names: Vec<String> = file
            .objects_in(list)
            .into_iter()
            .filter_map(|o| file.literal(file.property(o, "name")?))
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn files_are_found_recursively_and_sorted() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let sub = dir.path().join("modules");
        std::fs::create_dir_all(&sub).expect("a folder");
        for file in [
            dir.path().join("main.bicep"),
            sub.join("b.bicep"),
            sub.join("a.bicep"),
            sub.join("a.json"),
        ] {
            std::fs::write(file, "").expect("written");
        }
        let found: Vec<String> = files_under(dir.path(), "bicep")
            .iter()
            .map(|f| {
                f.strip_prefix(dir.path())
                    .expect("inside")
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect();
        assert_eq!(found, ["main.bicep", "modules/a.bicep", "modules/b.bicep"]);
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let missing = dir.path().join("nope.bicep");
        let panic = std::panic::catch_unwind(|| Bicep::read(&missing))
            .err()
            .expect("a missing file panics");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("nope.bicep"), "{message}");
    }
}
