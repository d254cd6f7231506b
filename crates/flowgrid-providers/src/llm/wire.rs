//! The providers' wire formats: request bodies and how answers and errors read.
//!
//! | API | request | answer |
//! |---|---|---|
//! | OpenAI Responses (`openai`, Azure `v1`) | `instructions`, `input` (`input_text`, `input_image` as a data URL), `max_output_tokens`, `text.format` (`json_schema`, strict) | `status` (`incomplete` + `incomplete_details.reason`), `output[].content[]` (`output_text`, `refusal`), `usage` |
//! | OpenAI Chat Completions (`openai-chat`, Azure deployment URL) | `messages` (system, user with `text` and `image_url` parts), `max_completion_tokens`, `response_format` (`json_schema`) | `choices[0].message.content` / `.refusal`, `finish_reason`, `usage` |
//! | Anthropic Messages | `system`, `messages` (user with `image` base64 source and `text`), `max_tokens`, `output_config.format` (`json_schema`); no `temperature` (not in the API's request types) | `content[]` (`text`), `stop_reason`, `usage` |
//!
//! Usage is normalised to [`TokenUsage`]: `input` are prompt tokens not read from a cache
//! (Anthropic's cache writes count here), `cachedInput` those read from it, `output` every
//! generated token (reasoning included), `reasoning` the reasoning part when reported.

use flowgrid_domain::events::TokenUsage;
use serde_json::{Map, Value, json};

use super::{LlmError, LlmErrorKind, LlmRequest, ToolCall};

/// Which API a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI's Responses API (`POST /responses`).
    Responses,
    /// OpenAI's Chat Completions (`POST /chat/completions`).
    Chat,
    /// Anthropic's Messages API (`POST /v1/messages`).
    Anthropic,
}

/// Generated tokens when neither the step nor the agent sets a limit (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

fn data_url(media_type: &str, base64: &str) -> String {
    format!("data:{media_type};base64,{base64}")
}

/// The JSON body of `request` for `api`; `model` is the model (or deployment) field, `None`
/// where the URL names the deployment.
pub fn body(api: Api, model: Option<&str>, request: &LlmRequest) -> Value {
    let mut b = Map::new();
    if let Some(m) = model {
        b.insert("model".into(), json!(m));
    }
    let max_tokens = request
        .max_tokens
        .or(request.model.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    match api {
        Api::Responses => {
            if !request.system.is_empty() {
                b.insert("instructions".into(), json!(request.system));
            }
            let mut content = vec![json!({"type": "input_text", "text": request.prompt})];
            for image in &request.images {
                content.push(json!({
                    "type": "input_image",
                    "image_url": data_url(&image.media_type, &image.base64),
                    "detail": "auto",
                }));
            }
            b.insert(
                "input".into(),
                json!([{"role": "user", "content": content}]),
            );
            b.insert("max_output_tokens".into(), json!(max_tokens));
            if let Some(t) = request.model.temperature {
                b.insert("temperature".into(), json!(t));
            }
            if let Some(s) = &request.schema {
                b.insert(
                    "text".into(),
                    json!({"format": {"type": "json_schema", "name": s.name, "schema": s.schema, "strict": true}}),
                );
            }
            if !request.tools.is_empty() {
                let tools: Vec<Value> = request
                    .tools
                    .iter()
                    .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters, "strict": true}))
                    .collect();
                b.insert("tools".into(), Value::Array(tools));
                b.insert("tool_choice".into(), json!("required"));
            }
            b.insert("store".into(), json!(false));
        }
        Api::Chat => {
            let mut messages = Vec::new();
            if !request.system.is_empty() {
                messages.push(json!({"role": "system", "content": request.system}));
            }
            let mut content = vec![json!({"type": "text", "text": request.prompt})];
            for image in &request.images {
                content.push(json!({
                    "type": "image_url",
                    "image_url": {"url": data_url(&image.media_type, &image.base64)},
                }));
            }
            messages.push(json!({"role": "user", "content": content}));
            b.insert("messages".into(), Value::Array(messages));
            b.insert("max_completion_tokens".into(), json!(max_tokens));
            if let Some(t) = request.model.temperature {
                b.insert("temperature".into(), json!(t));
            }
            if let Some(s) = &request.schema {
                b.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": s.name, "schema": s.schema, "strict": true}}),
                );
            }
            if !request.tools.is_empty() {
                let tools: Vec<Value> = request
                    .tools
                    .iter()
                    .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                    .collect();
                b.insert("tools".into(), Value::Array(tools));
                b.insert("tool_choice".into(), json!("required"));
            }
        }
        Api::Anthropic => {
            b.insert("max_tokens".into(), json!(max_tokens));
            if !request.system.is_empty() {
                b.insert("system".into(), json!(request.system));
            }
            let mut content = Vec::new();
            for image in &request.images {
                content.push(json!({
                    "type": "image",
                    "source": {"type": "base64", "media_type": image.media_type, "data": image.base64},
                }));
            }
            content.push(json!({"type": "text", "text": request.prompt}));
            b.insert(
                "messages".into(),
                json!([{"role": "user", "content": content}]),
            );
            // No `temperature`: the Messages API's request types (anthropic SDK 2.14) have none.
            if let Some(s) = &request.schema {
                b.insert(
                    "output_config".into(),
                    json!({"format": {"type": "json_schema", "schema": s.schema}}),
                );
            }
            if !request.tools.is_empty() {
                let tools: Vec<Value> = request
                    .tools
                    .iter()
                    .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                    .collect();
                b.insert("tools".into(), Value::Array(tools));
                b.insert("tool_choice".into(), json!({"type": "any"}));
            }
        }
    }
    Value::Object(b)
}

/// How an answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A complete answer.
    Done,
    /// Cut at the token limit.
    Truncated,
    /// Blocked by a content filter.
    Filtered,
    /// The model refused; its words.
    Refused(String),
}

/// A successful HTTP answer, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The generated text.
    pub text: String,
    /// How it ended.
    pub stop: Stop,
    /// Tokens by kind.
    pub usage: TokenUsage,
    /// The usage object as sent.
    pub raw_usage: Value,
    /// The model that answered, as the provider names it.
    pub model: Option<String>,
    /// Functions the model called.
    pub tool_calls: Vec<ToolCall>,
}

/// A call's arguments: JSON as sent, or the provider's string parsed (kept as a string when
/// it is not JSON).
fn arguments(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        Value::Null => json!({}),
        other => other.clone(),
    }
}

fn bad(api: Api, what: &str) -> LlmError {
    LlmError::new(
        LlmErrorKind::BadAnswer,
        format!("the provider's answer is not a valid {api:?} answer: {what}"),
    )
}

fn count(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

/// Reads a 2xx answer of `api`.
pub fn parse(api: Api, bytes: &[u8]) -> Result<Parsed, LlmError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(api, &format!("not JSON ({e})")))?;
    if !v.is_object() {
        return Err(bad(api, "not a JSON object"));
    }
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let raw_usage = v.get("usage").cloned().unwrap_or(Value::Null);
    match api {
        Api::Responses => {
            let status = v
                .get("status")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(api, "no status"))?;
            let output = v
                .get("output")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(api, "no output"))?;
            let mut text = String::new();
            let mut refusal = None;
            for item in output.iter().filter(|i| i["type"] == "message") {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match part["type"].as_str() {
                        Some("output_text") => text.push_str(part["text"].as_str().unwrap_or("")),
                        Some("refusal") => {
                            refusal = Some(part["refusal"].as_str().unwrap_or("").to_owned())
                        }
                        _ => {}
                    }
                }
            }
            let tool_calls = output
                .iter()
                .filter(|i| i["type"] == "function_call")
                .map(|i| ToolCall {
                    name: i["name"].as_str().unwrap_or("").to_owned(),
                    arguments: arguments(&i["arguments"]),
                })
                .collect();
            let stop = match (status, refusal) {
                (_, Some(r)) => Stop::Refused(r),
                ("completed", None) => Stop::Done,
                ("incomplete", None) => match v["incomplete_details"]["reason"].as_str() {
                    Some("content_filter") => Stop::Filtered,
                    _ => Stop::Truncated,
                },
                (other, None) => return Err(bad(api, &format!("status {other:?}"))),
            };
            let input = count(&raw_usage, &["input_tokens"]);
            let cached = count(&raw_usage, &["input_tokens_details", "cached_tokens"]);
            Ok(Parsed {
                text,
                stop,
                usage: TokenUsage {
                    input: input.saturating_sub(cached),
                    cached_input: cached,
                    output: count(&raw_usage, &["output_tokens"]),
                    reasoning: count(&raw_usage, &["output_tokens_details", "reasoning_tokens"]),
                },
                raw_usage,
                model,
                tool_calls,
            })
        }
        Api::Chat => {
            let choice = v
                .get("choices")
                .and_then(Value::as_array)
                .and_then(|c| c.first())
                .ok_or_else(|| bad(api, "no choices"))?;
            let message = choice
                .get("message")
                .ok_or_else(|| bad(api, "no message"))?;
            let text = message["content"].as_str().unwrap_or("").to_owned();
            let tool_calls = message["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| ToolCall {
                    name: c["function"]["name"].as_str().unwrap_or("").to_owned(),
                    arguments: arguments(&c["function"]["arguments"]),
                })
                .collect();
            let stop = if let Some(r) = message["refusal"].as_str() {
                Stop::Refused(r.to_owned())
            } else {
                match choice["finish_reason"].as_str() {
                    Some("length") => Stop::Truncated,
                    Some("content_filter") => Stop::Filtered,
                    Some(_) => Stop::Done,
                    None => return Err(bad(api, "no finish_reason")),
                }
            };
            let input = count(&raw_usage, &["prompt_tokens"]);
            let cached = count(&raw_usage, &["prompt_tokens_details", "cached_tokens"]);
            Ok(Parsed {
                text,
                stop,
                usage: TokenUsage {
                    input: input.saturating_sub(cached),
                    cached_input: cached,
                    output: count(&raw_usage, &["completion_tokens"]),
                    reasoning: count(
                        &raw_usage,
                        &["completion_tokens_details", "reasoning_tokens"],
                    ),
                },
                raw_usage,
                model,
                tool_calls,
            })
        }
        Api::Anthropic => {
            if v["type"] != "message" {
                return Err(bad(api, "type is not \"message\""));
            }
            let content = v
                .get("content")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(api, "no content"))?;
            let text: String = content
                .iter()
                .filter(|c| c["type"] == "text")
                .filter_map(|c| c["text"].as_str())
                .collect();
            let tool_calls = content
                .iter()
                .filter(|c| c["type"] == "tool_use")
                .map(|c| ToolCall {
                    name: c["name"].as_str().unwrap_or("").to_owned(),
                    arguments: arguments(&c["input"]),
                })
                .collect();
            let stop = match v["stop_reason"].as_str() {
                Some("max_tokens") | Some("model_context_window_exceeded") => Stop::Truncated,
                Some("refusal") => Stop::Refused(text.clone()),
                Some(_) => Stop::Done,
                None => return Err(bad(api, "no stop_reason")),
            };
            Ok(Parsed {
                text,
                stop,
                usage: TokenUsage {
                    input: count(&raw_usage, &["input_tokens"])
                        + count(&raw_usage, &["cache_creation_input_tokens"]),
                    cached_input: count(&raw_usage, &["cache_read_input_tokens"]),
                    output: count(&raw_usage, &["output_tokens"]),
                    reasoning: 0,
                },
                raw_usage,
                model,
                tool_calls,
            })
        }
    }
}

/// How a non-2xx answer is classified: its kind, whether it may be retried, and a message
/// that carries the provider's words except for credential failures.
pub fn error(api: Api, status: u16, bytes: &[u8]) -> LlmError {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let e = &v["error"];
    let code = e["code"].as_str().unwrap_or("");
    let typ = e["type"].as_str().unwrap_or("");
    let said: String = match e["message"].as_str().or(v["message"].as_str()) {
        Some(m) => m.chars().take(300).collect(),
        None => String::from_utf8_lossy(bytes)
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect(),
    };
    let quota = code == "insufficient_quota"
        || typ == "insufficient_quota"
        || typ == "billing_error"
        || said.contains("credit balance")
        || said.contains("spend limit")
        || said.contains("exceeded your current quota");
    let (kind, retryable) = match status {
        _ if quota => (LlmErrorKind::QuotaExhausted, false),
        429 => (LlmErrorKind::RateLimited, true),
        408 => (LlmErrorKind::Timeout, true),
        500..=599 => (LlmErrorKind::Unavailable, true),
        400 if code == "content_filter" || code == "content_policy_violation" => {
            (LlmErrorKind::ContentFiltered, false)
        }
        _ => (LlmErrorKind::Rejected, false),
    };
    let what = match api {
        Api::Anthropic => "Anthropic",
        _ => "the OpenAI API",
    };
    let message = match (status, kind) {
        (401 | 403, _) => format!(
            "{what} refused the credentials ({status}); check the deployment's key or identity"
        ),
        (_, LlmErrorKind::QuotaExhausted) => format!(
            "{what} answered {status}: the account's quota or spend limit is exhausted ({said})"
        ),
        (_, LlmErrorKind::ContentFiltered) => {
            format!("{what} answered {status}: the content filter blocked the prompt ({said})")
        }
        _ if said.is_empty() => format!("{what} answered {status}"),
        _ => format!("{what} answered {status}: {said}"),
    };
    LlmError {
        kind,
        message,
        retryable,
        used: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_normalised_per_api_with_cached_and_reasoning_tokens() {
        let r = parse(
            Api::Responses,
            br#"{"status":"completed","model":"gpt-4o","output":[{"type":"reasoning"},{"type":"message","content":[{"type":"output_text","text":"hi"}]}],
                "usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":40},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":20}}}"#,
        )
        .unwrap();
        assert_eq!(r.text, "hi");
        assert_eq!(
            (
                r.usage.input,
                r.usage.cached_input,
                r.usage.output,
                r.usage.reasoning
            ),
            (60, 40, 30, 20)
        );
        assert_eq!(r.raw_usage["input_tokens"], 100);
        let a = parse(
            Api::Anthropic,
            br#"{"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"output_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(
            (a.usage.input, a.usage.cached_input, a.usage.output),
            (15, 7, 3)
        );
    }

    #[test]
    fn refusal_truncation_and_filtering_are_told_apart() {
        let chat = |finish: &str, refusal: &str| {
            parse(
                Api::Chat,
                format!(r#"{{"choices":[{{"message":{{"content":null,"refusal":{refusal}}},"finish_reason":"{finish}"}}]}}"#).as_bytes(),
            )
            .unwrap()
            .stop
        };
        assert_eq!(chat("length", "null"), Stop::Truncated);
        assert_eq!(chat("content_filter", "null"), Stop::Filtered);
        assert_eq!(chat("stop", "\"no\""), Stop::Refused("no".into()));
        let incomplete = parse(
            Api::Responses,
            br#"{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]}"#,
        )
        .unwrap();
        assert_eq!(incomplete.stop, Stop::Truncated);
        let anthropic = parse(
            Api::Anthropic,
            br#"{"type":"message","content":[],"stop_reason":"refusal"}"#,
        )
        .unwrap();
        assert!(matches!(anthropic.stop, Stop::Refused(_)));
    }

    #[test]
    fn quota_is_never_retried_and_credentials_are_not_echoed() {
        let q = error(Api::Chat, 429, br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#);
        assert_eq!(q.kind, LlmErrorKind::QuotaExhausted);
        assert!(!q.retryable);
        let r = error(Api::Chat, 429, br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#);
        assert!(r.retryable);
        let o = error(
            Api::Anthropic,
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!((o.kind, o.retryable), (LlmErrorKind::Unavailable, true));
        let k = error(
            Api::Chat,
            401,
            br#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz"}}"#,
        );
        assert!(!k.message.contains("sk-"), "{}", k.message);
        assert!(!error(Api::Chat, 400, b"{}").retryable);
    }

    #[test]
    fn garbage_is_a_bad_answer() {
        assert_eq!(
            parse(Api::Responses, b"<html>").unwrap_err().kind,
            LlmErrorKind::BadAnswer
        );
        assert_eq!(
            parse(Api::Chat, b"{}").unwrap_err().kind,
            LlmErrorKind::BadAnswer
        );
    }
}
