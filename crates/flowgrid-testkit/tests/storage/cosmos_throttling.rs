//! Throttling (429) against the Cosmos emulator, which never throttles by itself: a small proxy
//! between the backend and the emulator answers chosen point reads with 429 and
//! `x-ms-retry-after-ms`, as Cosmos does when a partition runs out of request units.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowgrid_domain::Error;
use flowgrid_domain::store::AgentStore;
use flowgrid_storage::cosmos::Cosmos;
use flowgrid_testkit::conformance::agents::new_agent;
use flowgrid_testkit::emulators::{self, Emulator};

use super::helpers::{cosmos_at, fresh_database};

/// How many point reads of documents still get a 429, and the wait each asks for.
struct Proxy {
    upstream: String,
    upstream_host: String,
    own_host: String,
    throttle_left: AtomicUsize,
    retry_after_ms: u64,
    throttled: AtomicUsize,
    client: reqwest::Client,
}

async fn forward(State(p): State<Arc<Proxy>>, request: Request) -> Response {
    let is_point_read =
        request.method() == axum::http::Method::GET && request.uri().path().contains("/docs/");
    if is_point_read
        && p.throttle_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        p.throttled.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("x-ms-retry-after-ms", p.retry_after_ms.to_string()),
                ("x-ms-substatus", "3200".to_owned()),
                ("content-type", "application/json".to_owned()),
            ],
            r#"{"code":"TooManyRequests","message":"Request rate is large."}"#,
        )
            .into_response();
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let mut upstream = p
        .client
        .request(request.method().clone(), format!("{}{path}", p.upstream));
    for (name, value) in request.headers() {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .expect("request body");
    let answer = upstream.body(body).send().await.expect("emulator answers");
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.expect("emulator body");
    // The account document names the regional endpoints; keep the SDK talking to the proxy.
    let text = String::from_utf8_lossy(&bytes).replace(&p.upstream_host, &p.own_host);
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// A proxy to `emulator` on a free port; returns its endpoint and state.
async fn proxy(emulator: &Emulator, throttle: usize, retry_after_ms: u64) -> (String, Arc<Proxy>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let state = Arc::new(Proxy {
        upstream: emulator.endpoint().trim_end_matches('/').to_owned(),
        upstream_host: format!("127.0.0.1:{}", emulator.port()),
        own_host: format!("127.0.0.1:{port}"),
        throttle_left: AtomicUsize::new(0),
        retry_after_ms,
        throttled: AtomicUsize::new(0),
        client: reqwest::Client::new(),
    });
    state.throttle_left.store(throttle, Ordering::SeqCst);
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/"), state)
}

async fn store_at(endpoint: String) -> Cosmos {
    cosmos_at(endpoint, fresh_database("throttle"), true).await
}

#[tokio::test]
async fn a_throttled_read_is_retried_after_the_wait_cosmos_asks_for() {
    let emulator = emulators::cosmos();
    let (endpoint, proxy) = proxy(&emulator, 0, 400).await;
    let store = store_at(endpoint).await;
    let tenant = flowgrid_domain::TenantId::parse("t").expect("tenant");
    let agent = store
        .insert(&new_agent(&tenant, "busy", 0))
        .await
        .expect("insert");

    proxy.throttle_left.store(2, Ordering::SeqCst);
    let started = Instant::now();
    let read = store
        .get(&tenant, agent.id)
        .await
        .expect("read after retries");
    let waited = started.elapsed();
    assert_eq!(read, agent);
    assert_eq!(proxy.throttled.load(Ordering::SeqCst), 2);
    assert!(
        waited >= Duration::from_millis(800),
        "two 429s asking for 400 ms each, yet it answered after {waited:?}"
    );
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_unavailable() {
    let emulator = emulators::cosmos();
    let (endpoint, proxy) = proxy(&emulator, 0, 50).await;
    let store = store_at(endpoint).await;
    let tenant = flowgrid_domain::TenantId::parse("t").expect("tenant");
    let agent = store
        .insert(&new_agent(&tenant, "very busy", 0))
        .await
        .expect("insert");

    proxy.throttle_left.store(usize::MAX, Ordering::SeqCst);
    let result = store.get(&tenant, agent.id).await;
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    assert!(proxy.throttled.load(Ordering::SeqCst) > 1, "it was retried");
}
