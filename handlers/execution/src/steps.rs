//! What each step kind does. Every outbound call carries `Idempotency-Key: {jobId}:{stepId}`.

use std::sync::Arc;

use flowgrid_domain::TenantId;
use flowgrid_domain::agent::ModelSettings;
use flowgrid_domain::plan::template::Templates;
use flowgrid_domain::plan::{Jump, Plan, PlanStep, StepAction};
use flowgrid_domain::store::jobs::Tokens;
use flowgrid_providers::outbound::{self, OutboundError, OutboundPolicy};
use serde_json::{Map, Value, json};

/// Why an attempt of a step failed.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    /// For the step record and the job's error.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// Whether the attempt ran out of time.
    pub timed_out: bool,
}

impl StepError {
    /// A failure another attempt will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
            timed_out: false,
        }
    }

    /// A failure another attempt may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
            timed_out: false,
        }
    }
}

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// The step's output.
    pub output: Value,
    /// Where the run goes next.
    pub next: Jump,
    /// Tokens used (`llm`).
    pub tokens: Option<Tokens>,
}

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
    /// `{jobId}:{stepId}`.
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

/// A model provider. The default is [`OfflineProvider`]; a later issue adds OpenAI, Azure
/// OpenAI and Anthropic behind the same trait.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync {
    /// Completes `request`.
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, StepError>;
}

/// The offline provider: deterministic, no network. It answers a short summary of the prompt
/// (its first words) and counts tokens as whitespace-separated words.
#[derive(Debug, Clone, Default)]
pub struct OfflineProvider;

#[async_trait::async_trait]
impl LlmProvider for OfflineProvider {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, StepError> {
        if request.model.provider != "offline" {
            return Err(StepError::permanent(format!(
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

/// Actions on a tenant's integration connections. A later issue fills it; until then every
/// `integration` step fails with a clear step error.
#[async_trait::async_trait]
pub trait Integrations: Send + Sync {
    /// Runs `action` on `connection` with `input`.
    async fn run(
        &self,
        tenant: &TenantId,
        connection: &str,
        action: &str,
        input: &Value,
        idempotency_key: &str,
    ) -> Result<Value, StepError>;
}

/// No integration is available in this build.
#[derive(Debug, Clone, Default)]
pub struct NoIntegrations;

#[async_trait::async_trait]
impl Integrations for NoIntegrations {
    async fn run(
        &self,
        _: &TenantId,
        connection: &str,
        _: &str,
        _: &Value,
        _: &str,
    ) -> Result<Value, StepError> {
        Err(StepError::permanent(format!(
            "integration {connection:?} is not available"
        )))
    }
}

/// Everything a step needs from outside.
#[derive(Clone)]
pub struct StepRunner {
    /// Templates.
    pub templates: Arc<Templates>,
    /// Outbound HTTP client behind the guard.
    pub http: reqwest::Client,
    /// The guard's policy (for the URL check before the call).
    pub policy: Arc<OutboundPolicy>,
    /// Model provider.
    pub llm: Arc<dyn LlmProvider>,
    /// Integrations.
    pub integrations: Arc<dyn Integrations>,
}

impl StepRunner {
    /// A runner with the guarded client, the offline provider and no integrations.
    pub fn new(policy: OutboundPolicy) -> flowgrid_domain::Result<StepRunner> {
        let policy = Arc::new(policy);
        Ok(StepRunner {
            templates: Arc::new(Templates::new()),
            http: outbound::client(policy.clone())?,
            policy,
            llm: Arc::new(OfflineProvider),
            integrations: Arc::new(NoIntegrations),
        })
    }

    /// Runs one attempt of `step` (without its timeout, which the engine applies).
    pub async fn run(
        &self,
        tenant: &TenantId,
        plan: &Plan,
        step: &PlanStep,
        context: &Value,
        idempotency_key: &str,
    ) -> Result<StepOutcome, StepError> {
        let render = |v: &Value| {
            self.templates
                .render_value(v, context)
                .map_err(|e| StepError::permanent(format!("template error: {e}")))
        };
        let render_str = |s: &str| -> Result<String, StepError> {
            match self.templates.render_str(s, context) {
                Ok(Value::String(s)) => Ok(s),
                Ok(other) => Ok(other.to_string()),
                Err(e) => Err(StepError::permanent(format!("template error: {e}"))),
            }
        };
        let done = |output: Value| StepOutcome {
            output,
            next: Jump::Next,
            tokens: None,
        };
        match &step.action {
            StepAction::Transform { output } => Ok(done(render(output)?)),
            StepAction::Condition {
                condition,
                then,
                otherwise,
            } => {
                let result = self
                    .templates
                    .truthy(condition, context)
                    .map_err(|e| StepError::permanent(format!("expression error: {e}")))?;
                Ok(StepOutcome {
                    output: json!({"result": result}),
                    next: if result {
                        then.clone()
                    } else {
                        otherwise.clone()
                    },
                    tokens: None,
                })
            }
            StepAction::Llm {
                prompt,
                system,
                max_tokens,
            } => {
                let request = LlmRequest {
                    model: plan.model.clone(),
                    system: render_str(system)?,
                    prompt: render_str(prompt)?,
                    max_tokens: max_tokens.or(plan.model.max_tokens),
                    idempotency_key: idempotency_key.to_owned(),
                };
                let answer = self.llm.complete(&request).await?;
                Ok(StepOutcome {
                    output: json!({"text": answer.text}),
                    next: Jump::Next,
                    tokens: Some(answer.tokens),
                })
            }
            StepAction::Integration {
                connection,
                action,
                input,
            } => {
                let input = render(input)?;
                let output = self
                    .integrations
                    .run(tenant, connection, action, &input, idempotency_key)
                    .await?;
                Ok(done(output))
            }
            StepAction::Http {
                method,
                url,
                headers,
                body,
                max_response_bytes,
            } => {
                let url = render_str(url)?;
                let headers = match render(&Value::Object(headers.clone()))? {
                    Value::Object(h) => h,
                    _ => Map::new(),
                };
                let body = body.as_ref().map(render).transpose()?;
                self.http_call(
                    method,
                    &url,
                    &headers,
                    body,
                    *max_response_bytes,
                    idempotency_key,
                )
                .await
                .map(done)
            }
        }
    }

    async fn http_call(
        &self,
        method: &str,
        url: &str,
        headers: &Map<String, Value>,
        body: Option<Value>,
        cap: u64,
        idempotency_key: &str,
    ) -> Result<Value, StepError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| StepError::permanent(format!("{url:?} is not a URL: {e}")))?;
        self.policy
            .check_url(&parsed)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| StepError::permanent(format!("{method} is not an HTTP method")))?;
        let mut request = self.http.request(method, parsed);
        for (name, value) in headers {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            if name.eq_ignore_ascii_case("idempotency-key") || name.eq_ignore_ascii_case("host") {
                continue;
            }
            request = request.header(name.as_str(), value);
        }
        request = request.header("idempotency-key", idempotency_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            let text = outbound::describe(&e);
            if text.contains("refused by the outbound guard") {
                StepError::permanent(text)
            } else {
                StepError::transient(text)
            }
        })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(StepError::permanent(format!(
                "the server answered {status}; redirects are not followed"
            )));
        }
        let mut response_headers = Map::new();
        for (name, value) in response.headers() {
            if let Ok(v) = value.to_str() {
                response_headers.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
            }
        }
        let bytes = outbound::read_capped(response, cap)
            .await
            .map_err(|e| match e {
                OutboundError::TooLarge(_) => StepError::permanent(e.to_string()),
                other => StepError::transient(other.to_string()),
            })?;
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(StepError::transient(format!(
                "the server answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(StepError::permanent(format!(
                "the server answered {status}"
            )));
        }
        let body = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(json!({"status": status.as_u16(), "headers": response_headers, "body": body}))
    }
}
