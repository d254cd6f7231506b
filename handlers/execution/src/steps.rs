//! What each step kind does. Every outbound call carries `Idempotency-Key: {jobId}:{stepId}`.
//! Model calls go through the shared provider layer (`flowgrid_providers::llm`), integration
//! actions through the shared connector layer (`flowgrid_providers::connector`).

use std::sync::Arc;

use flowgrid_domain::TenantId;
use flowgrid_domain::job::LlmCall;
use flowgrid_domain::plan::template::Templates;
use flowgrid_domain::plan::{Jump, Plan, PlanStep, StepAction};
use flowgrid_domain::store::jobs::Tokens;
use flowgrid_providers::CallError;
use flowgrid_providers::connector::{Connectors, NoConnectors};
use flowgrid_providers::llm::{
    LlmAnswer, LlmError, LlmErrorKind, LlmProvider, LlmRequest, Providers,
};
use flowgrid_providers::otel;
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
    /// A model call that failed after the provider generated tokens (a refusal, a truncation, a
    /// filtered or invalid answer): what it used and cost, recorded on the failed step.
    pub llm: Option<Box<LlmCall>>,
}

impl StepError {
    /// A failure another attempt will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
            timed_out: false,
            llm: None,
        }
    }

    /// A failure another attempt may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
            timed_out: false,
            llm: None,
        }
    }
}

impl From<CallError> for StepError {
    fn from(e: CallError) -> Self {
        StepError {
            message: e.message,
            retryable: e.retryable,
            timed_out: false,
            llm: None,
        }
    }
}

impl From<LlmError> for StepError {
    fn from(e: LlmError) -> Self {
        StepError {
            timed_out: e.kind == LlmErrorKind::Timeout,
            message: e.message,
            retryable: e.retryable,
            llm: e.used.map(|a| Box::new(llm_call(*a))),
        }
    }
}

/// The record of a model call (answered, or failed after generating tokens).
fn llm_call(answer: LlmAnswer) -> LlmCall {
    LlmCall {
        provider: answer.provider,
        model: answer.model,
        tokens: answer.usage,
        raw_usage: answer.raw_usage,
        latency_ms: answer.latency_ms,
        attempts: answer.attempts,
        cost_usd: answer.cost.usd,
        cost_micro_usd: answer.cost.micro_usd,
        cost_unknown_reason: answer.cost.unknown_reason,
        price_version: answer.cost.price_version,
    }
}

/// A step's token counts from its model call.
pub fn tokens_of(call: &LlmCall) -> Tokens {
    Tokens {
        input: call.tokens.input + call.tokens.cached_input,
        output: call.tokens.output,
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
    /// The model call (`llm`), boxed: most steps have none.
    pub llm: Option<Box<LlmCall>>,
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
    /// Integration connectors.
    pub connectors: Arc<dyn Connectors>,
    /// The monthly AI budget (`None`: not enforced).
    pub budget: Option<Arc<flowgrid_providers::llm::budget::Budget>>,
    /// `FLOWGRID_HTTP_RESPONSE_MAX_BYTES`: no `http` step reads more of a response, whatever its
    /// `maxResponseBytes` says.
    pub response_max_bytes: u64,
    /// `FLOWGRID_AI_PROVIDERS`: the model providers `llm` steps may call (`None`: any).
    pub offered: Option<flowgrid_domain::agent::OfferedProviders>,
}

impl StepRunner {
    /// A runner with the guarded client, the offline provider and no connectors.
    pub fn new(policy: OutboundPolicy) -> flowgrid_domain::Result<StepRunner> {
        let policy = Arc::new(policy);
        Ok(StepRunner {
            templates: Arc::new(Templates::new()),
            http: outbound::client(policy.clone())?,
            policy,
            llm: Arc::new(Providers::offline()),
            connectors: Arc::new(NoConnectors),
            budget: None,
            response_max_bytes: flowgrid_domain::plan::limits::MAX_RESPONSE_BYTES,
            offered: None,
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
        let call = Attempt {
            runner: self,
            tenant,
            plan,
            context,
            key: idempotency_key,
        };
        match &step.action {
            StepAction::Transform { output } => Ok(done(call.render(output)?)),
            StepAction::Condition {
                condition,
                then,
                otherwise,
            } => call.condition(condition, then, otherwise),
            StepAction::Llm {
                prompt,
                system,
                max_tokens,
            } => call.llm(prompt, system, *max_tokens).await,
            StepAction::Integration {
                connection,
                action,
                input,
            } => call.integration(connection, action, input).await,
            StepAction::Http {
                method,
                url,
                headers,
                body,
                max_response_bytes,
            } => {
                let response = call.send(method, url, headers, body.as_ref()).await?;
                let cap = (*max_response_bytes).min(self.response_max_bytes);
                let limit = if cap < *max_response_bytes {
                    "FLOWGRID_HTTP_RESPONSE_MAX_BYTES"
                } else {
                    "the step's maxResponseBytes"
                };
                read_response(response, cap)
                    .await
                    .map(done)
                    .map_err(|mut e| {
                        if e.message.starts_with("the response body is larger") {
                            e.message = format!("{} ({limit})", e.message);
                        }
                        e
                    })
            }
        }
    }

    /// Sends one request of an `http` step through the guard, with the step's idempotency key.
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &Map<String, Value>,
        body: Option<Value>,
        idempotency_key: &str,
    ) -> Result<reqwest::Response, StepError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| StepError::permanent(format!("{url:?} is not a URL: {e}")))?;
        self.policy
            .check_url(&parsed)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| StepError::permanent(format!("{method} is not an HTTP method")))?;
        let mut span = otel::http_client_span(method.as_str(), &parsed);
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
        if let Some(span) = &span {
            request = request.header("traceparent", span.traceparent());
        }
        let sent = request.send().await;
        otel::http_client_result(&mut span, sent.as_ref().map(|r| r.status().as_u16()));
        sent.map_err(|e| {
            let text = outbound::describe(&e);
            if text.contains("refused by the outbound guard") {
                StepError::permanent(text)
            } else {
                StepError::transient(text)
            }
        })
    }
}

/// A step's output when it goes on to the next step.
fn done(output: Value) -> StepOutcome {
    StepOutcome {
        output,
        next: Jump::Next,
        tokens: None,
        llm: None,
    }
}

/// The `{status, headers, body}` of an `http` step's answer (body capped; JSON parsed, else
/// text). Redirects are not followed; 5xx, 408 and 429 may be retried, other 4xx not.
async fn read_response(response: reqwest::Response, cap: u64) -> Result<Value, StepError> {
    let status = response.status();
    if status.is_redirection() {
        return Err(StepError::permanent(format!(
            "the server answered {status}; redirects are not followed"
        )));
    }
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
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
    Ok(json!({"status": status.as_u16(), "headers": headers, "body": body}))
}

/// One attempt of a step: what its kinds need to render and call.
struct Attempt<'a> {
    runner: &'a StepRunner,
    tenant: &'a TenantId,
    plan: &'a Plan,
    context: &'a Value,
    key: &'a str,
}

impl Attempt<'_> {
    fn render(&self, v: &Value) -> Result<Value, StepError> {
        self.runner
            .templates
            .render_value(v, self.context)
            .map_err(|e| StepError::permanent(format!("template error: {e}")))
    }

    fn render_str(&self, s: &str) -> Result<String, StepError> {
        match self.runner.templates.render_str(s, self.context) {
            Ok(Value::String(s)) => Ok(s),
            Ok(other) => Ok(other.to_string()),
            Err(e) => Err(StepError::permanent(format!("template error: {e}"))),
        }
    }

    fn condition(
        &self,
        condition: &str,
        then: &Jump,
        otherwise: &Jump,
    ) -> Result<StepOutcome, StepError> {
        let result = self
            .runner
            .templates
            .truthy(condition, self.context)
            .map_err(|e| StepError::permanent(format!("expression error: {e}")))?;
        Ok(StepOutcome {
            output: json!({"result": result}),
            next: if result {
                then.clone()
            } else {
                otherwise.clone()
            },
            tokens: None,
            llm: None,
        })
    }

    async fn llm(
        &self,
        prompt: &str,
        system: &str,
        max_tokens: Option<u32>,
    ) -> Result<StepOutcome, StepError> {
        // Saving refuses a provider the deployment does not offer; one withdrawn since the
        // agent was saved is refused here, before anything is rendered, reserved or sent.
        let provider = &self.plan.model.provider;
        if let Some(offered) = &self.runner.offered
            && !offered.names().iter().any(|p| p == provider)
        {
            return Err(StepError::permanent(format!(
                "model provider {provider} is not offered by this deployment \
                 (FLOWGRID_AI_PROVIDERS lists {}); nothing was sent",
                offered.names().join(", ")
            )));
        }
        let request = LlmRequest {
            model: self.plan.model.clone(),
            system: self.render_str(system)?,
            prompt: self.render_str(prompt)?,
            max_tokens: max_tokens.or(self.plan.model.max_tokens),
            idempotency_key: self.key.to_owned(),
            ..LlmRequest::default()
        };
        let reservation = match &self.runner.budget {
            Some(b) => b.admit(self.tenant, &request).await?,
            None => None,
        };
        let answer = self.runner.llm.complete(&request).await;
        if let (Some(b), Some(r)) = (&self.runner.budget, reservation) {
            // A call that failed after generating tokens is charged what it used.
            b.settle_call(r, &answer).await;
        }
        let answer = answer?;
        let text = answer.text.clone();
        let call = llm_call(answer);
        Ok(StepOutcome {
            output: json!({"text": text}),
            next: Jump::Next,
            tokens: Some(tokens_of(&call)),
            llm: Some(Box::new(call)),
        })
    }

    /// Renders an `http` step's URL, headers and body, and sends its request.
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &Map<String, Value>,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, StepError> {
        let url = self.render_str(url)?;
        let headers = match self.render(&Value::Object(headers.clone()))? {
            Value::Object(h) => h,
            _ => Map::new(),
        };
        let body = body.map(|b| self.render(b)).transpose()?;
        self.runner
            .send(method, &url, &headers, body, self.key)
            .await
    }

    async fn integration(
        &self,
        connection: &str,
        action: &str,
        input: &Value,
    ) -> Result<StepOutcome, StepError> {
        let input = self.render(input)?;
        let output = self
            .runner
            .connectors
            .run(self.tenant, connection, action, &input, self.key)
            .await?;
        Ok(done(output))
    }
}
