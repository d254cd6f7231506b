//! The Design app's own settings (on top of the shared `Config`), and the model providers'.

use flowgrid_domain::Result;
use flowgrid_domain::agent::OfferedProviders;
use flowgrid_domain::config::{Setting, setting_error};
use flowgrid_providers::llm::settings::AiSettings;

/// The model providers' settings, which the app reads too.
pub use flowgrid_providers::llm::settings::SETTINGS as AI_SETTINGS;

/// The Design app's own settings: what [`Settings::from_lookup`] reads (with [`AI_SETTINGS`]).
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "FLOWGRID_DESIGN_MAX_IMAGE_BYTES",
        default: "700000",
        meaning: "largest image `analyze-image` accepts, in bytes (1024-750000; the request body limit is 1 MiB, and base64 in JSON adds a third)",
    },
    Setting {
        name: "FLOWGRID_DESIGN_MODEL_CAPABILITIES",
        default: "{}",
        meaning: "what each model or deployment supports, as configured: JSON `{\"<provider>/<model>\": {\"vision\": bool, \"tools\": bool, \"jsonSchema\": bool, \"contextTokens\": n}}`; `analyze-model` reports it and confirms vision and JSON Schema output by a probe call",
    },
    Setting {
        name: "FLOWGRID_DESIGN_PROBE_TTL_SECS",
        default: "3600",
        meaning: "how long `analyze-model` keeps a probe's verdict per provider, model and endpoint before probing again (0-604800; 0: probe every time)",
    },
    flowgrid_domain::agent::PROVIDERS_SETTING,
    Setting {
        name: "FLOWGRID_OUTBOUND_ALLOWLIST",
        default: "(empty)",
        meaning: "comma-separated `host[:port]` that agents' own model base URLs may reach over plain http or on private addresses (local development, tests)",
    },
];

/// The Design app's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FLOWGRID_DESIGN_MAX_IMAGE_BYTES`.
    pub max_image_bytes: usize,
    /// `FLOWGRID_DESIGN_MODEL_CAPABILITIES`, parsed.
    pub capabilities: serde_json::Map<String, serde_json::Value>,
    /// `FLOWGRID_DESIGN_PROBE_TTL_SECS`.
    pub probe_ttl: std::time::Duration,
    /// `FLOWGRID_OUTBOUND_ALLOWLIST`.
    pub outbound_allowlist: String,
    /// The providers.
    pub ai: AiSettings,
    /// `FLOWGRID_AI_PROVIDERS`: the providers this deployment offers (a draft naming another
    /// is reported with the Agents app's problem).
    pub providers: OfferedProviders,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_image_bytes: 700_000,
            capabilities: serde_json::Map::new(),
            probe_ttl: std::time::Duration::from_secs(3600),
            outbound_allowlist: String::new(),
            ai: AiSettings::default(),
            providers: OfferedProviders::default(),
        }
    }
}

impl Settings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Settings> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let d = Settings::default();
        let max_image_bytes =
            match get("FLOWGRID_DESIGN_MAX_IMAGE_BYTES").filter(|v| !v.trim().is_empty()) {
                None => d.max_image_bytes,
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1024..=750_000).contains(n))
                    .ok_or_else(|| {
                        setting_error(
                            "FLOWGRID_DESIGN_MAX_IMAGE_BYTES",
                            &format!("{v:?} is not a number in 1024..=750000"),
                        )
                    })?,
            };
        let capabilities =
            match get("FLOWGRID_DESIGN_MODEL_CAPABILITIES").filter(|v| !v.trim().is_empty()) {
                None => d.capabilities,
                Some(v) => match serde_json::from_str::<serde_json::Value>(&v) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => {
                        return Err(setting_error(
                            "FLOWGRID_DESIGN_MODEL_CAPABILITIES",
                            "is not a JSON object",
                        ));
                    }
                },
            };
        let probe_ttl = match get("FLOWGRID_DESIGN_PROBE_TTL_SECS").filter(|v| !v.trim().is_empty())
        {
            None => d.probe_ttl,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 604_800)
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| {
                    setting_error(
                        "FLOWGRID_DESIGN_PROBE_TTL_SECS",
                        &format!("{v:?} is not a number in 0..=604800"),
                    )
                })?,
        };
        Ok(Settings {
            max_image_bytes,
            capabilities,
            probe_ttl,
            outbound_allowlist: get("FLOWGRID_OUTBOUND_ALLOWLIST").unwrap_or_default(),
            ai: AiSettings::from_lookup(&get)?,
            providers: OfferedProviders::from_lookup(&get)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn settings_lists_exactly_what_from_lookup_reads() {
        let asked = RefCell::new(BTreeSet::new());
        Settings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .unwrap();
        let mut listed: BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_owned()).collect();
        listed.extend(AI_SETTINGS.iter().map(|s| s.name.to_owned()));
        listed.insert("AZURE_CLIENT_ID".into());
        assert_eq!(asked.into_inner(), listed);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e =
            Settings::from_lookup(|n| (n == "FLOWGRID_DESIGN_MAX_IMAGE_BYTES").then(|| "9".into()))
                .unwrap_err();
        assert!(e.to_string().contains("FLOWGRID_DESIGN_MAX_IMAGE_BYTES"));
        let e = Settings::from_lookup(|n| {
            (n == "FLOWGRID_DESIGN_MODEL_CAPABILITIES").then(|| "[]".into())
        })
        .unwrap_err();
        assert!(e.to_string().contains("FLOWGRID_DESIGN_MODEL_CAPABILITIES"));
    }
}
