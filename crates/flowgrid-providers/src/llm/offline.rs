//! The offline provider: the default of every deployment. No key, no network, deterministic.
//!
//! It is useful rather than an echo:
//! - a plain prompt gets an extractive summary: the sentences carrying the prompt's most
//!   frequent content words, within the token limit, and those words as key terms;
//! - a request for the `agent_draft` schema (the Design app's) gets a draft agent built from the
//!   text of the description or of the image (each line or sentence a step: a URL makes an
//!   `http` step, a named tool an `integration` step, anything else an `llm` step; "every day at
//!   9" a schedule), with provenance naming the line each step came from;
//! - any other schema gets a value built from the schema itself (required fields filled).
//!
//! Tokens are estimated at four characters a token; the cost is 0.

use std::collections::BTreeMap;

use flowgrid_domain::events::TokenUsage;
use serde_json::{Map, Value, json};

use super::{
    LlmAnswer, LlmError, LlmErrorKind, LlmProvider, LlmRequest, RequestPreview, estimate_tokens,
    prices,
};

/// The name of the Design app's draft schema.
pub const DRAFT_SCHEMA: &str = "agent_draft";

/// The offline provider.
#[derive(Debug, Clone, Default)]
pub struct OfflineProvider;

const STOP: &[&str] = &[
    "the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are", "be", "it",
    "this", "that", "please", "at", "by", "from", "as", "then", "into", "if", "when", "each",
    "every", "we", "you", "our", "your", "its", "was", "will", "can", "all", "about",
];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
}

/// The summary of `text` in at most `limit` words, and its key terms.
pub fn summarise(text: &str, limit: usize) -> String {
    let mut freq: BTreeMap<String, usize> = BTreeMap::new();
    for w in words(text) {
        *freq.entry(w).or_default() += 1;
    }
    let mut terms: Vec<(&String, &usize)> = freq.iter().collect();
    terms.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let key: Vec<&str> = terms.iter().take(5).map(|(w, _)| w.as_str()).collect();
    let sentences: Vec<&str> = text
        .split(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let score = |s: &str| {
        words(s)
            .map(|w| freq.get(&w).copied().unwrap_or(0))
            .sum::<usize>()
    };
    let mut ranked: Vec<(usize, &str)> =
        sentences.iter().enumerate().map(|(i, s)| (i, *s)).collect();
    ranked.sort_by(|a, b| score(b.1).cmp(&score(a.1)).then(a.0.cmp(&b.0)));
    let mut chosen: Vec<(usize, &str)> = Vec::new();
    let mut used = 0;
    for (i, s) in ranked {
        let n = s.split_whitespace().count();
        if used > 0 && used + n > limit {
            continue;
        }
        chosen.push((i, s));
        used += n;
        if used >= limit {
            break;
        }
    }
    chosen.sort();
    let body: Vec<String> = chosen
        .iter()
        .map(|(_, s)| {
            s.split_whitespace()
                .take(limit)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    format!(
        "Summary: {}. Key terms: {}.",
        body.join(". "),
        key.join(", ")
    )
}

const TOOLS: &[(&str, &str)] = &[
    ("jira", "jira"),
    ("servicenow", "servicenow"),
    ("service now", "servicenow"),
    ("github", "github"),
    ("pull request", "github"),
    ("incident", "servicenow"),
];

fn slug(text: &str, n: usize) -> String {
    let s: Vec<String> = words(text).take(n).collect();
    if s.is_empty() {
        "step".into()
    } else {
        s.join("-")
    }
}

/// A schedule read from `line` ("every day at 9", "daily at 14:30", "every hour", "every monday"),
/// as six-field NCRONTAB.
fn schedule(line: &str) -> Option<String> {
    let l = line.to_lowercase();
    let at = l.split(" at ").nth(1).and_then(|rest| {
        let t: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ':')
            .collect();
        let mut parts = t.split(':');
        let h = parts.next()?.parse::<u32>().ok().filter(|h| *h < 24)?;
        let m = parts
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .filter(|m| *m < 60)
            .unwrap_or(0);
        let h = if rest.contains("pm") && h < 12 {
            h + 12
        } else {
            h
        };
        Some((h, m))
    });
    let days = [
        ("monday", 1),
        ("tuesday", 2),
        ("wednesday", 3),
        ("thursday", 4),
        ("friday", 5),
        ("saturday", 6),
        ("sunday", 0),
    ];
    if l.contains("every hour") || l.contains("hourly") {
        return Some("0 0 * * * *".into());
    }
    if let Some((_, d)) = days
        .iter()
        .find(|(name, _)| l.contains(&format!("every {name}")))
    {
        let (h, m) = at.unwrap_or((9, 0));
        return Some(format!("0 {m} {h} * * {d}"));
    }
    if l.contains("every day")
        || l.contains("daily")
        || l.contains("each morning")
        || l.contains("every morning")
        || at.is_some() && l.contains("every")
    {
        let (h, m) = at.unwrap_or((9, 0));
        return Some(format!("0 {m} {h} * * *"));
    }
    None
}

/// A draft agent (the Design app's `agent_draft` shape) from a description or an image's text.
pub fn draft(text: &str) -> Value {
    let lines: Vec<&str> = text
        .split(['\n', ';'])
        .flat_map(|l| l.split(". "))
        .map(|l| {
            l.trim()
                .trim_start_matches(|c: char| {
                    c.is_ascii_digit() || matches!(c, '.' | ')' | '-' | '*' | '>' | '→')
                })
                .trim()
        })
        .filter(|l| l.len() > 2)
        .collect();
    let title = lines.first().copied().unwrap_or("New agent");
    let mut steps = Vec::new();
    let mut provenance = Vec::new();
    let mut integrations: Vec<String> = Vec::new();
    let mut interactions =
        vec![json!({"name": "run", "trigger": "manual", "description": "Run on request"})];
    let mut schedule_cron = None;
    let mut seen = std::collections::HashSet::new();
    for (n, line) in lines.iter().enumerate() {
        if let Some(cron) = schedule(line) {
            if schedule_cron.is_none() {
                interactions.push(json!({"name": "scheduled", "trigger": "schedule", "schedule": cron, "description": line}));
                provenance.push(json!({"element": format!("line {}: {line:?}", n + 1), "led_to": "interaction scheduled"}));
                schedule_cron = Some(cron);
            }
            continue;
        }
        let lower = line.to_lowercase();
        if lower.starts_with("when ")
            && (lower.contains("event") || lower.contains("created") || lower.contains("arrives"))
        {
            interactions.push(json!({"name": "on-event", "trigger": "event", "event": format!("custom.{}", slug(line, 3)), "description": line}));
            provenance.push(json!({"element": format!("line {}: {line:?}", n + 1), "led_to": "interaction on-event"}));
            continue;
        }
        let mut id = slug(line, 3);
        while !seen.insert(id.clone()) {
            id.push('-');
            id.push_str(&(n + 1).to_string());
        }
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://") || w.starts_with("http://"));
        let tool = TOOLS
            .iter()
            .find(|(k, _)| lower.contains(k))
            .map(|(_, t)| *t);
        let step = if let Some(url) = url {
            json!({"id": id, "kind": "http", "method": if lower.contains("post") || lower.contains("send") { "POST" } else { "GET" }, "url": url.trim_end_matches(['.', ',', ')'])})
        } else if let Some(tool) = tool {
            if !integrations.iter().any(|i| i == tool) {
                integrations.push(tool.to_owned());
            }
            let action = match tool {
                "jira" => "create_issue",
                "servicenow" => "create_incident",
                _ => "list_repos",
            };
            json!({"id": id, "kind": "integration", "connection": tool, "action": action, "input": {"summary": line}})
        } else {
            json!({"id": id, "kind": "llm", "prompt": format!("{line}\n\nInput: {{{{ input | tojson }}}}")})
        };
        provenance.push(
            json!({"element": format!("line {}: {line:?}", n + 1), "led_to": format!("step {id}")}),
        );
        steps.push(step);
    }
    if steps.is_empty() {
        steps.push(json!({"id": "answer", "kind": "llm", "prompt": "{{ input | tojson }}"}));
        provenance.push(json!({"element": "no actionable line", "led_to": "step answer"}));
    }
    let name: String = title.chars().take(60).collect();
    json!({
        "name": name,
        "description": summarise(text, 30),
        "definition": {
            "instructions": format!("You carry out this process: {}", lines.join("; ").chars().take(1500).collect::<String>()),
            "steps": steps,
            "integrations": integrations,
            "interactions": interactions,
        },
        "schedule": schedule_cron,
        "provenance": provenance,
    })
}

/// A value satisfying `schema` (its required fields filled, strings from `text`).
fn fill(schema: &Value, text: &str, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return options.first().cloned().unwrap_or(Value::Null);
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), fill(v, text, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let item = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..min.max(1))
                    .map(|_| fill(&item, text, depth + 1))
                    .collect(),
            )
        }
        "integer" => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(0)),
        "number" => json!(schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0)),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => json!(summarise(text, 12)),
    }
}

#[async_trait::async_trait]
impl LlmProvider for OfflineProvider {
    async fn complete(&self, request: &LlmRequest) -> Result<LlmAnswer, LlmError> {
        if request.model.provider != "offline" {
            return Err(LlmError::new(
                LlmErrorKind::NotConfigured,
                format!(
                    "model provider {:?} is not available in this deployment; use \"offline\"",
                    request.model.provider
                ),
            ));
        }
        // What an image says is the content; the prompt is then only the instruction.
        let hints: Vec<&str> = request
            .images
            .iter()
            .filter_map(|i| i.text_hint.as_deref())
            .collect();
        let source = if hints.is_empty() {
            request.prompt.clone()
        } else {
            hints.join("\n")
        };
        let limit = request
            .max_tokens
            .or(request.model.max_tokens)
            .map_or(60, |m| (m as usize).clamp(1, 200));
        let (text, json) = match &request.schema {
            Some(s) if s.name == DRAFT_SCHEMA => {
                let v = draft(&source);
                (v.to_string(), Some(v))
            }
            Some(s) => {
                let v = fill(&s.schema, &source, 0);
                (v.to_string(), Some(v))
            }
            None => (summarise(&source, limit), None),
        };
        let usage = TokenUsage {
            input: estimate_tokens(&request.system)
                + estimate_tokens(&source)
                + 256 * request.images.len() as u64,
            cached_input: 0,
            output: estimate_tokens(&text),
            reasoning: 0,
        };
        Ok(LlmAnswer {
            text,
            json,
            provider: "offline".into(),
            model: request.model.model.clone(),
            raw_usage: json!({"input_tokens": usage.input, "output_tokens": usage.output}),
            usage,
            latency_ms: 0,
            attempts: 1,
            cost: prices::cost("offline", "offline", &usage),
            // The offline provider calls no functions (it has none to call).
            tool_calls: Vec::new(),
        })
    }

    fn preview(&self, request: &LlmRequest) -> Result<RequestPreview, LlmError> {
        Ok(RequestPreview {
            provider: "offline".into(),
            url: "offline:".into(),
            headers: Vec::new(),
            body: super::wire::body(
                super::wire::Api::Responses,
                Some(&request.model.model),
                request,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use flowgrid_domain::agent::ModelSettings;

    use super::*;
    use crate::llm::{ImageInput, OutputSchema};

    fn request(provider: &str, prompt: &str) -> LlmRequest {
        LlmRequest {
            model: ModelSettings {
                provider: provider.into(),
                ..ModelSettings::default()
            },
            system: "be brief".into(),
            prompt: prompt.into(),
            idempotency_key: "j:s".into(),
            ..LlmRequest::default()
        }
    }

    #[tokio::test]
    async fn a_prompt_gets_a_summary_with_its_key_terms_not_an_echo() {
        let prompt = "The printer on floor 3 jams every morning. Users cannot print invoices. The printer driver was updated last week. Lunch was good.";
        let a = OfflineProvider
            .complete(&request("offline", prompt))
            .await
            .unwrap();
        assert!(a.text.starts_with("Summary: "), "{}", a.text);
        assert!(a.text.contains("Key terms: printer"), "{}", a.text);
        assert_ne!(a.text, prompt);
        assert!(a.usage.input > 0 && a.usage.output > 0);
        assert_eq!(a.cost.micro_usd, Some(0));
    }

    #[tokio::test]
    async fn an_image_text_becomes_a_draft_with_steps_schedule_and_provenance() {
        let mut r = request("offline", "");
        r.schema = Some(OutputSchema {
            name: DRAFT_SCHEMA.into(),
            schema: json!({}),
        });
        r.images.push(ImageInput {
            media_type: "image/png".into(),
            base64: String::new(),
            text_hint: Some("Triage support tickets\nEvery day at 9:30\nClassify the ticket by urgency\nCreate a Jira issue for bugs\nPOST the result to https://hooks.example.com/triage".into()),
        });
        let a = OfflineProvider.complete(&r).await.unwrap();
        let d = a.json.unwrap();
        assert_eq!(d["schedule"], "0 30 9 * * *");
        let steps = d["definition"]["steps"].as_array().unwrap();
        let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["llm", "llm", "integration", "http"], "{d:#}");
        assert_eq!(d["definition"]["integrations"], json!(["jira"]));
        assert!(d["provenance"].as_array().unwrap().iter().any(|p| {
            p["element"]
                .as_str()
                .unwrap()
                .contains("Create a Jira issue")
        }));
    }

    #[tokio::test]
    async fn other_providers_are_refused_for_good() {
        let err = OfflineProvider
            .complete(&request("openai", "x"))
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert_eq!(err.kind, LlmErrorKind::NotConfigured);
    }
}
