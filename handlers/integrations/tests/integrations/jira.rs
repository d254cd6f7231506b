//! Jira against steady serving Atlassian's description (a request it does not allow gets 400,
//! which the route would answer as 502), with every ADF document checked against Atlassian's
//! ADF JSON schema.

use axum::http::StatusCode;
use flowgrid_http::auth::Role;
use flowgrid_providers::integrations::adf::{self, Format};
use serde_json::json;

use crate::common::{create_connection, start};
use crate::fakes;

fn adf_validator() -> jsonschema::Validator {
    let schema = fakes::package_json("@atlaskit/adf-schema/dist/json-schema/v1/full.json");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .expect("ADF schema")
}

#[test]
fn every_adf_document_we_make_is_valid_against_atlassians_schema() {
    let validator = adf_validator();
    let sources = [
        (
            "plain text\nwith a break\n\nand a second paragraph",
            Format::Text,
        ),
        (
            "# Outage\n\nThe **db-1** disk is *full* since `02:00`; see [the runbook](https://example.org/rb).\n\n- check\n- clean\n\n1. one\n2. two\n\n> quoted\n\n---\n\n```sh\ndf -h\n```",
            Format::Markdown,
        ),
        ("", Format::Markdown),
        ("2 * 3 and a_b **unclosed", Format::Markdown),
        (
            "## [**bold link**](https://x.org) and `code`",
            Format::Markdown,
        ),
    ];
    for (source, format) in sources {
        let doc = adf::document(source, format);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{source:?}: {errors:?}\n{doc}");
    }
}

#[tokio::test]
async fn the_test_and_a_create_issue_are_requests_jiras_description_allows() {
    let mock = fakes::jira();
    let app = start().await;
    create_connection(
        &app,
        "t1",
        json!({"name": "jira", "kind": "jira", "auth": "api-token",
               "config": {"baseUrl": mock.url, "email": "ops@example.org"}, "secret": "ATATT3xFfGF0-token-1234"}),
    )
    .await;
    let editor = app.token("t1", Role::Editor);
    let test = app
        .post_json("/api/integrations/jira/test", &editor, json!({}))
        .await;
    assert_eq!(test.body["ok"], true, "{}", test.text);
    let reply = app
        .post_json(
            "/api/integrations/jira/issue",
            &editor,
            json!({"projectKey": "OPS", "summary": "Disk full", "description": "The **db-1** disk is full.\n\n- clean /tmp", "labels": ["ops"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let fields = flowgrid_providers::integrations::jira_fields(
        &json!({"projectKey": "OPS", "summary": "s", "description": "t"}),
        "flowgrid-x",
    );
    assert_eq!(fields["labels"], json!(["flowgrid-x"]));
    assert!(adf_validator().is_valid(&fields["description"]));
}

/// A Jira in front of steady: every request goes to steady first and must be one Jira's
/// description allows (2xx); created issues are then kept here (ids and keys as Jira numbers
/// them), so that the label search finds them, and the first create answers only after the
/// client has given up (created upstream, outcome unknown to the client).
async fn jira_that_creates_then_times_out(
    mock: &fakes::Steady,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::sync::{Arc, Mutex};
    let issues: Arc<Mutex<Vec<serde_json::Value>>> = Arc::new(Mutex::new(Vec::new()));
    let upstream = mock.url.clone();
    let kept = issues.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let upstream = upstream.clone();
            let issues = kept.clone();
            async move {
                let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                let mut forward = reqwest::Client::new().request(method.clone(), format!("{upstream}{path}")).body(body.to_vec());
                for name in ["authorization", "content-type", "accept"] {
                    if let Some(v) = headers.get(name) {
                        forward = forward.header(name, v.as_bytes());
                    }
                }
                let checked = forward.send().await.expect("steady answers");
                let status = checked.status();
                if !status.is_success() {
                    let text = checked.text().await.unwrap_or_default();
                    return (axum::http::StatusCode::BAD_REQUEST, text).into_response();
                }
                if method == axum::http::Method::POST && uri.path() == "/rest/api/3/issue" {
                    let request: serde_json::Value = serde_json::from_slice(&body).expect("test fixture");
                    let (issue, first) = {
                        let mut all = issues.lock().expect("test fixture");
                        let n = all.len() + 1;
                        let issue = json!({"id": format!("{}", 10_000 + n), "key": format!("OPS-{n}"), "self": format!("{upstream}/rest/api/3/issue/{}", 10_000 + n), "labels": request["fields"]["labels"]});
                        all.push(issue.clone());
                        (issue, n == 1)
                    };
                    if first {
                        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    }
                    return (axum::http::StatusCode::CREATED, axum::Json(json!({"id": issue["id"], "key": issue["key"], "self": issue["self"]}))).into_response();
                }
                if uri.path() == "/rest/api/3/search" {
                    let jql = uri.query().and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "jql").map(|(_, v)| v.into_owned())).unwrap_or_default();
                    let found: Vec<serde_json::Value> = issues.lock().expect("test fixture").iter().filter(|i| i["labels"].as_array().expect("test fixture").iter().any(|l| jql.contains(&format!("\"{}\"", l.as_str().expect("test fixture"))))).cloned().collect();
                    return axum::Json(json!({"startAt": 0, "maxResults": 1, "total": found.len(), "issues": found})).into_response();
                }
                let bytes = checked.bytes().await.unwrap_or_default();
                (status, bytes.to_vec()).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test fixture");
    let url = format!("http://{}", listener.local_addr().expect("test fixture"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, issues)
}

use axum::response::IntoResponse;

#[tokio::test]
async fn an_issue_created_then_timed_out_upstream_exists_exactly_once() {
    let mock = fakes::jira();
    let (url, issues) = jira_that_creates_then_times_out(&mock).await;
    let app = start().await;
    create_connection(
        &app,
        "t1",
        json!({"name": "jira", "kind": "jira", "auth": "api-token",
               "config": {"baseUrl": url, "email": "ops@example.org"}, "secret": "ATATT3xFfGF0-token-1234"}),
    )
    .await;
    let reply = app
        .send_with(
            "POST",
            "/api/integrations/jira/issue",
            &app.token("t1", Role::Editor),
            Some(json!({"projectKey": "OPS", "summary": "Disk full", "description": "db-1"})),
            &[("idempotency-key", "run-7")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let all = issues.lock().expect("test fixture").clone();
    assert_eq!(all.len(), 1, "exactly one issue: {all:?}");
    assert_eq!(reply.body["key"], all[0]["key"]);
    assert!(
        all[0]["labels"]
            .as_array()
            .expect("test fixture")
            .iter()
            .any(|l| l.as_str().expect("test fixture").starts_with("flowgrid-"))
    );
}

#[tokio::test]
async fn the_mock_refuses_what_jiras_description_does_not_allow() {
    // The strictness the other Jira tests rely on: a body Jira's description refuses is a 400.
    let mock = fakes::jira();
    let response = reqwest::Client::new()
        .post(format!("{}/rest/api/3/issue", mock.url))
        .basic_auth("ops@example.org", Some("t"))
        .json(&json!({"fields": "nope"}))
        .send()
        .await
        .expect("test fixture");
    assert_eq!(response.status().as_u16(), 400);
    let validator = adf_validator();
    assert!(!validator.is_valid(&json!({"version": 1, "type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}]})), "the ADF schema refuses an empty text node");
}
