//! GitHub against steady serving GitHub's official description, and pagination and error
//! bodies from GitHub's recorded responses (`@octokit/fixtures`), replayed by a small server
//! that serves the recording as it was (Link headers pointed at it).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flowgrid_http::auth::Role;
use serde_json::{Value, json};

use crate::common::{create_connection, start};
use crate::fakes;

#[tokio::test]
async fn the_test_and_listing_repositories_are_requests_githubs_description_allows() {
    let mock = fakes::github();
    let app = start().await;
    create_connection(
        &app,
        "t1",
        json!({"name": "gh", "kind": "github", "auth": "token", "config": {"baseUrl": mock.url}, "secret": "ghp_abcdefghijklmnop4321"}),
    )
    .await;
    let editor = app.token("t1", Role::Editor);
    let test = app
        .post_json("/api/integrations/gh/test", &editor, json!({}))
        .await;
    assert_eq!(test.body["ok"], true, "{}", test.text);
    for query in [
        "",
        "?owner=octocat",
        "?owner=octo-org&ownerType=org&perPage=50",
    ] {
        let reply = app
            .get(&format!("/api/integrations/github/repos{query}"), &editor)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
        assert_eq!(reply.body["pages"], 1);
        assert!(reply.body["repositories"].is_array());
        assert!(!reply.text.contains("ghp_"), "{}", reply.text);
    }
    let issue = app
        .state()
        .integrations
        .perform(
            &app.state().integrations.resolve(&flowgrid_domain::TenantId::parse("t1").expect("test fixture"), "gh").await.expect("test fixture"),
            "create-issue",
            &json!({"owner": "octocat", "repo": "hello-world", "title": "Found a bug", "body": "details", "labels": ["bug"]}),
            "job-1:step-1",
        )
        .await
        .expect("create-issue accepted by the description");
    assert!(issue["number"].is_i64(), "{issue}");
}

/// Serves a recorded scenario: each request is answered with the recorded response of the same
/// method and path (Link headers rewritten to this server).
async fn replay(scenario: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let fixture = fakes::package_json(&format!(
        "@octokit/fixtures/scenarios/api.github.com/{scenario}/normalized-fixture.json"
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test fixture");
    let url = format!("http://{}", listener.local_addr().expect("test fixture"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (base, log) = (url.clone(), seen.clone());
    let app = Router::new().fallback(move |method: axum::http::Method, uri: Uri| {
        let fixture = fixture.clone();
        let base = base.clone();
        let log = log.clone();
        async move {
            let path = uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            log.lock().expect("test fixture").push(path.clone());
            let found = fixture.as_array().expect("test fixture").iter().find(|r| {
                r["method"]
                    .as_str()
                    .unwrap_or_default()
                    .eq_ignore_ascii_case(method.as_str())
                    && r["path"] == path.as_str()
            });
            let Some(r) = found else {
                return (
                    StatusCode::NOT_IMPLEMENTED,
                    format!("no recording for {method} {path}"),
                )
                    .into_response();
            };
            let mut response: Response = (
                StatusCode::from_u16(r["status"].as_u64().expect("test fixture") as u16)
                    .expect("test fixture"),
                axum::Json(r["response"].clone()),
            )
                .into_response();
            for (k, v) in r["headers"].as_object().expect("test fixture") {
                if matches!(
                    k.as_str(),
                    "content-length" | "transfer-encoding" | "content-type"
                ) {
                    continue;
                }
                let v = match v {
                    Value::String(s) => s.replace("https://api.github.com", &base),
                    other => other.to_string(),
                };
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    axum::http::HeaderValue::from_str(&v),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn every_page_is_followed_over_link_headers_as_github_recorded_them() {
    let (url, seen) = replay("paginate-issues").await;
    let app = start().await;
    create_connection(&app, "t1", json!({"name": "gh", "kind": "github", "auth": "token", "config": {"baseUrl": url}, "secret": "ghp_abcdefghijklmnop4321"})).await;
    let integrations = &app.state().integrations;
    let c = integrations
        .resolve(
            &flowgrid_domain::TenantId::parse("t1").expect("test fixture"),
            "gh",
        )
        .await
        .expect("test fixture");
    let out = integrations
        .perform(
            &c,
            "list-issues",
            &json!({"owner": "octokit-fixture-org", "repo": "paginate-issues", "perPage": 3}),
            "k",
        )
        .await
        .expect("list");
    let recorded = fakes::package_json(
        "@octokit/fixtures/scenarios/api.github.com/paginate-issues/normalized-fixture.json",
    );
    let expected: usize = recorded
        .as_array()
        .expect("test fixture")
        .iter()
        .map(|r| r["response"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        out["pages"],
        recorded.as_array().expect("test fixture").len()
    );
    assert_eq!(
        out["issues"].as_array().expect("test fixture").len(),
        expected
    );
    assert_eq!(
        seen.lock().expect("test fixture")[0],
        "/repos/octokit-fixture-org/paginate-issues/issues?per_page=3"
    );
    let status = app
        .get(
            "/api/integrations/gh/status",
            &app.token("t1", Role::Viewer),
        )
        .await;
    assert_eq!(status.body["rateLimit"]["limit"], 5000, "{}", status.text);
}

#[tokio::test]
async fn a_recorded_validation_error_is_reported_with_githubs_message_and_not_retried() {
    let (url, seen) = replay("errors").await;
    let app = start().await;
    let integrations = &app.state().integrations;
    // The recording is of POST /repos/octokit-fixture-org/errors/labels, which no GitHub action
    // sends: the HTTP connector sends it, through the same call rules.
    let http = json!({"name": "rec", "kind": "http", "auth": "bearer", "config": {"baseUrl": url}, "secret": "ghp_abcdefghijklmnop4321"});
    create_connection(&app, "t1", http).await;
    let rec = integrations
        .resolve(
            &flowgrid_domain::TenantId::parse("t1").expect("test fixture"),
            "rec",
        )
        .await
        .expect("test fixture");
    let failure = integrations
        .perform(&rec, "request", &json!({"method": "POST", "path": "/repos/octokit-fixture-org/errors/labels", "body": {"name": "foo", "color": "invalid"}}), "k")
        .await
        .expect_err("422");
    assert_eq!(failure.status, 422);
    assert!(
        failure.message.contains("Validation Failed") && failure.message.contains("color: invalid"),
        "{}",
        failure.message
    );
    assert_eq!(
        seen.lock().expect("test fixture").len(),
        1,
        "a 422 is not retried"
    );
}
