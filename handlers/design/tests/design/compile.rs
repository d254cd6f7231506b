//! Compile (artifact, recorded version, `agent-compiled`, idempotence, 422s), prompt previews
//! and model analysis.

use flowgrid_domain::TenantId;
use flowgrid_domain::blob::BlobName;
use flowgrid_http::auth::Role;
use serde_json::{Value, json};

use crate::helpers::*;

fn definition() -> Value {
    json!({"instructions": "You triage tickets.",
    "model": {"provider": "offline", "model": "offline", "maxTokens": 300},
    "inputSchema": {"type": "object", "properties": {"ticket": {"type": "string"}}},
    "steps": [
        {"id": "classify", "kind": "llm", "prompt": "Classify: {{ input.ticket }}"},
        {"id": "shape", "kind": "transform", "output": {"label": "{{ steps.classify.output.text }}"}}
    ]})
}

#[tokio::test]
async fn compiling_stores_an_immutable_artifact_records_the_version_and_publishes_agent_compiled_once_per_version()
 {
    let app = start(&[]).await;
    let agent = agent(&app, "t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let (status, answer) = invoke_compile(&app, &token, &agent.id.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let res = answer["Outputs"]["res"]["body"].clone();
    assert_eq!(res["agentVersion"], 1);
    assert_eq!(res["planFormat"], flowgrid_domain::plan::PLAN_FORMAT);
    assert_eq!(res["stored"], true);
    let compiled = answer["Outputs"]["compiled"]
        .as_array()
        .expect("agent-compiled sent");
    assert_eq!(compiled.len(), 1);
    assert_eq!(compiled[0]["id"], format!("agent-compiled:{}:1", agent.id));
    assert_eq!(compiled[0]["data"]["version"], 1);
    assert_eq!(
        answer["Outputs"]["events"][0]["data"]["kind"],
        "flowgrid.agent.compiled"
    );
    // The artifact.
    let tenant = TenantId::parse("t1").unwrap();
    let name = BlobName::parse(res["blob"].as_str().unwrap()).unwrap();
    let download = app
        .state()
        .stores
        .blobs
        .download(&tenant, &name)
        .await
        .expect("artifact");
    let bytes = flowgrid_testkit_collect(download).await;
    let artifact: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(artifact["contentHash"], res["contentHash"]);
    assert_eq!(artifact["agentVersion"], 1);
    assert_eq!(artifact["compilerVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(artifact["plan"]["steps"].as_array().unwrap().len(), 2);
    let stored = app
        .state()
        .stores
        .agents
        .get(&tenant, agent.id)
        .await
        .unwrap();
    assert_eq!(
        stored.compiled_version,
        Some(1),
        "the compiled version is recorded"
    );
    assert_eq!(stored.version, 2, "recording it is a version of its own");
    // Again: the same artifact and event id, nothing stored anew.
    let (status, again) = invoke_compile(&app, &token, &agent.id.to_string()).await;
    assert_eq!(status, 200);
    let res2 = again["Outputs"]["res"]["body"].clone();
    assert_eq!(res2["contentHash"], res["contentHash"]);
    assert_eq!(res2["blob"], res["blob"]);
    assert_eq!(res2["stored"], false);
    assert_eq!(again["Outputs"]["compiled"][0]["id"], compiled[0]["id"]);
    let after = app
        .state()
        .stores
        .agents
        .get(&tenant, agent.id)
        .await
        .unwrap();
    assert_eq!(
        (after.version, after.compiled_version),
        (2, Some(1)),
        "nothing new recorded"
    );
    // A real change is a new artifact and a new event.
    let mut changed = after.clone();
    changed.definition.instructions = "You triage tickets, politely.".into();
    changed.version += 1;
    app.state()
        .stores
        .agents
        .replace(&changed, &after.etag)
        .await
        .unwrap();
    let (_, third) = invoke_compile(&app, &token, &agent.id.to_string()).await;
    let res3 = third["Outputs"]["res"]["body"].clone();
    assert_eq!(res3["agentVersion"], 3);
    assert_ne!(res3["contentHash"], res["contentHash"]);
    assert_eq!(
        third["Outputs"]["compiled"][0]["id"],
        format!("agent-compiled:{}:3", agent.id)
    );
}

async fn flowgrid_testkit_collect(download: flowgrid_domain::blob::Download) -> Vec<u8> {
    use futures::StreamExt;
    let mut body = download.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

#[tokio::test]
async fn a_definition_that_does_not_compile_is_a_422_naming_step_field_and_line() {
    let app = start(&[]).await;
    let mut broken = agent(&app, "t1", definition()).await;
    // Stored before today's checks (the Agents app now refuses it on save).
    broken.definition.steps[0] =
        json!({"id": "classify", "kind": "llm", "prompt": "line one\nClassify: {{ input.ticket "});
    let etag = broken.etag.clone();
    broken.version += 1;
    app.state()
        .stores
        .agents
        .replace(&broken, &etag)
        .await
        .expect("replace");
    let token = app.token("t1", Role::Editor);
    let reply = app
        .post_json(
            &format!("/api/design/compile/{}", broken.id),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    let error = &reply.body["errors"][0];
    assert_eq!(
        error["field"], "definition.steps[0].prompt",
        "{:#}",
        reply.body
    );
    assert_eq!(error["step"], "classify");
    assert_eq!(error["line"], 2);
}

#[tokio::test]
async fn the_prompt_preview_shows_the_exact_body_with_estimates_and_no_secrets() {
    let app = start(&[("FLOWGRID_AI_OPENAI_API_KEY", "sk-design-never-shown")]).await;
    let mut d = definition();
    d["model"] = json!({"provider": "openai", "model": "gpt-4o-mini", "maxTokens": 300});
    let known = agent(&app, "t1", d).await;
    let token = app.token("t1", Role::Viewer);
    let reply = app
        .get(&format!("/api/design/prompt-preview/{}", known.id), &token)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(!reply.text.contains("never-shown"), "no key in a preview");
    let steps = reply.body["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "llm steps only");
    let s = &steps[0];
    assert_eq!(s["url"], "https://api.openai.com/v1/responses");
    assert_eq!(s["body"]["model"], "gpt-4o-mini");
    assert_eq!(s["body"]["instructions"], "You triage tickets.");
    assert_eq!(
        s["body"]["input"][0]["content"][0]["text"],
        "Classify: <ticket>"
    );
    assert_eq!(s["body"]["max_output_tokens"], 300);
    assert!(
        s["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "authorization" && h[1] == "Bearer [redacted]")
    );
    assert_eq!(s["estimatedTokens"]["maxOutput"], 300);
    assert!(s["estimatedCost"]["maxUsd"].as_f64().unwrap() > 0.0);
    // An unknown model: the cost is null with a reason, never 0.
    let mut u = definition();
    u["model"] = json!({"provider": "openai", "model": "our-finetune-7"});
    let unknown = agent(&app, "t1", u).await;
    let reply = app
        .get(
            &format!("/api/design/prompt-preview/{}", unknown.id),
            &token,
        )
        .await;
    assert_eq!(
        reply.body["steps"][0]["estimatedCost"]["maxUsd"],
        Value::Null
    );
    assert!(
        reply.body["steps"][0]["estimatedCost"]["unknownReason"]
            .as_str()
            .unwrap()
            .contains("our-finetune-7")
    );
    // A deployment without the provider's key still previews, and says so.
    let keyless = start(&[]).await;
    let mut d = definition();
    d["model"] = json!({"provider": "anthropic", "model": "claude-sonnet-4-5"});
    let a = agent(&keyless, "t1", d).await;
    let reply = keyless
        .get(
            &format!("/api/design/prompt-preview/{}", a.id),
            &keyless.token("t1", Role::Viewer),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body["steps"][0]["url"],
        "https://api.anthropic.com/v1/messages"
    );
    assert!(
        reply.body["steps"][0]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[1] == "[no key configured]")
    );
}

#[tokio::test]
async fn model_analysis_reports_configured_and_probed_capabilities_and_names_gaps() {
    let app = start(&[]).await;
    let mut d = definition();
    d["capabilities"] = json!(["vision", "tools"]);
    let agent = agent(&app, "t1", d).await;
    let token = app.token("t1", Role::Editor);
    let reply = app
        .post_json(
            "/api/design/analyze-model",
            &token,
            json!({"agentId": agent.id.to_string()}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let b = &reply.body;
    assert_eq!(b["vision"]["supported"], true);
    // The offline provider calls no model: nothing is probed, its built-in configuration says.
    assert_eq!(b["vision"]["source"], json!(["configuration"]));
    assert!(
        b["vision"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("offline provider"),
        "{b:#}"
    );
    assert_eq!(b["jsonSchema"]["supported"], true);
    assert_eq!(b["tools"]["supported"], false);
    assert_eq!(b["gaps"].as_array().unwrap().len(), 1, "{b:#}");
    assert_eq!(b["gaps"][0]["capability"], "tools");
}
