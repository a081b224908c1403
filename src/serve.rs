//! The HTTP server loop: connections from the [`DrainingListener`] served by hyper with
//! deadlines on request heads and a cap on open connections, and shut down gracefully
//! on request.
//!
//! axum's own `serve` gives hyper no timer, so a client that opens a connection and
//! sends its request head a byte at a time (or never finishes it) holds the connection
//! and its task forever. Here every connection reads its request heads within
//! `server.header_read_timeout_secs` or is closed; long responses (SSE streams) are not
//! affected, since the deadline covers only the head of a request.
//!
//! hyper's own head deadline only starts once its protocol detection has chosen
//! HTTP/1, and HTTP/2 has none: a connection that sends nothing, part of the HTTP/2
//! preface, or the preface and no stream would be held forever. So a connection also
//! has to bring its first request (an HTTP/1 head, or an HTTP/2 stream's headers)
//! within the same timeout of being accepted, or it is closed; nothing of it reached
//! the application, so nothing is lost. Later heads of an HTTP/1 connection are
//! hyper's to time.
//!
//! Once it has brought a request, a connection is closed when no request has been in
//! flight on it for `server.idle_timeout_secs` (a request is in flight from its head
//! until its response body, an SSE stream included, is done): an HTTP/1 keep-alive
//! connection is closed, an HTTP/2 one is sent `GOAWAY` (hyper's graceful shutdown, so
//! a stream the client opened meanwhile still finishes). HTTP/2 has no idle bound of
//! its own, and a client that made one request and went quiet would otherwise hold its
//! place under the cap for as long as it likes.
//!
//! At most `server.max_connections` connections are open at once; one more is answered
//! `503 Service Unavailable` with `Connection: close` and closed, and counted in
//! `connections_refused_total` (a balancer retries it on another replica).

mod activity;

use std::{
    io,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use activity::{Quiet, tracked};
use axum::{Router, serve::Listener};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    listener::DrainingListener,
    metrics::{Metrics, encode_counter, encode_gauge},
};

/// What a connection over the cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
connection: close\r\n\
retry-after: 1\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 44\r\n\
\r\n\
too many open connections; try again later\r\n";
/// How long a refused connection may take to receive its refusal: it is written, the
/// write side shut, and what the client already sent read away until it closes, so
/// the close carries no reset that could discard the answer.
const REFUSAL_BOUND: Duration = Duration::from_secs(1);

/// The bounds on the connections of one replica.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a connection may take to send a request head, and to bring its first
    /// request after it was accepted (`server.header_read_timeout_secs`).
    pub header_read_timeout: Duration,
    /// Most connections open at once (`server.max_connections`).
    pub max_connections: usize,
    /// How long a connection may have no request in flight, once it has brought one
    /// (`server.idle_timeout_secs`).
    pub idle_timeout: Duration,
}

/// The replica's open connections and what was refused or closed for lack of a
/// request. Cheap to clone (one reference count); clones share the figures.
#[derive(Debug, Clone)]
pub struct Connections {
    shared: Arc<Figures>,
}

#[derive(Debug)]
struct Figures {
    limits: ConnectionLimits,
    open: AtomicUsize,
    refused: AtomicU64,
    closed_without_request: AtomicU64,
    closed_idle: AtomicU64,
}

/// One open connection's place under the cap, given back when dropped.
struct Open(Arc<Figures>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    /// No connection open yet, under `limits`.
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            shared: Arc::new(Figures {
                limits,
                open: AtomicUsize::new(0),
                refused: AtomicU64::new(0),
                closed_without_request: AtomicU64::new(0),
                closed_idle: AtomicU64::new(0),
            }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// A place for one more connection, unless `max_connections` are open.
    fn admit(&self) -> Option<Open> {
        let figures = &self.shared;
        let max = figures.limits.max_connections;
        figures
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Open(figures.clone()))
    }

    /// Registers the `connections_*` series with `metrics`, read at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(ConnectionFigures(self.clone()));
    }
}

/// Serves `router` on the connections `listener` accepts, within `connections`' limits,
/// until `shutdown` fires; then asks every open connection to finish its in-flight
/// requests and close, and returns once all have.
pub async fn serve(
    mut listener: DrainingListener,
    router: Router,
    connections: Connections,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let limits = connections.shared.limits;
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let Some(place) = connections.admit() else {
            connections.shared.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                max_connections = limits.max_connections,
                "connection refused: too many open"
            );
            tracker.spawn(refuse(io));
            continue;
        };
        let figures = connections.shared.clone();
        let (service, activity) = tracked(router.clone(), peer);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _place = place;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
            let ending = tokio::select! {
                result = connection.as_mut() => Ending::Finished(result),
                () = shutdown.cancelled() => Ending::Shutdown,
                quiet = activity.quiet(limits) => Ending::Quiet(quiet),
            };
            let result = match ending {
                Ending::Finished(result) => result,
                Ending::Quiet(Quiet::NoRequest) => {
                    // Nothing of it reached the application: dropping it loses nothing.
                    figures
                        .closed_without_request
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("connection closed: no request within the header read timeout");
                    return;
                }
                Ending::Quiet(Quiet::Idle) => {
                    figures.closed_idle.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("connection closed: idle for server.idle_timeout_secs");
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                Ending::Shutdown => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Why a connection's task stopped waiting on it.
enum Ending<E> {
    /// hyper finished serving it (the client closed it, or an error).
    Finished(Result<(), E>),
    /// The replica shuts down.
    Shutdown,
    /// It brought no request, or went idle.
    Quiet(Quiet),
}

/// Tells a connection over the cap so, then closes it (within [`REFUSAL_BOUND`]).
async fn refuse(mut io: TcpStream) {
    let answered = async {
        io.write_all(REFUSAL).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 1024];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_BOUND, answered).await;
}

/// The `connections_*` series: the cap, what is open, and what was refused or closed.
#[derive(Debug)]
struct ConnectionFigures(Connections);

impl Collector for ConnectionFigures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let figures = &self.0.shared;
        encode_gauge(
            &mut enc,
            "connections_open",
            "HTTP connections open on this replica",
            figures.open.load(Ordering::Acquire) as f64,
        )?;
        encode_gauge(
            &mut enc,
            "connections_max",
            "Most HTTP connections open at once (server.max_connections)",
            figures.limits.max_connections as f64,
        )?;
        encode_counter(
            &mut enc,
            "connections_refused",
            "HTTP connections refused with 503 because server.max_connections were open",
            figures.refused.load(Ordering::Relaxed),
        )?;
        encode_counter(
            &mut enc,
            "connections_closed_without_request",
            "HTTP connections closed because they brought no request within \
             server.header_read_timeout_secs",
            figures.closed_without_request.load(Ordering::Relaxed),
        )?;
        encode_counter(
            &mut enc,
            "connections_closed_idle",
            "HTTP connections closed (HTTP/2: sent GOAWAY) because no request was in flight \
             on them for server.idle_timeout_secs",
            figures.closed_idle.load(Ordering::Relaxed),
        )
    }
}
