//! The writes run in envelope mode, as the host invokes them (`POST /<Function>` with the
//! request inside): the answer (`res`: status, ETag, Location, body) is the forwarded route's,
//! and each successful write sends one platform event through its `events` output binding
//! (topic `platform-events`); a refused write sends none.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flowgrid_agents::AppState;
use flowgrid_domain::events::{CloudEvent, PlatformEvent};
use flowgrid_http::auth::Role;
use flowgrid_testkit::TestApp;
use serde_json::{Value, json};

use crate::common::start_app;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Invokes the envelope function `function` with `method path` (and `body`) inside, as the
/// host does; answers the invocation's `Outputs`.
async fn invoke(
    app: &TestApp<AppState>,
    function: &str,
    method: &str,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
    body: Option<Value>,
) -> Value {
    let mut headers =
        json!({"Authorization": [format!("Bearer {token}")], "Content-Type": ["application/json"]});
    for (k, v) in extra {
        headers[*k] = json!([v]);
    }
    let mut req = json!({"Url": format!("http://localhost:7071{path}"), "Method": method,
        "Query": {}, "Headers": headers, "Params": {}});
    if let Some(b) = body {
        req["Body"] = Value::String(b.to_string());
    }
    let request = Request::builder()
        .method("POST")
        .uri(format!("/{function}"))
        .header("content-type", "application/json")
        .header("traceparent", TRACEPARENT)
        .header("x-azure-functions-invocationid", "inv-1")
        .body(Body::from(
            json!({"Data": {"req": req}, "Metadata": {}}).to_string(),
        ))
        .expect("request");
    let reply = app.request(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["Outputs"].clone()
}

/// The one event of `outputs` (API request counts never travel with it: they go through the
/// app's store and its FlushApiRequests timer, flowgrid_http::api_requests), read back as a
/// platform event.
fn the_event(outputs: &Value) -> (Value, CloudEvent<PlatformEvent>) {
    let sent: Vec<&Value> = outputs["events"]
        .as_array()
        .expect("an events output")
        .iter()
        .collect();
    assert_eq!(sent.len(), 1, "{outputs}");
    let event: CloudEvent<PlatformEvent> =
        CloudEvent::from_slice(&serde_json::to_vec(&sent[0]).expect("json")).expect("an event");
    (sent[0].clone(), event)
}

#[tokio::test]
async fn each_write_sends_its_agent_event_and_answers_as_the_forwarded_route() {
    let app = start_app().await;
    let editor = app.token("acme", Role::Editor);
    let admin = app.token("acme", Role::Admin);
    let definition = json!({"name": "triage", "definition": {"instructions": "help"}});

    let created = invoke(
        &app,
        "CreateAgent",
        "POST",
        "/api/agents",
        &editor,
        &[],
        Some(definition.clone()),
    )
    .await;
    let res = &created["res"];
    assert_eq!(res["statusCode"], 201, "{res}");
    let id = res["body"]["id"].as_str().expect("id").to_owned();
    assert_eq!(res["headers"]["location"], format!("/api/agents/{id}"));
    let etag = res["headers"]["etag"].as_str().expect("etag").to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", res["body"]["etag"].as_str().unwrap())
    );
    let (json, event) = the_event(&created);
    assert_eq!(json["id"], format!("flowgrid.agent.created:{id}:1"));
    assert_eq!(json["type"], "flowgrid.agent.created");
    assert_eq!(json["source"], "/flowgrid/agents");
    assert_eq!(json["tenantid"], "acme");
    assert_eq!(json["subject"], format!("agents/{id}"));
    assert_eq!(json["traceparent"], TRACEPARENT);
    assert!(matches!(
        event.data,
        PlatformEvent::AgentCreated { version: 1, agent_id } if agent_id.to_string() == id
    ));

    // The stored agent is what the forwarded GET reads.
    let read = app.get(&format!("/api/agents/{id}"), &editor).await;
    assert_eq!(read.body, res["body"]);

    let path = format!("/api/agents/{id}");
    let replaced = invoke(
        &app,
        "ReplaceAgent",
        "PUT",
        &path,
        &editor,
        &[("If-Match", &etag)],
        Some(json!({"name": "triage 2", "definition": {"instructions": "help more"}})),
    )
    .await;
    assert_eq!(replaced["res"]["statusCode"], 200);
    assert_eq!(replaced["res"]["body"]["version"], 2);
    let (json, _) = the_event(&replaced);
    assert_eq!(json["id"], format!("flowgrid.agent.updated:{id}:2"));

    // A stale If-Match: 412, nothing sent.
    let stale = invoke(
        &app,
        "ReplaceAgent",
        "PUT",
        &path,
        &editor,
        &[("If-Match", &etag)],
        Some(definition.clone()),
    )
    .await;
    assert_eq!(stale["res"]["statusCode"], 412);
    assert!(stale.get("events").is_none(), "{stale}");

    let restored = invoke(
        &app,
        "RestoreAgentVersion",
        "POST",
        &format!("{path}/versions/1/restore"),
        &admin,
        &[],
        None,
    )
    .await;
    assert_eq!(restored["res"]["statusCode"], 200, "{restored}");
    let (json, _) = the_event(&restored);
    assert_eq!(json["id"], format!("flowgrid.agent.updated:{id}:3"));

    // A viewer may not delete: 403, nothing sent.
    let viewer = app.token("acme", Role::Viewer);
    let refused = invoke(&app, "DeleteAgent", "DELETE", &path, &viewer, &[], None).await;
    assert_eq!(refused["res"]["statusCode"], 403);
    assert!(refused.get("events").is_none(), "{refused}");

    let deleted = invoke(&app, "DeleteAgent", "DELETE", &path, &admin, &[], None).await;
    assert_eq!(deleted["res"]["statusCode"], 204);
    assert!(deleted["res"]["body"].is_null());
    let (json, event) = the_event(&deleted);
    assert_eq!(json["id"], format!("flowgrid.agent.deleted:{id}"));
    assert!(matches!(event.data, PlatformEvent::AgentDeleted { .. }));

    // Another tenant's id: 404, nothing sent.
    let other = app.token("globex", Role::Admin);
    let missing = invoke(&app, "DeleteAgent", "DELETE", &path, &other, &[], None).await;
    assert_eq!(missing["res"]["statusCode"], 404);
    assert!(missing.get("events").is_none());
}

#[test]
fn the_write_functions_declare_the_events_output() {
    let functions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions/agents");
    for function in [
        "CreateAgent",
        "ReplaceAgent",
        "DeleteAgent",
        "RestoreAgentVersion",
    ] {
        let path = functions.join(function).join("function.json");
        let definition: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let events = definition["bindings"]
            .as_array()
            .expect("bindings")
            .iter()
            .find(|b| b["name"] == "events");
        assert_eq!(
            events.map(|b| (&b["type"], &b["direction"], &b["topicName"])),
            Some((
                &json!("serviceBus"),
                &json!("out"),
                &json!("platform-events")
            )),
            "{function}"
        );
    }
    for function in [
        "ListAgents",
        "GetAgent",
        "GetAgentStatus",
        "ListAgentVersions",
        "GetAgentVersion",
    ] {
        let path = functions.join(function).join("function.json");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            !text.contains("serviceBus"),
            "{function} must stay forwarded (issue 16's read path)"
        );
    }
}
