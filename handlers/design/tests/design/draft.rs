//! Drafts from an image (offline provider: it reads the image's text) and proposed interactions.

use flowgrid_http::auth::Role;
use serde_json::json;

use crate::helpers::*;

const DIAGRAM: &str = "Triage support tickets\nEvery day at 9:30\nClassify the ticket by urgency\nCreate a Jira issue for bugs\nPOST the summary to https://hooks.example.com/triage";

#[tokio::test]
async fn an_image_becomes_a_draft_with_provenance_stored_by_content_and_no_agent_is_written() {
    let app = start(&[]).await;
    let token = app.token("t1", Role::Editor);
    let png = png_with_text(DIAGRAM);
    let reply = app
        .post_json(
            "/api/design/analyze-image",
            &token,
            json!({"image": b64(&png)}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = &reply.body;
    let steps = body["draft"]["definition"]["steps"]
        .as_array()
        .expect("steps");
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["llm", "llm", "integration", "http"], "{body:#}");
    assert_eq!(body["draft"]["schedule"], "0 30 9 * * *");
    assert!(body["provenance"].as_array().unwrap().iter().any(|p| {
        p["element"]
            .as_str()
            .unwrap()
            .contains("Create a Jira issue")
            && p["led_to"].as_str().unwrap().starts_with("step ")
    }));
    let sha = body["image"]["sha256"].as_str().unwrap();
    assert_eq!(body["image"]["blob"], format!("design/images/{sha}.png"));
    assert_eq!(body["image"]["mediaType"], "image/png");
    assert_eq!(body["call"]["provider"], "offline");
    // Stored by content: the same image again is the same blob.
    let again = post_multipart(
        &app,
        "/api/design/analyze-image",
        &token,
        &[("image", &png)],
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["image"]["blob"], body["image"]["blob"]);
    let blob = app
        .state()
        .stores
        .blobs
        .download(
            &flowgrid_domain::TenantId::parse("t1").unwrap(),
            &flowgrid_domain::blob::BlobName::parse(body["image"]["blob"].as_str().unwrap())
                .unwrap(),
        )
        .await;
    assert!(blob.is_ok(), "the image is in Blob Storage");
    let agents = app
        .state()
        .stores
        .agents
        .list(
            &flowgrid_domain::TenantId::parse("t1").unwrap(),
            &flowgrid_domain::store::AgentQuery {
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(agents.items.is_empty(), "analysis writes no agent");
}

#[tokio::test]
async fn a_draft_the_agents_app_accepts_has_no_problems_and_saving_it_works() {
    let app = start(&[]).await;
    let token = app.token("t1", Role::Editor);
    let png = png_with_text("Summarise incoming emails\nDraft a polite reply");
    let reply = app
        .post_json(
            "/api/design/analyze-image",
            &token,
            json!({"image": b64(&png)}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["problems"], json!([]), "{:#}", reply.body);
    let input: flowgrid_domain::AgentInput =
        serde_json::from_value(reply.body["draft"].clone()).expect("an AgentInput");
    assert!(input.validate().is_ok());
}

#[tokio::test]
async fn interactions_are_proposed_and_checked_by_the_agents_validators() {
    let app = start(&[]).await;
    let token = app.token("t1", Role::Editor);
    let reply = app
        .post_json("/api/design/generate-interactions", &token, json!({"description": "Check the backlog every monday at 8.\nWhen an issue is created event, label it."}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let interactions = reply.body["interactions"].as_array().unwrap();
    let triggers: Vec<&str> = interactions
        .iter()
        .map(|i| i["trigger"].as_str().unwrap())
        .collect();
    assert!(
        triggers.contains(&"manual")
            && triggers.contains(&"schedule")
            && triggers.contains(&"event"),
        "{:#}",
        reply.body
    );
    let schedule = interactions
        .iter()
        .find(|i| i["trigger"] == "schedule")
        .unwrap();
    assert_eq!(schedule["schedule"], "0 0 8 * * 1");
    assert_eq!(reply.body["rejected"], json!([]));
}
