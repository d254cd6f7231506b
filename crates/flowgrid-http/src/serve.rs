//! Serving an app as an Azure Functions custom handler.

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;

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

/// Binds `addr` and serves `router` until SIGTERM or Ctrl-C, then drains in-flight requests and
/// writes out the queued log lines. Prints `listening on <addr>` to stdout once bound, so a parent
/// process can learn a port 0 choice.
pub async fn serve(router: Router, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening");
    println!("listening on {local}");
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    crate::telemetry::flush();
    served
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
