//! The handler processes: restarts, failures, exit codes, and the health endpoint.

use serde_json::{Value, json};

use crate::apps::{echo_app, work_app};
use crate::common::{AppRoot, eventually, header, http_fn, request};

#[tokio::test]
async fn one_app_crashing_is_marked_failed_while_the_other_apps_keep_serving() {
    let root = AppRoot::new(
        &[
            ("edge", echo_app()),
            ("crashy", vec![("Crash", http_fn("crash", &["get"]))]),
        ],
        json!({"FIXTURE_EXIT_APPS": "crashy"}),
    );
    let host = root.start().await;
    let status = eventually("crashy to fail", || async {
        host.statuses()
            .into_iter()
            .find(|(n, s)| n == "crashy" && s.state == flowgrid_host::supervisor::State::Failed)
            .map(|(_, s)| s)
    })
    .await;
    assert_eq!(
        status.restarts, 2,
        "three errors: two restarts, then failed"
    );
    assert!(status.reason.unwrap().contains("exited with code 1"));
    let (s, _, _) = request("GET", &format!("{}/api/echo/still", host.url()), &[], None).await;
    assert_eq!(s, 200, "the other app keeps serving");
    let (s, hs, _) = request("GET", &format!("{}/api/crash", host.url()), &[], None).await;
    assert_eq!(s, 503);
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/problem+json")
    );
    let (s, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    assert_eq!(s, 503);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["apps"]["crashy"]["state"], "failed");
    assert_eq!(h["apps"]["crashy"]["restarts"], 2);
    assert_eq!(h["apps"]["edge"]["state"], "ready");
    assert_eq!(h["apps"]["edge"]["health"]["status"], 200);
    assert_eq!(h["apps"]["edge"]["health"]["body"]["app"], "edge");
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_exiting_with_code_zero_is_not_restarted() {
    let root = AppRoot::new(
        &[("quiet", vec![("Q", http_fn("q", &["get"]))])],
        json!({"FIXTURE_EXIT_APPS": "quiet", "FIXTURE_EXIT_CODE": "0"}),
    );
    let host = root.start().await;
    let status = eventually("quiet to stop", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.state == flowgrid_host::supervisor::State::Stopped)
    })
    .await;
    assert_eq!(status.restarts, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn health_reports_every_app_ready_with_its_deep_health() {
    let root = AppRoot::new(
        &[("edge", echo_app()), ("worker", work_app(true))],
        json!({}),
    );
    let host = root.start().await;
    let (s, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    assert_eq!(s, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "healthy");
    for app in ["edge", "worker"] {
        assert_eq!(h["apps"][app]["state"], "ready");
        assert_eq!(h["apps"][app]["health"]["body"]["status"], "healthy");
    }
    let (s, _, _) = request(
        "GET",
        &format!("{}/api/health/edge/live", host.url()),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200, "each app's own probes are ordinary functions");
    host.shutdown().await;
}

#[tokio::test]
async fn exit_code_200_is_an_intentional_restart_that_never_marks_the_app_failed() {
    let root = AppRoot::new(
        &[("cycling", vec![("C", http_fn("c", &["get"]))])],
        json!({"FIXTURE_EXIT_APPS": "cycling", "FIXTURE_EXIT_CODE": "200"}),
    );
    let host = root.start().await;
    let status = eventually("five restarts", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.restarts >= 5)
    })
    .await;
    assert_ne!(
        status.state,
        flowgrid_host::supervisor::State::Failed,
        "{status:?}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_never_answers_within_the_initialization_timeout_is_restarted_then_failed() {
    let root = AppRoot::with_host_json(
        &[("silent", vec![("S", http_fn("s", &["get"]))])],
        json!({"FIXTURE_SILENT_APPS": "silent"}),
        json!({"customHandler": {"initializationTimeout": "00:00:00.300"}}),
    );
    let host = root.start().await;
    let status = eventually("silent to fail", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.state == flowgrid_host::supervisor::State::Failed)
    })
    .await;
    assert_eq!(status.restarts, 2);
    assert!(status.reason.unwrap().contains("initialization timeout"));
    host.shutdown().await;
}
