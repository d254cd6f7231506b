//! Request shapes against OpenAI's own OpenAPI description, served strictly by steady: every
//! request the provider layer makes to OpenAI (Responses, Chat Completions) and to Azure
//! OpenAI's v1 API must be one the description allows (steady answers 400 naming the field
//! otherwise).

use flowgrid_providers::llm::{ImageInput, LlmErrorKind, LlmProvider};
use flowgrid_testkit::ai_fakes;

use crate::helpers::*;

fn full(provider: &str, model: &str) -> flowgrid_providers::llm::LlmRequest {
    let mut r = request(provider, model, "Classify: the VPN drops every hour");
    r.schema = Some(schema());
    r.images.push(ImageInput {
        media_type: "image/png".into(),
        base64: PNG.into(),
        text_hint: None,
    });
    r
}

/// The call reached a 2xx (the answer is steady's generated example, so reading it may fail
/// for other reasons); a 4xx means the description refused the request.
fn accepted(
    result: Result<flowgrid_providers::llm::LlmAnswer, flowgrid_providers::llm::LlmError>,
    what: &str,
) {
    if let Err(e) = result {
        assert!(
            !matches!(
                e.kind,
                LlmErrorKind::Rejected
                    | LlmErrorKind::QuotaExhausted
                    | LlmErrorKind::RateLimited
                    | LlmErrorKind::Unavailable
                    | LlmErrorKind::Timeout
            ),
            "{what}: the OpenAI description refused the request: {e}"
        );
    }
}

#[tokio::test]
async fn every_openai_request_shape_is_one_the_vendor_description_allows() {
    let steady = ai_fakes::steady();
    let p = provider(settings(&steady.url(), &steady.url()));
    accepted(
        p.complete(&full("openai", "gpt-4o-mini")).await,
        "responses with image and schema",
    );
    accepted(
        p.complete(&request("openai", "gpt-4o-mini", "plain")).await,
        "responses plain",
    );
    accepted(
        p.complete(&full("openai-chat", "gpt-4o-mini")).await,
        "chat with image and schema",
    );
    accepted(
        p.complete(&request("openai-chat", "gpt-4o-mini", "plain"))
            .await,
        "chat plain",
    );
}

#[tokio::test]
async fn a_request_the_description_refuses_is_seen_as_refused() {
    // The check above can fail: a wrong body gets steady's 400 and the Rejected kind.
    let steady = ai_fakes::steady();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/responses", steady.url()))
        .json(&serde_json::json!({"model": 42, "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn azure_openai_v1_requests_are_ones_the_description_allows_under_openai_v1() {
    let steady = ai_fakes::steady_azure_v1();
    let p = provider(with_azure(
        settings(&steady.url(), &steady.url()),
        &steady.url(),
        "v1",
    ));
    accepted(
        p.complete(&full("azure-openai", "my-gpt4o-deployment"))
            .await,
        "azure v1 with image and schema",
    );
    accepted(
        p.complete(&request("azure-openai", "default", "plain"))
            .await,
        "azure v1 default deployment",
    );
    let preview = p.preview(&request("azure-openai", "default", "x")).unwrap();
    assert_eq!(preview.url, format!("{}/openai/v1/responses", steady.url()));
    assert!(
        preview
            .headers
            .iter()
            .any(|(n, v)| n == "api-key" && v == "[redacted]")
    );
    assert!(
        !serde_json::to_string(&preview)
            .unwrap()
            .contains("never-shown")
    );
}

/// The tools probe's request (one function offered, a call of it required).
fn with_tool(mut r: flowgrid_providers::llm::LlmRequest) -> flowgrid_providers::llm::LlmRequest {
    r.tools.push(flowgrid_providers::llm::ToolDefinition {
        name: "record_probe".into(),
        description: "Records that the model can call functions.".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}),
    });
    r
}

#[tokio::test]
async fn azure_openai_deployment_url_requests_are_ones_azures_own_description_allows() {
    // Azure's description of the inference API (stable 2024-10-21), served strictly: the
    // deployment path, the required api-version and the body's fields and types are checked.
    let steady = ai_fakes::steady_azure_deployments();
    let p = provider(with_azure(
        settings(&steady.url(), &steady.url()),
        &steady.url(),
        "2024-10-21",
    ));
    accepted(
        p.complete(&full("azure-openai", "my-gpt4o-deployment"))
            .await,
        "deployment URL with image and schema",
    );
    accepted(
        p.complete(&request("azure-openai", "default", "plain"))
            .await,
        "deployment URL, default deployment",
    );
    accepted(
        p.complete(&with_tool(request("azure-openai", "default", "call it")))
            .await,
        "deployment URL with a required function call",
    );
    let preview = p.preview(&request("azure-openai", "default", "x")).unwrap();
    assert_eq!(
        preview.url,
        format!(
            "{}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
            steady.url()
        )
    );
    assert!(
        preview.body.get("model").is_none(),
        "the URL names the deployment"
    );
    // The check can fail: without the api-version the description refuses the request.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/openai/deployments/d/chat/completions",
            steady.url()
        ))
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let wrong = reqwest::Client::new()
        .post(format!(
            "{}/openai/deployments/d/chat/completions?api-version=2024-10-21",
            steady.url()
        ))
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": "ten"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
}

#[tokio::test]
async fn tool_requests_are_ones_the_openai_description_allows() {
    let steady = ai_fakes::steady();
    let p = provider(settings(&steady.url(), &steady.url()));
    accepted(
        p.complete(&with_tool(request("openai", "gpt-4o-mini", "call it")))
            .await,
        "responses with a required function call",
    );
    accepted(
        p.complete(&with_tool(request("openai-chat", "gpt-4o-mini", "call it")))
            .await,
        "chat with a required function call",
    );
}
