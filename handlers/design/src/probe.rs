//! What a model can do, asked of the model itself: `analyze-model`'s probe calls and their cache.
//!
//! Three tiny calls, each of which only a model with the capability answers as asked:
//!
//! | capability | the probe | supported when |
//! |---|---|---|
//! | `jsonSchema` | a strict JSON Schema answer (`{"ok": boolean}`) | the answer parses and matches the schema |
//! | `vision` | a 1×1 PNG as base64 input | the provider answers (a text-only model is refused with a 4xx) |
//! | `tools` | one function offered, a call of it required | the answer calls that function |
//!
//! A provider that refuses the feature (4xx), answers something else or refuses is a verdict of
//! "not supported"; a provider that cannot be asked (unreachable, rate limited, the tenant's
//! budget spent, no key) gives no verdict, and configuration decides. Verdicts are kept per
//! provider, model and endpoint (`FLOWGRID_DESIGN_PROBE_TTL_SECS`, default an hour) in the
//! instance's memory, so repeated analyses cost nothing; a probe is a model call and is
//! charged and published like any other. The offline provider is never probed: it calls no
//! model, and its capabilities are what it is built to do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flowgrid_domain::agent::ModelSettings;
use flowgrid_providers::llm::{
    ImageInput, LlmAnswer, LlmError, LlmErrorKind, LlmRequest, OutputSchema, ToolDefinition,
};
use serde_json::json;

/// A capability a probe asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Probe {
    /// Structured output with a strict JSON Schema.
    JsonSchema,
    /// Image input.
    Vision,
    /// Function calling.
    Tools,
}

/// The function the tools probe offers.
pub const PROBE_TOOL: &str = "record_probe";

const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

impl Probe {
    /// All of them, in the order they are made.
    pub const ALL: [Probe; 3] = [Probe::JsonSchema, Probe::Vision, Probe::Tools];

    /// The probe call for `model`.
    pub fn request(self, model: &ModelSettings) -> LlmRequest {
        let base = LlmRequest {
            model: model.clone(),
            system: String::new(),
            prompt: "Reply with {\"ok\": true}.".into(),
            max_tokens: Some(32),
            idempotency_key: "design:probe".into(),
            ..LlmRequest::default()
        };
        match self {
            Probe::JsonSchema => LlmRequest {
                schema: Some(OutputSchema {
                    name: "probe".into(),
                    schema: json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}),
                }),
                ..base
            },
            Probe::Vision => LlmRequest {
                prompt: "What colour is this image? One word.".into(),
                images: vec![ImageInput {
                    media_type: "image/png".into(),
                    base64: PNG_1X1.into(),
                    text_hint: Some("a single pixel".into()),
                }],
                ..base
            },
            Probe::Tools => LlmRequest {
                prompt: format!("Call {PROBE_TOOL} with ok set to true."),
                max_tokens: Some(64),
                tools: vec![ToolDefinition {
                    name: PROBE_TOOL.into(),
                    description: "Records that the model can call functions.".into(),
                    parameters: json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}),
                }],
                ..base
            },
        }
    }

    /// The verdict of a probe call's outcome: `Some(true)` answered as asked, `Some(false)`
    /// the model or provider does not do it, `None` no verdict (the probe could not run).
    pub fn verdict(self, result: &Result<LlmAnswer, LlmError>) -> Verdict {
        match result {
            Ok(a) if self == Probe::Tools => {
                if a.tool_calls.iter().any(|c| c.name == PROBE_TOOL) {
                    Verdict::of(Some(true), None)
                } else {
                    Verdict::of(
                        Some(false),
                        Some(format!(
                            "the model answered without calling the function it was required to call ({PROBE_TOOL})"
                        )),
                    )
                }
            }
            Ok(_) => Verdict::of(Some(true), None),
            Err(e) => match e.kind {
                LlmErrorKind::Rejected | LlmErrorKind::BadAnswer | LlmErrorKind::Refusal => {
                    Verdict::of(Some(false), Some(e.message.clone()))
                }
                _ => Verdict::of(None, Some(format!("no probe verdict: {}", e.message))),
            },
        }
    }
}

/// A probe's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Supported, not supported, or unknown (the probe could not run).
    pub supported: Option<bool>,
    /// Why not, or why there is no verdict.
    pub detail: Option<String>,
    /// When the probe that decided it ran (`None`: no verdict).
    pub probed_at: Option<DateTime<Utc>>,
}

impl Verdict {
    fn of(supported: Option<bool>, detail: Option<String>) -> Self {
        Verdict {
            probed_at: supported.map(|_| Utc::now()),
            supported,
            detail,
        }
    }
}

/// Verdicts kept per provider, model, endpoint and capability.
#[derive(Default)]
pub struct ProbeCache {
    entries: Mutex<HashMap<(String, Probe), (Instant, Verdict)>>,
}

/// The cache key of `model`: provider, model (or deployment) and the endpoint it is reached at
/// (an agent's own base URL, else the deployment's configured one).
pub fn key(model: &ModelSettings) -> String {
    format!(
        "{}|{}|{}",
        model.provider,
        model.model,
        model.base_url.as_deref().unwrap_or("")
    )
}

impl ProbeCache {
    /// A verdict not older than `ttl`.
    pub fn get(&self, model: &ModelSettings, probe: Probe, ttl: Duration) -> Option<Verdict> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(key(model), probe))
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `verdict` when it is one (a probe that could not run is asked again next time).
    pub fn put(&self, model: &ModelSettings, probe: Probe, verdict: &Verdict) {
        if verdict.supported.is_none() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(7 * 24 * 3600));
        entries.insert((key(model), probe), (Instant::now(), verdict.clone()));
    }
}
