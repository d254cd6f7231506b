//! The Execution app's own settings (on top of the shared `Config`).
//!
//! Every one, with its default and meaning, is in [`SETTINGS`].

use std::time::Duration;

use flowgrid_domain::Result;
use flowgrid_domain::config::{Setting, setting_error};
use flowgrid_providers::llm::settings::AiSettings;
use flowgrid_providers::outbound::OutboundPolicy;

/// The model providers' settings, which the app reads too (`llm` steps):
/// [`flowgrid_providers::llm::settings::SETTINGS`].
pub use flowgrid_providers::llm::settings::SETTINGS as AI_SETTINGS;

/// The Execution app's own settings: what [`Settings::from_env`] reads (with [`AI_SETTINGS`]).
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "FLOWGRID_TENANT_MAX_RUNNING",
        default: "4",
        meaning: "jobs one tenant may have running at once; more wait queued",
    },
    Setting {
        name: "FLOWGRID_TENANT_MAX_QUEUED",
        default: "1000",
        meaning: "queued jobs one tenant may have; beyond it a submit gets 429",
    },
    Setting {
        name: "FLOWGRID_OUTBOUND_ALLOWLIST",
        default: "(empty)",
        meaning: "comma-separated `host[:port]` that `http` steps may reach over plain http or on private addresses (local development, tests)",
    },
    Setting {
        name: "FLOWGRID_JOB_LEASE_SECS",
        default: "8",
        meaning: "how long a worker's claim on a job lasts without renewal (renewed every step and every third of it during a step); a job whose worker died is taken over by the reaper (every 5 s) once it ends",
    },
    Setting {
        name: "FLOWGRID_JOB_MAX_CLAIMS",
        default: "5",
        meaning: "claims of one job (first run + takeovers after a lost lease) before the reaper fails it",
    },
    Setting {
        name: "FLOWGRID_STEP_OUTPUT_MAX_BYTES",
        default: "65536",
        meaning: "largest step output kept in the job record (larger: `null` and `outputTruncated`)",
    },
    Setting {
        name: "FLOWGRID_JOB_RECORD_MAX_BYTES",
        default: "1572864",
        meaning: "largest job record (input, step records and outputs); a step output that would make it larger is kept as `null` with `outputTruncated` (Cosmos items hold at most 2 MB)",
    },
    Setting {
        name: "FLOWGRID_RUN_INPUT_MAX_BYTES",
        default: "262144",
        meaning: "largest run input (as JSON) a submit or trigger may give a job; larger: 422 naming the setting",
    },
    Setting {
        name: "FLOWGRID_TEMPLATE_MAX_BYTES",
        default: "1048576",
        meaning: "largest value one template or expression of a step may yield (a step's whole rendered output counts); evaluation also stops once it has built four times this (docs/agents.md, Limits)",
    },
    Setting {
        name: "FLOWGRID_AI_PROVIDERS",
        default: "offline",
        meaning: "comma-separated model providers this deployment offers (of offline, openai, openai-chat, azure-openai, anthropic), as the Agents app reads it: an `llm` step of an agent saved before its provider was withdrawn fails naming the setting, and nothing is sent",
    },
    Setting {
        name: "FLOWGRID_HTTP_RESPONSE_MAX_BYTES",
        default: "10485760",
        meaning: "most of a response body an `http` step reads (1 KiB-10 MiB), whatever its `maxResponseBytes` says; a larger body fails the step naming the limit that applied",
    },
];

/// The Execution app's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FLOWGRID_TENANT_MAX_RUNNING`.
    pub tenant_max_running: u64,
    /// `FLOWGRID_TENANT_MAX_QUEUED`.
    pub tenant_max_queued: u64,
    /// `FLOWGRID_OUTBOUND_ALLOWLIST`.
    pub outbound: OutboundPolicy,
    /// `FLOWGRID_JOB_LEASE_SECS`.
    pub lease: Duration,
    /// `FLOWGRID_JOB_MAX_CLAIMS`.
    pub max_claims: u32,
    /// `FLOWGRID_STEP_OUTPUT_MAX_BYTES`.
    pub step_output_max_bytes: usize,
    /// `FLOWGRID_TEMPLATE_MAX_BYTES`.
    pub template_max_bytes: usize,
    /// `FLOWGRID_RUN_INPUT_MAX_BYTES`.
    pub run_input_max_bytes: usize,
    /// `FLOWGRID_JOB_RECORD_MAX_BYTES`.
    pub job_record_max_bytes: usize,
    /// `FLOWGRID_HTTP_RESPONSE_MAX_BYTES`.
    pub http_response_max_bytes: u64,
    /// `FLOWGRID_AI_PROVIDERS`.
    pub offered: flowgrid_domain::agent::OfferedProviders,
    /// How often a running step checks for a cancel (and renews the lease when due).
    pub cancel_poll: Duration,
    /// The model providers of `llm` steps.
    pub ai: AiSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tenant_max_running: 4,
            tenant_max_queued: 1000,
            outbound: OutboundPolicy::default(),
            lease: Duration::from_secs(8),
            max_claims: 5,
            step_output_max_bytes: 64 * 1024,
            template_max_bytes: flowgrid_domain::plan::template::DEFAULT_MAX_BYTES,
            run_input_max_bytes: 256 * 1024,
            job_record_max_bytes: 1536 * 1024,
            http_response_max_bytes: flowgrid_domain::plan::limits::MAX_RESPONSE_BYTES,
            offered: flowgrid_domain::agent::OfferedProviders::default(),
            cancel_poll: Duration::from_millis(250),
            ai: AiSettings::default(),
        }
    }
}

fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    ok: impl Fn(&T) -> bool,
) -> Result<T> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| ok(n))
            .ok_or_else(|| setting_error(name, &format!("{v:?} is not a valid number here"))),
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
        Ok(Settings {
            tenant_max_running: number(
                &get,
                "FLOWGRID_TENANT_MAX_RUNNING",
                d.tenant_max_running,
                |n| *n >= 1,
            )?,
            tenant_max_queued: number(
                &get,
                "FLOWGRID_TENANT_MAX_QUEUED",
                d.tenant_max_queued,
                |n| *n >= 1,
            )?,
            outbound: OutboundPolicy::parse(
                &get("FLOWGRID_OUTBOUND_ALLOWLIST").unwrap_or_default(),
            )?,
            lease: Duration::from_secs(number(
                &get,
                "FLOWGRID_JOB_LEASE_SECS",
                d.lease.as_secs(),
                |n| (5..=600).contains(n),
            )?),
            max_claims: number(&get, "FLOWGRID_JOB_MAX_CLAIMS", d.max_claims, |n| {
                (1..=100).contains(n)
            })?,
            step_output_max_bytes: number(
                &get,
                "FLOWGRID_STEP_OUTPUT_MAX_BYTES",
                d.step_output_max_bytes,
                |n| (1024..=1024 * 1024).contains(n),
            )?,
            template_max_bytes: number(
                &get,
                "FLOWGRID_TEMPLATE_MAX_BYTES",
                d.template_max_bytes,
                |n| (1024..=16 * 1024 * 1024).contains(n),
            )?,
            run_input_max_bytes: number(
                &get,
                "FLOWGRID_RUN_INPUT_MAX_BYTES",
                d.run_input_max_bytes,
                |n| (1024..=1024 * 1024).contains(n),
            )?,
            job_record_max_bytes: number(
                &get,
                "FLOWGRID_JOB_RECORD_MAX_BYTES",
                d.job_record_max_bytes,
                |n| (64 * 1024..=2_000_000).contains(n),
            )?,
            http_response_max_bytes: number(
                &get,
                "FLOWGRID_HTTP_RESPONSE_MAX_BYTES",
                d.http_response_max_bytes,
                |n| (1024..=flowgrid_domain::plan::limits::MAX_RESPONSE_BYTES).contains(n),
            )?,
            offered: flowgrid_domain::agent::OfferedProviders::from_lookup(&get)?,
            cancel_poll: d.cancel_poll,
            ai: AiSettings::from_lookup(&get)?,
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
        .expect("the defaults");
        let mut listed: BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(listed.len(), SETTINGS.len(), "a setting is listed twice");
        listed.extend(AI_SETTINGS.iter().map(|s| s.name.to_owned()));
        // The managed identity's client id, a shared setting (flowgrid_domain::config).
        listed.insert("AZURE_CLIENT_ID".into());
        assert_eq!(
            asked.into_inner(),
            listed,
            "SETTINGS must list exactly what Settings::from_lookup reads"
        );
    }
}
