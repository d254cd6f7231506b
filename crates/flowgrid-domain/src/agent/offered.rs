//! The model providers a deployment offers (`FLOWGRID_AI_PROVIDERS`): an agent whose model
//! provider is not among them is refused when saved, not at its first run.

use super::*;
use crate::config::{Setting, setting_error};

/// The setting naming the providers a deployment offers.
pub const PROVIDERS_SETTING: Setting = Setting {
    name: "FLOWGRID_AI_PROVIDERS",
    default: "offline",
    meaning: "comma-separated model providers this deployment offers (of offline, openai, openai-chat, azure-openai, anthropic); an agent whose `model.provider` is not listed is refused when created, replaced or restored. Widen it when the Execution app gets the provider's key",
};

/// The providers a deployment offers, in the order the setting lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedProviders(Vec<String>);

impl Default for OfferedProviders {
    fn default() -> Self {
        OfferedProviders(vec!["offline".to_owned()])
    }
}

impl OfferedProviders {
    /// Every provider Flowgrid knows.
    pub fn all() -> Self {
        OfferedProviders(PROVIDERS.iter().map(|p| (*p).to_owned()).collect())
    }

    /// Reads `FLOWGRID_AI_PROVIDERS` from the environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads `FLOWGRID_AI_PROVIDERS` through `get` (unset or empty: `offline`); a provider
    /// Flowgrid does not know is an error naming the setting.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let name = PROVIDERS_SETTING.name;
        let Some(value) = get(name).filter(|v| !v.trim().is_empty()) else {
            return Ok(Self::default());
        };
        let mut offered: Vec<String> = Vec::new();
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !PROVIDERS.contains(&p) {
                return Err(setting_error(
                    name,
                    &format!("{p:?} is not a provider (one of {})", PROVIDERS.join(", ")),
                ));
            }
            if !offered.iter().any(|o| o == p) {
                offered.push(p.to_owned());
            }
        }
        if offered.is_empty() {
            return Err(setting_error(name, "lists no provider"));
        }
        Ok(OfferedProviders(offered))
    }

    /// The providers offered.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The field error for a definition whose (known) provider is not offered.
    pub fn check(&self, d: &AgentDefinition) -> Option<FieldError> {
        let p = d.model.provider.as_str();
        (PROVIDERS.contains(&p) && !self.0.iter().any(|o| o == p)).then(|| {
            FieldError::new(
                "definition.model.provider",
                format!(
                    "{p} is not offered by this deployment ({} lists {})",
                    PROVIDERS_SETTING.name,
                    self.0.join(", ")
                ),
            )
        })
    }
}

impl AgentInput {
    /// [`AgentInput::validate`], and the provider among those `offered`: one 422 with every
    /// error.
    pub fn validate_offered(self, offered: &OfferedProviders) -> Result<ValidAgentInput> {
        let refused = offered.check(&self.definition);
        match (self.validate(), refused) {
            (Ok(valid), None) => Ok(valid),
            (Ok(_), Some(e)) => Err(Error::Validation(vec![e])),
            (Err(Error::Validation(mut errors)), Some(e)) => {
                if !errors.iter().any(|x| x.field == e.field) {
                    errors.push(e);
                }
                Err(Error::Validation(errors))
            }
            (Err(e), _) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(v: &'static str) -> impl Fn(&str) -> Option<String> {
        move |n| (n == "FLOWGRID_AI_PROVIDERS").then(|| v.to_owned())
    }

    #[test]
    fn the_setting_defaults_to_offline_and_refuses_unknown_providers() {
        assert_eq!(
            OfferedProviders::from_lookup(|_| None).unwrap().names(),
            ["offline"]
        );
        assert_eq!(
            OfferedProviders::from_lookup(lookup(" openai , anthropic,openai"))
                .unwrap()
                .names(),
            ["openai", "anthropic"]
        );
        let e = OfferedProviders::from_lookup(lookup("offline,acme"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FLOWGRID_AI_PROVIDERS") && e.contains("\"acme\""),
            "{e}"
        );
        assert!(OfferedProviders::from_lookup(lookup(" , ")).is_err());
    }

    #[test]
    fn a_provider_not_offered_is_one_more_field_error() {
        let input: AgentInput = serde_json::from_value(serde_json::json!({
            "name": "",
            "definition": {"instructions": "x", "model": {"provider": "anthropic", "model": "m"}}
        }))
        .unwrap();
        let Err(Error::Validation(errors)) =
            input.clone().validate_offered(&OfferedProviders::default())
        else {
            panic!("refused");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "definition.model.provider"]);
        assert!(
            errors[1]
                .message
                .contains("FLOWGRID_AI_PROVIDERS lists offline")
        );
        let Err(Error::Validation(errors)) = input.validate_offered(&OfferedProviders::all())
        else {
            panic!("refused");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
