//! The access log: one line per request, with what an operator needs to find it again.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::common::{AppRoot, health_fns, http_fn, request};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_request_gets_exactly_one_access_log_line_with_status_timing_and_correlation_id() {
    let capture = Capture::default();
    let writer = capture.clone();
    // This thread's subscriber, not the global one: the other tests of this binary run on other
    // threads of the same process under `cargo test`, and their requests must not be counted.
    // The host runs on the test's single-threaded runtime, so its access lines come from here.
    let _capture = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let mut fns = vec![("Echo", http_fn("echo/{*rest}", &["get"]))];
    fns.extend(health_fns("edge"));
    let root = AppRoot::new(&[("edge", fns)], json!({}));
    let host = root.start().await;
    let base = host.url();
    request(
        "GET",
        &format!("{base}/api/echo/a"),
        &[("x-correlation-id", "log-1")],
        None,
    )
    .await;
    request(
        "GET",
        &format!("{base}/api/missing"),
        &[("x-correlation-id", "log-2")],
        None,
    )
    .await;
    request(
        "POST",
        &format!("{base}/api/echo/a"),
        &[("x-correlation-id", "log-3")],
        None,
    )
    .await;
    host.shutdown().await;
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let access: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert_eq!(access.len(), 3, "{text}");
    // The handler answered the first (and logs it with its tenant and error): the host's line
    // is at debug level, so a request is shown once; the host answered the others itself.
    let expect = [
        ("log-1", "GET", "/api/echo/a", 200, "Echo", "DEBUG"),
        ("log-2", "GET", "/api/missing", 404, "", "INFO"),
        ("log-3", "POST", "/api/echo/a", 405, "", "INFO"),
    ];
    for ((id, method, path, status, function, level), line) in expect.iter().zip(&access) {
        assert_eq!(line["level"], *level, "{line}");
        let f = &line["fields"];
        assert_eq!(f["correlation_id"], *id, "{line}");
        assert_eq!(f["method"], *method);
        assert_eq!(f["path"], *path);
        assert_eq!(f["status"], *status);
        assert_eq!(f["function"], *function);
        assert!(
            f["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
    }
}
