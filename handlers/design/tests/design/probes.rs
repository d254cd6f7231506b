//! Model capabilities asked of the model (probe calls against llmock), kept per provider, model
//! and endpoint; every model call charged what it used (a failed call that generated tokens
//! too) and published as a `flowgrid.llm.call` platform event through the `events` binding.

use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::store::spend::month_of;
use flowgrid_http::auth::Role;
use flowgrid_testkit::ai_fakes;
use serde_json::{Value, json};

use crate::helpers::*;

async fn spent(app: &flowgrid_testkit::TestApp<flowgrid_design::AppState>, tenant: &str) -> u64 {
    app.state()
        .budget
        .ledger()
        .spent(
            &TenantId::parse(tenant).expect("tenant"),
            &month_of(Utc::now()),
        )
        .await
        .expect("the ledger")
}

fn event_costs(events: &[Value]) -> u64 {
    events
        .iter()
        .map(|e| e["costMicroUsd"].as_u64().expect("an integer cost"))
        .sum()
}

#[tokio::test]
async fn capabilities_come_from_probe_calls_that_are_charged_published_and_kept() {
    let mock = ai_fakes::llmock(0);
    let base = format!("{}/v1", mock.url());
    let app = start(&[
        ("FLOWGRID_AI_OPENAI_BASE_URL", &base),
        ("FLOWGRID_AI_OPENAI_API_KEY", "sk-d"),
        // Configuration says no tools; the probe shows otherwise, and the probe wins.
        (
            "FLOWGRID_DESIGN_MODEL_CAPABILITIES",
            r#"{"openai/gpt-4o-mini": {"tools": false, "contextTokens": 128000}}"#,
        ),
    ])
    .await;
    let token = app.token("p1", Role::Editor);
    // llmock (tools off) answers in text unless told: the model calls the offered function.
    llmock_scenario(
        &mock,
        json!([{"type": "reply", "tool_calls": [{"name": "record_probe", "arguments": {"ok": true}}], "match": {"tools": true}, "times": null}]),
    )
    .await;
    let body = json!({"model": {"provider": "openai", "model": "gpt-4o-mini"}, "capabilities": ["tools", "vision", "jsonSchema"]});
    let (status, view, events) = invoke(
        &app,
        &token,
        "AnalyzeModel",
        "design/analyze-model",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{view:#}");
    for cap in ["tools", "vision", "jsonSchema"] {
        assert_eq!(view[cap]["supported"], true, "{cap}: {view:#}");
        assert!(
            view[cap]["source"]
                .as_array()
                .unwrap()
                .contains(&json!("probe")),
            "{cap}: {view:#}"
        );
        assert!(view[cap]["probedAt"].is_string(), "{cap}: {view:#}");
    }
    assert_eq!(view["tools"]["source"], json!(["configuration", "probe"]));
    assert_eq!(view["contextTokens"], 128000);
    assert_eq!(view["gaps"], json!([]));
    let sent = llmock_requests(&mock).await;
    assert_eq!(sent.len(), 3, "one probe per capability");
    let tools = sent
        .iter()
        .find(|r| r["body"]["tools"].is_array())
        .expect("the tools probe");
    assert_eq!(tools["body"]["tools"][0]["name"], "record_probe");
    assert_eq!(tools["body"]["tool_choice"], "required");
    assert!(
        sent.iter()
            .any(|r| r["body"]["text"]["format"]["type"] == "json_schema")
    );
    assert!(
        sent.iter()
            .any(|r| r["body"]["input"][0]["content"][1]["type"] == "input_image")
    );
    // Each probe is a call: published with its usage and cost, and charged exactly that.
    assert_eq!(events.len(), 3, "{events:#?}");
    for e in &events {
        assert_eq!(e["kind"], "flowgrid.llm.call");
        assert_eq!(
            (e["provider"].as_str(), e["model"].as_str()),
            (Some("openai"), Some("gpt-4o-mini"))
        );
        assert!(e["tokens"]["input"].as_u64().unwrap() > 0, "{e}");
        assert!(e["callId"].is_string());
    }
    let charged = spent(&app, "p1").await;
    assert!(charged > 0);
    assert_eq!(
        charged,
        event_costs(&events),
        "the ledger holds what the events say"
    );

    // Again: the verdicts are kept; no call, no charge, no event.
    let (status, again, events) =
        invoke(&app, &token, "AnalyzeModel", "design/analyze-model", body).await;
    assert_eq!(status, 200);
    assert_eq!(again["tools"]["probedAt"], view["tools"]["probedAt"]);
    assert_eq!(
        llmock_requests(&mock).await.len(),
        3,
        "kept, not probed again"
    );
    assert!(events.is_empty());
    assert_eq!(spent(&app, "p1").await, charged);

    // Another model is probed on its own; one that answers the tools probe in text has no
    // tools, and an agent that needs them is told.
    llmock_scenario(&mock, json!([])).await;
    let (_, other, _) = invoke(
        &app,
        &token,
        "AnalyzeModel",
        "design/analyze-model",
        json!({"model": {"provider": "openai", "model": "gpt-4o"}, "capabilities": ["tools"]}),
    )
    .await;
    assert_eq!(other["tools"]["supported"], false, "{other:#}");
    assert!(
        other["tools"]["detail"]
            .as_str()
            .unwrap()
            .contains("without calling"),
        "{other:#}"
    );
    assert_eq!(other["gaps"][0]["capability"], "tools", "{other:#}");
}

#[tokio::test]
async fn without_a_probe_configuration_decides_and_says_why() {
    // Nothing listens here: the probes cannot run.
    let closed = format!("http://127.0.0.1:{}/v1", flowgrid_testkit::free_port());
    let app = start(&[
        ("FLOWGRID_AI_OPENAI_BASE_URL", &closed),
        ("FLOWGRID_AI_OPENAI_API_KEY", "sk-d"),
        ("FLOWGRID_AI_MAX_ATTEMPTS", "1"),
        (
            "FLOWGRID_DESIGN_MODEL_CAPABILITIES",
            r#"{"openai/gpt-4o-mini": {"vision": true, "tools": true}}"#,
        ),
    ])
    .await;
    let token = app.token("p2", Role::Editor);
    let r = app
        .post_json(
            "/api/design/analyze-model",
            &token,
            json!({"model": {"provider": "openai", "model": "gpt-4o-mini"}, "capabilities": ["tools", "jsonSchema"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["tools"]["supported"], true);
    assert_eq!(r.body["tools"]["source"], json!(["configuration"]));
    assert!(
        r.body["tools"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("no probe verdict"),
        "{}",
        r.text
    );
    assert_eq!(r.body["jsonSchema"]["supported"], Value::Null);
    assert_eq!(r.body["gaps"][0]["capability"], "jsonSchema", "{}", r.text);
    assert_eq!(
        spent(&app, "p2").await,
        0,
        "nothing answered, nothing charged"
    );

    // The offline provider is never probed, and says so.
    let (status, offline, events) = invoke(
        &app,
        &token,
        "AnalyzeModel",
        "design/analyze-model",
        json!({"model": {"provider": "offline", "model": "offline"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(offline["vision"]["supported"], true);
    assert_eq!(offline["tools"]["supported"], false);
    assert!(
        offline["tools"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("offline provider: no probe call"),
        "{offline:#}"
    );
    assert!(events.is_empty());
}

#[tokio::test]
async fn a_call_that_failed_after_generating_tokens_is_charged_and_published_and_one_that_did_not_is_not()
 {
    let mock = ai_fakes::llmock(0);
    let base = format!("{}/v1", mock.url());
    let app = start(&[
        ("FLOWGRID_AI_OPENAI_BASE_URL", &base),
        ("FLOWGRID_AI_OPENAI_API_KEY", "sk-d"),
        ("FLOWGRID_AI_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let token = app.token("c1", Role::Editor);
    let body = json!({"description": "Every day at 9, summarise the open incidents", "model": {"provider": "openai", "model": "gpt-4o-mini"}});
    // Cut at the token limit: a 422 naming the model, yet the tokens were generated.
    llmock_scenario(
        &mock,
        json!([{"type": "reply", "text": "{\"name\": \"Daily", "finish_reason": "length", "times": 1}]),
    )
    .await;
    let (status, problem, events) = invoke(
        &app,
        &token,
        "GenerateInteractions",
        "design/generate-interactions",
        body.clone(),
    )
    .await;
    assert_eq!(status, 422, "{problem:#}");
    assert!(problem.to_string().contains("token limit"), "{problem:#}");
    assert_eq!(events.len(), 1, "the failed call is published: {events:#?}");
    assert!(events[0]["tokens"]["output"].as_u64().unwrap() > 0);
    let charged = spent(&app, "c1").await;
    assert!(charged > 0, "the tokens it used are charged");
    assert_eq!(charged, event_costs(&events));
    // An error status: nothing generated, nothing charged, nothing published.
    llmock_scenario(&mock, json!([{"type": "fail", "status": 400, "times": 1}])).await;
    let (status, _, events) = invoke(
        &app,
        &token,
        "GenerateInteractions",
        "design/generate-interactions",
        body.clone(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(events.is_empty());
    assert_eq!(
        spent(&app, "c1").await,
        charged,
        "the reservation was released"
    );
    // A success: charged and published like the failed call that used tokens.
    let (status, ok, events) = invoke(
        &app,
        &token,
        "GenerateInteractions",
        "design/generate-interactions",
        body,
    )
    .await;
    assert_eq!(status, 200, "{ok:#}");
    assert_eq!(events.len(), 1);
    assert_eq!(
        spent(&app, "c1").await,
        charged + event_costs(&events),
        "{ok:#}"
    );
    assert!(events[0]["costMicroUsd"].as_u64().unwrap() > 0);
    assert!(ok["call"]["costUsd"].as_f64().is_some());
}
