//! The outside world of the end-to-end tests: a local HTTP server (an axum app) that a test's
//! steps call, recording what it received in the test's shared state.

use axum::Router;

/// Serves `app` on a free port of 127.0.0.1 until the test ends; answers its `host:port` (what
/// `FLOWGRID_OUTBOUND_ALLOWLIST` and the steps' URLs take).
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The value of request header `name`, or "" when it is missing or not text.
pub fn header(headers: &axum::http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}
