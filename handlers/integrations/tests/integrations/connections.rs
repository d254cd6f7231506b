//! Connections: CRUD by role, secrets sealed and masked, bad input, tenant isolation.

use axum::http::StatusCode;
use flowgrid_http::auth::Role;
use serde_json::json;

use crate::common::{create_connection, servicenow, start};
use crate::snow_fake::PASSWORD;

#[tokio::test]
async fn the_catalog_lists_four_kinds_with_schemas_auth_modes_and_actions() {
    let app = start().await;
    let reply = app
        .get("/api/integrations/catalog", &app.token("t1", Role::Viewer))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let kinds: Vec<&str> = reply.body["items"]
        .as_array()
        .expect("test fixture")
        .iter()
        .map(|k| k["name"].as_str().expect("test fixture"))
        .collect();
    assert_eq!(kinds, ["servicenow", "jira", "github", "http"]);
    let snow = &reply.body["items"][0];
    assert_eq!(snow["configSchema"]["required"], json!(["instanceUrl"]));
    let modes: Vec<&str> = snow["authModes"]
        .as_array()
        .expect("test fixture")
        .iter()
        .map(|m| m["name"].as_str().expect("test fixture"))
        .collect();
    assert_eq!(modes, ["basic", "oauth"]);
    assert_eq!(snow["actions"][0]["name"], "create-incident");
    assert_eq!(
        snow["actions"][0]["inputSchema"]["required"],
        json!(["shortDescription"])
    );
}

#[tokio::test]
async fn a_secret_is_sealed_masked_and_never_returned_and_only_admins_change_connections() {
    let app = start().await;
    let body = servicenow("snow", "https://acme.service-now.com", PASSWORD);
    for role in [Role::Viewer, Role::Editor] {
        let reply = app
            .post_json(
                "/api/integrations/connections",
                &app.token("t1", role),
                body.clone(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{role:?}");
    }
    let created = create_connection(&app, "t1", body).await;
    assert_eq!(created["secret"]["masked"], "••••9876");
    let viewer = app.token("t1", Role::Viewer);
    let got = app.get("/api/integrations/connections/snow", &viewer).await;
    let list = app.get("/api/integrations/connections", &viewer).await;
    let admin = app.token("t1", Role::Admin);
    let rotated = app
        .post_json(
            "/api/integrations/connections/snow/secret",
            &admin,
            json!({"secret": "an-other-secret-5555"}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_eq!(rotated.body["secret"]["masked"], "••••5555");
    for reply in [&got, &list, &rotated] {
        assert!(
            !reply.text.contains(PASSWORD) && !reply.text.contains("an-other-secret"),
            "{}",
            reply.text
        );
        assert!(!reply.text.contains("sealed"), "{}", reply.text);
    }
    // At rest: sealed, not the plain text, bound to the record.
    let stored = app
        .state()
        .integrations
        .store()
        .get(
            &flowgrid_domain::TenantId::parse("t1").expect("test fixture"),
            "snow",
        )
        .await
        .expect("test fixture");
    let sealed = stored.secret.expect("test fixture");
    assert!(!sealed.sealed.contains("an-other-secret"));
    let db = std::fs::read(app.dir().path().join("flowgrid.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains("an-other-secret"));
    // Update and delete need an admin; If-Match is honoured.
    let editor = app.token("t1", Role::Editor);
    let change = json!({"auth": "basic", "config": {"instanceUrl": "https://acme2.service-now.com", "username": "bob"}, "isDefault": true});
    assert_eq!(
        app.put_json(
            "/api/integrations/connections/snow",
            &editor,
            change.clone()
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let stale = app
        .send_with(
            "PUT",
            "/api/integrations/connections/snow",
            &admin,
            Some(change.clone()),
            &[("if-match", "\"stale\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let changed = app
        .put_json("/api/integrations/connections/snow", &admin, change)
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["config"]["username"], "bob");
    assert_eq!(
        changed.body["secret"]["masked"], "••••5555",
        "the secret stays"
    );
    assert_eq!(
        app.delete("/api/integrations/connections/snow", &editor)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.delete("/api/integrations/connections/snow", &admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/api/integrations/connections/snow", &viewer)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_input_is_a_problem_naming_the_field_and_changes_nothing() {
    let app = start().await;
    let admin = app.token("t1", Role::Admin);
    let post = |body| app.post_json("/api/integrations/connections", &admin, body);
    let cases = [
        (
            json!({"name": "s", "kind": "servicenow", "auth": "basic", "config": {"instanceUrl": "https://a.service-now.com"}, "secret": "x"}),
            "config.username",
        ),
        (
            json!({"name": "s", "kind": "servicenow", "auth": "basic", "config": {"instanceUrl": 7, "username": "a"}, "secret": "x"}),
            "config.instanceUrl",
        ),
        (
            json!({"name": "s", "kind": "servicenow", "auth": "kerberos", "config": {"instanceUrl": "https://a.service-now.com"}, "secret": "x"}),
            "auth",
        ),
        (
            json!({"name": "s", "kind": "salesforce", "auth": "basic", "config": {}, "secret": "x"}),
            "kind",
        ),
        (
            json!({"name": "S p", "kind": "github", "auth": "token", "config": {}, "secret": "x"}),
            "name",
        ),
        (
            json!({"name": "g", "kind": "github", "auth": "token", "config": {}}),
            "secret",
        ),
        (
            json!({"name": "g", "kind": "github", "auth": "token", "config": {"bogus": 1}, "secret": "x"}),
            "config.bogus",
        ),
        // The outbound guard refuses the instance's address (cloud metadata, loopback, plain http).
        (
            json!({"name": "s", "kind": "servicenow", "auth": "basic", "config": {"instanceUrl": "https://169.254.169.254", "username": "a"}, "secret": "x"}),
            "config.instanceUrl",
        ),
        (
            json!({"name": "j", "kind": "jira", "auth": "api-token", "config": {"baseUrl": "http://acme.atlassian.net", "email": "a@b.c"}, "secret": "x"}),
            "config.baseUrl",
        ),
        (
            json!({"name": "h", "kind": "http", "auth": "none", "config": {"baseUrl": "https://[::1]/"}}),
            "config.baseUrl",
        ),
    ];
    for (body, field) in cases {
        let reply = post(body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        let fields: Vec<&str> = reply.body["errors"]
            .as_array()
            .expect("test fixture")
            .iter()
            .map(|e| e["field"].as_str().expect("test fixture"))
            .collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
    }
    let unknown_field =
        post(json!({"name": "g", "kind": "github", "auth": "token", "secret": "x", "extra": 1}))
            .await;
    assert_eq!(
        unknown_field.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown_field.text
    );
    let list = app.get("/api/integrations/connections", &admin).await;
    assert_eq!(list.body["items"], json!([]), "nothing was stored");
    // An unknown integration or connection is a 404.
    let editor = app.token("t1", Role::Editor);
    assert_eq!(
        app.post_json("/api/integrations/nope/test", &editor, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/integrations/nope/status", &editor)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post_json("/api/integrations/jira/test", &editor, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn another_tenants_connection_is_not_found() {
    let app = start().await;
    create_connection(
        &app,
        "t1",
        servicenow("snow", "https://acme.service-now.com", PASSWORD),
    )
    .await;
    let other_admin = app.token("t2", Role::Admin);
    for (method, uri) in [
        ("GET", "/api/integrations/connections/snow"),
        ("DELETE", "/api/integrations/connections/snow"),
        ("POST", "/api/integrations/snow/test"),
        ("GET", "/api/integrations/snow/status"),
    ] {
        let body = (method == "POST").then(|| json!({}));
        assert_eq!(
            app.send(method, uri, &other_admin, body).await.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}"
        );
    }
    let reply = app
        .post_json(
            "/api/integrations/servicenow/incident",
            &other_admin,
            json!({"connection": "snow", "shortDescription": "x"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let list = app.get("/api/integrations/connections", &other_admin).await;
    assert_eq!(list.body["items"], json!([]));
    let same = app
        .get(
            "/api/integrations/connections/snow",
            &app.token("t1", Role::Viewer),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
}
