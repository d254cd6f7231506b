//! Problem bodies pinned by snapshots, so their shape cannot drift.

use flowgrid_http::auth::Role;
use serde_json::json;

use crate::common::{create, start_app};

const CID: (&str, &str) = ("x-correlation-id", "snapshot");

#[tokio::test]
async fn problem_bodies_keep_their_shape() {
    let app = start_app().await;
    let viewer = app.token("acme", Role::Viewer);
    let editor = app.token("acme", Role::Editor);
    let created = create(&app, "acme", "taken").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(created.etag().len() > 2, "a created agent has an ETag");

    let cases = [
        ("bad_request", app.send_with("GET", "/api/agents/nope", &viewer, None, &[CID]).await),
        ("unauthorized", app.send_with("GET", "/api/agents", "", None, &[CID]).await),
        ("forbidden", app.send_with("DELETE", &format!("/api/agents/{id}"), &editor, None, &[CID]).await),
        (
            "not_found",
            app.send_with("GET", "/api/agents/01900000-0000-7000-8000-000000000000", &viewer, None, &[CID]).await,
        ),
        ("method_not_allowed", app.send_with("PATCH", "/api/agents", &viewer, None, &[CID]).await),
        (
            "conflict",
            app.send_with("POST", "/api/agents", &editor, Some(json!({"name": "taken", "definition": {"instructions": "x"}})), &[CID])
                .await,
        ),
        (
            "precondition_failed",
            app.send_with(
                "PUT",
                &format!("/api/agents/{id}"),
                &editor,
                Some(json!({"name": "x", "definition": {"instructions": "x"}})),
                &[CID, ("if-match", "\"stale\"")],
            )
            .await,
        ),
        (
            "validation",
            app.send_with(
                "POST",
                "/api/agents",
                &editor,
                Some(json!({"name": "", "definition": {"instructions": "x", "model": {"temperature": 9}}})),
                &[CID],
            )
            .await,
        ),
        (
            "unknown_field",
            app.send_with(
                "POST",
                "/api/agents",
                &editor,
                Some(json!({"name": "x", "tenantId": "globex", "definition": {"instructions": "x"}})),
                &[CID],
            )
            .await,
        ),
    ];
    for (name, reply) in cases {
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{name}"
        );
        insta::assert_json_snapshot!(name, reply.body);
    }
}
