//! The pooled HTTP/1.1 client the host uses to talk to handlers on 127.0.0.1.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A pooled client with keep-alive and `TCP_NODELAY`.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Body>,
    timeout: Option<Duration>,
}

impl HttpClient {
    /// A client whose requests time out after `timeout` (the host's `functionTimeout` + 1 min).
    pub fn new(timeout: Option<Duration>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self { inner, timeout }
    }

    /// Sends `req` (its URI must be absolute).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, String> {
        let fut = self.inner.request(req);
        let res = match self.timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| format!("no answer within {} s", t.as_secs()))?,
            None => fut.await,
        };
        res.map_err(|e| format!("{e}"))
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send_collect(
        &self,
        req: Request<Body>,
    ) -> Result<(hyper::StatusCode, hyper::HeaderMap, Bytes), String> {
        let res = self.send(req).await?;
        let (parts, body) = res.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// The host's readiness probe: `GET /`; any HTTP answer means ready.
    pub async fn probe(&self, port: u16) -> bool {
        let Ok(req) = Request::get(format!("http://127.0.0.1:{port}/")).body(Body::empty()) else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.inner.request(req)).await,
            Ok(Ok(_))
        )
    }
}
