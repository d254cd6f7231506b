//! Finding and reading the files of an app root.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The app folders under `functions_dir`, sorted.
pub(super) fn app_dirs(functions_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(functions_dir).with_context(|| {
        format!(
            "{}: cannot read the functions folder",
            functions_dir.display()
        )
    })?;
    let mut app_dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    app_dirs.sort();
    Ok(app_dirs)
}

/// The function folders (those with a `function.json`) of an app folder, sorted.
pub(super) fn function_dirs(app_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut fn_dirs: Vec<PathBuf> = std::fs::read_dir(app_dir)
        .with_context(|| format!("{}: cannot read", app_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("function.json").is_file())
        .collect();
    fn_dirs.sort();
    Ok(fn_dirs)
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}
