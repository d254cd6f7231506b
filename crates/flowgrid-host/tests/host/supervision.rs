//! The handler processes: restarts, failures, exit codes, and the health endpoint.

use serde_json::{Value, json};

use crate::apps::{echo_app, work_app};
use crate::common::{AppRoot, eventually, header, http_fn, request};

use std::time::{Duration, Instant};

use flowgrid_host::supervisor::State;

fn sigkill(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill(1) runs")
        .success();
    assert!(ok, "kill -KILL {pid}");
}

fn status_of(host: &flowgrid_host::Host, app: &str) -> flowgrid_host::supervisor::Status {
    host.statuses()
        .into_iter()
        .find(|(n, _)| n == app)
        .map(|(_, s)| s)
        .expect("the app exists")
}

#[tokio::test]
async fn a_crash_looping_app_is_never_abandoned_while_the_other_apps_keep_serving() {
    let root = AppRoot::new(
        &[
            ("edge", echo_app()),
            ("crashy", vec![("Crash", http_fn("crash", &["get"]))]),
        ],
        json!({"FIXTURE_EXIT_APPS": "crashy"}),
    );
    let host = root.start().await;
    // Far past the three errors after which the old host gave up, it keeps restarting, waiting
    // longer each time.
    let status = eventually("crashy to restart five times", || async {
        Some(status_of(&host, "crashy")).filter(|s| s.restarts >= 5)
    })
    .await;
    assert_ne!(status.state, State::Failed, "{status:?}");
    assert!(status.crashes >= 5, "{status:?}");
    assert!(status.reason.unwrap().contains("exited with code 1"));
    let (s, _, _) = request("GET", &format!("{}/api/echo/still", host.url()), &[], None).await;
    assert_eq!(s, 200, "the other app keeps serving");
    // While it waits out its backoff, a request is a 503 at once, not a hang.
    let s = eventually("crashy in its backoff", || async {
        Some(status_of(&host, "crashy")).filter(|s| s.state == State::Restarting)
    })
    .await;
    assert!(s.backoff_ms >= 250, "{s:?}");
    let (s, hs, _) = request("GET", &format!("{}/api/crash", host.url()), &[], None).await;
    assert_eq!(s, 503);
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/problem+json")
    );
    let (s, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    assert_eq!(s, 503);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(h["apps"]["crashy"]["state"], "failed");
    assert!(
        h["apps"]["crashy"]["restarts"].as_u64().unwrap() >= 5,
        "{h}"
    );
    assert!(
        h["apps"]["crashy"]["crashesInARow"].as_u64().unwrap() >= 5,
        "{h}"
    );
    assert!(
        h["apps"]["crashy"]["reason"]
            .as_str()
            .unwrap()
            .contains("errors in a row: restarting in"),
        "{h}"
    );
    assert_eq!(h["apps"]["edge"]["state"], "ready");
    assert_eq!(h["apps"]["edge"]["health"]["status"], 200);
    assert_eq!(h["apps"]["edge"]["health"]["body"]["app"], "edge");
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_killed_once_answers_again_at_once_and_health_says_why() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let url = format!("{}/api/echo/k", host.url());
    let (s, _, _) = request("GET", &url, &[], None).await;
    assert_eq!(s, 200);
    let before = status_of(&host, "edge");
    sigkill(before.pid.unwrap());
    let killed = Instant::now();
    // An isolated crash is restarted without a backoff; a request sent meanwhile waits for it.
    let back = eventually("the handler to be restarted", || async {
        Some(status_of(&host, "edge")).filter(|s| s.state == State::Ready && s.pid != before.pid)
    })
    .await;
    let (s, _, _) = request("GET", &url, &[], None).await;
    assert_eq!(s, 200);
    eprintln!(
        "figure: SIGKILL to answering again: {} ms",
        killed.elapsed().as_millis()
    );
    assert_eq!(back.restarts, 1);
    assert_eq!(back.crashes, 1);
    assert_eq!(back.backoff_ms, 0, "an isolated crash waits for nothing");
    let (s, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    assert_eq!(s, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["apps"]["edge"]["state"], "ready");
    assert_eq!(h["apps"]["edge"]["restarts"], 1);
    assert!(
        h["apps"]["edge"]["reason"]
            .as_str()
            .unwrap()
            .contains("killed"),
        "{h}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_killed_over_and_over_backs_off_then_comes_back_when_the_killing_stops() {
    let root = AppRoot::new(&[("edge", echo_app())], json!({}));
    let host = root.start().await;
    let url = format!("{}/api/echo/loop", host.url());
    let mut last_pid = None;
    let mut backoffs = Vec::new();
    for i in 1..=5u32 {
        let s = eventually("the handler to be ready", || async {
            Some(status_of(&host, "edge")).filter(|s| s.state == State::Ready && s.pid != last_pid)
        })
        .await;
        assert_eq!(s.restarts, i - 1);
        last_pid = s.pid;
        sigkill(s.pid.unwrap());
        let after = eventually("the kill to be seen", || async {
            Some(status_of(&host, "edge")).filter(|s| s.restarts == i)
        })
        .await;
        assert_eq!(after.crashes, i, "{after:?}");
        backoffs.push(after.backoff_ms);
    }
    assert_eq!(
        backoffs,
        [0, 250, 500, 1000, 2000],
        "capped exponential backoff"
    );
    let stopped = Instant::now();
    let back = eventually("the handler back after the loop", || async {
        Some(status_of(&host, "edge")).filter(|s| s.state == State::Ready && s.pid != last_pid)
    })
    .await;
    let (s, _, _) = request("GET", &url, &[], None).await;
    assert_eq!(s, 200);
    eprintln!(
        "figure: after the last of 5 SIGKILLs in a row, answering again in {} ms",
        stopped.elapsed().as_millis()
    );
    assert_eq!(back.restarts, 5);
    let (_, _, body) = request("GET", &format!("{}/api/health", host.url()), &[], None).await;
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["apps"]["edge"]["restarts"], 5, "{h}");
    assert_eq!(h["apps"]["edge"]["crashesInARow"], 5, "{h}");
    assert!(
        h["apps"]["edge"]["reason"]
            .as_str()
            .unwrap()
            .contains("killed"),
        "{h}"
    );
    host.shutdown().await;
}

#[test]
fn the_backoff_doubles_from_250_ms_and_stops_at_5_s() {
    use flowgrid_host::supervisor::backoff;
    let ms: Vec<u128> = (1..=9).map(|n| backoff(n).as_millis()).collect();
    assert_eq!(ms, [0, 250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
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
    assert_ne!(status.state, State::Failed, "{status:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_never_answers_within_the_initialization_timeout_keeps_being_restarted() {
    let root = AppRoot::with_host_json(
        &[("silent", vec![("S", http_fn("s", &["get"]))])],
        json!({"FIXTURE_SILENT_APPS": "silent"}),
        json!({"customHandler": {"initializationTimeout": "00:00:00.300"}}),
    );
    let host = root.start().await;
    let status = eventually("silent restarted three times", || async {
        host.statuses()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.restarts >= 3)
    })
    .await;
    assert_ne!(status.state, State::Failed, "{status:?}");
    assert!(status.reason.unwrap().contains("initialization timeout"));
    host.shutdown().await;
}
