//! Agents are checked when saved: create, replace and restore run the plan compiler and refuse a
//! bad definition or schedule with one 422 listing every error; nothing is stored.

use axum::http::StatusCode;
use flowgrid_http::auth::Role;
use serde_json::{Value, json};

use crate::common::{create, start_app};

/// The `errors` of a 422 as `field -> error`.
fn errors(body: &Value) -> Vec<Value> {
    body["errors"].as_array().cloned().unwrap_or_default()
}

fn error_at<'a>(errors: &'a [Value], field: &str) -> &'a Value {
    errors
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("no error at {field}: {errors:#?}"))
}

fn bad_definition() -> Value {
    json!({
        "instructions": "help",
        "model": {"provider": "acme-ai"},
        "integrations": ["jira"],
        "steps": [
            {"id": "ask", "kind": "condition", "if": "input.q ==", "then": "nowhere"},
            {"id": "call", "kind": "http"},
            {"id": "fetch", "kind": "http", "url": "ftp://files.example.org/x"},
            {"id": "ticket", "kind": "integration", "connection": "slack", "action": "post"},
            {"id": "shape", "kind": "transform", "output": {"a": "line one\n{{ user.name }}"}, "outptu": 1}
        ]
    })
}

#[tokio::test]
async fn a_bad_definition_is_refused_on_create_with_every_error_at_once() {
    let app = start_app().await;
    let editor = app.token("acme", Role::Editor);
    let reply = app
        .post_json(
            "/api/agents",
            &editor,
            json!({"name": "bad", "definition": bad_definition()}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let errors = errors(&reply.body);
    let cond = error_at(&errors, "definition.steps[0].if");
    assert_eq!(cond["step"], "ask");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("expression error")
    );
    assert!(
        error_at(&errors, "definition.steps[0].then")["message"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
    assert_eq!(error_at(&errors, "definition.steps[1].url")["step"], "call");
    assert!(
        error_at(&errors, "definition.steps[2].url")["message"]
            .as_str()
            .unwrap()
            .contains("ftp://")
    );
    assert!(
        error_at(&errors, "definition.steps[3].connection")["message"]
            .as_str()
            .unwrap()
            .contains("slack")
    );
    let undefined = error_at(&errors, "definition.steps[4].output.a");
    assert_eq!(undefined["variable"], "user");
    assert_eq!(undefined["line"], 2);
    assert_eq!(undefined["step"], "shape");
    error_at(&errors, "definition.steps[4].outptu");
    error_at(&errors, "definition.model.provider");
    assert_eq!(errors.len(), 8, "{errors:#?}");

    let list = app.get("/api/agents", &editor).await;
    assert_eq!(list.body["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_bad_definition_is_refused_on_replace_and_the_agent_is_unchanged() {
    let app = start_app().await;
    let editor = app.token("acme", Role::Editor);
    let created = create(&app, "acme", "good").await;
    let id = created.body["id"].as_str().unwrap();
    let reply = app
        .put_json(
            &format!("/api/agents/{id}"),
            &editor,
            json!({"name": "good", "definition": bad_definition()}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(errors(&reply.body).len(), 8);
    let now = app.get(&format!("/api/agents/{id}"), &editor).await;
    assert_eq!(now.body["version"], 1);
}

#[tokio::test]
async fn schedules_that_fire_more_than_once_a_minute_or_never_are_refused_naming_the_field() {
    let app = start_app().await;
    let editor = app.token("acme", Role::Editor);
    for (schedule, says) in [
        ("*/10 * * * * *", "more than once a minute"),
        ("0 0 0 30 2 *", "never fires"),
        (",,, * * * * *", "empty list item"),
    ] {
        let reply = app
            .post_json(
                "/api/agents",
                &editor,
                json!({"name": "s", "schedule": schedule, "definition": {"instructions": "x"}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{schedule}");
        let errors = errors(&reply.body);
        let e = error_at(&errors, "schedule");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{schedule}: {e}"
        );
    }
    let ok = app
        .post_json(
            "/api/agents",
            &editor,
            json!({"name": "s", "schedule": "0 */5 * * * *", "definition": {"instructions": "x"}}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
}

#[tokio::test]
async fn restoring_a_version_that_no_longer_compiles_is_refused() {
    let app = start_app().await;
    let admin = app.token("acme", Role::Admin);
    let created = create(&app, "acme", "old").await;
    let id = created.body["id"].as_str().unwrap();
    // A version saved before saving checked steps: written straight to the store.
    let store = &app.state().stores.agents;
    let tenant = flowgrid_domain::TenantId::parse("acme").unwrap();
    let current = store
        .get(&tenant, flowgrid_domain::AgentId::parse(id).unwrap())
        .await
        .unwrap();
    let mut old = current.clone();
    old.version = 2;
    old.definition.steps = vec![json!({"id": "a", "kind": "http", "url": "ftp://x.example"})];
    store.replace(&old, &current.etag).await.unwrap();
    let fine = app
        .post_json(
            &format!("/api/agents/{id}/versions/1/restore"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{:?}", fine.body);
    let reply = app
        .post_json(
            &format!("/api/agents/{id}/versions/2/restore"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    error_at(&errors(&reply.body), "definition.steps[0].url");
}

#[tokio::test]
async fn misspelt_fields_are_all_reported_at_once() {
    let app = start_app().await;
    let editor = app.token("acme", Role::Editor);
    let reply = app
        .post_json(
            "/api/agents",
            &editor,
            json!({"name": "x", "descripton": "typo", "definition": {"instruction": "x", "instructions": "x",
                   "model": {"temprature": 1}, "interactions": [{"name": "i", "trigger": "manual", "evnt": "e"}]}}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    let errors = errors(&reply.body);
    for field in [
        "descripton",
        "definition.instruction",
        "definition.model.temprature",
        "definition.interactions[0].evnt",
    ] {
        assert!(
            error_at(&errors, field)["message"]
                .as_str()
                .unwrap()
                .starts_with("unknown field"),
            "{field}"
        );
    }
    assert_eq!(errors.len(), 4);
}

#[tokio::test]
async fn every_provider_the_execution_app_calls_can_be_saved_where_the_deployment_offers_it() {
    let app =
        crate::common::start_offering("offline,openai,openai-chat,azure-openai,anthropic").await;
    let editor = app.token("acme", Role::Editor);
    for provider in [
        "offline",
        "openai",
        "openai-chat",
        "azure-openai",
        "anthropic",
    ] {
        let reply = app
            .post_json(
                "/api/agents",
                &editor,
                json!({"name": provider, "definition": {"instructions": "x", "model": {"provider": provider}}}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{provider}: {:?}",
            reply.body
        );
    }
}
