//! An `llm` step through `flowgrid dev` against llmock (installed from its pin and started by
//! the test): the agent compiled by the Design app, run by Execution, with the model call's
//! provider, model, tokens and cost in the job record; llmock's verdict finds no retry mistake.

use std::time::Duration;

use flowgrid_e2e::Dev;
use flowgrid_testkit::ai_fakes;
use serde_json::{Value, json};

#[tokio::test]
async fn an_llm_step_through_flowgrid_dev_records_tokens_and_cost_from_the_fake() {
    let mock = ai_fakes::llmock(0);
    let base = format!("{}/v1", mock.url());
    let dev = Dev::start(
        &["agents", "design", "execution"],
        &[
            ("FLOWGRID_AI_OPENAI_BASE_URL", &base),
            ("FLOWGRID_AI_OPENAI_API_KEY", "sk-e2e-never-shown"),
            ("FLOWGRID_AI_PROVIDERS", "offline,openai"),
        ],
    )
    .await;
    let token = dev.token("acme", "editor");
    let http = reqwest::Client::new();
    let agent = dev
        .create_agent(
            &token,
            &json!({"name": "triage", "definition": {
                "instructions": "You triage support tickets.",
                "model": {"provider": "openai", "model": "gpt-4o-mini", "maxTokens": 200},
                "steps": [{"id": "ask", "kind": "llm", "prompt": "Triage: {{ input.ticket }}"}]}}),
        )
        .await;
    let compiled = http
        .post(format!("{}/api/design/compile/{agent}", dev.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("compile");
    assert_eq!(compiled.status(), 200);
    let preview: Value = http
        .get(format!("{}/api/design/prompt-preview/{agent}", dev.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("preview")
        .json()
        .await
        .expect("json");
    assert_eq!(preview["steps"][0]["url"], format!("{base}/responses"));
    let job = dev
        .submit(&token, &agent, json!({"ticket": "VPN drops hourly"}))
        .await;
    let done = dev
        .wait_finished(&token, &job, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let call = &done["steps"][0]["llm"];
    assert_eq!(call["provider"], "openai", "{done}");
    assert_eq!(call["model"], "gpt-4o-mini");
    assert!(
        call["tokens"]["input"].as_u64().expect("input tokens")
            + call["tokens"]["output"].as_u64().expect("output tokens")
            > 0
    );
    assert!(call["costUsd"].as_f64().expect("a cost") >= 0.0);
    assert!(
        call["priceVersion"]
            .as_str()
            .expect("price version")
            .starts_with("@pydantic/genai-prices@")
    );
    assert!(
        !done.to_string().contains("never-shown"),
        "no key in the job record"
    );
    let verdict: Value = reqwest::get(format!("{}/_llmock/verdict", mock.url()))
        .await
        .expect("verdict")
        .json()
        .await
        .expect("json");
    assert_eq!(verdict["errors"], 0, "{verdict}");
    assert_eq!(verdict["calls"], 1, "one model call: {verdict}");
}
