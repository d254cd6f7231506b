//! Loading and validating what the host serves: `host.json`, the app settings
//! (`local.settings.json`, else `local.settings.example.json`), and every
//! `functions/<app>/<Function>/function.json`. Every error names the file and the field.

pub mod check;
mod files;
mod function_json;
mod host_json;
pub mod scaling;
mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use files::{app_dirs, file_name, function_dirs, read_json};

pub use crate::timespan::parse_timespan;
pub use function_json::{FunctionDef, OutputBinding, OutputKind, Trigger, check_schedule};
pub use host_json::HostJson;
pub use settings::expand;

/// Everything loaded from an app root.
#[derive(Debug, Clone)]
pub struct Config {
    /// The folder holding `host.json` and `functions/`.
    pub root: PathBuf,
    /// `host.json`.
    pub host: HostJson,
    /// App settings (`Values` of local.settings.json), given to every handler as environment.
    pub settings: BTreeMap<String, String>,
    /// Which settings file was read (for the start-up banner).
    pub settings_source: String,
    /// Setting names the function.json files use (`%NAME%`, `connection`).
    pub referenced_settings: std::collections::BTreeSet<String>,
    /// The apps, sorted by name.
    pub apps: Vec<AppDef>,
}

/// One app: a folder under `functions/`, served by one handler binary.
#[derive(Debug, Clone)]
pub struct AppDef {
    /// Folder name under `functions/` (= the `<app>` of `flowgrid-<app>`).
    pub name: String,
    /// Its functions, sorted by name.
    pub functions: Vec<FunctionDef>,
}

impl Config {
    /// Loads and validates everything under `root`. `notice` receives one-line notices.
    pub fn load(root: &Path, notice: &mut dyn FnMut(String)) -> Result<Self> {
        let host_path = root.join("host.json");
        let host_value = read_json(&host_path)?;
        let host =
            HostJson::parse(&host_value).with_context(|| format!("{}", host_path.display()))?;

        let (settings, settings_source) = settings::load_settings(root, notice)?;
        let mut apps = Vec::new();
        let mut referenced_settings = std::collections::BTreeSet::new();
        for app_dir in app_dirs(&root.join("functions"))? {
            let functions =
                load_functions(root, &app_dir, &host, &settings, &mut referenced_settings)?;
            if !functions.is_empty() {
                apps.push(AppDef {
                    name: file_name(&app_dir),
                    functions,
                });
            }
        }
        let config = Config {
            root: root.to_owned(),
            host,
            settings,
            settings_source,
            referenced_settings,
            apps,
        };
        config.check_routes()?;
        Ok(config)
    }

    /// Two functions (in any apps) claiming the same route shape with overlapping methods.
    fn check_routes(&self) -> Result<()> {
        let mut seen: Vec<(String, Option<Vec<String>>, String)> = Vec::new();
        for app in &self.apps {
            for f in &app.functions {
                if let Trigger::Http { methods, route, .. } = &f.trigger {
                    let shape = route.shape();
                    for (other_shape, other_methods, who) in &seen {
                        let overlap = match (methods, other_methods) {
                            (None, _) | (_, None) => true,
                            (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
                        };
                        if *other_shape == shape && overlap {
                            bail!(
                                "functions/{}/{}/function.json: bindings[httpTrigger].route: route {:?} is already claimed by {who}",
                                app.name,
                                f.name,
                                route.to_string()
                            );
                        }
                    }
                    seen.push((
                        shape,
                        methods.clone(),
                        format!("functions/{}/{}", app.name, f.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The keys of `local.settings.example.json` under `root` (every documented setting).
    pub fn example_keys(root: &Path) -> Vec<String> {
        read_json(&root.join("local.settings.example.json"))
            .ok()
            .and_then(|v| v.get("Values").and_then(Value::as_object).cloned())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Looks a setting up in the app settings, then the process environment.
    pub fn setting(&self, name: &str) -> Option<String> {
        settings::setting(&self.settings, name)
    }
}

/// The enabled functions of one app folder (only those `host.json`'s `functions` names, when
/// it names some).
fn load_functions(
    root: &Path,
    app_dir: &Path,
    host: &HostJson,
    settings: &BTreeMap<String, String>,
    referenced: &mut std::collections::BTreeSet<String>,
) -> Result<Vec<FunctionDef>> {
    let mut functions = Vec::new();
    for dir in function_dirs(app_dir)? {
        let name = file_name(&dir);
        if let Some(filter) = &host.functions_filter
            && !filter.iter().any(|f| f.eq_ignore_ascii_case(&name))
        {
            continue;
        }
        let path = dir.join("function.json");
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let value = read_json(&path)?;
        collect_references(&value, referenced);
        if value.get("disabled").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let f =
            FunctionDef::parse(&name, &value, host, settings).map_err(|e| anyhow!("{rel}: {e}"))?;
        functions.push(f);
    }
    Ok(functions)
}

/// The setting names a function.json uses: `connection` values and `%NAME%` references.
fn collect_references(value: &Value, into: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj {
                if k == "connection"
                    && let Some(name) = v.as_str()
                {
                    into.insert(name.to_owned());
                }
                collect_references(v, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, into)),
        Value::String(s) => {
            let parts: Vec<&str> = s.split('%').collect();
            for (i, part) in parts.iter().enumerate() {
                if i % 2 == 1 && i + 1 < parts.len() && !part.is_empty() {
                    into.insert((*part).to_owned());
                }
            }
        }
        _ => {}
    }
}
