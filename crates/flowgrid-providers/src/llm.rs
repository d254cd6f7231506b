//! The model provider layer: one trait every caller of a model uses (Execution's `llm` steps,
//! Design's analysis and generation), and the offline provider, the default, which needs no
//! network. OpenAI, Azure OpenAI and Anthropic come behind the same trait.

use flowgrid_domain::agent::ModelSettings;
use flowgrid_domain::store::jobs::Tokens;

use crate::CallError;

/// A model call.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// Provider and model.
    pub model: ModelSettings,
    /// Rendered system prompt.
    pub system: String,
    /// Rendered prompt.
    pub prompt: String,
    /// Upper bound of generated tokens.
    pub max_tokens: Option<u32>,
    /// Sent as the provider's idempotency key where it has one (`{jobId}:{stepId}` for a step).
    pub idempotency_key: String,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmAnswer {
    /// Generated text.
    pub text: String,
    /// Tokens used.
    pub tokens: Tokens,
}

/// A model provider.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync {
    /// Completes `request`.
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, CallError>;
}

/// The offline provider: deterministic, no network. It answers a short summary of the prompt
/// (its first words) and counts tokens as whitespace-separated words. It serves the model
/// settings whose provider is `offline` and refuses the others.
#[derive(Debug, Clone, Default)]
pub struct OfflineProvider;

#[async_trait::async_trait]
impl LlmProvider for OfflineProvider {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, CallError> {
        if request.model.provider != "offline" {
            return Err(CallError::permanent(format!(
                "model provider {:?} is not available in this deployment; use \"offline\"",
                request.model.provider
            )));
        }
        let words: Vec<&str> = request.prompt.split_whitespace().collect();
        let limit = request.max_tokens.map_or(24, |m| (m as usize).clamp(1, 24));
        let summary = words
            .iter()
            .take(limit)
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let text = format!("Summary: {summary}");
        let input = (request.system.split_whitespace().count() + words.len()) as u64;
        let output = text.split_whitespace().count() as u64;
        Ok(LlmAnswer {
            text,
            tokens: Tokens { input, output },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(provider: &str, prompt: &str, max_tokens: Option<u32>) -> LlmRequest {
        LlmRequest {
            model: ModelSettings {
                provider: provider.into(),
                ..ModelSettings::default()
            },
            system: "be brief".into(),
            prompt: prompt.into(),
            max_tokens,
            idempotency_key: "j:s".into(),
        }
    }

    #[tokio::test]
    async fn the_offline_provider_summarises_the_prompt_and_counts_words_as_tokens() {
        let answer = OfflineProvider
            .complete(&request("offline", "one two three four", Some(2)))
            .await
            .unwrap();
        assert_eq!(answer.text, "Summary: one two");
        assert_eq!(
            answer.tokens,
            Tokens {
                input: 6,
                output: 3
            }
        );
    }

    #[tokio::test]
    async fn the_offline_provider_refuses_other_providers_for_good() {
        let err = OfflineProvider
            .complete(&request("openai", "x", None))
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.contains("\"openai\""), "{err}");
    }
}
