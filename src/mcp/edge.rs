//! The edge of `/mcp`: the one place every request passes before rmcp sees it.
//!
//! For each request it
//! 0. authenticates the caller (`authenticate.rs`; 401 with a `WWW-Authenticate`
//!    challenge naming the RFC 9728 metadata) and puts its [`Principal`] in the
//!    request's extensions;
//! 1. reads the body once (`decode.rs`; 413 above `server.max_body_bytes`) into an
//!    `Envelope` (400 with a `-32700` parse error or a `-32600` invalid request when it
//!    is not a JSON-RPC message; rmcp would answer both with a bare 415);
//! 2. labels metrics and the request's log span from the envelope (`label.rs`; known
//!    methods only);
//! 3. routes a 2025-era request naming an `Mcp-Session-Id` (`route.rs`): its stored
//!    session is confirmed for its caller (404 when gone or another principal's, 503
//!    while the store is down), forwarded to the replica holding it, or served here
//!    marked with the [`TransportSession`] the tools may bind to; a DELETE rmcp
//!    accepted removes the stored session and answers 204;
//! 4. spends one token of the caller's rate limit (`rate_limit.rs`; 429 with
//!    `Retry-After`) on the replica that serves the request (a forwarded request is
//!    charged once, where it is served);
//! 5. hands rmcp a `RefusalSlot` ([`crate::mcp::error`]) in the request's extensions,
//!    through which the session manager reports why it refused an `initialize` (rmcp
//!    itself would turn that into a bare 500), and answers 400, 429 or 503 from it.
//!
//! A 2026-07-28 `subscriptions/listen` takes a place among the replica's
//! `listen.max_streams` before rmcp acknowledges it (503 when there is none), held until
//! its response ends.
//!
//! Every response but a GET stream is held for the drain until it ends
//! (`inflight.rs`). Every refusal is an [`EdgeError`], which maps to its HTTP status
//! and, for the JSON-RPC ones, to a JSON-RPC error body.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use http::{Method, StatusCode};
use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};

use self::{
    decode::Decoded,
    label::INVALID,
    route::{Routed, Routing},
};
use super::{
    error::{EdgeError, RefusalSlot},
    event_store::{RedisEventStore, track_delivery},
    extensions::IdempotencyKey,
    handler::notify::Notifier,
    transport::{
        forward::Forwarder, inflight::hold_until_sent, session_manager::ReplicatedSessionManager,
        session_store::Restores,
    },
};
use crate::{
    auth::Authenticator,
    bus::Bus,
    metrics::Metrics,
    rate_limit::RateLimiter,
    sessions::{Lease, Sessions},
};
#[cfg(doc)]
use crate::{auth::Principal, mcp::extensions::TransportSession};

mod authenticate;
mod decode;
mod envelope;
#[cfg(test)]
mod fixture;
mod label;
mod rate_limit;
mod route;

#[doc(hidden)]
pub use self::envelope::check_decoder;

/// The target of the edge's log lines, whichever step writes them.
const LOG_TARGET: &str = module_path!();

/// What the edge middleware works with; cheap to clone.
#[derive(Clone)]
pub(crate) struct Edge {
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) rate_limit: RateLimiter,
    pub(crate) sessions: Sessions,
    pub(crate) metrics: Metrics,
    pub(crate) manager: Arc<ReplicatedSessionManager>,
    pub(crate) restores: Restores,
    pub(crate) max_body: usize,
    /// This replica's claim on the 2025-era sessions it serves.
    pub(crate) lease: Lease,
    /// Sends requests on to the replica holding their session.
    pub(crate) forwarder: Forwarder,
    /// Fired when the replica drains: it then takes no session over.
    pub(crate) draining: CancellationToken,
    /// Evictions of deleted sessions go to every replica (Redis backend).
    pub(crate) bus: Option<Bus>,
    /// In-flight requests, which a drain waits for.
    pub(crate) requests: TaskTracker,
    /// The replica's `subscriptions/listen` streams (their places are taken here).
    pub(crate) notifier: Notifier,
    /// The event store of 2025-era streams, told whether each response got through.
    pub(crate) events: Option<Arc<RedisEventStore>>,
}

/// The 2026-07-28 method that opens a notification stream.
const LISTEN: &str = "subscriptions/listen";

/// The edge middleware; see the module docs.
pub(crate) async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    // GET streams last as long as their sessions: the drain ends them, never waits.
    let in_flight = (parts.method != Method::GET).then(|| edge.requests.token());
    let principal = match authenticate::caller(&edge.auth, &parts.headers) {
        Ok(principal) => principal,
        Err(e) => return edge.refuse(e, None, started),
    };
    let request = match decode::read(&parts, body, edge.max_body).await {
        Ok(request) => request,
        Err(e) => return edge.refuse(e, Some(INVALID), started),
    };
    let label = label::label(&request);
    let Decoded {
        envelope,
        json_post,
        bytes,
        body,
    } = request;

    let routing = edge.routing();
    let routed = routing
        .route(&principal, &mut parts, &envelope, bytes.as_ref())
        .await;
    let deletion = match routed {
        Ok(Routed::Forwarded(response)) => {
            return edge.answer(response, label, started, in_flight);
        }
        Ok(Routed::Here(deletion)) => deletion,
        Err(e) => return edge.refuse(e, label, started),
    };
    if let Err(e) = rate_limit::spend(&edge.rate_limit, &principal).await {
        return edge.refuse(e, label, started);
    }
    parts.extensions.insert(principal);
    if let Some(key) = envelope.idempotency_key {
        parts.extensions.insert(IdempotencyKey(key));
    }

    // A listen stream takes its place before rmcp acknowledges it, and keeps it for as
    // long as its response streams.
    let listen_place = if !envelope.legacy && envelope.method.as_deref() == Some(LISTEN) {
        match edge.notifier.reserve() {
            Some(place) => Some(place),
            None => return edge.refuse(EdgeError::TooManyListeners, label, started),
        }
    } else {
        None
    };

    let slot = RefusalSlot::default();
    parts.extensions.insert(slot.clone());
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Some(place) = listen_place {
        response = response.map(|body| {
            Body::from_stream(body.into_data_stream().inspect(move |_| {
                let _held = &place;
            }))
        });
    }
    if let Some(refusal) = slot.take() {
        return edge.refuse(refusal, label, started);
    }
    let response = match routing.finish(deletion, response).await {
        Ok(response) => response,
        Err(e) => return edge.refuse(e, label, started),
    };
    if json_post && response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // The content type was right, so rmcp could not read the message itself.
        let detail = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        return edge.refuse(EdgeError::InvalidRequest(detail), Some(INVALID), started);
    }
    edge.answer(response, label, started, in_flight)
}

impl Edge {
    /// The handles routing works with.
    fn routing(&self) -> Routing<'_> {
        Routing {
            sessions: &self.sessions,
            manager: &self.manager,
            restores: &self.restores,
            lease: &self.lease,
            forwarder: &self.forwarder,
            draining: &self.draining,
            metrics: &self.metrics,
            bus: self.bus.as_ref(),
        }
    }

    /// Answers `error`; a refused JSON-RPC POST is counted as `invalid` (the body was
    /// unusable) or under its method.
    fn refuse(&self, error: EdgeError, label: Option<&'static str>, started: Instant) -> Response {
        if let Some(label) = label {
            self.metrics.observe_request(label, started);
        }
        error.into_response()
    }

    /// Answers `response`, counted under its method, held for the drain until it ends.
    fn answer(
        &self,
        response: Response,
        label: Option<&'static str>,
        started: Instant,
        in_flight: Option<TaskTrackerToken>,
    ) -> Response {
        if let Some(label) = label {
            self.metrics.observe_request(label, started);
        }
        let response = match &self.events {
            Some(events) if in_flight.is_some() => track_delivery(response, events),
            _ => response,
        };
        match in_flight {
            Some(token) => hold_until_sent(response, token),
            None => response,
        }
    }
}
