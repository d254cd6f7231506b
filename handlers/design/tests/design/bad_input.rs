//! Bad input on every route: a clear 4xx problem that changes nothing.

use flowgrid_http::auth::Role;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn uploads_that_are_too_large_or_no_image_are_refused_and_nothing_is_stored() {
    let app = start(&[("FLOWGRID_DESIGN_MAX_IMAGE_BYTES", "2048")]).await;
    let token = app.token("t1", Role::Editor);
    let mut big = png_with_text("x");
    big.extend(std::iter::repeat_n(0u8, 4096));
    let r = app
        .post_json(
            "/api/design/analyze-image",
            &token,
            json!({"image": b64(&big)}),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let pdf = b"%PDF-1.7 not an image".to_vec();
    let r = app
        .post_json(
            "/api/design/analyze-image",
            &token,
            json!({"image": b64(&pdf)}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["errors"][0]["field"], "image");
    let r = post_multipart(
        &app,
        "/api/design/analyze-image",
        &token,
        &[("image", b"<svg onload=alert(1)>")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = post_multipart(
        &app,
        "/api/design/analyze-image",
        &token,
        &[("text", b"hello")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .post_json("/api/design/analyze-image", &token, json!({"image": "***"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .post_json(
            "/api/design/analyze-image",
            &token,
            json!({"image": b64(&pdf), "colour": "red"}),
        )
        .await;
    assert_eq!(r.status, 422, "an unknown field: {}", r.text);
    let r = app
        .send_with(
            "POST",
            "/api/design/analyze-image",
            &token,
            None,
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    let huge = vec![b'a'; 1_200_000];
    let r = post_multipart(
        &app,
        "/api/design/analyze-image",
        &token,
        &[("image", &huge)],
    )
    .await;
    assert_eq!(r.status, 413, "a body over the request limit: {}", r.text);
    let listed = app
        .state()
        .stores
        .blobs
        .list(
            &flowgrid_domain::TenantId::parse("t1").unwrap(),
            "design/",
            10,
            None,
        )
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "nothing stored");
}

#[tokio::test]
async fn unknown_and_other_tenants_agents_are_not_found_on_every_agent_route() {
    let app = start(&[]).await;
    let theirs = agent(
        &app,
        "t2",
        json!({"instructions": "theirs", "steps": [{"id": "a", "kind": "llm", "prompt": "hi"}]}),
    )
    .await;
    let token = app.token("t1", Role::Editor);
    for id in [
        theirs.id.to_string(),
        "0190a5c8-0000-7000-8000-000000000000".to_owned(),
    ] {
        let r = app
            .post_json(&format!("/api/design/compile/{id}"), &token, json!({}))
            .await;
        assert_eq!(r.status, 404, "compile {id}: {}", r.text);
        let r = app
            .get(&format!("/api/design/prompt-preview/{id}"), &token)
            .await;
        assert_eq!(r.status, 404, "preview {id}: {}", r.text);
        let r = app
            .post_json("/api/design/analyze-model", &token, json!({"agentId": id}))
            .await;
        assert_eq!(r.status, 404, "analyze-model {id}: {}", r.text);
        let r = app
            .post_json(
                "/api/design/generate-interactions",
                &token,
                json!({"agentId": id}),
            )
            .await;
        assert_eq!(r.status, 404, "generate-interactions {id}: {}", r.text);
    }
    let r = app
        .post_json("/api/design/compile/not-a-uuid", &token, json!({}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let stored = app
        .state()
        .stores
        .agents
        .get(&theirs.tenant_id, theirs.id)
        .await
        .unwrap();
    assert_eq!(
        stored.compiled_version, None,
        "another tenant's agent is untouched"
    );
}

#[tokio::test]
async fn roles_tokens_and_bodies_are_checked() {
    let app = start(&[]).await;
    let mine = agent(
        &app,
        "t1",
        json!({"instructions": "x", "steps": [{"id": "a", "kind": "llm", "prompt": "hi"}]}),
    )
    .await;
    let viewer = app.token("t1", Role::Viewer);
    let r = app
        .post_json(
            &format!("/api/design/compile/{}", mine.id),
            &viewer,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app
        .post_json(
            "/api/design/analyze-model",
            "",
            json!({"model": {"provider": "offline"}}),
        )
        .await;
    assert_eq!(r.status, 401);
    let editor = app.token("t1", Role::Editor);
    let r = app
        .post_json("/api/design/analyze-model", &editor, json!({}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .post_json(
            "/api/design/generate-interactions",
            &editor,
            json!({"description": ""}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .post_json(
            "/api/design/generate-interactions",
            &editor,
            json!({"description": "x", "bogus": 1}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .post_json(
            "/api/design/analyze-model",
            &editor,
            json!({"model": {"provider": "nonesuch"}}),
        )
        .await;
    assert_eq!(
        r.status, 200,
        "unknown provider: analysed, with unknown capabilities: {}",
        r.text
    );
    assert_eq!(r.body["vision"]["supported"], serde_json::Value::Null);
}
