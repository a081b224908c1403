//! What one connection's requests are doing, for the bounds on quiet connections: a
//! hyper service around the router that marks the first request and counts those in
//! flight (from the call until the response body is dropped), and [`Activity::quiet`],
//! which says when the connection has been quiet past its bound.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ConnectionLimits;

/// A connection that stays quiet past its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quiet {
    /// No first request within the header read timeout of being accepted.
    NoRequest,
    /// No request in flight for the idle timeout.
    Idle,
}

/// What one connection's requests are doing: whether one came, and how many are in
/// flight (a request counts from the call of the service until its response body is
/// dropped, which covers a streamed body to its end).
pub(super) struct Activity {
    requested: CancellationToken,
    in_flight: watch::Sender<usize>,
}

impl Activity {
    /// Resolves when the connection has been quiet too long: no first request within
    /// `limits.header_read_timeout`, or, after one, no request in flight for
    /// `limits.idle_timeout`. Pending for as long as the connection is busy.
    pub(super) async fn quiet(&self, limits: ConnectionLimits) -> Quiet {
        let first = tokio::time::timeout(limits.header_read_timeout, self.requested.cancelled());
        if first.await.is_err() {
            return Quiet::NoRequest;
        }
        let mut in_flight = self.in_flight.subscribe();
        loop {
            // The sender lives in `self`, so neither wait can see it closed.
            if in_flight.wait_for(|n| *n == 0).await.is_err() {
                std::future::pending::<()>().await;
            }
            // Idle now: the bound runs unless a request starts (or one ends) first.
            match tokio::time::timeout(limits.idle_timeout, in_flight.changed()).await {
                Err(_) => return Quiet::Idle,
                Ok(Ok(())) => {}
                Ok(Err(_)) => std::future::pending::<()>().await,
            }
        }
    }
}

/// One request in flight on its connection, until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.requested.cancel();
        activity.in_flight.send_modify(|n| *n += 1);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `router` as a hyper service whose calls are counted in the returned [`Activity`]
/// (first request, requests in flight).
pub(super) fn tracked(
    router: Router,
    peer: SocketAddr,
) -> (
    impl hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static,
    Arc<Activity>,
) {
    let activity = Arc::new(Activity {
        requested: CancellationToken::new(),
        in_flight: watch::Sender::new(0),
    });
    let inner = TowerToHyperService::new(router);
    let counted = activity.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        let in_flight = InFlight::start(counted.clone());
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = inner.call(request);
        async move {
            let response = response.await?;
            Ok(response.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    (service, activity)
}
