//! Behaviour against llmock: answers, usage and cost, retries honouring `retry-after`, errors
//! never retried, a hanging or garbled provider, and llmock's own verdict on the retries.

use std::time::{Duration, Instant};

use flowgrid_providers::llm::{ImageInput, LlmErrorKind, LlmProvider};
use flowgrid_testkit::ai_fakes;
use serde_json::{Value, json};

use crate::helpers::*;

struct Mock {
    fake: ai_fakes::Fake,
}

impl Mock {
    fn start() -> Mock {
        Mock {
            fake: ai_fakes::llmock(0),
        }
    }
    fn openai(&self) -> String {
        format!("{}/v1", self.fake.url())
    }
    fn anthropic(&self) -> String {
        format!("{}/anthropic", self.fake.url())
    }
    fn provider(&self) -> flowgrid_providers::llm::http::HttpProvider {
        provider(settings(&self.openai(), &self.anthropic()))
    }
    async fn scenario(&self, behaviors: Value) {
        post(
            &format!("{}/_llmock/scenario", self.fake.url()),
            json!({"behaviors": behaviors}),
        )
        .await;
    }
    async fn requests(&self) -> Vec<Value> {
        get(&format!("{}/_llmock/requests", self.fake.url())).await["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    /// The verdict; fails the test on any error finding (a retry mistake).
    async fn assert_no_retry_mistakes(&self) -> Value {
        let v = get(&format!("{}/_llmock/verdict", self.fake.url())).await;
        assert_eq!(v["errors"], 0, "llmock's verdict: {v:#}");
        for f in v["findings"].as_array().into_iter().flatten() {
            let code = f["code"].as_str().unwrap_or("");
            assert!(
                !matches!(
                    code,
                    "retry_after_ignored" | "retried_non_retryable" | "retry_storm" | "no_backoff"
                ),
                "llmock found {code}: {v:#}"
            );
        }
        v
    }
}

#[tokio::test]
async fn an_openai_responses_call_answers_checked_json_with_usage_and_cost() {
    let mock = Mock::start();
    let mut r = request("openai", "gpt-4o-mini", "Printer on floor 3 is on fire");
    r.schema = Some(schema());
    r.images.push(ImageInput {
        media_type: "image/png".into(),
        base64: PNG.into(),
        text_hint: None,
    });
    let a = mock.provider().complete(&r).await.expect("answer");
    let json = a.json.expect("structured output");
    assert!(
        json["urgency"].is_string() && json["summary"].is_string(),
        "{json}"
    );
    assert_eq!(
        (a.provider.as_str(), a.model.as_str()),
        ("openai", "gpt-4o-mini")
    );
    assert!(a.usage.input + a.usage.output > 0, "{:?}", a.usage);
    assert_eq!(a.raw_usage["output_tokens"], a.usage.output);
    assert!(
        a.cost.usd.is_some() && a.cost.unknown_reason.is_none(),
        "{:?}",
        a.cost
    );
    assert!(a.cost.price_version.starts_with("@pydantic/genai-prices@"));
    let sent = &mock.requests().await[0];
    assert_eq!(sent["path"], "/v1/responses");
    assert_eq!(sent["body"]["text"]["format"]["type"], "json_schema");
    assert!(
        sent["body"]["input"][0]["content"][1]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
}

#[tokio::test]
async fn chat_completions_and_anthropic_messages_answer_and_anthropic_bodies_match_the_sdk_types() {
    let mock = Mock::start();
    let p = mock.provider();
    let chat = p
        .complete(&request(
            "openai-chat",
            "gpt-4o",
            "Summarise: disk full on db-1",
        ))
        .await
        .expect("chat");
    assert!(!chat.text.is_empty());
    assert_eq!(chat.provider, "openai-chat");
    let mut r = request(
        "anthropic",
        "claude-sonnet-4-5",
        "Summarise: disk full on db-1",
    );
    let plain = p.complete(&r).await.expect("anthropic");
    assert!(!plain.text.is_empty());
    assert_eq!(plain.provider, "anthropic");
    assert!(plain.cost.usd.is_some(), "{:?}", plain.cost);
    r.images.push(ImageInput {
        media_type: "image/png".into(),
        base64: PNG.into(),
        text_hint: None,
    });
    r.schema = Some(schema());
    // llmock answers Anthropic in text whatever the schema; the body is what is checked here.
    let _ = p.complete(&r).await;
    // The tools probe's body: one function offered, a call of it required (`tool_choice` any).
    let mut tools = request("anthropic", "claude-sonnet-4-5", "Call record_probe");
    tools.tools.push(flowgrid_providers::llm::ToolDefinition {
        name: "record_probe".into(),
        description: "Records that the model can call functions.".into(),
        parameters: json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}),
    });
    let _ = p.complete(&tools).await;
    let bodies: Vec<Value> = mock
        .requests()
        .await
        .into_iter()
        .filter(|q| q["provider"] == "anthropic")
        .map(|q| q["body"].clone())
        .collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[2]["tool_choice"]["type"], "any");
    let report = ai_fakes::check_anthropic_bodies(&bodies).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.contains("0: ok") && report.contains("1: ok") && report.contains("2: ok"),
        "{report}"
    );
    let headers_ok = mock.requests().await.iter().all(|q| q["status"] == 200);
    assert!(headers_ok);
}

#[tokio::test]
async fn rate_limits_and_overload_are_retried_after_the_wait_asked_and_llmock_finds_no_mistake() {
    let mock = Mock::start();
    let p = mock.provider();
    mock.scenario(json!([{"type": "fail", "status": 429, "retry_after": 1, "times": 2}]))
        .await;
    let started = Instant::now();
    let a = p
        .complete(&request("openai", "gpt-4o-mini", "hello"))
        .await
        .expect("after two 429s");
    assert_eq!(a.attempts, 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the retry-after twice"
    );
    mock.scenario(json!([{"type": "fail", "status": 529, "times": 1}]))
        .await;
    let b = p
        .complete(&request("anthropic", "claude-sonnet-4-5", "hello"))
        .await
        .expect("after a 529");
    assert_eq!(b.attempts, 2);
    mock.scenario(json!([{"type": "fail", "status": 503, "times": 1}]))
        .await;
    let c = p
        .complete(&request("openai-chat", "gpt-4o-mini", "hello again"))
        .await
        .expect("after a 503");
    assert_eq!(c.attempts, 2);
    let verdict = mock.assert_no_retry_mistakes().await;
    assert_eq!(verdict["attempts"], 7, "{verdict:#}");
}

#[tokio::test]
async fn quota_exhausted_and_other_4xx_are_never_retried() {
    let mock = Mock::start();
    let p = mock.provider();
    mock.scenario(json!([{"type": "fail", "status": 429, "code": "insufficient_quota", "message": "You exceeded your current quota, please check your plan and billing details.", "times": 1}])).await;
    let q = p
        .complete(&request("openai", "gpt-4o-mini", "hello"))
        .await
        .unwrap_err();
    assert_eq!(q.kind, LlmErrorKind::QuotaExhausted, "{q}");
    assert!(!q.retryable);
    mock.scenario(json!([{"type": "fail", "status": 400, "times": 1}]))
        .await;
    let bad = p
        .complete(&request("openai", "gpt-4o-mini", "hello 2"))
        .await
        .unwrap_err();
    assert_eq!(bad.kind, LlmErrorKind::Rejected);
    mock.scenario(json!([{"type": "fail", "status": 401, "times": 1}]))
        .await;
    let denied = p
        .complete(&request("anthropic", "claude-sonnet-4-5", "hello 3"))
        .await
        .unwrap_err();
    assert!(denied.message.contains("credentials"), "{denied}");
    assert!(
        !denied.message.contains("never-shown"),
        "no key in errors: {denied}"
    );
    assert_eq!(mock.requests().await.len(), 3, "one attempt each");
    mock.assert_no_retry_mistakes().await;
}

#[tokio::test]
async fn a_provider_that_hangs_is_a_timeout_with_a_clear_message() {
    let mock = Mock::start();
    let mut s = settings(&mock.openai(), &mock.anthropic());
    s.call_timeout = Duration::from_millis(800);
    s.retry_deadline = Duration::from_secs(2);
    s.max_attempts = 2;
    mock.scenario(json!([{"type": "delay", "seconds": 5, "times": null}]))
        .await;
    let started = Instant::now();
    let e = provider(s)
        .complete(&request("openai", "gpt-4o-mini", "hello"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, LlmErrorKind::Timeout, "{e}");
    assert!(e.message.contains("no answer from openai"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the deadline"
    );
}

#[tokio::test]
async fn garbage_from_a_provider_is_a_bad_answer_not_a_crash() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = s.read(&mut buf).await;
            let body = "<html>upstream proxy error</html>";
            let _ = s
                .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                .await;
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let e = provider(settings(&base, &base))
        .complete(&request("openai", "gpt-4o-mini", "x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, LlmErrorKind::BadAnswer, "{e}");
    assert!(e.message.contains("not JSON"), "{e}");
}

#[tokio::test]
async fn a_call_that_fails_after_generating_tokens_carries_what_it_used_and_one_that_did_not_carries_nothing()
 {
    let mock = Mock::start();
    let p = mock.provider();
    // Cut at the token limit (Responses: status incomplete; Chat: finish_reason length), and
    // filtered (Chat: finish_reason content_filter): tokens were generated, so the error says
    // what they cost.
    mock.scenario(json!([
        {"type": "reply", "text": "The printer on floor three is", "finish_reason": "length", "times": 2},
    ]))
    .await;
    for provider in ["openai", "openai-chat"] {
        let e = p
            .complete(&request(provider, "gpt-4o-mini", "Describe the incident"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, LlmErrorKind::Truncated, "{provider}: {e}");
        let used = e
            .used
            .as_ref()
            .unwrap_or_else(|| panic!("{provider}: a truncated call says what it used"));
        assert!(used.usage.output > 0, "{provider}: {:?}", used.usage);
        assert_eq!(used.provider, provider);
        assert!(
            used.cost.micro_usd.is_some_and(|c| c > 0),
            "{provider}: priced like a success: {:?}",
            used.cost
        );
        assert_eq!(
            flowgrid_providers::llm::used(&Err(e.clone())).map(|a| a.usage),
            Some(used.usage)
        );
    }
    mock.scenario(json!([
        {"type": "reply", "text": "", "finish_reason": "content_filter", "times": 1},
    ]))
    .await;
    let filtered = p
        .complete(&request("openai-chat", "gpt-4o-mini", "Describe it"))
        .await
        .unwrap_err();
    assert_eq!(filtered.kind, LlmErrorKind::ContentFiltered, "{filtered}");
    assert!(filtered.used.is_some_and(|u| u.usage.input > 0));
    // A structured answer that fails its schema: the model generated it, so it is charged.
    mock.scenario(json!([
        {"type": "reply", "text": "{\"urgency\": 3}", "times": 1},
    ]))
    .await;
    let mut r = request("openai", "gpt-4o-mini", "Classify");
    r.schema = Some(schema());
    let invalid = p.complete(&r).await.unwrap_err();
    assert_eq!(invalid.kind, LlmErrorKind::BadAnswer, "{invalid}");
    assert!(invalid.used.is_some_and(|u| u.cost.micro_usd.is_some()));
    // An error status: nothing was generated, nothing is charged.
    mock.scenario(json!([{"type": "fail", "status": 400, "times": 1}]))
        .await;
    let rejected = p
        .complete(&request("openai", "gpt-4o-mini", "hello"))
        .await
        .unwrap_err();
    assert_eq!(rejected.kind, LlmErrorKind::Rejected);
    assert!(rejected.used.is_none());
    assert!(flowgrid_providers::llm::used(&Err(rejected)).is_none());
}
