//! The app settings: `Values` of `local.settings.json` (else `local.settings.example.json`),
//! looked up after the process environment, and `%NAME%` expansion.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

use super::files::read_json;

/// Looks a setting up in the process environment, then the app settings.
pub(super) fn setting(settings: &BTreeMap<String, String>, name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| settings.get(name).cloned())
}

/// The app settings and which file they came from.
pub(super) fn load_settings(
    root: &Path,
    notice: &mut dyn FnMut(String),
) -> Result<(BTreeMap<String, String>, String)> {
    let local = root.join("local.settings.json");
    let example = root.join("local.settings.example.json");
    let (path, source) = if local.is_file() {
        (local, "local.settings.json".to_owned())
    } else if example.is_file() {
        notice("local.settings.json not found: using the values of local.settings.example.json (copy it to local.settings.json to change them)".to_owned());
        (example, "local.settings.example.json".to_owned())
    } else {
        notice(
            "no local.settings.json or local.settings.example.json: app settings are empty"
                .to_owned(),
        );
        return Ok((BTreeMap::new(), "(none)".to_owned()));
    };
    let value = read_json(&path)?;
    check_top_level(&value, &source, notice)?;
    if value.get("IsEncrypted").and_then(Value::as_bool) == Some(true) {
        bail!(
            "{}: IsEncrypted: encrypted settings are not supported locally; set it to false",
            path.display()
        );
    }
    Ok((values(&value, &path)?, source))
}

/// The keys of the settings file itself: `Value` for `Values` stops (every setting would be
/// ignored); any other unknown key is a warning with the closest known one.
fn check_top_level(value: &Value, file: &str, notice: &mut dyn FnMut(String)) -> Result<()> {
    const KEYS: [&str; 4] = ["IsEncrypted", "Values", "Host", "ConnectionStrings"];
    let Some(obj) = value.as_object() else {
        bail!("{file}: must be a JSON object with \"Values\"");
    };
    if obj.contains_key("Value") && !obj.contains_key("Values") {
        bail!(
            "{file}: \"Value\" should be \"Values\" (the settings go in an object named \"Values\"; as written, none would be read)"
        );
    }
    let known: Vec<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
    for k in obj.keys().filter(|k| !KEYS.contains(&k.as_str())) {
        notice(match super::check::closest(k, &known) {
            Some(near) => {
                format!("{file}: {k:?} is not a key of a settings file; did you mean {near:?}?")
            }
            None => format!(
                "{file}: {k:?} is not a key of a settings file (IsEncrypted, Values, Host, ConnectionStrings); ignored"
            ),
        });
    }
    Ok(())
}

/// `Values`: strings, numbers and booleans (as their JSON text); nulls are skipped.
fn values(value: &Value, path: &Path) -> Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    if let Some(values) = value.get("Values") {
        let obj = values
            .as_object()
            .ok_or_else(|| anyhow!("{}: Values: must be an object", path.display()))?;
        for (k, v) in obj {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => bail!("{}: Values.{k}: must be a string", path.display()),
            };
            settings.insert(k.clone(), s);
        }
    }
    Ok(settings)
}

/// Expands `%NAME%` from the settings (then the environment). Unknown names are an error.
pub fn expand(s: &str, settings: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('%')
            .ok_or_else(|| format!("unterminated %...% in {s:?}"))?;
        let name = &after[..end];
        let value = setting(settings, name)
            .ok_or_else(|| format!("setting {name:?} (used as %{name}%) is not defined"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
