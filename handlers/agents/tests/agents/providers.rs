//! `FLOWGRID_AI_PROVIDERS`: an agent whose model provider the deployment does not offer is
//! refused at create, replace and restore with a 422 naming the field and the setting; nothing
//! is stored.

use axum::http::StatusCode;
use flowgrid_agents::{AppState, router};
use flowgrid_domain::agent::OfferedProviders;
use flowgrid_http::auth::Role;
use flowgrid_testkit::{Client, Reply};
use serde_json::{Value, json};

use crate::common::start_offering;

fn agent(name: &str, provider: &str) -> Value {
    json!({"name": name, "definition": {
        "instructions": "help",
        "model": {"provider": provider, "model": "some-model"}
    }})
}

/// The one error of a 422: at `definition.model.provider`, naming the setting and the list.
fn assert_not_offered(reply: &Reply, provider: &str, offered: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let errors = reply.body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["field"], "definition.model.provider");
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(provider)
            && message.contains(&format!("FLOWGRID_AI_PROVIDERS lists {offered}")),
        "{message}"
    );
}

#[tokio::test]
async fn a_provider_the_deployment_does_not_offer_is_refused_on_create_and_replace() {
    let app = start_offering("offline").await;
    let editor = app.token("acme", Role::Editor);
    let refused = app
        .post_json("/api/agents", &editor, agent("claude", "anthropic"))
        .await;
    assert_not_offered(&refused, "anthropic", "offline");
    let listed = app.get("/api/agents", &editor).await;
    assert_eq!(
        listed.body["items"],
        json!([]),
        "nothing stored: {:?}",
        listed.body
    );

    let created = app
        .post_json("/api/agents", &editor, agent("local", "offline"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let replaced = app
        .send_with(
            "PUT",
            &format!("/api/agents/{id}"),
            &editor,
            Some(agent("local", "anthropic")),
            &[("if-match", &created.etag())],
        )
        .await;
    assert_not_offered(&replaced, "anthropic", "offline");
    let current = app.get(&format!("/api/agents/{id}"), &editor).await;
    assert_eq!(current.body["version"], 1, "{:?}", current.body);
}

#[tokio::test]
async fn a_provider_the_deployment_offers_is_accepted_and_a_restore_is_checked_again() {
    let app = start_offering("offline, anthropic").await;
    let editor = app.token("acme", Role::Editor);
    let created = app
        .post_json("/api/agents", &editor, agent("claude", "anthropic"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["definition"]["model"]["provider"], "anthropic");
    let id = created.body["id"].as_str().expect("id").to_owned();
    let replaced = app
        .send_with(
            "PUT",
            &format!("/api/agents/{id}"),
            &editor,
            Some(agent("claude", "offline")),
            &[("if-match", &created.etag())],
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);

    // The same data, served by a deployment that no longer offers anthropic: restoring
    // version 1 is a save, refused.
    let narrower = AppState::with_providers(app.config(), OfferedProviders::default())
        .await
        .expect("state");
    let narrower = Client::new(router(narrower));
    let admin = app.token("acme", Role::Admin);
    let restore = format!("/api/agents/{id}/versions/1/restore");
    let refused = narrower.send("POST", &restore, &admin, None).await;
    assert_not_offered(&refused, "anthropic", "offline");
    let restored = app.send("POST", &restore, &admin, None).await;
    assert_eq!(restored.status, StatusCode::OK, "{:?}", restored.body);
    assert_eq!(restored.body["version"], 3, "{:?}", restored.body);
}
