//! ServiceNow against the Table API fake: the connection test, exactly-once creates, 429 with
//! `Retry-After`, credential errors, and the circuit seen by a second instance.

use std::time::Duration;

use axum::http::StatusCode;
use flowgrid_http::auth::Role;
use serde_json::json;

use crate::common::{create_connection, second_instance, servicenow, start};
use crate::snow_fake::{CLIENT_ID, Fault, PASSWORD, SnowFake};

#[tokio::test]
async fn the_test_makes_one_authenticated_call_and_stores_result_and_latency() {
    let fake = SnowFake::start().await;
    let app = start().await;
    create_connection(&app, "t1", servicenow("snow", &fake.url, PASSWORD)).await;
    create_connection(
        &app,
        "t1",
        servicenow("wrong", &fake.url, "not-the-password"),
    )
    .await;
    let editor = app.token("t1", Role::Editor);
    let ok = app
        .post_json("/api/integrations/snow/test", &editor, json!({}))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["ok"], true);
    assert_eq!(ok.body["status"], 200);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (
            seen[0].path.as_str(),
            seen[0].query.contains("sysparm_limit=1")
        ),
        ("/api/now/table/sys_user", true)
    );
    let bad = app
        .post_json("/api/integrations/wrong/test", &editor, json!({}))
        .await;
    assert_eq!(bad.body["ok"], false);
    assert_eq!(bad.body["status"], 401);
    assert!(
        bad.body["error"]
            .as_str()
            .expect("test fixture")
            .contains("User Not Authenticated"),
        "{}",
        bad.text
    );
    assert_eq!(fake.seen().len(), 2, "a credential error is not retried");
    let stored = app
        .get("/api/integrations/connections/wrong", &editor)
        .await;
    assert_eq!(stored.body["lastTest"]["ok"], false);
    assert!(stored.body["lastTest"]["latencyMs"].is_u64());
    let status = app
        .get(
            "/api/integrations/snow/status",
            &app.token("t1", Role::Viewer),
        )
        .await;
    assert_eq!(status.body["circuit"], "closed");
    assert_eq!(status.body["recentCalls"][0]["action"], "test");
    assert_eq!(status.body["lastTest"]["ok"], true);
    for reply in [&ok, &bad, &stored, &status] {
        assert!(!reply.text.contains(PASSWORD), "{}", reply.text);
    }
}

#[tokio::test]
async fn an_incident_created_then_timed_out_upstream_exists_exactly_once() {
    let fake = SnowFake::start().await;
    let app = start().await;
    create_connection(&app, "t1", servicenow("snow", &fake.url, PASSWORD)).await;
    // The first create is stored upstream, then no answer comes before the attempt timeout.
    fake.fail_next(&[Fault::CreateThenHang(Duration::from_secs(3))]);
    let editor = app.token("t1", Role::Editor);
    let reply = app
        .send_with(
            "POST",
            "/api/integrations/servicenow/incident",
            &editor,
            Some(json!({"shortDescription": "Disk full on db-1", "urgency": "2"})),
            &[("idempotency-key", "run-42")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let records = fake.records();
    assert_eq!(records.len(), 1, "exactly one incident: {records:?}");
    assert_eq!(reply.body["sysId"], records[0]["sys_id"]);
    assert_eq!(reply.body["number"], records[0]["number"]);
    assert_eq!(records[0]["short_description"], "Disk full on db-1");
    assert_eq!(records[0]["correlation_display"], "Flowgrid");
    let tag = records[0]["correlation_id"].as_str().expect("test fixture");
    assert!(tag.starts_with("flowgrid-"));
    // The lookup ran before any second create.
    let seen = fake.seen();
    let kinds: Vec<(&str, bool)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.query.contains(tag)))
        .collect();
    assert_eq!(kinds, [("POST", false), ("GET", true)], "{seen:?}");
    // The same key again returns the same incident, nothing new upstream.
    fake.fail_next(&[Fault::CreateThenHang(Duration::from_secs(3))]);
    let again = app
        .send_with(
            "POST",
            "/api/integrations/servicenow/incident",
            &editor,
            Some(json!({"shortDescription": "Disk full on db-1"})),
            &[("idempotency-key", "run-42")],
        )
        .await;
    assert_eq!(again.body["sysId"], reply.body["sysId"]);
    assert_eq!(
        fake.records().len(),
        2,
        "a plain repeat creates (the tag is looked up only after an unknown outcome)"
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_retried() {
    let fake = SnowFake::start().await;
    let app = start().await;
    create_connection(&app, "t1", servicenow("snow", &fake.url, PASSWORD)).await;
    fake.fail_next(&[Fault::TooMany(1)]);
    let reply = app
        .post_json(
            "/api/integrations/servicenow/incident",
            &app.token("t1", Role::Editor),
            json!({"shortDescription": "x"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(990),
        "waited {waited:?}, Retry-After said 1 s"
    );
    assert_eq!(fake.records().len(), 1);
}

#[tokio::test]
async fn an_open_circuit_is_seen_by_a_second_instance_which_does_not_call_upstream() {
    let fake = SnowFake::start().await;
    fake.always_fail();
    let app = start().await;
    create_connection(&app, "t1", servicenow("snow", &fake.url, PASSWORD)).await;
    let editor = app.token("t1", Role::Editor);
    let body = json!({"shortDescription": "x"});
    // Each call makes 3 attempts (500 each); 2 failed calls open the circuit.
    for _ in 0..2 {
        let reply = app
            .post_json(
                "/api/integrations/servicenow/incident",
                &editor,
                body.clone(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text);
        assert_eq!(reply.body["type"], "urn:flowgrid:problem:upstream-failed");
        assert_eq!(reply.body["upstreamStatus"], 500);
    }
    let before = fake.seen().len();
    assert_eq!(
        before,
        2 * (3 + 3),
        "per call: 3 attempts, and a tag lookup before each retry and after the last"
    );
    let other = second_instance(&app).await;
    let reply = other
        .post_json("/api/integrations/servicenow/incident", &editor, body)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.body["type"], "urn:flowgrid:problem:circuit-open");
    assert_eq!(fake.seen().len(), before, "no call went upstream");
    let status = other
        .get(
            "/api/integrations/snow/status",
            &app.token("t1", Role::Viewer),
        )
        .await;
    assert_eq!(status.body["circuit"], "open");
    assert_eq!(status.body["consecutiveFailures"], 2);
    assert_eq!(fake.records().len(), 0);
}

#[tokio::test]
async fn oauth_client_credentials_get_a_token_once_and_use_it_as_bearer() {
    let fake = SnowFake::start().await;
    let app = start().await;
    create_connection(
        &app,
        "t1",
        json!({"name": "snow", "kind": "servicenow", "auth": "oauth",
               "config": {"instanceUrl": fake.url, "clientId": CLIENT_ID}, "secret": PASSWORD}),
    )
    .await;
    let editor = app.token("t1", Role::Editor);
    let test = app
        .post_json("/api/integrations/snow/test", &editor, json!({}))
        .await;
    assert_eq!(test.body["ok"], true, "{}", test.text);
    let created = app
        .post_json(
            "/api/integrations/servicenow/incident",
            &editor,
            json!({"shortDescription": "via oauth"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let paths: Vec<String> = fake.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/oauth_token.do",
            "/api/now/table/sys_user",
            "/api/now/table/incident"
        ],
        "one token request, then the token is reused"
    );
    create_connection(
        &app,
        "t1",
        json!({"name": "badclient", "kind": "servicenow", "auth": "oauth",
               "config": {"instanceUrl": fake.url, "clientId": "nope"}, "secret": PASSWORD}),
    )
    .await;
    let refused = app
        .post_json("/api/integrations/badclient/test", &editor, json!({}))
        .await;
    assert_eq!(refused.body["ok"], false);
    assert_eq!(refused.body["status"], 401);
    assert!(!refused.text.contains(PASSWORD));
}
