use std::sync::Arc;
use std::time::Duration;

use flowgrid_domain::agent::ModelSettings;
use flowgrid_providers::llm::http::HttpProvider;
use flowgrid_providers::llm::settings::{AiSettings, AzureAuth, AzureSettings, Secret};
use flowgrid_providers::llm::{LlmRequest, OutputSchema};
use flowgrid_providers::outbound::OutboundPolicy;
use serde_json::{Value, json};

/// Settings pointing every provider at `base` (llmock's layout unless told otherwise).
pub fn settings(openai: &str, anthropic: &str) -> AiSettings {
    AiSettings {
        openai_base_url: openai.into(),
        openai_key: Some(Secret::new("sk-test-key-never-shown")),
        anthropic_base_url: anthropic.into(),
        anthropic_key: Some(Secret::new("ak-test-key-never-shown")),
        call_timeout: Duration::from_secs(5),
        retry_deadline: Duration::from_secs(20),
        max_attempts: 4,
        ..AiSettings::default()
    }
}

pub fn with_azure(mut s: AiSettings, endpoint: &str, api_version: &str) -> AiSettings {
    s.azure = Some(AzureSettings {
        endpoint: endpoint.into(),
        api_version: api_version.into(),
        auth: AzureAuth::ApiKey(Secret::new("az-test-key-never-shown")),
        default_deployment: Some("gpt-4o-mini".into()),
    });
    s
}

pub fn provider(s: AiSettings) -> HttpProvider {
    HttpProvider::new(s, Arc::new(OutboundPolicy::default())).expect("provider")
}

pub fn request(provider: &str, model: &str, prompt: &str) -> LlmRequest {
    LlmRequest {
        model: ModelSettings {
            provider: provider.into(),
            model: model.into(),
            temperature: Some(0.2),
            ..ModelSettings::default()
        },
        system: "You triage support tickets.".into(),
        prompt: prompt.into(),
        max_tokens: Some(200),
        idempotency_key: "job-1:step-1".into(),
        ..LlmRequest::default()
    }
}

pub fn schema() -> OutputSchema {
    OutputSchema {
        name: "triage".into(),
        schema: json!({
            "type": "object",
            "properties": {"urgency": {"type": "string"}, "summary": {"type": "string"}},
            "required": ["urgency", "summary"],
            "additionalProperties": false
        }),
    }
}

/// A 1×1 PNG.
pub const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

pub async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

pub async fn post(url: &str, body: Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "{url}: {}", r.status());
}
