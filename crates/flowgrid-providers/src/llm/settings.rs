//! The AI settings of a deployment: where each provider is, its key, and the call limits.
//! Keys come from settings only (Key Vault references in Azure), never from an agent's
//! definition, and never appear in logs, errors or previews.

use std::time::Duration;

use flowgrid_domain::Result;
use flowgrid_domain::config::{Setting, setting_error};

/// Every setting [`AiSettings::from_lookup`] reads.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "FLOWGRID_AI_OPENAI_BASE_URL",
        default: "https://api.openai.com/v1",
        meaning: "OpenAI's API base URL (providers `openai`, Responses API, and `openai-chat`, Chat Completions)",
    },
    Setting {
        name: "FLOWGRID_AI_OPENAI_API_KEY",
        default: "(unset: OpenAI not available)",
        meaning: "OpenAI API key (a Key Vault reference in Azure)",
    },
    Setting {
        name: "FLOWGRID_AI_AZURE_OPENAI_ENDPOINT",
        default: "(unset: Azure OpenAI not available)",
        meaning: "Azure OpenAI resource endpoint, `https://<resource>.openai.azure.com`",
    },
    Setting {
        name: "FLOWGRID_AI_AZURE_OPENAI_API_VERSION",
        default: "v1",
        meaning: "`v1`: the `/openai/v1` endpoint (Responses API, the deployment as `model`); a dated version such as `2024-10-21`: the deployment URL `/openai/deployments/{deployment}/chat/completions?api-version=...`",
    },
    Setting {
        name: "FLOWGRID_AI_AZURE_OPENAI_API_KEY",
        default: "(unset: an Entra token of the managed identity)",
        meaning: "Azure OpenAI `api-key` (a Key Vault reference in Azure); unset: the Function App's managed identity (`AZURE_CLIENT_ID` for a user-assigned one)",
    },
    Setting {
        name: "FLOWGRID_AI_AZURE_OPENAI_DEPLOYMENT",
        default: "(unset)",
        meaning: "the deployment used when an agent names none (its `model` is `default`)",
    },
    Setting {
        name: "FLOWGRID_AI_ANTHROPIC_BASE_URL",
        default: "https://api.anthropic.com",
        meaning: "Anthropic's API base URL (Messages API at `/v1/messages`)",
    },
    Setting {
        name: "FLOWGRID_AI_ANTHROPIC_API_KEY",
        default: "(unset: Anthropic not available)",
        meaning: "Anthropic API key (a Key Vault reference in Azure)",
    },
    Setting {
        name: "FLOWGRID_AI_ANTHROPIC_VERSION",
        default: "2023-06-01",
        meaning: "the `anthropic-version` header",
    },
    Setting {
        name: "FLOWGRID_AI_CALL_TIMEOUT_SECS",
        default: "60",
        meaning: "longest wait for one attempt of a model call (1-600)",
    },
    Setting {
        name: "FLOWGRID_AI_RETRY_DEADLINE_SECS",
        default: "90",
        meaning: "longest time a model call may take with its retries (1-900); a retry that would end after it is not made",
    },
    Setting {
        name: "FLOWGRID_AI_MAX_ATTEMPTS",
        default: "4",
        meaning: "attempts of one model call (1-10) for 429, 5xx and Anthropic's 529",
    },
];

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How Azure OpenAI is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// The `api-key` header.
    ApiKey(Secret),
    /// A bearer token of the managed identity (user-assigned when a client id is given).
    ManagedIdentity {
        /// `AZURE_CLIENT_ID`.
        client_id: Option<String>,
    },
}

/// Azure OpenAI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    /// The resource endpoint, without a trailing slash.
    pub endpoint: String,
    /// `v1` or a dated `api-version`.
    pub api_version: String,
    /// How requests are authenticated.
    pub auth: AzureAuth,
    /// The deployment for agents that name none.
    pub default_deployment: Option<String>,
}

/// The AI settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiSettings {
    /// OpenAI's base URL (no trailing slash).
    pub openai_base_url: String,
    /// OpenAI's key.
    pub openai_key: Option<Secret>,
    /// Azure OpenAI, when configured.
    pub azure: Option<AzureSettings>,
    /// Anthropic's base URL (no trailing slash).
    pub anthropic_base_url: String,
    /// Anthropic's key.
    pub anthropic_key: Option<Secret>,
    /// The `anthropic-version` header.
    pub anthropic_version: String,
    /// Per-attempt timeout.
    pub call_timeout: Duration,
    /// Deadline of a call with its retries.
    pub retry_deadline: Duration,
    /// Attempts per call.
    pub max_attempts: u32,
}

impl Default for AiSettings {
    fn default() -> Self {
        AiSettings {
            openai_base_url: "https://api.openai.com/v1".into(),
            openai_key: None,
            azure: None,
            anthropic_base_url: "https://api.anthropic.com".into(),
            anthropic_key: None,
            anthropic_version: "2023-06-01".into(),
            call_timeout: Duration::from_secs(60),
            retry_deadline: Duration::from_secs(90),
            max_attempts: 4,
        }
    }
}

fn url_setting(get: &impl Fn(&str) -> Option<String>, name: &str, default: &str) -> Result<String> {
    let value = get(name)
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    let parsed = url::Url::parse(value.trim())
        .map_err(|e| setting_error(name, &format!("{value:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(setting_error(name, "must be an http(s) URL"));
    }
    Ok(value.trim().trim_end_matches('/').to_owned())
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                setting_error(
                    name,
                    &format!(
                        "{v:?} is not a number in {}..={}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

impl AiSettings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<AiSettings> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<AiSettings> {
        // A Key Vault reference the platform could not resolve (the secret is not set) stays
        // in the setting as written: that is no key.
        let secret = |name: &str| {
            get(name)
                .filter(|v| !v.trim().is_empty() && !v.trim().starts_with("@Microsoft.KeyVault("))
                .map(|v| Secret::new(v.trim()))
        };
        let azure_endpoint =
            get("FLOWGRID_AI_AZURE_OPENAI_ENDPOINT").filter(|v| !v.trim().is_empty());
        let api_version = get("FLOWGRID_AI_AZURE_OPENAI_API_VERSION")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "v1".into());
        let azure_key = secret("FLOWGRID_AI_AZURE_OPENAI_API_KEY");
        let client_id = get("AZURE_CLIENT_ID").filter(|v| !v.trim().is_empty());
        let deployment =
            get("FLOWGRID_AI_AZURE_OPENAI_DEPLOYMENT").filter(|v| !v.trim().is_empty());
        let azure = match azure_endpoint {
            None => None,
            Some(_) => Some(AzureSettings {
                endpoint: url_setting(&get, "FLOWGRID_AI_AZURE_OPENAI_ENDPOINT", "")?,
                api_version: api_version.trim().to_owned(),
                auth: match azure_key {
                    Some(key) => AzureAuth::ApiKey(key),
                    None => AzureAuth::ManagedIdentity { client_id },
                },
                default_deployment: deployment,
            }),
        };
        let d = AiSettings::default();
        Ok(AiSettings {
            openai_base_url: url_setting(&get, "FLOWGRID_AI_OPENAI_BASE_URL", &d.openai_base_url)?,
            openai_key: secret("FLOWGRID_AI_OPENAI_API_KEY"),
            azure,
            anthropic_base_url: url_setting(
                &get,
                "FLOWGRID_AI_ANTHROPIC_BASE_URL",
                &d.anthropic_base_url,
            )?,
            anthropic_key: secret("FLOWGRID_AI_ANTHROPIC_API_KEY"),
            anthropic_version: get("FLOWGRID_AI_ANTHROPIC_VERSION")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or(d.anthropic_version),
            call_timeout: Duration::from_secs(number(
                &get,
                "FLOWGRID_AI_CALL_TIMEOUT_SECS",
                60,
                1..=600,
            )?),
            retry_deadline: Duration::from_secs(number(
                &get,
                "FLOWGRID_AI_RETRY_DEADLINE_SECS",
                90,
                1..=900,
            )?),
            max_attempts: number(&get, "FLOWGRID_AI_MAX_ATTEMPTS", 4, 1..=10)? as u32,
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
        AiSettings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .unwrap();
        let mut listed: BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_owned()).collect();
        // Shared with the storage settings (the managed identity's client id).
        listed.insert("AZURE_CLIENT_ID".into());
        assert_eq!(asked.into_inner(), listed);
    }

    #[test]
    fn an_unresolved_key_vault_reference_is_no_key() {
        let s = AiSettings::from_lookup(|name| {
            (name == "FLOWGRID_AI_OPENAI_API_KEY")
                .then(|| "@Microsoft.KeyVault(VaultName=v;SecretName=openai-api-key)".to_owned())
        })
        .unwrap();
        assert!(s.openai_key.is_none());
    }

    #[test]
    fn keys_never_print() {
        let s = AiSettings::from_lookup(|name| {
            (name == "FLOWGRID_AI_OPENAI_API_KEY").then(|| "sk-very-secret".to_owned())
        })
        .unwrap();
        assert!(!format!("{s:?}").contains("sk-very-secret"));
        assert_eq!(s.openai_key.unwrap().expose(), "sk-very-secret");
    }

    #[test]
    fn azure_without_a_key_uses_the_managed_identity_and_bad_numbers_are_named() {
        let s = AiSettings::from_lookup(|name| {
            (name == "FLOWGRID_AI_AZURE_OPENAI_ENDPOINT")
                .then(|| "https://r.openai.azure.com/".to_owned())
        })
        .unwrap();
        let azure = s.azure.unwrap();
        assert_eq!(azure.endpoint, "https://r.openai.azure.com");
        assert_eq!(azure.auth, AzureAuth::ManagedIdentity { client_id: None });
        let err = AiSettings::from_lookup(|name| {
            (name == "FLOWGRID_AI_MAX_ATTEMPTS").then(|| "0".to_owned())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("FLOWGRID_AI_MAX_ATTEMPTS"),
            "{err}"
        );
    }
}
