//! Serving an app as an Azure Functions custom handler, and the HTTP/1.1 server both the apps and
//! the local host run: hyper with Flowgrid's limits, where even a request hyper refuses before any
//! router sees it (a head over the size limit, too many headers, an unreadable request line) is
//! answered in problem+json with a correlation id, like every other answer.
//!
//! Limits ([`ServerLimits`]): the request line and headers together at most
//! `max_head_bytes`, at most `max_headers` header lines; over either, `431` problem+json. A header
//! line hyper cannot read (a control character in a value, a name with a space) is dropped, as if
//! it had not been sent, and the request goes on: `Content-Type: application/json\x01` is then
//! a request without a content type (415 where a JSON body is required), a broken
//! `Authorization` a request without a token (401). The local host and the apps behind it drop
//! the same lines, so they never disagree on what a request carried.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// The address the Functions host expects the handler on: `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`
/// (port 0, or the variable absent, picks a free port).
pub fn bind_address() -> flowgrid_domain::Result<SocketAddr> {
    let port = match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u16>().map_err(|_| {
            crate::Error::BadRequest(format!(
                "FUNCTIONS_CUSTOMHANDLER_PORT is not a port number: {v:?}"
            ))
        })?,
        _ => 0,
    };
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Binds `addr` and serves `router` until SIGTERM or Ctrl-C, then drains in-flight requests,
/// writes this process's API request counts (the current minute's too) into the stores apps
/// registered, and writes out the queued log lines. While it serves, the finished minutes of
/// those counts are written shortly after each minute ends ([`crate::api_requests`]). Prints
/// `listening on <addr>` to stdout once bound, so a parent process can learn a port 0 choice.
/// Served with [`ServerLimits::HANDLER`].
pub async fn serve(router: Router, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening");
    println!("listening on {local}");
    let (stop_writer, stop) = tokio::sync::watch::channel(false);
    let writer = crate::api_requests::spawn_writer(stop);
    serve_listener(listener, router, ServerLimits::HANDLER, shutdown_signal()).await;
    stop_writer.send_replace(true);
    let _ = writer.await;
    let last = crate::api_requests::persist_registered(chrono::Utc::now(), true);
    if tokio::time::timeout(crate::api_requests::SHUTDOWN_WRITE_LIMIT, last)
        .await
        .is_err()
    {
        tracing::warn!("API request counts not written at shutdown: the store took too long");
    }
    crate::telemetry::flush();
    Ok(())
}

/// Limits on a request's head, enforced by the HTTP server before any router runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// The most header lines a request may carry.
    pub max_headers: usize,
    /// The most bytes of request line and headers together (at least 8 KiB).
    pub max_head_bytes: usize,
    /// How long a client may take to send a request's head (`None`: no limit). hyper may
    /// also close a keep-alive connection that stays idle this long.
    pub head_timeout: Option<Duration>,
}

impl ServerLimits {
    /// The local host's limits, those of the Functions host's Kestrel server (100 headers,
    /// 32 KiB of request line and headers).
    pub const HOST: ServerLimits = ServerLimits {
        max_headers: 100,
        max_head_bytes: 32 * 1024,
        head_timeout: Some(Duration::from_secs(30)),
    };
    /// A handler's limits: a little above the host's, for the headers the host adds
    /// (invocation id, host version, correlation id, traceparent, user agent). No head
    /// timeout: its only client is the host, whose pooled connections stay open while idle.
    pub const HANDLER: ServerLimits = ServerLimits {
        max_headers: 128,
        max_head_bytes: 40 * 1024,
        head_timeout: None,
    };
}

/// Serves `router` on `listener` with `limits` until `shutdown` completes, then stops accepting
/// and lets each connection finish its in-flight request.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, as axum::serve does.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let mut stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, &mut stop).await;
            drop(done);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(done_tx);
    // Every connection task holds a sender: this returns once the last one has finished.
    let _ = done_rx.recv().await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ServerLimits,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            if hyper::body::Body::is_end_stream(req.body()) {
                return router.oneshot(req.map(Body::new)).await;
            }
            // A request body the answer leaves unread makes hyper close the connection after
            // the answer; say so (RFC 9112 §9.6), or the client may reuse the connection it
            // is closing and lose its next request (the host's pool then sees a transport
            // failure: a 500 for a POST).
            let read = Arc::new(AtomicBool::new(false));
            let req = req.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    read: read.clone(),
                })
            });
            let mut answer = router.oneshot(req).await?;
            if !read.load(Ordering::Acquire) {
                answer.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok(answer)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    if let Some(timeout) = limits.head_timeout {
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeout);
    } else {
        builder.header_read_timeout(None);
    }
    builder
        .ignore_invalid_headers(true)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let io = TokioIo::new(ProblemIo::new(stream));
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            changed = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A request body that notes when it has been read to its end.
struct TrackedBody {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || hyper::body::Body::is_end_stream(&self.inner) {
            self.read.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The connection's socket, which replaces the bodiless answer hyper writes by itself when it
/// cannot read a request (`400`, `414`, `431` with `content-length: 0`, just before it closes the
/// connection) by the same status in problem+json, with a fresh correlation id in the
/// `X-Correlation-Id` header and the body. No router answer looks like that: every 4xx of the
/// apps and the host has a problem body.
struct ProblemIo {
    inner: TcpStream,
    /// A replacement being written: its bytes, how many are out, and how many bytes of hyper's
    /// buffer to report written once it is all out.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl ProblemIo {
    fn new(inner: TcpStream) -> Self {
        ProblemIo {
            inner,
            replacing: None,
        }
    }

    /// Writes out the replacement; `Ready(Ok(claimed))` once it is all written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, claimed)) = &mut self.replacing {
            if *written == bytes.len() {
                let claimed = *claimed;
                self.replacing = None;
                return Poll::Ready(Ok(claimed));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    /// Starts a replacement when `head` is one of hyper's own error answers.
    fn intercept(&mut self, head: &[u8]) -> bool {
        match own_error_answer(head) {
            Some(status) => {
                self.replacing = Some((problem_answer(status), 0, head.len()));
                true
            }
            None => false,
        }
    }
}

/// The status of `head` when it is a whole response head hyper wrote for a request it could not
/// read: `HTTP/1.1 400|414|431 ...` with `content-length: 0`.
fn own_error_answer(head: &[u8]) -> Option<u16> {
    let status = match head.get(..13)? {
        b"HTTP/1.1 400 " => 400,
        b"HTTP/1.1 414 " => 414,
        b"HTTP/1.1 431 " => 431,
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let lower = head[..end].to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    (has(b"\r\ncontent-length: 0") && has(b"\r\nconnection: close")).then_some(status)
}

/// A whole `status` response in problem+json, closing the connection.
fn problem_answer(status: u16) -> Vec<u8> {
    let (title, detail) = match status {
        431 => (
            "Request Header Fields Too Large",
            "The request's headers are too many or too large.",
        ),
        414 => ("URI Too Long", "The request's URI is too long."),
        _ => ("Bad Request", "The request could not be read as HTTP/1.1."),
    };
    let slug = title.to_ascii_lowercase().replace(' ', "-");
    let correlation_id = crate::correlation::new_id();
    let problem = flowgrid_domain::error::Problem {
        type_: format!("urn:flowgrid:problem:{slug}"),
        title: title.to_owned(),
        status,
        detail: detail.to_owned(),
        correlation_id: Some(correlation_id.clone()),
        errors: Vec::new(),
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: {}\r\n{}: {correlation_id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        crate::PROBLEM_JSON,
        crate::correlation::HEADER,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for ProblemIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProblemIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_some() || this.intercept(buf) {
            return this.poll_replacement(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_some() {
            return this.poll_replacement(cx);
        }
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && this.intercept(first)
        {
            return this.poll_replacement(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_bodiless_error_heads_are_replaced() {
        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 03:51:45 GMT\r\n\r\n";
        assert_eq!(own_error_answer(own), Some(431));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 170\r\n\r\n";
        assert_eq!(own_error_answer(ours), None);
        let with_body =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n{}";
        assert_eq!(own_error_answer(with_body), None);
        assert_eq!(
            own_error_answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }

    /// Sends `request` raw and reads the answer until the server closes or a whole response.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => break,
            }
            let text = String::from_utf8_lossy(&out);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|l| l.trim().parse::<usize>().ok())
                && body.len() >= len
            {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn assert_problem(answer: &str, status: u16) {
        let (head, body) = answer.split_once("\r\n\r\n").expect(answer);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "expected {status}: {answer}"
        );
        assert!(
            head.contains("content-type: application/problem+json"),
            "{answer}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).expect(answer);
        assert_eq!(problem["status"], status, "{answer}");
        let id = problem["correlationId"].as_str().expect(answer);
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("x-correlation-id: {id}")),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_leaves_the_request_body_unread_says_the_connection_closes() {
        let router = Router::new()
            .route(
                "/read",
                axum::routing::post(|body: String| async move { body }),
            )
            .route(
                "/ignore",
                axum::routing::post(|| async { axum::http::StatusCode::UNAUTHORIZED }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_listener(
            listener,
            router,
            ServerLimits::HANDLER,
            std::future::pending(),
        ));
        let head = |answer: &str| {
            answer
                .split_once("\r\n\r\n")
                .expect(answer)
                .0
                .to_ascii_lowercase()
        };
        let post = |path: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
            )
        };
        // Rejected before its body was read (as a 401 from the caller extractor): closes.
        let answer = exchange(addr, post("/ignore").as_bytes()).await;
        assert!(head(&answer).starts_with("http/1.1 401"), "{answer}");
        assert!(head(&answer).contains("connection: close"), "{answer}");
        // Body read, or no body: the connection stays open for the next request.
        let answer = exchange(addr, post("/read").as_bytes()).await;
        assert!(head(&answer).starts_with("http/1.1 200"), "{answer}");
        assert!(!head(&answer).contains("connection: close"), "{answer}");
        let answer = exchange(
            addr,
            b"POST /ignore HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        assert!(head(&answer).starts_with("http/1.1 401"), "{answer}");
        assert!(!head(&answer).contains("connection: close"), "{answer}");
        server.abort();
    }

    #[tokio::test]
    async fn requests_the_server_refuses_are_answered_in_problem_json() {
        let router = crate::with_common_layers(
            Router::new().route(
                "/echo",
                axum::routing::post(|headers: axum::http::HeaderMap| async move {
                    format!("{:?}", headers.get("content-type"))
                }),
            ),
            "test",
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_listener(
            listener,
            router,
            ServerLimits::HOST,
            async move {
                let _ = stopped.await;
            },
        ));

        let many: String = (0..150).map(|i| format!("x-h{i}: 1\r\n")).collect();
        let answer = exchange(
            addr,
            format!("GET /echo HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert_problem(&answer, 431);

        let big = "a".repeat(40 * 1024);
        let answer = exchange(
            addr,
            format!("GET /echo HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_problem(&answer, 431);

        let answer = exchange(addr, b"NOT A REQUEST LINE\r\n\r\n").await;
        assert_problem(&answer, 400);

        // A header line that cannot be read is dropped; the request goes on without it.
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\x01\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("None"), "{answer}");

        let answer = exchange(addr, b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_problem(&answer, 404);

        let answer = exchange(addr, b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_problem(&answer, 405);
        assert!(
            answer.to_ascii_lowercase().contains("\r\nallow: post\r\n"),
            "{answer}"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap();
    }

    #[test]
    fn a_replacement_is_a_whole_problem_answer_with_one_correlation_id() {
        let answer = String::from_utf8(problem_answer(431)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/problem+json"));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 431);
        let id = problem["correlationId"].as_str().unwrap();
        assert!(head.contains(&format!("x-correlation-id: {id}\r\n")));
        assert!(head.ends_with(&format!("\r\ncontent-length: {}", body.len())));
    }
}
