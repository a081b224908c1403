//! The HTTP server loop: connections from the [`DrainingListener`] served by hyper with
//! a deadline on request heads, and shut down gracefully on request.
//!
//! axum's own `serve` gives hyper no timer, so a client that opens a connection and
//! sends its request head a byte at a time (or never finishes it) holds the connection
//! and its task forever. Here every connection reads its request heads within
//! `server.header_read_timeout_secs` or is closed; long responses (SSE streams) are not
//! affected, since the deadline covers only the head of a request.

use std::{pin::pin, time::Duration};

use axum::{Router, serve::Listener};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::listener::DrainingListener;

/// Serves `router` on the connections `listener` accepts until `shutdown` fires; then
/// asks every open connection to finish its in-flight requests and close, and returns
/// once all have.
pub async fn serve(
    mut listener: DrainingListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
            let finished = tokio::select! {
                result = connection.as_mut() => Some(result),
                () = shutdown.cancelled() => None,
            };
            let result = match finished {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}
