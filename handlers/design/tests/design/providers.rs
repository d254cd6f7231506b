//! The Design app on a real provider's wire format (llmock): a vision request with the image,
//! the budget refusing before sending, and a provider that hangs.

use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::store::spend::month_of;
use flowgrid_http::auth::Role;
use flowgrid_testkit::ai_fakes;
use serde_json::{Value, json};

use crate::helpers::*;

async fn requests(mock: &ai_fakes::Fake) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{}/_llmock/requests", mock.url()))
        .await
        .expect("llmock")
        .json()
        .await
        .expect("json");
    v["requests"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_image_goes_to_the_vision_model_as_base64_and_the_call_is_priced() {
    let mock = ai_fakes::llmock(0);
    let base = format!("{}/v1", mock.url());
    let app = start(&[
        ("FLOWGRID_AI_OPENAI_BASE_URL", &base),
        ("FLOWGRID_AI_OPENAI_API_KEY", "sk-d"),
    ])
    .await;
    let token = app.token("t1", Role::Editor);
    let png = png_with_text("Triage tickets");
    let r = app
        .post_json(
            "/api/design/analyze-image",
            &token,
            json!({"image": b64(&png), "model": {"provider": "openai", "model": "gpt-4o-mini"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["call"]["provider"], "openai");
    assert!(r.body["call"]["costUsd"].as_f64().is_some());
    assert!(r.body["draft"]["definition"].is_object(), "{:#}", r.body);
    let sent = requests(&mock).await;
    assert_eq!(sent.len(), 1);
    let image = sent[0]["body"]["input"][0]["content"][1]["image_url"]
        .as_str()
        .unwrap();
    assert_eq!(image, format!("data:image/png;base64,{}", b64(&png)));
    assert_eq!(sent[0]["body"]["text"]["format"]["name"], "agent_draft");
}

#[tokio::test]
async fn a_spent_budget_is_a_403_before_anything_is_sent_and_a_hanging_provider_a_503() {
    let mock = ai_fakes::llmock(0);
    let base = format!("{}/v1", mock.url());
    let app = start(&[
        ("FLOWGRID_AI_OPENAI_BASE_URL", &base),
        ("FLOWGRID_AI_OPENAI_API_KEY", "sk-d"),
        ("FLOWGRID_AI_CALL_TIMEOUT_SECS", "1"),
        ("FLOWGRID_AI_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let t = TenantId::parse("t9").unwrap();
    app.state()
        .budget
        .ledger()
        .adjust(&t, &month_of(Utc::now()), 5_000_000)
        .await
        .unwrap();
    let token = app.token("t9", Role::Editor);
    let body = json!({"description": "Every day at 9, summarise", "model": {"provider": "openai", "model": "gpt-4o-mini"}});
    let r = app
        .post_json("/api/design/generate-interactions", &token, body.clone())
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("budget exceeded"),
        "{}",
        r.text
    );
    assert!(requests(&mock).await.is_empty(), "nothing sent");
    reqwest::Client::new()
        .post(format!("{}/_llmock/scenario", mock.url()))
        .json(&json!({"behaviors": [{"type": "delay", "seconds": 5, "times": null}]}))
        .send()
        .await
        .unwrap();
    let other = app.token("t8", Role::Editor);
    let r = app
        .post_json("/api/design/generate-interactions", &other, body)
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    let spent = app
        .state()
        .budget
        .ledger()
        .spent(&TenantId::parse("t8").unwrap(), &month_of(Utc::now()))
        .await
        .unwrap();
    assert_eq!(spent, 0, "the reservation of the failed call is released");
}
