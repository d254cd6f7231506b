//! The real providers over HTTP: where a call goes, how it is authenticated, and the attempts.
//!
//! | `definition.model.provider` | URL | auth |
//! |---|---|---|
//! | `openai` | `{FLOWGRID_AI_OPENAI_BASE_URL}/responses` | `Authorization: Bearer` |
//! | `openai-chat` | `{FLOWGRID_AI_OPENAI_BASE_URL}/chat/completions` | `Authorization: Bearer` |
//! | `azure-openai`, api version `v1` | `{endpoint}/openai/v1/responses`, the deployment as `model` | `api-key`, or a bearer token of the managed identity |
//! | `azure-openai`, a dated version | `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…` | same |
//! | `anthropic` | `{FLOWGRID_AI_ANTHROPIC_BASE_URL}/v1/messages` | `x-api-key`, `anthropic-version` |
//!
//! An agent may name its own `baseUrl` (an OpenAI- or Anthropic-compatible server): the call
//! then goes through the outbound guard, and no key of the deployment is ever sent there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use flowgrid_domain::schema::CompiledSchema;
use serde_json::Value;

use super::settings::{AiSettings, AzureAuth};
use super::wire::{self, Api, Stop};
use super::{
    LlmAnswer, LlmError, LlmErrorKind, LlmProvider, LlmRequest, RequestPreview, prices, retry,
};
use crate::outbound::{self, OutboundPolicy};

/// Largest answer body read.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;
/// The Entra scope of Azure OpenAI.
const AZURE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// OpenAI, Azure OpenAI and Anthropic over HTTP.
pub struct HttpProvider {
    settings: AiSettings,
    /// For the deployment's configured endpoints (no redirects).
    plain: reqwest::Client,
    /// For agents' own base URLs.
    guarded: reqwest::Client,
    policy: Arc<OutboundPolicy>,
    azure_identity: Option<Arc<dyn TokenCredential>>,
}

/// Where one call goes.
struct Target {
    api: Api,
    provider: &'static str,
    url: String,
    /// The body's `model` field (`None`: the URL names the deployment).
    body_model: Option<String>,
    /// The model named for pricing when the answer names none.
    model: String,
    auth: Auth,
    custom: bool,
}

enum Auth {
    None,
    Bearer(String),
    Header(&'static str, String),
    AzureIdentity,
}

fn not_configured(what: &str) -> LlmError {
    LlmError::new(LlmErrorKind::NotConfigured, what.to_owned())
}

impl HttpProvider {
    /// A provider for `settings`; agents' own base URLs go through `policy`.
    pub fn new(settings: AiSettings, policy: Arc<OutboundPolicy>) -> flowgrid_domain::Result<Self> {
        let plain = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                flowgrid_domain::Error::Config(format!("building the AI HTTP client: {e}"))
            })?;
        let azure_identity = match settings.azure.as_ref().map(|a| &a.auth) {
            Some(AzureAuth::ManagedIdentity { client_id }) => {
                use azure_identity::{
                    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
                };
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                let credential: Arc<dyn TokenCredential> =
                    ManagedIdentityCredential::new(Some(options)).map_err(|e| {
                        flowgrid_domain::config::setting_error("AZURE_CLIENT_ID", &e.to_string())
                    })?;
                Some(credential)
            }
            _ => None,
        };
        Ok(HttpProvider {
            guarded: outbound::client(policy.clone())?,
            plain,
            policy,
            settings,
            azure_identity,
        })
    }

    /// Where `request` goes. A missing key is an error, except for a preview (`preview`), which
    /// shows the request without it.
    fn target(&self, request: &LlmRequest, preview: bool) -> Result<Target, LlmError> {
        let m = &request.model;
        let custom = m
            .base_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned());
        let s = &self.settings;
        let key = |k: &Option<super::settings::Secret>, name: &str| -> Result<String, LlmError> {
            if preview && k.is_none() {
                return Ok(String::new());
            }
            k.as_ref().map(|k| k.expose().to_owned()).ok_or_else(|| {
                not_configured(&format!(
                    "{} is not available in this deployment ({name} is not set)",
                    m.provider
                ))
            })
        };
        let t = match m.provider.as_str() {
            "openai" | "openai-chat" => {
                let api = if m.provider == "openai" {
                    Api::Responses
                } else {
                    Api::Chat
                };
                let path = if api == Api::Responses {
                    "/responses"
                } else {
                    "/chat/completions"
                };
                let (base, auth) = match &custom {
                    Some(base) => (base.clone(), Auth::None),
                    None => (
                        s.openai_base_url.clone(),
                        Auth::Bearer(key(&s.openai_key, "FLOWGRID_AI_OPENAI_API_KEY")?),
                    ),
                };
                Target {
                    api,
                    provider: if api == Api::Responses {
                        "openai"
                    } else {
                        "openai-chat"
                    },
                    url: format!("{base}{path}"),
                    body_model: Some(m.model.clone()),
                    model: m.model.clone(),
                    auth,
                    custom: custom.is_some(),
                }
            }
            "azure-openai" => {
                let azure = s.azure.as_ref().ok_or_else(|| {
                    not_configured("azure-openai is not available in this deployment (FLOWGRID_AI_AZURE_OPENAI_ENDPOINT is not set)")
                })?;
                if custom.is_some() {
                    return Err(LlmError::new(
                        LlmErrorKind::Rejected,
                        "azure-openai takes its endpoint from the deployment's settings, not from definition.model.baseUrl",
                    ));
                }
                let deployment = match m.model.as_str() {
                    "" | "default" => azure.default_deployment.clone().ok_or_else(|| {
                        not_configured("the agent names no Azure OpenAI deployment and FLOWGRID_AI_AZURE_OPENAI_DEPLOYMENT is not set")
                    })?,
                    d => d.to_owned(),
                };
                if !deployment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(LlmError::new(
                        LlmErrorKind::Rejected,
                        format!("{deployment:?} is not an Azure OpenAI deployment name"),
                    ));
                }
                let auth = match &azure.auth {
                    AzureAuth::ApiKey(k) => Auth::Header("api-key", k.expose().to_owned()),
                    AzureAuth::ManagedIdentity { .. } => Auth::AzureIdentity,
                };
                if azure.api_version == "v1" {
                    Target {
                        api: Api::Responses,
                        provider: "azure-openai",
                        url: format!("{}/openai/v1/responses", azure.endpoint),
                        body_model: Some(deployment.clone()),
                        model: deployment,
                        auth,
                        custom: false,
                    }
                } else {
                    Target {
                        api: Api::Chat,
                        provider: "azure-openai",
                        url: format!(
                            "{}/openai/deployments/{deployment}/chat/completions?api-version={}",
                            azure.endpoint, azure.api_version
                        ),
                        body_model: None,
                        model: deployment,
                        auth,
                        custom: false,
                    }
                }
            }
            "anthropic" => {
                let (base, auth) = match &custom {
                    Some(base) => (base.clone(), Auth::None),
                    None => (
                        s.anthropic_base_url.clone(),
                        Auth::Header(
                            "x-api-key",
                            key(&s.anthropic_key, "FLOWGRID_AI_ANTHROPIC_API_KEY")?,
                        ),
                    ),
                };
                Target {
                    api: Api::Anthropic,
                    provider: "anthropic",
                    url: format!("{base}/v1/messages"),
                    body_model: Some(m.model.clone()),
                    model: m.model.clone(),
                    auth,
                    custom: custom.is_some(),
                }
            }
            other => {
                return Err(LlmError::new(
                    LlmErrorKind::NotConfigured,
                    format!(
                        "model provider {other:?} is not one of offline, openai, openai-chat, azure-openai, anthropic"
                    ),
                ));
            }
        };
        if t.custom {
            let url = url::Url::parse(&t.url).map_err(|e| {
                LlmError::new(
                    LlmErrorKind::Rejected,
                    format!("definition.model.baseUrl is not a URL: {e}"),
                )
            })?;
            self.policy.check_url(&url).map_err(|e| {
                LlmError::new(
                    LlmErrorKind::Rejected,
                    format!("definition.model.baseUrl: {e}"),
                )
            })?;
        }
        Ok(t)
    }

    fn headers(&self, t: &Target, request: &LlmRequest) -> Vec<(&'static str, String)> {
        let mut h = vec![("content-type", "application/json".to_owned())];
        if t.api == Api::Anthropic {
            h.push(("anthropic-version", self.settings.anthropic_version.clone()));
        }
        if !request.idempotency_key.is_empty() && t.api != Api::Anthropic {
            // OpenAI ignores it; Azure's gateways and compatible servers may honour it.
            h.push(("idempotency-key", request.idempotency_key.clone()));
        }
        h
    }

    async fn auth_header(&self, auth: &Auth) -> Result<Option<(&'static str, String)>, LlmError> {
        Ok(match auth {
            Auth::None => None,
            Auth::Bearer(k) => Some(("authorization", format!("Bearer {k}"))),
            Auth::Header(name, v) => Some((*name, v.clone())),
            Auth::AzureIdentity => {
                let credential = self
                    .azure_identity
                    .as_ref()
                    .ok_or_else(|| not_configured("no managed identity"))?;
                let token = credential
                    .get_token(&[AZURE_SCOPE], None)
                    .await
                    .map_err(|e| identity_error(&e))?;
                Some(("authorization", format!("Bearer {}", token.token.secret())))
            }
        })
    }

    /// One attempt: the answer's status, headers and body, or why there is none.
    async fn attempt(
        &self,
        t: &Target,
        headers: &[(&'static str, String)],
        body: &Value,
        timeout: Duration,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), LlmError> {
        let client = if t.custom { &self.guarded } else { &self.plain };
        let mut rb = client.post(&t.url).timeout(timeout).json(body);
        // `json` sets the content type; the list has it for previews.
        for (name, value) in headers.iter().filter(|(n, _)| *n != "content-type") {
            rb = rb.header(*name, value);
        }
        if let Some((name, value)) = self.auth_header(&t.auth).await? {
            rb = rb.header(name, value);
        }
        if let Some(tp) = crate::otel::current_traceparent() {
            rb = rb.header("traceparent", tp);
        }
        let failed = |e: &reqwest::Error| {
            let text = outbound::describe(e);
            if text.contains("refused by the outbound guard") {
                LlmError::new(LlmErrorKind::Rejected, text)
            } else if e.is_timeout() {
                LlmError {
                    kind: LlmErrorKind::Timeout,
                    message: format!(
                        "no answer from {} within {} s",
                        t.provider,
                        timeout.as_secs_f64().ceil()
                    ),
                    retryable: true,
                    used: None,
                }
            } else {
                LlmError {
                    kind: LlmErrorKind::Unavailable,
                    message: format!("{} could not be reached: {text}", t.provider),
                    retryable: true,
                    used: None,
                }
            }
        };
        let response = rb.send().await.map_err(|e| failed(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes =
            match tokio::time::timeout(timeout, outbound::read_capped(response, MAX_ANSWER_BYTES))
                .await
            {
                Err(_) => {
                    return Err(LlmError {
                        kind: LlmErrorKind::Timeout,
                        message: format!(
                            "{} stopped sending its answer; nothing within {} s",
                            t.provider,
                            timeout.as_secs_f64().ceil()
                        ),
                        retryable: true,
                        used: None,
                    });
                }
                Ok(Err(outbound::OutboundError::TooLarge(n))) => {
                    return Err(LlmError::new(
                        LlmErrorKind::BadAnswer,
                        format!("the answer is larger than {n} bytes"),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(LlmError {
                        kind: LlmErrorKind::Unavailable,
                        message: format!("{}: {e}", t.provider),
                        retryable: true,
                        used: None,
                    });
                }
                Ok(Ok(b)) => b,
            };
        Ok((status, headers, bytes))
    }
}

/// A failure to get the managed identity's token. The identity endpoint refusing (a 4xx: no
/// identity assigned, a wrong client id) is the deployment's configuration, said as such and
/// never retried; anything else (unreachable, 5xx) may pass.
fn identity_error(e: &azure_core::Error) -> LlmError {
    let mut refused = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(az) = err.downcast_ref::<azure_core::Error>()
            && let azure_core::error::ErrorKind::HttpResponse { status, .. } = az.kind()
            && (400..500).contains(&u16::from(*status))
        {
            refused = Some(u16::from(*status));
        }
        cur = err.source();
    }
    let message = format!("getting an Entra token for Azure OpenAI failed: {e}");
    match refused {
        Some(status) => LlmError::new(
            LlmErrorKind::NotConfigured,
            format!(
                "{message} (the identity endpoint answered {status}: check the Function App's managed identity, AZURE_CLIENT_ID for a user-assigned one, and its role on the Azure OpenAI resource)"
            ),
        ),
        None => LlmError::retryable(LlmErrorKind::Unavailable, message),
    }
}

/// Parses and checks a structured answer.
fn structured(text: &str, schema: &Value) -> Result<Value, LlmError> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| {
        LlmError::new(
            LlmErrorKind::BadAnswer,
            format!("the structured answer is not JSON: {e}"),
        )
    })?;
    let compiled = CompiledSchema::compile(schema).map_err(|e| {
        LlmError::new(
            LlmErrorKind::Rejected,
            format!(
                "the output schema is not a valid JSON Schema: {}",
                e.message()
            ),
        )
    })?;
    compiled.validate(&value, "answer").map_err(|errors| {
        let list: Vec<String> = errors
            .iter()
            .take(5)
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        LlmError::new(
            LlmErrorKind::BadAnswer,
            format!(
                "the structured answer does not match its schema: {}",
                list.join("; ")
            ),
        )
    })?;
    Ok(value)
}

#[async_trait::async_trait]
impl LlmProvider for HttpProvider {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, LlmError> {
        let t = self.target(request, false)?;
        let body = wire::body(t.api, t.body_model.as_deref(), request);
        let headers = self.headers(&t, request);
        let started = Instant::now();
        let deadline = started + self.settings.retry_deadline;
        let max = self.settings.max_attempts.max(1);
        let mut attempt = 1;
        let (bytes, attempts) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LlmError::new(
                    LlmErrorKind::Timeout,
                    format!(
                        "{} gave no answer within the deadline of {} s",
                        t.provider,
                        self.settings.retry_deadline.as_secs()
                    ),
                ));
            }
            let timeout = self.settings.call_timeout.min(left);
            let (error, asked) = match self.attempt(&t, &headers, &body, timeout).await {
                Ok((status, _, bytes)) if (200..300).contains(&status) => break (bytes, attempt),
                Ok((status, h, bytes)) => {
                    (wire::error(t.api, status, &bytes), retry::retry_after(&h))
                }
                Err(e) => (e, None),
            };
            if !error.retryable {
                return Err(error);
            }
            if attempt >= max {
                return Err(LlmError {
                    message: format!("{} (after {attempt} attempts)", error.message),
                    retryable: false,
                    ..error
                });
            }
            attempt += 1;
            let wait = retry::wait(attempt, asked);
            if Instant::now() + wait >= deadline {
                return Err(LlmError {
                    message: format!(
                        "{}; the next attempt would start after the call's deadline",
                        error.message
                    ),
                    retryable: false,
                    ..error
                });
            }
            tracing::info!(
                ai.provider = t.provider,
                ai.attempt = attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying a model call"
            );
            tokio::time::sleep(wait).await;
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let parsed = wire::parse(t.api, &bytes)?;
        let model = parsed.model.clone().unwrap_or_else(|| t.model.clone());
        let mut cost = prices::cost(t.provider, &model, &parsed.usage);
        if cost.usd.is_none() && model != t.model {
            cost = prices::cost(t.provider, &t.model, &parsed.usage);
        }
        let mut answer = LlmAnswer {
            text: parsed.text,
            json: None,
            provider: t.provider.to_owned(),
            model,
            usage: parsed.usage,
            raw_usage: parsed.raw_usage,
            latency_ms,
            attempts,
            cost,
            tool_calls: parsed.tool_calls,
        };
        // From here on the provider generated tokens: a failure carries what the call used, so
        // the caller charges and records it like a success.
        let failed = match &parsed.stop {
            Stop::Done => None,
            Stop::Truncated => Some(LlmError::new(
                LlmErrorKind::Truncated,
                format!(
                    "the answer was cut at the token limit ({} tokens); raise maxTokens",
                    request
                        .max_tokens
                        .or(request.model.max_tokens)
                        .unwrap_or(wire::DEFAULT_MAX_TOKENS)
                ),
            )),
            Stop::Filtered => Some(LlmError::new(
                LlmErrorKind::ContentFiltered,
                "the provider's content filter blocked the answer",
            )),
            Stop::Refused(words) => {
                let words: String = words.chars().take(300).collect();
                Some(LlmError::new(
                    LlmErrorKind::Refusal,
                    format!("the model refused: {words}"),
                ))
            }
        };
        if let Some(e) = failed {
            return Err(e.with_used(answer));
        }
        if let Some(s) = &request.schema {
            match structured(&answer.text, &s.schema) {
                Ok(json) => answer.json = Some(json),
                Err(e) => return Err(e.with_used(answer)),
            }
        }
        Ok(answer)
    }

    fn preview(&self, request: &LlmRequest) -> Result<RequestPreview, LlmError> {
        let t = self.target(request, true)?;
        let mut headers: Vec<(String, String)> = self
            .headers(&t, request)
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        match &t.auth {
            Auth::None => {}
            Auth::Bearer(k) | Auth::Header(_, k) if k.is_empty() => {
                headers.push(("authorization".into(), "[no key configured]".into()))
            }
            Auth::Bearer(_) | Auth::AzureIdentity => {
                headers.push(("authorization".into(), "Bearer [redacted]".into()))
            }
            Auth::Header(name, _) => headers.push(((*name).to_owned(), "[redacted]".into())),
        }
        Ok(RequestPreview {
            provider: t.provider.to_owned(),
            url: t.url.clone(),
            headers,
            body: wire::body(t.api, t.body_model.as_deref(), request),
        })
    }
}
