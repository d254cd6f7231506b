//! Checking the app settings before anything starts: a malformed value stops `flowgrid dev`
//! with one line per problem naming the setting and the app that reads it (instead of each
//! handler failing at start, being restarted, and failing again); a key nobody reads is a
//! warning naming the closest known setting.

use std::collections::{BTreeMap, BTreeSet};

use super::Config;

/// Checks one app's own settings, as its handler will read them (`get` looks a setting up).
pub type SettingsCheck = fn(&dyn Fn(&str) -> Option<String>) -> Result<(), String>;

/// What the host knows of one app's own settings (on top of the shared ones every app reads).
#[derive(Clone)]
pub struct AppSettings {
    /// The names it reads.
    pub names: Vec<&'static str>,
    /// Reads them as the app does.
    pub check: SettingsCheck,
}

impl std::fmt::Debug for AppSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSettings")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Settings the host itself reads.
pub const HOST_SETTINGS: &[&str] = &[
    "FLOWGRID_RATE_LIMIT_RPS",
    "FLOWGRID_RATE_LIMIT_BURST",
    "FLOWGRID_BODY_LIMIT_BYTES",
    "FLOWGRID_SB_LOCK_DURATION_SECS",
    "FLOWGRID_SB_MAX_DELIVERY_COUNT",
    "FLOWGRID_SB_DUPLICATE_DETECTION_WINDOW_SECS",
];

/// Settings of the Functions runtime (never unknown).
const RUNTIME_SETTINGS: &[&str] = &[
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "AzureWebJobsStorage",
    "AzureWebJobsScriptRoot",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
];

/// Every problem with a setting's value, one line each: `setting X: problem (read by app a)`.
/// `get` looks a setting up as the handlers see it (environment, then the settings file).
pub fn malformed(
    config: &Config,
    app_settings: &BTreeMap<String, AppSettings>,
    get: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let apps: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    if let Err(e) = flowgrid_domain::config::Config::from_lookup(get) {
        problems.push(format!(
            "{} (read by every app: {})",
            describe(&e.to_string()),
            apps.join(", ")
        ));
    }
    for app in &apps {
        if let Some(rules) = app_settings.get(*app) {
            problems.extend(app_problems(app, rules, get));
        }
    }
    problems
}

/// One line per malformed setting of `app`. An app's reader stops at the first malformed
/// setting, so each of its settings is also read on its own (the others at their defaults) to
/// name every malformed one; the error as read in full when none fails alone (settings that
/// only fail together).
fn app_problems(
    app: &str,
    rules: &AppSettings,
    get: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let Err(first) = (rules.check)(get) else {
        return Vec::new();
    };
    let mut each: Vec<String> = Vec::new();
    for name in rules.names.iter().filter(|n| get(n).is_some()) {
        let only = |n: &str| if n == *name { get(n) } else { None };
        if let Err(e) = (rules.check)(&only)
            && e.contains(name)
            && !each.contains(&e)
        {
            each.push(e);
        }
    }
    if each.is_empty() {
        each.push(first);
    }
    each.iter()
        .map(|e| format!("{} (read by app {app})", describe(e)))
        .collect()
}

/// `configuration error: setting X: ...` without the error kind's prefix.
fn describe(e: &str) -> String {
    match e.find("setting ") {
        Some(i) => e[i..].to_owned(),
        None => e.to_owned(),
    }
}

/// Warnings for keys of `Values` that no app, the host nor the runtime reads. `example` is the
/// example settings file's keys (every documented setting), `referenced` the names the
/// function.json files use (`%NAME%`, `connection`).
pub fn unknown_keys(file: &str, keys: &BTreeSet<String>, known: &BTreeSet<String>) -> Vec<String> {
    keys.iter()
        .filter(|k| !known.contains(*k) && !runtime_prefix(k))
        .map(|k| match closest(k, known) {
            Some(near) => {
                format!("{file}: Values.{k} is not a setting any app reads; did you mean {near}?")
            }
            None => format!("{file}: Values.{k} is not a setting any app reads (passed on as is)"),
        })
        .collect()
}

fn runtime_prefix(k: &str) -> bool {
    ["AzureWebJobs", "FUNCTIONS_", "WEBSITE_", "AZURE_FUNCTIONS_"]
        .iter()
        .any(|p| k.starts_with(p))
}

/// Every name known: shared, host, runtime, the apps' own, plus `extra`.
pub fn known_names(
    app_settings: &BTreeMap<String, AppSettings>,
    extra: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = flowgrid_domain::config::SETTINGS
        .iter()
        .map(|s| s.name.to_owned())
        .collect();
    known.extend(HOST_SETTINGS.iter().map(|s| (*s).to_owned()));
    known.extend(super::scaling::SETTINGS.iter().map(|s| (*s).to_owned()));
    known.extend(RUNTIME_SETTINGS.iter().map(|s| (*s).to_owned()));
    for rules in app_settings.values() {
        known.extend(rules.names.iter().map(|s| (*s).to_owned()));
    }
    known.extend(extra);
    known
}

/// The known name closest to `name` (edit distance, case-insensitive), when it is close enough
/// to be a misspelling.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a String>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_malformed_setting_of_an_app_is_named_not_only_the_first_it_reads() {
        fn number(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<u32, String> {
            get(name).map_or(Ok(1), |v| {
                v.parse().map_err(|_| {
                    format!("configuration error: setting {name}: {v:?} is not a number")
                })
            })
        }
        let rules = AppSettings {
            names: vec!["A_ONE", "A_TWO", "A_THREE"],
            // Stops at the first, as the apps' readers do.
            check: |get| {
                number(get, "A_ONE")?;
                number(get, "A_TWO")?;
                number(get, "A_THREE").map(drop)
            },
        };
        let values = BTreeMap::from([("A_ONE", "x"), ("A_TWO", "2"), ("A_THREE", "y")]);
        let get = |n: &str| values.get(n).map(|v| (*v).to_owned());
        let own = app_problems("design", &rules, &get);
        assert_eq!(own.len(), 2, "{own:?}");
        assert!(own[0].starts_with("setting A_ONE") && own[1].starts_with("setting A_THREE"));
    }

    #[test]
    fn the_closest_name_is_a_likely_misspelling_only() {
        let known: BTreeSet<String> = ["FLOWGRID_RATE_LIMIT_RPS", "FLOWGRID_STORE"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(
            closest("FLOWGRID_RATE_LIMT_RPS", &known),
            Some("FLOWGRID_RATE_LIMIT_RPS")
        );
        assert_eq!(closest("flowgrid_store", &known), Some("FLOWGRID_STORE"));
        assert_eq!(closest("SOMETHING_ELSE_ENTIRELY", &known), None);
    }
}
