//! The Design routes. Each handler extracts, calls the provider layer, the compiler or the store,
//! and answers a typed view.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use flowgrid_domain::agent::{AgentInput, Interaction, ModelSettings, OfferedProviders};
use flowgrid_domain::blob::{BlobName, bytes_stream};
use flowgrid_domain::events::{AgentCompiled, CloudEvent, PlatformEvent, TokenUsage, topics};
use flowgrid_domain::plan::StepAction;
use flowgrid_domain::plan::template::Templates;
use flowgrid_domain::store::record_compiled;
use flowgrid_domain::{Agent, AgentId, TenantId};
use flowgrid_http::app::App;
use flowgrid_http::auth::{Caller, Role};
use flowgrid_http::envelope::OutputBindings;
use flowgrid_http::extract::Id;
use flowgrid_http::openapi::routes;
use flowgrid_http::trace::Trace;
use flowgrid_http::{Error, FieldError, Json, Result};
use flowgrid_providers::llm::offline::DRAFT_SCHEMA;
use flowgrid_providers::llm::{
    ImageInput, LlmAnswer, LlmError, LlmErrorKind, LlmProvider, LlmRequest, OutputSchema,
    estimate_tokens, prices, wire,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::calls::{CallLog, EVENTS};
use crate::compile::Artifact;
use crate::image;
use crate::probe::Probe;
use crate::{APP, AppState};

/// The output binding of `CompileAgent` to topic `agent-compiled`.
pub const COMPILED: &str = "compiled";

/// Every function of the Design app: `functions/design/<Name>/function.json` declares the same.
pub fn app() -> App<AppState> {
    App::new(APP)
        // The functions that call models publish each call (`flowgrid.llm.call`) through
        // their `events` output binding (calls.rs).
        .http_envelope(
            "post",
            "AnalyzeImage",
            "design/analyze-image",
            &[(EVENTS, topics::PLATFORM_EVENTS)],
            routes!(analyze_image),
        )
        .http_envelope(
            "post",
            "AnalyzeModel",
            "design/analyze-model",
            &[(EVENTS, topics::PLATFORM_EVENTS)],
            routes!(analyze_model),
        )
        .http_envelope(
            "post",
            "GenerateInteractions",
            "design/generate-interactions",
            &[(EVENTS, topics::PLATFORM_EVENTS)],
            routes!(generate_interactions),
        )
        .http_envelope(
            "post",
            "CompileAgent",
            "design/compile/{id}",
            &[
                (COMPILED, topics::AGENT_COMPILED),
                (EVENTS, topics::PLATFORM_EVENTS),
            ],
            routes!(compile_agent),
        )
        .get(
            "PreviewPrompts",
            "design/prompt-preview/{id}",
            routes!(preview_prompts),
        )
}

// ------------------------------------------------------------------------------------------
// Model calls

/// A model failure as the caller sees it: a spent budget is 403, a model that cannot do what
/// was asked is a 422 naming `model`, an unreachable or failing provider a 503.
fn model_error(e: LlmError) -> Error {
    match e.kind {
        LlmErrorKind::BudgetExceeded => Error::Forbidden(e.message),
        LlmErrorKind::NotConfigured
        | LlmErrorKind::Rejected
        | LlmErrorKind::Refusal
        | LlmErrorKind::Truncated
        | LlmErrorKind::ContentFiltered
        | LlmErrorKind::BadAnswer
        | LlmErrorKind::QuotaExhausted => {
            Error::Validation(vec![FieldError::new("model", e.message)])
        }
        LlmErrorKind::RateLimited | LlmErrorKind::Unavailable | LlmErrorKind::Timeout => {
            Error::Unavailable(e.message)
        }
    }
}

/// Calls the model under the tenant's budget: charged what it used (a failed call that
/// generated tokens too) and recorded in `log` (published as `flowgrid.llm.call`).
async fn call_model(
    state: &AppState,
    tenant: &TenantId,
    request: &LlmRequest,
    log: &CallLog,
) -> std::result::Result<LlmAnswer, LlmError> {
    let reservation = state.budget.admit(tenant, request).await?;
    let answer = state.llm.complete(request).await;
    if let Some(r) = reservation {
        state.budget.settle_call(r, &answer).await;
    }
    log.record(&answer);
    answer
}

/// [`call_model`], its failure as a problem.
async fn call(
    state: &AppState,
    tenant: &TenantId,
    request: &LlmRequest,
    log: &CallLog,
) -> Result<LlmAnswer> {
    Ok(call_model(state, tenant, request, log)
        .await
        .map_err(model_error)?)
}

/// What a model call used and cost, in answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelCall)]
struct CallView {
    /// The provider that answered.
    provider: String,
    /// The model that answered.
    model: String,
    /// Tokens used.
    tokens: TokenUsage,
    /// How long the call took.
    latency_ms: u64,
    /// What it cost, USD; null when the price is not known.
    cost_usd: Option<f64>,
    /// Why the cost is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_unknown_reason: Option<String>,
    /// The price list the cost comes from.
    price_version: String,
}

impl From<&LlmAnswer> for CallView {
    fn from(a: &LlmAnswer) -> Self {
        CallView {
            provider: a.provider.clone(),
            model: a.model.clone(),
            tokens: a.usage,
            latency_ms: a.latency_ms,
            cost_usd: a.cost.usd,
            cost_unknown_reason: a.cost.unknown_reason.clone(),
            price_version: a.cost.price_version.clone(),
        }
    }
}

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

/// The JSON Schema of a draft (strict: every property required, nulls for what does not apply).
pub fn draft_schema() -> Value {
    let step = json!({
        "type": "object", "additionalProperties": false,
        "required": ["id", "kind", "prompt", "method", "url", "connection", "action"],
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string", "enum": ["llm", "http", "integration", "transform"]},
            "prompt": nullable("string"), "method": nullable("string"), "url": nullable("string"),
            "connection": nullable("string"), "action": nullable("string")
        }
    });
    let interaction = json!({
        "type": "object", "additionalProperties": false,
        "required": ["name", "trigger", "description", "schedule", "event"],
        "properties": {
            "name": {"type": "string"}, "trigger": {"type": "string", "enum": ["manual", "schedule", "event"]},
            "description": {"type": "string"}, "schedule": nullable("string"), "event": nullable("string")
        }
    });
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["name", "description", "definition", "schedule", "provenance"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "schedule": nullable("string"),
            "definition": {
                "type": "object", "additionalProperties": false,
                "required": ["instructions", "steps", "integrations", "interactions"],
                "properties": {
                    "instructions": {"type": "string"},
                    "steps": {"type": "array", "items": step},
                    "integrations": {"type": "array", "items": {"type": "string"}},
                    "interactions": {"type": "array", "items": interaction}
                }
            },
            "provenance": {"type": "array", "items": {
                "type": "object", "additionalProperties": false, "required": ["element", "led_to"],
                "properties": {"element": {"type": "string"}, "led_to": {"type": "string"}}
            }}
        }
    })
}

const DESIGNER: &str = "You design Flowgrid agents. From the process the user shows (a diagram, a whiteboard, a \
description), draft an agent: a name, a description, instructions, the steps in order (kind llm for \
thinking or writing, http for calling a URL, integration for jira, servicenow or github), the \
integrations used, and how it starts (manual; schedule with a six-field NCRONTAB cron in UTC; event). \
For each step and interaction, name in provenance the element of the input that led to it.";

/// Drops `null` members, recursively (the strict schema's "does not apply").
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// A draft's agent part (name, description, definition, schedule) and what the Agents app's
/// validators say of it, with the providers this deployment `offered`.
fn check_draft(draft: &Value, offered: &OfferedProviders) -> (Value, Vec<FieldError>) {
    let mut agent = Map::new();
    for key in ["name", "description", "definition", "schedule"] {
        if let Some(v) = draft.get(key).filter(|v| !v.is_null()) {
            agent.insert(key.into(), v.clone());
        }
    }
    let agent = Value::Object(agent);
    let problems = match serde_json::from_value::<AgentInput>(agent.clone()) {
        Ok(input) => match input.validate_offered(offered) {
            Ok(_) => Vec::new(),
            Err(flowgrid_domain::Error::Validation(errors)) => errors,
            Err(other) => vec![FieldError::new("draft", other.to_string())],
        },
        Err(e) => vec![FieldError::new("draft", e.to_string())],
    };
    (agent, problems)
}

// ------------------------------------------------------------------------------------------
// analyze-image

/// The JSON body of `analyze-image`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = AnalyzeImageRequest)]
struct AnalyzeImageBody {
    /// The image, standard base64 (a `data:` URL is accepted too).
    image: String,
    /// Text known to be in the image (labels of a diagram), optional.
    #[serde(default)]
    text: Option<String>,
    /// Which model reads it (default: offline).
    #[serde(default)]
    model: Option<ModelSettings>,
}

/// The multipart form `analyze-image` reads as well as JSON.
#[derive(Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AnalyzeImageForm)]
#[expect(
    dead_code,
    reason = "documents the multipart body read_image_request reads"
)]
struct ImageForm {
    /// The image file (PNG, JPEG, GIF or WebP).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Text known to be in the image (labels of a diagram).
    #[schema(nullable = false)]
    text: Option<String>,
    /// Which model reads it (default: offline), as JSON.
    #[schema(nullable = false)]
    model: Option<ModelSettings>,
}

/// The image as stored (content-addressed).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DesignImage)]
struct StoredImage {
    /// The blob's name: `design/images/<sha256>.<extension>`.
    blob: String,
    /// SHA-256 of the image, hex.
    sha256: String,
    /// Its media type, from its content.
    media_type: &'static str,
    /// Its size.
    bytes: usize,
}

/// A draft agent from an image.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentDraft)]
struct DraftView {
    /// An `AgentInput`: `POST /api/agents` accepts it as it is once its problems are fixed.
    #[schema(value_type = Object)]
    draft: Value,
    /// Which element of the image led to which step or interaction (`element`, `led_to`).
    #[schema(value_type = Vec<Object>)]
    provenance: Value,
    /// What the Agents app's validators say of the draft (empty: it can be saved as it is).
    problems: Vec<FieldError>,
    image: StoredImage,
    call: CallView,
}

/// Reads the image, its text and the model from a JSON or a multipart body.
fn read_image_request(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<u8>, Option<String>, ModelSettings)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Exactly JSON (`application/json` or `application/<x>+json`, parameters aside), as the
    // kit's extractors take it: `application/jsonx` is a 415, not a JSON body.
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        // Read strictly, as every other body (an array is not mapped onto the fields).
        let parsed: AnalyzeImageBody = flowgrid_http::json::parse(body)?;
        let b64 = parsed
            .image
            .rsplit_once(";base64,")
            .map_or(parsed.image.as_str(), |(_, d)| d);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| Error::Validation(vec![FieldError::new("image", "is not base64")]))?;
        Ok((bytes, parsed.text, parsed.model.unwrap_or_default()))
    } else if let Some(boundary) = image::boundary(content_type) {
        let parts = image::multipart(body, &boundary)?;
        let mut image_bytes = None;
        let (mut text, mut model) = (None, ModelSettings::default());
        for part in parts {
            match part.name.as_str() {
                "image" => image_bytes = Some(part.body),
                "text" => text = Some(String::from_utf8_lossy(&part.body).into_owned()),
                "model" => {
                    model = serde_json::from_slice(&part.body).map_err(|e| {
                        Error::Validation(vec![FieldError::new("model", e.to_string())])
                    })?
                }
                other => {
                    return Err(Error::Validation(vec![FieldError::new(
                        other,
                        "is not a field of this form (image, text, model)",
                    )])
                    .into());
                }
            }
        }
        let bytes = image_bytes
            .ok_or_else(|| Error::Validation(vec![FieldError::new("image", "is required")]))?;
        Ok((bytes, text, model))
    } else {
        Err(Error::UnsupportedMediaType.into())
    }
}

/// Drafts an agent from an image (a diagram, a whiteboard).
///
/// Stores the image (content-addressed) and drafts an agent from it; writes no agent. The body
/// is JSON (the image in base64) or a multipart form. The model call is charged to the tenant's
/// AI budget and published as `flowgrid.llm.call`.
#[utoipa::path(post, path = "/api/design/analyze-image",
    request_body(description = "The image, text known to be in it, and the model that reads it.",
        content(
            (AnalyzeImageBody = "application/json", example = json!({
                "image": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
                "text": "Ticket arrives -> classify urgency -> open Jira issue",
                "model": {"provider": "offline", "model": "offline"}
            })),
            (ImageForm = "multipart/form-data"),
        )),
    responses(
        (status = 200, description = "The draft, what the validators say of it, the stored image and the model call.", body = DraftView),
        (status = 403, description = "The editor role is required, or the tenant's monthly AI budget is spent."),
        (status = 422, description = "The body was read but a field is invalid, or the model cannot do what was asked (`model`: not configured, refused, truncated, filtered, an answer breaking the schema, quota exhausted)."),
        (status = 503, description = "The model provider is unreachable, rate-limited or timed out, or storage is unreachable; retry later."),
        (status = 413, description = "The body is larger than the limit, or the image larger than `FLOWGRID_DESIGN_MAX_IMAGE_BYTES`."),
        (status = 415, description = "The body is neither JSON (`application/json`, `application/<x>+json`) nor `multipart/form-data`."),
    ))]
async fn analyze_image(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let log = CallLog::new(&caller.tenant);
    let result = draft_from_image(&state, &caller, &headers, body, &log).await;
    log.respond(&headers, result.map(Json))
}

async fn draft_from_image(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
    log: &CallLog,
) -> Result<DraftView> {
    caller.require(Role::Editor)?;
    let body = body.map_err(|_| Error::PayloadTooLarge {
        limit_bytes: flowgrid_http::body_limit_bytes(),
    })?;
    let (bytes, text, model) = read_image_request(headers, &body)?;
    let limit = state.settings.max_image_bytes;
    if bytes.len() > limit {
        return Err(Error::PayloadTooLarge { limit_bytes: limit }.into());
    }
    let kind = image::sniff(&bytes).ok_or_else(|| image::not_an_image("image"))?;
    let sha256 = image::sha256_hex(&bytes);
    let name = BlobName::parse(&format!("design/images/{sha256}.{}", kind.extension()))?;
    let size = bytes.len();
    let hint = text.or_else(|| {
        (kind == image::Kind::Png)
            .then(|| image::png_text(&bytes))
            .flatten()
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    state
        .stores
        .blobs
        .upload(
            &caller.tenant,
            &name,
            kind.media_type(),
            bytes_stream(bytes),
        )
        .await?;
    let request = LlmRequest {
        model,
        system: DESIGNER.into(),
        prompt: "Draft the agent this image shows.".into(),
        max_tokens: Some(4000),
        idempotency_key: format!("design:{sha256}"),
        images: vec![ImageInput {
            media_type: kind.media_type().into(),
            base64: encoded,
            text_hint: hint,
        }],
        schema: Some(OutputSchema {
            name: DRAFT_SCHEMA.into(),
            schema: draft_schema(),
        }),
        ..LlmRequest::default()
    };
    let answer = call(state, &caller.tenant, &request, log).await?;
    let raw = without_nulls(answer.json.clone().unwrap_or(Value::Null));
    let (draft, problems) = check_draft(&raw, &state.settings.providers);
    Ok(DraftView {
        draft,
        provenance: raw.get("provenance").cloned().unwrap_or(json!([])),
        problems,
        image: StoredImage {
            blob: name.as_str().to_owned(),
            sha256,
            media_type: kind.media_type(),
            bytes: size,
        },
        call: CallView::from(&answer),
    })
}

// ------------------------------------------------------------------------------------------
// analyze-model

/// The body of `analyze-model`: an agent, or model settings (with the capabilities needed).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = AnalyzeModelRequest)]
struct AnalyzeModelBody {
    /// An agent of the caller's tenant (a UUID): its model and its declared capabilities.
    /// Exactly one of `agentId` and `model` (422 otherwise).
    #[serde(default)]
    #[schema(value_type = Option<AgentId>)]
    agent_id: Option<String>,
    /// Model settings to analyze.
    #[serde(default)]
    model: Option<ModelSettings>,
    /// Capabilities wanted (`vision`, `tools`, `jsonSchema`); with an agent, its own.
    #[serde(default)]
    capabilities: Vec<String>,
}

/// One capability: whether the model has it, and how that is known.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelCapability)]
struct Capability {
    /// Null: not known (not configured, no probe answered).
    supported: Option<bool>,
    /// `configuration`, `probe`, or both.
    source: Vec<&'static str>,
    /// When the probe that decided it ran (kept per provider, model and endpoint for
    /// `FLOWGRID_DESIGN_PROBE_TTL_SECS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    probed_at: Option<chrono::DateTime<Utc>>,
    /// Why it is not supported or not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// A capability needed that the model lacks or is not known to have.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CapabilityGap)]
struct Gap {
    /// The capability as asked.
    capability: String,
    /// Why it is a gap.
    reason: String,
}

/// What a model can do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelAnalysis)]
struct ModelView {
    provider: String,
    model: String,
    /// Reading images.
    vision: Capability,
    /// Calling tools (functions).
    tools: Capability,
    /// Answering JSON that follows a JSON Schema.
    json_schema: Capability,
    /// The context window, when configured.
    context_tokens: Option<u64>,
    /// The capabilities needed (the agent's and the body's), sorted.
    needs: Vec<String>,
    /// Needed capabilities the model lacks or is not known to have.
    gaps: Vec<Gap>,
}

/// The verdict of `probe` for `model`: from the cache, else by a probe call (charged, and
/// published, like any call).
async fn probe_verdict(
    state: &AppState,
    tenant: &TenantId,
    model: &ModelSettings,
    probe: Probe,
    log: &CallLog,
) -> crate::probe::Verdict {
    let ttl = state.settings.probe_ttl;
    if let Some(v) = state.probes.get(model, probe, ttl) {
        return v;
    }
    let result = call_model(state, tenant, &probe.request(model), log).await;
    let verdict = probe.verdict(&result);
    if !ttl.is_zero() {
        state.probes.put(model, probe, &verdict);
    }
    verdict
}

/// Which capabilities a model has, and the gaps for an agent or a need.
///
/// From the deployment's configuration and a probe call each for JSON Schema output, vision
/// and tools (kept per provider, model and endpoint; charged and published like any call; the
/// offline provider is never probed); gaps named.
#[utoipa::path(post, path = "/api/design/analyze-model",
    request_body(content = AnalyzeModelBody, description = "An agent, or model settings and the capabilities needed.", example = json!({
            "model": {"provider": "offline", "model": "offline"},
            "capabilities": ["vision", "jsonSchema"]
        })),
    responses(
        (status = 200, description = "The model's capabilities and the gaps.", body = ModelView),
        (status = 404, description = "No such agent for the caller's tenant."),
        (status = 403, description = "The editor role is required, or the tenant's monthly AI budget is spent."),
        (status = 422, description = "The body was read but a field is invalid, or the model cannot do what was asked (`model`: not configured, refused, truncated, filtered, an answer breaking the schema, quota exhausted)."),
        (status = 503, description = "The model provider is unreachable, rate-limited or timed out, or storage is unreachable; retry later."),
    ))]
async fn analyze_model(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<AnalyzeModelBody>,
) -> Response {
    let log = CallLog::new(&caller.tenant);
    let result = model_capabilities(&state, &caller, body, &log).await;
    log.respond(&headers, result.map(Json))
}

async fn model_capabilities(
    state: &AppState,
    caller: &Caller,
    body: AnalyzeModelBody,
    log: &CallLog,
) -> Result<ModelView> {
    caller.require(Role::Editor)?;
    let (model, mut needs) = match (&body.agent_id, body.model) {
        (Some(id), None) => {
            // A body field: a malformed one is a 422 naming it (a path id would be a 400).
            let id = AgentId::parse(id).map_err(|_| {
                Error::Validation(vec![FieldError::new("agentId", "is not an agent id")])
            })?;
            let agent = state.stores.agents.get(&caller.tenant, id).await?;
            log.for_agent(id);
            (
                agent.definition.model.clone(),
                agent.definition.capabilities.clone(),
            )
        }
        (None, Some(model)) => (model, Vec::new()),
        _ => {
            return Err(Error::Validation(vec![FieldError::new(
                "agentId",
                "give either agentId or model",
            )])
            .into());
        }
    };
    needs.extend(body.capabilities);
    needs.sort();
    needs.dedup();
    let key = format!("{}/{}", model.provider, model.model);
    let offline = model.provider == "offline";
    let configured = state
        .settings
        .capabilities
        .get(&key)
        .cloned()
        .unwrap_or_else(|| {
            if offline {
                json!({"vision": true, "tools": false, "jsonSchema": true, "contextTokens": 8192})
            } else {
                Value::Null
            }
        });
    let from_config = |name: &str| configured.get(name).and_then(Value::as_bool);
    let mut found = Vec::new();
    for (probe, name) in [
        (Probe::JsonSchema, "jsonSchema"),
        (Probe::Vision, "vision"),
        (Probe::Tools, "tools"),
    ] {
        let config = from_config(name);
        let verdict = if offline {
            // The offline provider calls no model: nothing to probe; what it does is built in.
            crate::probe::Verdict {
                supported: None,
                detail: Some(
                    "offline provider: no probe call (it calls no model); from its built-in configuration"
                        .into(),
                ),
                probed_at: None,
            }
        } else {
            probe_verdict(state, &caller.tenant, &model, probe, log).await
        };
        let mut source = Vec::new();
        if config.is_some() {
            source.push("configuration");
        }
        if verdict.supported.is_some() {
            source.push("probe");
        }
        found.push(Capability {
            supported: verdict.supported.or(config),
            source,
            probed_at: verdict.probed_at,
            detail: if verdict.supported == Some(true) {
                None
            } else {
                verdict.detail
            },
        });
    }
    let [json_schema, vision, tools]: [Capability; 3] = found
        .try_into()
        .map_err(|_| Error::Internal("three probes".into()))?;
    let mut gaps = Vec::new();
    for need in &needs {
        let have = match need.as_str() {
            "vision" => &vision,
            "tools" => &tools,
            "jsonSchema" | "json_schema" | "structuredOutput" => &json_schema,
            _ => {
                gaps.push(Gap {
                    capability: need.clone(),
                    reason: "not a capability Flowgrid knows (vision, tools, jsonSchema)".into(),
                });
                continue;
            }
        };
        match have.supported {
            Some(true) => {}
            Some(false) => gaps.push(Gap { capability: need.clone(), reason: format!("{key} does not support it") }),
            None => gaps.push(Gap { capability: need.clone(), reason: format!("unknown for {key}: not in FLOWGRID_DESIGN_MODEL_CAPABILITIES and no probe answered") }),
        }
    }
    Ok(ModelView {
        provider: model.provider,
        model: model.model,
        vision,
        tools,
        json_schema,
        context_tokens: configured.get("contextTokens").and_then(Value::as_u64),
        needs,
        gaps,
    })
}

// ------------------------------------------------------------------------------------------
// generate-interactions

/// The body of `generate-interactions`: an agent or a description.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = GenerateInteractionsRequest)]
struct InteractionsBody {
    /// An agent of the caller's tenant (a UUID). Exactly one of `agentId` and `description`
    /// (422 otherwise).
    #[serde(default)]
    #[schema(value_type = Option<AgentId>)]
    agent_id: Option<String>,
    /// What the agent does, 1 to 20000 characters not all white space (422 otherwise).
    #[serde(default)]
    description: Option<String>,
    /// Which model proposes (default: the agent's, else offline).
    #[serde(default)]
    model: Option<ModelSettings>,
}

/// A proposed interaction the Agents app's validators refuse.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RejectedInteraction)]
struct Rejected {
    /// The proposal as the model made it.
    #[schema(value_type = Object)]
    interaction: Value,
    /// Why it is refused.
    errors: Vec<FieldError>,
}

/// Proposed interactions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ProposedInteractions)]
struct InteractionsView {
    /// Proposed interactions the Agents app's validators accept.
    interactions: Vec<Interaction>,
    /// Proposed ones they refuse, with why.
    rejected: Vec<Rejected>,
    call: CallView,
}

/// Checks one interaction with the Agents app's validators (on an otherwise minimal agent).
fn check_interaction(i: &Value) -> std::result::Result<Interaction, Vec<FieldError>> {
    let candidate =
        json!({"name": "check", "definition": {"instructions": "check", "interactions": [i]}});
    let input: AgentInput = serde_json::from_value(candidate)
        .map_err(|e| vec![FieldError::new("interaction", e.to_string())])?;
    match input.validate() {
        Ok(_) => serde_json::from_value(i.clone())
            .map_err(|e| vec![FieldError::new("interaction", e.to_string())]),
        Err(flowgrid_domain::Error::Validation(errors)) => Err(errors),
        Err(other) => Err(vec![FieldError::new("interaction", other.to_string())]),
    }
}

/// Proposes how an agent starts: its interactions.
///
/// Proposed interactions (manual, schedule with a six-field cron, event) for an agent or a
/// description, checked by the Agents app's validators. Writes no agent.
#[utoipa::path(post, path = "/api/design/generate-interactions",
    request_body(content = InteractionsBody, description = "An agent, or a description of what it does.", example = json!({
            "description": "Every weekday at 8:00 UTC, summarise yesterday's tickets and post them to Slack."
        })),
    responses(
        (status = 200, description = "Interactions the validators accept, and those they refuse with why.", body = InteractionsView),
        (status = 404, description = "No such agent for the caller's tenant."),
        (status = 403, description = "The editor role is required, or the tenant's monthly AI budget is spent."),
        (status = 422, description = "The body was read but a field is invalid, or the model cannot do what was asked (`model`: not configured, refused, truncated, filtered, an answer breaking the schema, quota exhausted)."),
        (status = 503, description = "The model provider is unreachable, rate-limited or timed out, or storage is unreachable; retry later."),
    ))]
async fn generate_interactions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<InteractionsBody>,
) -> Response {
    let log = CallLog::new(&caller.tenant);
    let result = propose_interactions(&state, &caller, body, &log).await;
    log.respond(&headers, result.map(Json))
}

async fn propose_interactions(
    state: &AppState,
    caller: &Caller,
    body: InteractionsBody,
    log: &CallLog,
) -> Result<InteractionsView> {
    caller.require(Role::Editor)?;
    let (text, model) = match (&body.agent_id, &body.description) {
        (Some(id), None) => {
            // A body field: a malformed one is a 422 naming it (a path id would be a 400).
            let id = AgentId::parse(id).map_err(|_| {
                Error::Validation(vec![FieldError::new("agentId", "is not an agent id")])
            })?;
            let agent = state.stores.agents.get(&caller.tenant, id).await?;
            log.for_agent(id);
            (
                format!(
                    "{}\n{}\n{}",
                    agent.name, agent.description, agent.definition.instructions
                ),
                agent.definition.model.clone(),
            )
        }
        (None, Some(d)) if !d.trim().is_empty() && d.len() <= 20_000 => {
            (d.clone(), ModelSettings::default())
        }
        (None, Some(_)) => {
            return Err(Error::Validation(vec![FieldError::new(
                "description",
                "must be 1 to 20000 characters",
            )])
            .into());
        }
        _ => {
            return Err(Error::Validation(vec![FieldError::new(
                "agentId",
                "give either agentId or description",
            )])
            .into());
        }
    };
    let request = LlmRequest {
        model: body.model.unwrap_or(model),
        system: DESIGNER.into(),
        prompt: format!("Propose how this agent starts (its interactions):\n{text}"),
        max_tokens: Some(2000),
        idempotency_key: "design:interactions".into(),
        schema: Some(OutputSchema {
            name: DRAFT_SCHEMA.into(),
            schema: draft_schema(),
        }),
        ..LlmRequest::default()
    };
    let answer = call(state, &caller.tenant, &request, log).await?;
    let raw = without_nulls(answer.json.clone().unwrap_or(Value::Null));
    let proposed = raw["definition"]["interactions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (mut interactions, mut rejected) = (Vec::new(), Vec::new());
    for p in proposed {
        match check_interaction(&p) {
            Ok(i) => interactions.push(i),
            Err(errors) => rejected.push(Rejected {
                interaction: p,
                errors,
            }),
        }
    }
    Ok(InteractionsView {
        interactions,
        rejected,
        call: CallView::from(&answer),
    })
}

// ------------------------------------------------------------------------------------------
// compile

/// A compiled plan artifact.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CompiledAgent)]
struct CompiledView {
    agent_id: AgentId,
    /// The version compiled.
    agent_version: u32,
    /// The plan's format number.
    plan_format: u32,
    /// The compiler that made it.
    compiler_version: String,
    /// SHA-256 of the artifact, hex.
    content_hash: String,
    /// The artifact's blob name.
    blob: String,
    /// The plan's step count.
    steps: usize,
    /// The `agent-compiled` event's id (the same for an unchanged version).
    event_id: String,
    /// Whether this call stored the artifact (false: it was there already).
    stored: bool,
}

/// Compiles an agent's current version into an immutable plan artifact.
///
/// The artifact goes to Blob Storage, the compiled version is recorded on the agent, and
/// `agent-compiled` is published. Again on an unchanged version: the same artifact and event id.
#[utoipa::path(post, path = "/api/design/compile/{id}",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID).")),
    responses(
        (status = 200, description = "The artifact.", body = CompiledView,
            links(("PreviewPrompts" = (operation_id = "PreviewPrompts", parameters(("id" = "$response.body#/agentId")))),
                ("CompileAgent" = (operation_id = "CompileAgent", parameters(("id" = "$response.body#/agentId")))))),
        (status = 403, description = "The editor role is required."),
        (status = 409, description = "The agent is being changed by others; try again."),
        (status = 422, description = "The agent's definition does not compile; `errors` names each problem."),
    ))]
async fn compile_agent(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
    headers: HeaderMap,
) -> Result<Response> {
    caller.require(Role::Editor)?;
    let current: Agent = state.stores.agents.get(&caller.tenant, id).await?;
    // Recording a compile makes a version of its own (the Agent aggregate's rule): when nothing
    // but that changed since the compiled version, that version is what is compiled again.
    let agent = match current.compiled_version {
        Some(v) if v != current.version => {
            let compiled = state.stores.agents.version(&caller.tenant, id, v).await?;
            if compiled.definition == current.definition && compiled.schedule == current.schedule {
                compiled
            } else {
                current
            }
        }
        _ => current,
    };
    let artifact = Artifact::of(agent.compile()?)?;
    let name = artifact.blob_name()?;
    let blobs = &state.stores.blobs;
    let stored = match blobs.download(&caller.tenant, &name).await {
        Ok(_) => false,
        Err(flowgrid_domain::Error::NotFound) => {
            blobs
                .upload(
                    &caller.tenant,
                    &name,
                    "application/json",
                    bytes_stream(artifact.to_bytes()?),
                )
                .await?;
            true
        }
        Err(e) => return Err(e.into()),
    };
    record_compiled(
        state.stores.agents.as_ref(),
        &caller.tenant,
        id,
        agent.version,
    )
    .await?;
    let now = Utc::now();
    let compiled = CloudEvent::new(
        APP,
        &caller.tenant,
        now,
        AgentCompiled {
            agent_id: id,
            version: agent.version,
        },
    );
    let event_id = compiled.id.clone();
    let platform = CloudEvent::new(
        APP,
        &caller.tenant,
        now,
        PlatformEvent::AgentCompiled {
            agent_id: id,
            version: agent.version,
        },
    );
    let trace = Trace::from_headers(&headers);
    let mut bindings = OutputBindings::default();
    for e in trace.stamp(vec![compiled])? {
        bindings.push(COMPILED, e);
    }
    for e in trace.stamp(vec![platform])? {
        bindings.push(EVENTS, e);
    }
    let view = CompiledView {
        agent_id: id,
        agent_version: agent.version,
        plan_format: artifact.plan_format,
        compiler_version: artifact.compiler_version.clone(),
        content_hash: artifact.content_hash.clone(),
        blob: name.as_str().to_owned(),
        steps: artifact.plan["steps"].as_array().map_or(0, Vec::len),
        event_id,
        stored,
    };
    let mut response = Json(view).into_response();
    response.extensions_mut().insert(bindings);
    Ok(response)
}

// ------------------------------------------------------------------------------------------
// prompt-preview

/// Estimated tokens of a call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EstimatedTokens {
    /// The prompt's, estimated.
    input: u64,
    /// The most the answer may have (`maxTokens`).
    max_output: u64,
}

/// Estimated cost of a call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EstimatedCost {
    /// The most the call can cost (its prompt and `maxTokens`), USD.
    max_usd: Option<f64>,
    /// Why the cost is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_reason: Option<String>,
    /// The price list it comes from.
    price_version: String,
}

/// The request one `llm` step would send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LlmStepPreview)]
struct StepPreview {
    /// The step's id.
    step_id: String,
    /// The provider.
    provider: String,
    /// Where it would be sent (never a key).
    url: String,
    /// The headers, each `[name, value]`, secrets redacted.
    #[schema(value_type = Vec<Vec<String>>)]
    headers: Vec<(String, String)>,
    /// The exact body the provider would receive (for the sample input).
    #[schema(value_type = Object)]
    body: Value,
    /// Whether every template rendered with the sample input (else the template text is shown).
    rendered: bool,
    estimated_tokens: EstimatedTokens,
    estimated_cost: EstimatedCost,
}

/// What an agent's `llm` steps would send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PromptPreview)]
struct PreviewView {
    agent_id: AgentId,
    /// The version previewed (the current one).
    agent_version: u32,
    /// The input the templates were rendered with (from the agent's input schema).
    sample_input: Value,
    steps: Vec<StepPreview>,
}

/// A sample value of `schema`: each property named after itself.
fn sample(schema: Option<&Value>, name: &str) -> Value {
    let Some(s) = schema else { return json!({}) };
    match s.get("type").and_then(Value::as_str) {
        Some("object") | None if s.get("properties").is_some() => Value::Object(
            s["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), sample(Some(v), k)))
                .collect(),
        ),
        Some("array") => json!([sample(s.get("items"), name)]),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(true),
        Some("string") => json!(format!("<{name}>")),
        _ => json!({}),
    }
}

/// Previews the requests an agent's `llm` steps would send.
///
/// For each `llm` step, the exact request the provider would receive for a sample input
/// (secrets redacted), with estimated tokens and cost. Calls no model.
#[utoipa::path(get, path = "/api/design/prompt-preview/{id}",
    params(("id" = AgentId, Path, description = "The agent's id (a UUID).")),
    responses(
        (status = 200, description = "One request per `llm` step.", body = PreviewView),
        (status = 422, description = "The agent's definition does not compile, or its model provider is not configured here (`model`)."),
    ))]
async fn preview_prompts(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id<AgentId>,
) -> Result<Json<PreviewView>> {
    caller.require(Role::Viewer)?;
    let agent = state.stores.agents.get(&caller.tenant, id).await?;
    let plan = agent.compile()?;
    let input = sample(plan.input_schema.as_ref(), "input");
    let context = json!({"input": input, "steps": {}});
    let templates = Templates::new();
    let mut steps = Vec::new();
    for step in &plan.steps {
        let StepAction::Llm {
            prompt,
            system,
            max_tokens,
        } = &step.action
        else {
            continue;
        };
        let mut rendered = true;
        let mut render = |t: &str| match templates.render_str(t, &context) {
            Ok(Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(_) => {
                rendered = false;
                t.to_owned()
            }
        };
        let request = LlmRequest {
            model: plan.model.clone(),
            system: render(system),
            prompt: render(prompt),
            max_tokens: max_tokens.or(plan.model.max_tokens),
            idempotency_key: format!("{{jobId}}:{}", step.id),
            ..LlmRequest::default()
        };
        let preview = state.llm.preview(&request).map_err(model_error)?;
        let input_tokens = estimate_tokens(&request.system) + estimate_tokens(&request.prompt);
        let max_output = request.max_tokens.unwrap_or(wire::DEFAULT_MAX_TOKENS) as u64;
        let cost = prices::cost(
            &plan.model.provider,
            &plan.model.model,
            &TokenUsage {
                input: input_tokens,
                cached_input: 0,
                output: max_output,
                reasoning: 0,
            },
        );
        steps.push(StepPreview {
            step_id: step.id.clone(),
            provider: preview.provider,
            url: preview.url,
            headers: preview.headers,
            body: preview.body,
            rendered,
            estimated_tokens: EstimatedTokens {
                input: input_tokens,
                max_output,
            },
            estimated_cost: EstimatedCost {
                max_usd: cost.usd,
                unknown_reason: cost.unknown_reason,
                price_version: cost.price_version,
            },
        });
    }
    Ok(Json(PreviewView {
        agent_id: id,
        agent_version: agent.version,
        sample_input: input,
        steps,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_reference_and_link_of_the_document_resolves() {
        let doc = app().openapi();
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or("");
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
        let operations: Vec<&Value> = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, item)| item.as_object().into_iter().flatten().map(|(_, op)| op))
            .collect();
        let links = &doc["paths"]["/api/design/compile/{id}"]["post"]["responses"]["200"]["links"];
        assert!(links.as_object().is_some_and(|l| !l.is_empty()), "{links}");
        for (_, link) in links.as_object().into_iter().flatten() {
            assert!(
                operations
                    .iter()
                    .any(|op| op["operationId"] == link["operationId"]),
                "{link}"
            );
            assert_eq!(link["parameters"]["id"], "$response.body#/agentId");
        }
    }

    #[test]
    fn a_draft_naming_a_provider_the_deployment_does_not_offer_has_that_problem() {
        let draft = json!({"name": "triage", "definition": {
            "instructions": "Triage tickets.",
            "model": {"provider": "anthropic", "model": "claude-sonnet-4-5"}
        }});
        let (_, problems) = check_draft(&draft, &OfferedProviders::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "definition.model.provider");
        assert!(
            problems[0]
                .message
                .contains("FLOWGRID_AI_PROVIDERS lists offline"),
            "{problems:?}"
        );
        let (_, problems) = check_draft(&draft, &OfferedProviders::all());
        assert_eq!(problems, Vec::<FieldError>::new());
    }
}
