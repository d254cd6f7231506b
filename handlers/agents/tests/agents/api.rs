//! The Agents routes in-process: every route, every error, tenant isolation and roles.

use axum::http::StatusCode;
use flowgrid_agents::AppState;
use flowgrid_http::auth::Role;
use flowgrid_testkit::{Reply, TestApp};
use serde_json::json;

use crate::common::{create, start_app};

fn agent_body(name: &str) -> serde_json::Value {
    json!({"name": name, "definition": {"instructions": "triage incidents"}})
}

#[tokio::test]
async fn create_then_get_round_trips_with_location_and_etag() {
    let app = start_app().await;
    let created = create(&app, "acme", "Triage").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.headers["location"],
        format!("/api/agents/{id}").as_str()
    );
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["status"], "draft");
    assert_eq!(created.body["tenantId"], "acme");
    assert_eq!(created.body["definition"]["model"]["provider"], "offline");

    let token = app.token("acme", Role::Viewer);
    let read = app.get(&format!("/api/agents/{id}"), &token).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.etag(), created.etag());
    assert_eq!(read.body, created.body);
}

#[tokio::test]
async fn server_owned_fields_are_never_taken_from_input() {
    let app = start_app().await;
    let token = app.token("acme", Role::Editor);
    for field in [
        "id",
        "tenantId",
        "version",
        "createdAt",
        "compiledVersion",
        "etag",
    ] {
        let mut body = agent_body("sneaky");
        body[field] = json!("x");
        let reply = app.post_json("/api/agents", &token, body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(reply.body["errors"][0]["field"], field);
    }
    let list = app.get("/api/agents", &token).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn get_with_a_matching_if_none_match_is_not_modified() {
    let app = start_app().await;
    let created = create(&app, "acme", "cached").await;
    let uri = format!("/api/agents/{}", created.body["id"].as_str().unwrap());
    let token = app.token("acme", Role::Viewer);
    let etag = created.etag();
    let same = app
        .send_with("GET", &uri, &token, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    let other = app
        .send_with("GET", &uri, &token, None, &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn list_is_newest_first_filtered_searchable_and_paged() {
    let app = start_app().await;
    for name in ["alpha", "beta", "gamma", "delta", "epsilon"] {
        create(&app, "acme", name).await;
    }
    let token = app.token("acme", Role::Viewer);
    let first = app.get("/api/agents?limit=2", &token).await;
    assert_eq!(first.status, StatusCode::OK);
    let names = |r: &Reply| {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["epsilon", "delta"]);
    let token_param = first.body["continuationToken"].as_str().unwrap().to_owned();
    let second = app
        .get(
            &format!("/api/agents?limit=2&continuationToken={token_param}"),
            &token,
        )
        .await;
    assert_eq!(names(&second), ["gamma", "beta"]);
    let searched = app.get("/api/agents?q=ALP", &token).await;
    assert_eq!(names(&searched), ["alpha"]);
    let drafts = app
        .get("/api/agents?status=draft&limit=100000", &token)
        .await;
    assert_eq!(
        drafts.status,
        StatusCode::OK,
        "an oversized limit is clamped, not refused"
    );
    assert_eq!(names(&drafts).len(), 5);
    let active = app.get("/api/agents?status=active", &token).await;
    assert_eq!(names(&active).len(), 0);
    assert!(active.body["continuationToken"].is_null());
}

#[tokio::test]
async fn put_replaces_bumps_the_version_and_keeps_the_previous_one() {
    let app = start_app().await;
    let created = create(&app, "acme", "v").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let token = app.token("acme", Role::Editor);
    let mut body = agent_body("v-renamed");
    body["description"] = json!("second");
    let etag = created.etag();
    let replaced = app
        .send_with(
            "PUT",
            &format!("/api/agents/{id}"),
            &token,
            Some(body),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(replaced.body["name"], "v-renamed");
    assert_ne!(replaced.etag(), created.etag());
    let v1 = app
        .get(&format!("/api/agents/{id}/versions/1"), &token)
        .await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body["name"], "v");
    assert_eq!(v1.body["version"], 1);
}

#[tokio::test]
async fn put_with_a_stale_if_match_is_refused_and_changes_nothing() {
    let app = start_app().await;
    let created = create(&app, "acme", "stale").await;
    let uri = format!("/api/agents/{}", created.body["id"].as_str().unwrap());
    let token = app.token("acme", Role::Editor);
    let etag = created.etag();
    let ok = app
        .send_with(
            "PUT",
            &uri,
            &token,
            Some(agent_body("fresh")),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let stale = app
        .send_with(
            "PUT",
            &uri,
            &token,
            Some(agent_body("lost-update")),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        stale.body["type"],
        "urn:flowgrid:problem:precondition-failed"
    );
    let now = app.get(&uri, &token).await;
    assert_eq!(now.body["name"], "fresh");
    assert_eq!(now.body["version"], 2);
}

#[tokio::test]
async fn delete_honours_if_match_and_then_the_agent_is_gone() {
    let app = start_app().await;
    let created = create(&app, "acme", "doomed").await;
    let uri = format!("/api/agents/{}", created.body["id"].as_str().unwrap());
    let admin = app.token("acme", Role::Admin);
    let stale = app
        .send_with("DELETE", &uri, &admin, None, &[("if-match", "\"nope\"")])
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let etag = created.etag();
    let deleted = app
        .send_with("DELETE", &uri, &admin, None, &[("if-match", &etag)])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&uri, &admin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&uri, &admin).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn versions_are_listed_and_restore_makes_a_new_version_equal_to_the_old_one() {
    let app = start_app().await;
    let created = create(&app, "acme", "original").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let editor = app.token("acme", Role::Editor);
    let admin = app.token("acme", Role::Admin);
    let put = app
        .put_json(&format!("/api/agents/{id}"), &editor, agent_body("changed"))
        .await;
    assert_eq!(put.status, StatusCode::OK);

    let versions = app
        .get(&format!("/api/agents/{id}/versions"), &editor)
        .await;
    assert_eq!(versions.status, StatusCode::OK);
    let numbers: Vec<u64> = versions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);

    let restored = app
        .send(
            "POST",
            &format!("/api/agents/{id}/versions/1/restore"),
            &admin,
            None,
        )
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{:?}", restored.body);
    assert_eq!(restored.body["version"], 3);
    assert_eq!(restored.body["name"], "original");
    assert_eq!(restored.body["definition"], created.body["definition"]);
    let missing = app
        .send(
            "POST",
            &format!("/api/agents/{id}/versions/9/restore"),
            &admin,
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = app
        .get(&format!("/api/agents/{id}/versions/zero"), &admin)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn status_reports_versions_and_real_run_figures_from_the_jobs_store() {
    let app = start_app().await;
    let created = create(&app, "acme", "s").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let token = app.token("acme", Role::Viewer);
    let uri = format!("/api/agents/{id}/status");
    let status = app.get(&uri, &token).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["status"], "draft");
    assert_eq!(status.body["version"], 1);
    assert!(status.body["compiledVersion"].is_null());
    assert!(status.body["lastRunAt"].is_null() && status.body["successRate"].is_null());
    assert_eq!(status.body["runsLast24h"], 0);
    assert_eq!(status.body["runningCount"], 0);

    // Three runs recorded by the Execution app: one succeeded, one failed, one running.
    for (i, outcome) in ["succeeded", "failed", "running"].into_iter().enumerate() {
        record_job(&app, "acme", &id, i, outcome).await;
    }
    let status = app.get(&uri, &token).await;
    assert_eq!(status.body["runsLast24h"], 3);
    assert_eq!(status.body["successRate"], 0.5);
    assert_eq!(status.body["runningCount"], 1);
    assert!(status.body["lastRunAt"].is_string());
    // Another tenant's runs never count.
    let other = create(&app, "globex", "s").await;
    let other_status = app
        .get(
            &format!("/api/agents/{}/status", other.body["id"].as_str().unwrap()),
            &app.token("globex", Role::Viewer),
        )
        .await;
    assert_eq!(other_status.body["runsLast24h"], 0);
}

#[tokio::test]
async fn another_tenants_agent_is_not_found_on_every_route_and_nothing_changes() {
    let app = start_app().await;
    let created = create(&app, "acme", "private").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let intruder = app.token("globex", Role::Owner);
    let routes: [(&str, String, Option<serde_json::Value>); 7] = [
        ("GET", format!("/api/agents/{id}"), None),
        (
            "PUT",
            format!("/api/agents/{id}"),
            Some(agent_body("pwned")),
        ),
        ("DELETE", format!("/api/agents/{id}"), None),
        ("GET", format!("/api/agents/{id}/status"), None),
        ("GET", format!("/api/agents/{id}/versions"), None),
        ("GET", format!("/api/agents/{id}/versions/1"), None),
        ("POST", format!("/api/agents/{id}/versions/1/restore"), None),
    ];
    let missing = uuid_like();
    for (method, uri, body) in routes {
        let reply = app.send(method, &uri, &intruder, body.clone()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
        let unknown = app
            .send(method, &uri.replace(&id, &missing), &intruder, body)
            .await;
        assert_eq!(
            reply.body["detail"], unknown.body["detail"],
            "another tenant's id looks like a missing one"
        );
    }
    let list = app.get("/api/agents", &intruder).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 0);
    let owner = app.token("acme", Role::Viewer);
    let after = app.get(&format!("/api/agents/{id}"), &owner).await;
    assert_eq!(after.body, created.body, "nothing changed");
}

fn uuid_like() -> String {
    "01900000-0000-7000-8000-000000000000".into()
}

#[tokio::test]
async fn roles_gate_reads_writes_deletes_and_restores() {
    let app = start_app().await;
    let created = create(&app, "acme", "gated").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let viewer = app.token("acme", Role::Viewer);
    let editor = app.token("acme", Role::Editor);
    let owner = app.token("acme", Role::Owner);
    assert_eq!(
        app.post_json("/api/agents", &viewer, agent_body("x"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.put_json(&format!("/api/agents/{id}"), &viewer, agent_body("x"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.delete(&format!("/api/agents/{id}"), &editor)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send(
            "POST",
            &format!("/api/agents/{id}/versions/1/restore"),
            &editor,
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/api/agents/{id}"), &viewer).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.delete(&format!("/api/agents/{id}"), &owner)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_problem_and_creates_nothing() {
    let app = start_app().await;
    let token = app.token("acme", Role::Editor);
    let post = |body: &'static str, content_type: &'static str| {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/api/agents")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        app.request(request)
    };
    let malformed = post("{\"name\": ", "application/json").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let wrong_type = post(
        r#"{"name": 5, "definition": {"instructions": "x"}}"#,
        "application/json",
    )
    .await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_type.body["errors"][0]["field"], "name");
    let missing = post(r#"{"name": "x", "definition": {}}"#, "application/json").await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap()
            .contains("instructions")
    );
    let not_json = post("name=x", "application/x-www-form-urlencoded").await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bad_cron = app
        .post_json(
            "/api/agents",
            &token,
            json!({"name": "c", "schedule": "every day", "definition": {"instructions": "x"}}),
        )
        .await;
    assert_eq!(bad_cron.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_cron.body["errors"][0]["field"], "schedule");
    let long_name = app
        .post_json("/api/agents", &token, agent_body(&"n".repeat(101)))
        .await;
    assert_eq!(long_name.status, StatusCode::UNPROCESSABLE_ENTITY);

    let huge = format!(
        r#"{{"name": "big", "definition": {{"instructions": "{}"}}}}"#,
        "x".repeat(1024 * 1024)
    );
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/agents")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(huge))
        .unwrap();
    let too_large = app.request(request).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);

    for reply in [
        &malformed,
        &wrong_type,
        &missing,
        &not_json,
        &bad_cron,
        &too_large,
    ] {
        assert_eq!(reply.headers["content-type"], "application/problem+json");
    }
    let list = app.get("/api/agents", &token).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn an_input_schema_that_does_not_compile_is_refused_at_save() {
    let app = start_app().await;
    let token = app.token("acme", Role::Editor);
    let with_schema = |name: &str, schema: serde_json::Value| json!({"name": name, "definition": {"instructions": "x", "inputSchema": schema}});
    let bad_type = app
        .post_json(
            "/api/agents",
            &token,
            with_schema(
                "t",
                json!({"type": "object", "properties": {"n": {"type": "integr"}}}),
            ),
        )
        .await;
    assert_eq!(bad_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        bad_type.body["errors"][0]["field"],
        "definition.inputSchema.properties.n.type"
    );
    assert_eq!(
        bad_type.body["errors"][0]["pointer"],
        "/definition/inputSchema/properties/n/type"
    );
    // A remote reference is an invalid schema, refused without fetching it: nothing connects
    // to the referenced host.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let remote = format!(
        "http://127.0.0.1:{}/schema.json",
        listener.local_addr().unwrap().port()
    );
    for (name, schema) in [
        ("remote", json!({"$ref": remote})),
        ("dangling", json!({"$ref": "#/$defs/missing"})),
        (
            "dialect",
            json!({"$schema": "https://example.com/my-dialect"}),
        ),
        ("lookahead", json!({"pattern": "^(?=a)"})),
    ] {
        let reply = app
            .post_json("/api/agents", &token, with_schema(name, schema))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {:?}",
            reply.body
        );
        assert!(
            reply.body["errors"][0]["field"]
                .as_str()
                .unwrap()
                .starts_with("definition.inputSchema"),
            "{name}: {:?}",
            reply.body
        );
    }
    assert!(
        listener.accept().is_err(),
        "the remote $ref was not fetched"
    );
    // Replacing an agent checks it the same way, and a valid 2020-12 schema is accepted.
    let created = create(&app, "acme", "kept").await;
    let uri = format!("/api/agents/{}", created.body["id"].as_str().unwrap());
    let etag = created.etag();
    let put = app
        .send_with(
            "PUT",
            &uri,
            &token,
            Some(with_schema("kept", json!({"required": "name"}))),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(put.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        put.body["errors"][0]["field"],
        "definition.inputSchema.required"
    );
    let good = app
        .post_json(
            "/api/agents",
            &token,
            with_schema(
                "good",
                json!({"$defs": {"id": {"type": "string", "pattern": "^[a-z]+$"}},
                    "type": "object", "properties": {"id": {"$ref": "#/$defs/id"}}}),
            ),
        )
        .await;
    assert_eq!(good.status, StatusCode::CREATED, "{:?}", good.body);
    let list = app.get("/api/agents", &token).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        2,
        "only the valid agents were stored"
    );
    let kept = app.get(&uri, &token).await;
    assert_eq!(kept.body["version"], 1, "the refused PUT changed nothing");
}

#[tokio::test]
async fn bad_ids_filters_and_tokens_in_the_query_are_bad_requests() {
    let app = start_app().await;
    let token = app.token("acme", Role::Viewer);
    for uri in [
        "/api/agents/not-a-uuid",
        "/api/agents/not-a-uuid/status",
        "/api/agents?status=sleeping",
        "/api/agents?limit=lots",
        "/api/agents?continuationToken=forged",
    ] {
        let reply = app.get(uri, &token).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.headers["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn duplicate_names_conflict_within_a_tenant_only() {
    let app = start_app().await;
    create(&app, "acme", "Same").await;
    let token = app.token("acme", Role::Editor);
    let dup = app
        .post_json("/api/agents", &token, agent_body("same"))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    create(&app, "globex", "same").await;
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized() {
    let app = start_app().await;
    let foreign = flowgrid_testkit::DataDir::new().token("acme", Role::Owner);
    for token in ["", "garbage", foreign.as_str()] {
        let reply = app.get("/api/agents", token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token}");
        assert!(
            reply.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert_eq!(
            reply.body["detail"], "A valid bearer token is required.",
            "no verification detail leaks"
        );
    }
    let basic = app
        .send_with(
            "GET",
            "/api/agents",
            "",
            None,
            &[("authorization", "Basic dXNlcjpwdw==")],
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = start_app().await;
    let token = app.token("acme", Role::Viewer);
    let unknown = app.get("/api/nothing-here", &token).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.headers["content-type"], "application/problem+json");
    let method = app.send("PATCH", "/api/agents", &token, None).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(method.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_correlation_id_is_echoed_or_generated_and_lands_in_problems() {
    let app = start_app().await;
    let given = app
        .send_with(
            "GET",
            "/api/agents",
            "",
            None,
            &[("x-correlation-id", "req-42")],
        )
        .await;
    assert_eq!(given.headers["x-correlation-id"], "req-42");
    assert_eq!(given.body["correlationId"], "req-42");
    let generated = app.get("/api/health/agents/live", "").await;
    let id = generated.headers["x-correlation-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
    assert!(generated.headers.contains_key("traceparent"));
}

#[tokio::test]
async fn health_routes_answer_without_a_token() {
    let app = start_app().await;
    for uri in [
        "/",
        "/api/health/agents/live",
        "/api/health/agents/ready",
        "/api/health/agents",
    ] {
        assert_eq!(app.get(uri, "").await.status, StatusCode::OK, "{uri}");
    }
    let deep = app.get("/api/health/agents", "").await;
    assert_eq!(deep.body["checks"]["storage"]["status"], "ok");
}

/// Stores a job of agent `id` in `outcome` status, as the Execution app would have.
async fn record_job(app: &TestApp<AppState>, tenant: &str, id: &str, i: usize, outcome: &str) {
    use flowgrid_domain::store::jobs::{Created, Job, JobId, JobStatus, JobStore};
    use flowgrid_domain::{AgentId, TenantId};
    let db = flowgrid_storage::sqlite::Sqlite::open(&app.dir().path().join("flowgrid.db"))
        .await
        .expect("test setup");
    let tenant = TenantId::parse(tenant).expect("test setup");
    let agent = flowgrid_domain::store::AgentStore::get(
        &db,
        &tenant,
        AgentId::parse(id).expect("test setup"),
    )
    .await
    .expect("test setup");
    let mut with_step = agent.clone();
    with_step.definition.steps = vec![json!({"id": "s", "kind": "transform", "output": 1})];
    let now = chrono::Utc::now() - chrono::Duration::seconds(10 - i as i64);
    let job = Job {
        id: JobId::new(),
        tenant_id: tenant.clone(),
        agent_id: agent.id,
        agent_version: agent.version,
        trigger: "manual".into(),
        input: json!({}),
        status: JobStatus::Queued,
        plan: with_step.compile().expect("test setup"),
        steps: Vec::new(),
        next_step: Some(0),
        output: None,
        error: None,
        attempts: 0,
        lease_until: None,
        lease_owner: None,
        idempotency_key: None,
        request_hash: None,
        created_by: "test".into(),
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
        etag: String::new(),
    };
    let Created::New(mut job) = db.create(&job).await.expect("test setup") else {
        panic!("a new job")
    };
    let etag = job.etag.clone();
    job.status = JobStatus::parse(outcome).expect("test setup");
    db.replace(&job, &etag).await.expect("test setup");
}
