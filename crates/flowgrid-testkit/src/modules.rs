//! The module graph of a crate, read from its sources, to check that modules form no cycle.
//!
//! For every top-level module of a crate (`src/<m>.rs` or `src/<m>/…`), the modules it uses:
//! `crate::<m2>` paths, `super::<m2>` in a top-level module's own file, and names the crate
//! root re-exports (`pub use <m2>::Name`) resolved to their module. Edges inside one module
//! and from the crate root (which only declares and re-exports) are left out, and so is test
//! code (`tests.rs` files and what follows `#[cfg(test)]`), which may use anything. A cycle is a
//! design smell the workspace does not allow: the lower module should own what both use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → the modules it uses, for the crate whose `src` folder is `src`.
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.is_file());
    let modules = top_level_modules(src);
    let reexports = root
        .as_deref()
        .map(|r| reexports(&read(r), &modules))
        .unwrap_or_default();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in &modules {
        let mut uses = BTreeSet::new();
        for file in files_of(src, module) {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = read(&file);
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            let is_top_file =
                file == src.join(format!("{module}.rs")) || file == src.join(module).join("mod.rs");
            for used in referenced(text, "crate::").chain(
                is_top_file
                    .then(|| referenced(text, "super::"))
                    .into_iter()
                    .flatten(),
            ) {
                let target = if modules.contains(&used) {
                    Some(used)
                } else {
                    reexports.get(&used).cloned()
                };
                if let Some(target) = target.filter(|t| t != module) {
                    uses.insert(target);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle of `graph` (its modules in order, the first repeated at the end), if any.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

/// The `src` folders of every crate of the workspace at `root`: `crates/*/src`,
/// `handlers/*/src` and `tests/src`.
pub fn workspace_sources(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in ["crates", "handlers"] {
        let Ok(entries) = std::fs::read_dir(root.join(group)) else {
            continue;
        };
        for entry in entries.flatten() {
            let src = entry.path().join("src");
            if src.is_dir() {
                out.push(src);
            }
        }
    }
    if root.join("tests/src").is_dir() {
        out.push(root.join("tests/src"));
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .flatten()
    {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && name != "bin" {
            out.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs")
            && !matches!(stem, "lib" | "main")
        {
            out.insert(stem.to_owned());
        }
    }
    out
}

fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        out.push(file);
    }
    walk(&src.join(module), &mut out);
    out
}

/// Identifiers that follow `prefix` in `text` (`crate::store::X` → `store`), including the
/// items of a braced list (`crate::{a, b::c}` → `a`, `b`). Comments are not skipped: a doc
/// link to another module counts as a use, which errs on the strict side.
fn referenced<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    text.match_indices(prefix).flat_map(move |(at, _)| {
        let before = text[..at].chars().next_back();
        let rest = &text[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return Vec::new();
        }
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            list[..end]
                .split(',')
                .filter_map(|item| ident(item.trim()))
                .collect()
        } else {
            ident(rest).into_iter().collect()
        }
    })
}

fn ident(s: &str) -> Option<String> {
    let name: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// `pub use m::Name;` / `pub use m::{A, B};` / `pub use m::sub::Name;` of the crate root:
/// re-exported name → the top-level module it comes from.
fn reexports(root: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let flat = root.replace('\n', " ");
    for stmt in flat.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some(module) = ident(path).filter(|m| modules.contains(m)) else {
            continue;
        };
        let names: Vec<String> = match (path.find('{'), path.rfind('}')) {
            (Some(open), Some(close)) => path[open + 1..close]
                .split(',')
                .filter_map(|n| ident(n.trim().rsplit("::").next().unwrap_or("")))
                .collect(),
            _ => path
                .rsplit("::")
                .next()
                .and_then(ident)
                .into_iter()
                .collect(),
        };
        for name in names {
            out.insert(name, module.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    #[test]
    fn a_cycle_through_crate_paths_and_root_reexports_is_found() {
        let dir = crate_with(&[
            ("lib.rs", "mod a;\nmod b;\npub use b::Thing;\n"),
            ("a.rs", "use crate::Thing;\n"),
            ("b/mod.rs", "mod inner;\n"),
            ("b/inner.rs", "use crate::a::helper;\n"),
        ]);
        let graph = graph(dir.path());
        assert_eq!(graph["a"], BTreeSet::from(["b".to_owned()]));
        assert_eq!(graph["b"], BTreeSet::from(["a".to_owned()]));
        let cycle = find_cycle(&graph).expect("a cycle");
        assert_eq!(cycle.first(), cycle.last());
    }

    #[test]
    fn layered_modules_have_no_cycle() {
        let dir = crate_with(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", "use crate::{b::X, c};\n"),
            ("b.rs", "use super::c::Y;\n"),
            ("c.rs", "use crate::c::Z; // itself\n"),
        ]);
        let graph = graph(dir.path());
        assert_eq!(graph["a"], BTreeSet::from(["b".to_owned(), "c".to_owned()]));
        assert_eq!(find_cycle(&graph), None);
    }

    #[test]
    fn no_crate_of_the_workspace_has_a_module_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let sources = workspace_sources(&root);
        assert!(sources.len() >= 8, "found only {sources:?}");
        let cycles: Vec<String> = sources
            .iter()
            .filter_map(|src| {
                let cycle = find_cycle(&graph(src))?;
                Some(format!("{}: {}", src.display(), cycle.join(" -> ")))
            })
            .collect();
        assert!(
            cycles.is_empty(),
            "modules form cycles:\n{}",
            cycles.join("\n")
        );
    }
}
