//! The HTTP routes, in process.

use crate::helpers::{ExecApp, job_id};
use flowgrid_http::auth::Role;
use serde_json::json;

fn definition() -> serde_json::Value {
    json!({"instructions": "x",
        "inputSchema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "steps": [{"id": "greet", "kind": "transform", "output": {"greeting": "hello {{ input.name }}"}}]})
}

#[tokio::test]
async fn submit_answers_202_with_the_job_id_and_status_url_and_the_job_is_queued() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let reply = app
        .send(
            "POST",
            &format!("/api/execute/agent/{}", agent.id),
            &token,
            Some(json!({"input": {"name": "Ada"}})),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let id = job_id(&reply.body);
    assert_eq!(reply.body["statusUrl"], format!("/api/execute/jobs/{id}"));
    assert_eq!(reply.headers["location"], format!("/api/execute/jobs/{id}"));
    let read = app
        .send(
            "GET",
            &format!("/api/execute/jobs/{id}"),
            &app.token("t1", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["status"], "queued");
    assert_eq!(read.body["input"], json!({"name": "Ada"}));
    assert!(read.body.get("plan").is_none() && read.body.get("leaseOwner").is_none());
}

#[tokio::test]
async fn the_envelope_submit_returns_the_message_only_with_a_2xx() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let ok = app.submit(&token, &agent, json!({"name": "x"}), None).await;
    assert_eq!(ok["statusCode"], 202);
    assert_eq!(app.queue.lock().unwrap().len(), 1);
    let bad = app.submit(&token, &agent, json!({"name": 5}), None).await;
    assert_eq!(bad["statusCode"], 422);
    assert_eq!(bad["headers"]["content-type"], "application/problem+json");
    assert_eq!(bad["body"]["errors"][0]["field"], "input.name");
    assert_eq!(
        app.queue.lock().unwrap().len(),
        1,
        "no message for a refused submit"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_give_the_same_job_and_another_body_is_422() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let uri = format!("/api/execute/agent/{}", agent.id);
    let body = json!({"input": {"name": "Ada"}});
    let first = app
        .send_with(
            "POST",
            &uri,
            &token,
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    let second = app
        .send_with(
            "POST",
            &uri,
            &token,
            Some(body),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(second.status, 202);
    assert_eq!(job_id(&first.body), job_id(&second.body));
    let other = app
        .send_with(
            "POST",
            &uri,
            &token,
            Some(json!({"input": {"name": "Bob"}})),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(other.status, 422, "{:?}", other.body);
    assert_eq!(other.body["errors"][0]["field"], "Idempotency-Key");
    // The key is per tenant.
    let agent2 = app.agent("t2", definition()).await;
    let t2 = app
        .send_with(
            "POST",
            &format!("/api/execute/agent/{}", agent2.id),
            &app.token("t2", Role::Editor),
            Some(json!({"input": {"name": "Ada"}})),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(t2.status, 202);
    assert_ne!(job_id(&t2.body), job_id(&first.body));
}

#[tokio::test]
async fn inputs_are_validated_against_the_agents_input_schema() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let uri = format!("/api/execute/agent/{}", agent.id);
    let missing = app
        .send("POST", &uri, &token, Some(json!({"input": {}})))
        .await;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.body["errors"][0]["field"], "input.name");
    assert_eq!(missing.body["errors"][0]["pointer"], "/input/name");
    let unknown = app
        .send(
            "POST",
            &uri,
            &token,
            Some(json!({"input": {"name": "a"}, "tenantId": "t2"})),
        )
        .await;
    assert_eq!(
        unknown.status, 422,
        "unknown fields are refused, naming the field: {:?}",
        unknown.body
    );
    assert_eq!(unknown.body["errors"][0]["field"], "tenantId");
    let text = app
        .send_with(
            "POST",
            &uri,
            &token,
            None,
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(
        text.status, 422,
        "an empty body is an empty input, which the schema refuses"
    );
}

#[tokio::test]
async fn draft_2020_12_input_schemas_are_enforced_and_422s_carry_the_json_pointer() {
    let app = ExecApp::new().await;
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x",
                "inputSchema": {
                    "$defs": {"ticket": {"type": "string", "pattern": "^INC-[0-9]+$"}},
                    "type": "object", "required": ["tickets", "channel"],
                    "properties": {
                        "tickets": {"type": "array", "items": {"$ref": "#/$defs/ticket"}},
                        "channel": {"oneOf": [
                            {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}},
                            {"type": "object", "required": ["teams"], "properties": {"teams": {"type": "string"}}}
                        ]},
                        "mode": {"const": "triage"},
                        "when": {"type": "string", "format": "date-time"}
                    }
                },
                "steps": [{"id": "echo", "kind": "transform", "output": {"n": "{{ input.tickets | length }}"}}]}),
        )
        .await;
    let token = app.token("t1", Role::Editor);
    let uri = format!("/api/execute/agent/{}", agent.id);
    let bad = app
        .send(
            "POST",
            &uri,
            &token,
            Some(json!({"input": {"tickets": ["INC-1", "inc-2"],
                "channel": {"email": "a", "teams": "b"}, "mode": "other"}})),
        )
        .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let errors: Vec<(&str, &str)> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["pointer"].as_str().unwrap()))
        .collect();
    for expected in [
        ("input.tickets[1]", "/input/tickets/1"),
        ("input.channel", "/input/channel"),
        ("input.mode", "/input/mode"),
    ] {
        assert!(errors.contains(&expected), "{expected:?} in {errors:?}");
    }
    assert_eq!(errors.len(), 3, "{errors:?}");
    let missing = app
        .send(
            "POST",
            &uri,
            &token,
            Some(json!({"input": {"tickets": []}})),
        )
        .await;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.body["errors"][0]["field"], "input.channel");
    assert_eq!(missing.body["errors"][0]["pointer"], "/input/channel");
    let good = app
        .send(
            "POST",
            &uri,
            &token,
            Some(
                json!({"input": {"tickets": ["INC-7"], "channel": {"teams": "ops"},
                "mode": "triage", "when": "format is an annotation, not checked"}}),
            ),
        )
        .await;
    assert_eq!(good.status, 202, "{:?}", good.body);
}

#[tokio::test]
async fn an_agent_that_does_not_compile_is_refused_with_field_errors() {
    let app = ExecApp::new().await;
    let agent = app
        .agent(
            "t1",
            json!({"instructions": "x", "steps": [{"id": "a", "kind": "http"}]}),
        )
        .await;
    let reply = app
        .send(
            "POST",
            &format!("/api/execute/agent/{}", agent.id),
            &app.token("t1", Role::Editor),
            None,
        )
        .await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.body["errors"][0]["field"], "definition.steps[0].url");
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let owner = app.token("t1", Role::Editor);
    let reply = app
        .send(
            "POST",
            &format!("/api/execute/agent/{}", agent.id),
            &owner,
            Some(json!({"input": {"name": "a"}})),
        )
        .await;
    let id = job_id(&reply.body);
    let other = app.token("t2", Role::Owner);
    let submit = app
        .send(
            "POST",
            &format!("/api/execute/agent/{}", agent.id),
            &other,
            Some(json!({"input": {"name": "a"}})),
        )
        .await;
    assert_eq!(submit.status, 404);
    assert_eq!(
        app.send("GET", &format!("/api/execute/jobs/{id}"), &other, None)
            .await
            .status,
        404
    );
    assert_eq!(
        app.send("POST", &format!("/api/execute/cancel/{id}"), &other, None)
            .await
            .status,
        404
    );
    let list = app.send("GET", "/api/execute/jobs", &other, None).await;
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(
        app.job("t1", &id).await.status,
        flowgrid_domain::store::JobStatus::Queued,
        "untouched"
    );
    // A message naming the wrong tenant does nothing either.
    let (_, answer) = app.deliver(&json!({"tenantId": "t2", "jobId": id})).await;
    assert!(
        answer["Logs"][0].as_str().unwrap().contains("Unknown"),
        "{answer}"
    );
}

#[tokio::test]
async fn viewers_read_and_only_editors_submit_and_cancel() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let viewer = app.token("t1", Role::Viewer);
    let uri = format!("/api/execute/agent/{}", agent.id);
    let denied = app
        .send("POST", &uri, &viewer, Some(json!({"input": {"name": "a"}})))
        .await;
    assert_eq!(denied.status, 403);
    let id = job_id(
        &app.send(
            "POST",
            &uri,
            &app.token("t1", Role::Editor),
            Some(json!({"input": {"name": "a"}})),
        )
        .await
        .body,
    );
    assert_eq!(
        app.send("POST", &format!("/api/execute/cancel/{id}"), &viewer, None)
            .await
            .status,
        403
    );
    assert_eq!(
        app.send("GET", "/api/execute/jobs", &viewer, None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.send("GET", "/api/execute/jobs", "", None).await.status,
        401
    );
}

#[tokio::test]
async fn cancelling_a_queued_job_cancels_it_and_a_finished_one_is_a_conflict() {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let uri = format!("/api/execute/agent/{}", agent.id);
    let id = job_id(
        &app.send("POST", &uri, &token, Some(json!({"input": {"name": "a"}})))
            .await
            .body,
    );
    let cancelled = app
        .send("POST", &format!("/api/execute/cancel/{id}"), &token, None)
        .await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = app
        .send("POST", &format!("/api/execute/cancel/{id}"), &token, None)
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["type"], "urn:flowgrid:problem:conflict");
    // Its message, delivered late, runs nothing.
    let (_, answer) = app.deliver(&json!({"tenantId": "t1", "jobId": id})).await;
    assert!(
        answer["Logs"][0]
            .as_str()
            .unwrap()
            .contains("AlreadyDone(Cancelled)"),
        "{answer}"
    );
}

#[tokio::test]
async fn jobs_are_listed_newest_first_filtered_and_paged() {
    let app = ExecApp::new().await;
    let a = app.agent("t1", definition()).await;
    let b = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let mut ids = Vec::new();
    for agent in [&a, &b, &a] {
        let reply = app
            .send(
                "POST",
                &format!("/api/execute/agent/{}", agent.id),
                &token,
                Some(json!({"input": {"name": "n"}})),
            )
            .await;
        ids.push(job_id(&reply.body));
    }
    app.send(
        "POST",
        &format!("/api/execute/cancel/{}", ids[0]),
        &token,
        None,
    )
    .await;
    let page1 = app
        .send("GET", "/api/execute/jobs?limit=2", &token, None)
        .await;
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1.body["items"][0]["id"], ids[2].as_str());
    let next = page1.body["continuationToken"].as_str().unwrap();
    let page2 = app
        .send(
            "GET",
            &format!("/api/execute/jobs?limit=2&continuationToken={next}"),
            &token,
            None,
        )
        .await;
    assert_eq!(page2.body["items"][0]["id"], ids[0].as_str());
    assert!(page2.body["continuationToken"].is_null());
    let of_a = app
        .send(
            "GET",
            &format!("/api/execute/jobs?agentId={}", a.id),
            &token,
            None,
        )
        .await;
    assert_eq!(of_a.body["items"].as_array().unwrap().len(), 2);
    let cancelled = app
        .send("GET", "/api/execute/jobs?status=cancelled", &token, None)
        .await;
    assert_eq!(cancelled.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.send("GET", "/api/execute/jobs?status=bogus", &token, None)
            .await
            .status,
        400
    );
    assert_eq!(
        app.send("GET", "/api/execute/jobs/not-a-uuid", &token, None)
            .await
            .status,
        400
    );
    assert_eq!(
        app.send(
            "GET",
            "/api/execute/jobs?continuationToken=forged",
            &token,
            None
        )
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn a_full_backlog_is_refused_with_429_and_retry_after() {
    let app = ExecApp::with(&[("FLOWGRID_TENANT_MAX_QUEUED", "2")]).await;
    let agent = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let uri = format!("/api/execute/agent/{}", agent.id);
    for _ in 0..2 {
        assert_eq!(
            app.send("POST", &uri, &token, Some(json!({"input": {"name": "n"}})))
                .await
                .status,
            202
        );
    }
    let full = app
        .send("POST", &uri, &token, Some(json!({"input": {"name": "n"}})))
        .await;
    assert_eq!(full.status, 429);
    assert!(full.headers.contains_key("retry-after"));
    let other = app.agent("t2", definition()).await;
    let reply = app
        .send(
            "POST",
            &format!("/api/execute/agent/{}", other.id),
            &app.token("t2", Role::Editor),
            Some(json!({"input": {"name": "n"}})),
        )
        .await;
    assert_eq!(reply.status, 202, "another tenant is not affected");
}

#[tokio::test]
async fn get_job_with_wait_answers_when_the_job_changes_at_once_when_finished_and_after_the_wait_otherwise()
 {
    let app = ExecApp::new().await;
    let agent = app.agent("t1", definition()).await;
    let token = app.token("t1", Role::Editor);
    let submitted = app
        .submit(&token, &agent, json!({"name": "Ada"}), None)
        .await;
    let id = job_id(&submitted);
    let viewer = app.token("t1", Role::Viewer);

    // Nothing happens to the job: the answer comes after the wait, with the job as it is.
    let idle = app
        .send(
            "GET",
            &format!("/api/execute/jobs/{id}?wait=1"),
            &viewer,
            None,
        )
        .await;
    assert_eq!(idle.status, 200, "{:?}", idle.body);
    assert_eq!(idle.body["status"], "queued");

    // The worker runs the job while a watcher waits (up to 60 s): it is answered with the change.
    let started = std::time::Instant::now();
    let watch_uri = format!("/api/execute/jobs/{id}?wait=60");
    let (watched, ()) = tokio::join!(app.send("GET", &watch_uri, &viewer, None), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        app.drain().await;
    });
    assert_eq!(watched.status, 200, "{:?}", watched.body);
    assert_ne!(watched.body["status"], "queued", "{:?}", watched.body);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(50),
        "the long poll waited for its whole wait instead of answering the change"
    );

    // A finished job is answered at once, however long the wait asked for.
    app.wait_job("t1", &id, "success", |j| j.status.is_terminal())
        .await;
    let started = std::time::Instant::now();
    let done = app
        .send(
            "GET",
            &format!("/api/execute/jobs/{id}?wait=60"),
            &viewer,
            None,
        )
        .await;
    assert_eq!(done.body["status"], "succeeded", "{:?}", done.body);
    assert_eq!(done.body["output"], json!({"greeting": "hello Ada"}));
    assert!(started.elapsed() < std::time::Duration::from_secs(50));

    // A malformed wait is a 400 problem that names it.
    let bad = app
        .send(
            "GET",
            &format!("/api/execute/jobs/{id}?wait=soon"),
            &viewer,
            None,
        )
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(bad.body.to_string().contains("wait"), "{:?}", bad.body);
}
