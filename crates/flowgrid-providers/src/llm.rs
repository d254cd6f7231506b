//! The model provider layer: one trait every caller of a model uses (Execution's `llm` steps,
//! Design's analysis and generation) and its implementations:
//!
//! - [`OfflineProvider`], the default: no key, no network, deterministic, and useful (from a
//!   description or the text of an image it drafts an agent, see [`offline`]);
//! - [`http::HttpProvider`]: OpenAI (Responses API, and Chat Completions as `openai-chat`),
//!   Azure OpenAI (the `/openai/v1` endpoint, or the deployment URL with `api-version`; `api-key`
//!   or an Entra token of the managed identity) and Anthropic (Messages API with
//!   `anthropic-version`), over their real HTTP APIs ([`wire`]), with retries ([`retry`]);
//! - [`Providers`]: picks one per call from the agent's `definition.model` and the deployment's
//!   settings ([`settings::AiSettings`]).
//!
//! Every answer carries its usage normalised to input / cached input / output / reasoning
//! tokens with the provider's raw usage kept, its latency, and its cost from the versioned price
//! table ([`prices`]). Failures are [`LlmError`]s whose kind says what happened (a refusal, a
//! truncation at the token limit and a content filter are distinct).

pub mod budget;
pub mod http;
pub mod offline;
pub mod prices;
pub mod retry;
pub mod settings;
pub mod wire;

use std::sync::Arc;

use flowgrid_domain::agent::ModelSettings;
use flowgrid_domain::events::TokenUsage;
use serde::Serialize;
use serde_json::Value;

use crate::CallError;

pub use offline::OfflineProvider;

/// An image sent to a vision model, base64-encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub media_type: String,
    /// The bytes, standard base64.
    pub base64: String,
    /// Text the caller already knows is in the image (the offline provider reads it; real
    /// models read the pixels).
    pub text_hint: Option<String>,
}

/// Structured output: the answer must be JSON matching `schema` (checked on receipt).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSchema {
    /// A name for the schema (`[a-zA-Z0-9_-]{1,64}`, as OpenAI requires).
    pub name: String,
    /// The JSON Schema.
    pub schema: Value,
}

/// A function the model may call (offered only when one must be called: the model is asked to
/// call one of them, `tool_choice` required / Anthropic `any`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    /// The function's name (`[a-zA-Z0-9_-]{1,64}`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Its arguments, a JSON Schema object.
    pub parameters: Value,
}

/// A function call the model answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function called.
    pub name: String,
    /// Its arguments (JSON; a string the provider sent that is not JSON is kept as a string).
    pub arguments: Value,
}

/// A model call.
#[derive(Debug, Clone, Default)]
pub struct LlmRequest {
    /// Provider, model, and where to reach it.
    pub model: ModelSettings,
    /// Rendered system prompt.
    pub system: String,
    /// Rendered prompt.
    pub prompt: String,
    /// Upper bound of generated tokens.
    pub max_tokens: Option<u32>,
    /// Sent as the provider's idempotency key where it has one (`{jobId}:{stepId}` for a step).
    pub idempotency_key: String,
    /// Images for a vision model.
    pub images: Vec<ImageInput>,
    /// Structured output wanted, if any.
    pub schema: Option<OutputSchema>,
    /// Functions of which the model must call one (empty: none offered).
    pub tools: Vec<ToolDefinition>,
}

/// What a call cost.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// US dollars; `None` when the price is unknown.
    pub usd: Option<f64>,
    /// Micro-dollars (USD × 10⁶), rounded up; `None` when the price is unknown.
    pub micro_usd: Option<u64>,
    /// Why the cost is unknown (never 0 for an unknown price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// The price table's version (the price list package and version it was generated from).
    pub price_version: String,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmAnswer {
    /// Generated text.
    pub text: String,
    /// The structured output, parsed and checked against the request's schema.
    pub json: Option<Value>,
    /// The provider that answered (`offline`, `openai`, `azure-openai`, `anthropic`).
    pub provider: String,
    /// The model (or Azure deployment) that answered, as the provider names it.
    pub model: String,
    /// Tokens by kind.
    pub usage: TokenUsage,
    /// The provider's usage object as it sent it.
    pub raw_usage: Value,
    /// Time from the first attempt to the answer, retries included, in ms.
    pub latency_ms: u64,
    /// Attempts made (1 when the first one answered).
    pub attempts: u32,
    /// What it cost.
    pub cost: Cost,
    /// Functions the model called (when the request offered some).
    pub tool_calls: Vec<ToolCall>,
}

/// What went wrong with a model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmErrorKind {
    /// The model refused to answer.
    Refusal,
    /// The answer stopped at the token limit.
    Truncated,
    /// The provider's content filter blocked the prompt or the answer.
    ContentFiltered,
    /// The account's quota or spend limit is exhausted (never retried).
    QuotaExhausted,
    /// The tenant's monthly AI budget is spent (refused before sending).
    BudgetExceeded,
    /// Rate limited, still after the retries within the deadline.
    RateLimited,
    /// The provider failed (5xx, overloaded, unreachable), still after the retries.
    Unavailable,
    /// No answer within the per-call timeout or the retry deadline.
    Timeout,
    /// The provider rejected the request (4xx): a bad model name, a bad key, a bad field.
    Rejected,
    /// The provider answered something that is not a valid answer (garbage, a schema mismatch).
    BadAnswer,
    /// The provider or model is not configured in this deployment.
    NotConfigured,
}

/// A failed model call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    /// What kind of failure.
    pub kind: LlmErrorKind,
    /// For the caller's record; never a secret.
    pub message: String,
    /// Whether a later attempt (a step retry) may succeed.
    pub retryable: bool,
    /// What the call used and cost when the provider answered and generated tokens before the
    /// answer failed (a refusal, a truncation at the token limit, a content filter on the
    /// answer, a structured answer that fails its schema): charged and recorded like a
    /// success. `None` when nothing was generated (an error status, a timeout, no answer).
    pub used: Option<Box<LlmAnswer>>,
}

impl LlmError {
    /// A failure of `kind` another attempt will not fix.
    pub fn new(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        LlmError {
            kind,
            message: message.into(),
            retryable: false,
            used: None,
        }
    }

    /// A failure of `kind` another attempt may fix.
    pub fn retryable(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        LlmError {
            retryable: true,
            ..LlmError::new(kind, message)
        }
    }

    /// This failure, with what the failed call used and cost.
    pub fn with_used(mut self, answer: LlmAnswer) -> Self {
        self.used = Some(Box::new(answer));
        self
    }
}

/// What a call used and cost, whether it answered or failed after generating tokens: the
/// answer, or the failure's [`LlmError::used`]. What a caller charges and records.
pub fn used(result: &Result<LlmAnswer, LlmError>) -> Option<&LlmAnswer> {
    match result {
        Ok(answer) => Some(answer),
        Err(e) => e.used.as_deref(),
    }
}

impl From<LlmError> for CallError {
    fn from(e: LlmError) -> Self {
        CallError {
            message: e.message,
            retryable: e.retryable,
        }
    }
}

/// A model provider.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync {
    /// Completes `request`.
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, LlmError>;

    /// The exact request body the provider would receive for `request` (no secrets: keys
    /// travel in headers), and the URL it goes to, for previews.
    fn preview(&self, request: &LlmRequest) -> Result<RequestPreview, LlmError>;
}

/// A request as it would be sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestPreview {
    /// The provider.
    pub provider: String,
    /// `POST` target (query included; never a key).
    pub url: String,
    /// Headers sent, secrets redacted.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
}

/// Every provider of a deployment; routes each call by `request.model.provider`.
#[derive(Clone)]
pub struct Providers {
    offline: OfflineProvider,
    http: Option<Arc<http::HttpProvider>>,
}

impl Providers {
    /// Offline only.
    pub fn offline() -> Self {
        Providers {
            offline: OfflineProvider,
            http: None,
        }
    }

    /// Offline plus the real providers configured in `settings`.
    pub fn new(http: http::HttpProvider) -> Self {
        Providers {
            offline: OfflineProvider,
            http: Some(Arc::new(http)),
        }
    }

    fn pick(&self, provider: &str) -> Result<&dyn LlmProvider, LlmError> {
        if provider == "offline" {
            return Ok(&self.offline);
        }
        match &self.http {
            Some(h) => Ok(h.as_ref()),
            None => Err(LlmError::new(
                LlmErrorKind::NotConfigured,
                format!(
                    "model provider {provider:?} is not available in this deployment; use \"offline\""
                ),
            )),
        }
    }
}

#[async_trait::async_trait]
impl LlmProvider for Providers {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, LlmError> {
        let provider = self.pick(&request.model.provider)?;
        let mut span = gen_ai_span(request);
        let result = crate::otel::within(&span, provider.complete(request)).await;
        if let Some(span) = &mut span {
            record_gen_ai(span, &result);
        }
        result
    }

    fn preview(&self, request: &LlmRequest) -> Result<RequestPreview, LlmError> {
        self.pick(&request.model.provider)?.preview(request)
    }
}

/// The GenAI semantic conventions' name of a Flowgrid provider (`gen_ai.provider.name`).
fn gen_ai_provider(provider: &str) -> &str {
    match provider {
        "azure-openai" => "azure.ai.openai",
        "openai-chat" => "openai",
        other => other,
    }
}

/// The client span of a model call (`chat {model}`), when traces are exported.
fn gen_ai_span(request: &LlmRequest) -> Option<crate::otel::Span> {
    let model = &request.model;
    let mut span =
        crate::otel::Span::child(format!("chat {}", model.model), crate::otel::Kind::Client)?;
    let provider = gen_ai_provider(&model.provider);
    span.set("gen_ai.operation.name", "chat");
    span.set("gen_ai.provider.name", provider);
    span.set("gen_ai.system", provider);
    span.set("gen_ai.request.model", &model.model);
    if let Some(t) = request.max_tokens.or(model.max_tokens) {
        span.set("gen_ai.request.max_tokens", t);
    }
    if let Some(t) = model.temperature {
        span.set("gen_ai.request.temperature", t);
    }
    Some(span)
}

/// The answer's side of a model call's span: response model, token usage, or the error.
fn record_gen_ai(span: &mut crate::otel::Span, result: &Result<LlmAnswer, LlmError>) {
    if let Ok(answer) = result {
        span.set("gen_ai.response.model", &answer.model);
        span.set(
            "gen_ai.usage.input_tokens",
            answer.usage.input + answer.usage.cached_input,
        );
        span.set("gen_ai.usage.output_tokens", answer.usage.output);
        span.set("flowgrid.llm.attempts", answer.attempts);
        if let Some(micro) = answer.cost.micro_usd {
            span.set("flowgrid.llm.cost_micro_usd", micro);
        }
    }
    if let Err(e) = result {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        span.set("error.type", kind);
        span.fail(e.message.clone());
    }
}

/// A rough token estimate of a text (about four characters a token), for previews and budget
/// reservations before a call; the provider's own count is what is recorded.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
