//! The edge of `/mcp`: the one place every request passes before rmcp sees it.
//!
//! For each request it
//! 0. authenticates the caller (401 with a `WWW-Authenticate` challenge naming the
//!    RFC 9728 metadata) and puts its [`Principal`] in the request's extensions;
//! 1. reads the body once (413 above `server.max_body_bytes`) into an `Envelope`
//!    (400 with a `-32700` parse error or a `-32600` invalid request when it is not a
//!    JSON-RPC message; rmcp would answer both with a bare 415);
//! 2. labels metrics and the request's log span from the envelope (known methods only);
//! 3. for a 2025-era request naming an `Mcp-Session-Id`, touches the stored session (one
//!    round trip: slides its expiry, finds out whether it still exists and which
//!    replica holds it, taking it when nobody does: see `leases.rs`), except for a POST
//!    of the session's owner on the replica that runs its worker under a lease known to
//!    be fresh, served without it (the keeper slides the expiry then); an expired or
//!    deleted session, or one of another principal, gets 404 on every replica, an
//!    unreachable store 503 with `Retry-After`. A session another replica holds is
//!    forwarded there (`forward.rs`) and answered from there; when that replica cannot
//!    be reached, this one takes the session over once its lease has run out, and
//!    answers 503 with `Retry-After` until then. A session held here marks the request
//!    with the [`TransportSession`] the tools may bind to; a DELETE rmcp accepted
//!    removes the stored session (for its owner only), evicts its workers on every
//!    replica through the bus and answers 204;
//! 4. spends one token of the caller's rate limit (429 with `Retry-After`) on the
//!    replica that serves the request (a forwarded request is charged once, where it
//!    is served);
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
use http::{Method, StatusCode, header};
use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};

use self::envelope::Envelope;
use super::{
    error::{EdgeError, RefusalSlot},
    event_store::track_delivery,
    extensions::{IdempotencyKey, TransportSession},
    handler::notify::Notifier,
    transport::{
        forward::{FORWARDED_HEADER, Forwarder},
        inflight::hold_until_sent,
        leases::EVICT_TOPIC,
        session_manager::ReplicatedSessionManager,
        session_store::Restores,
    },
};
use crate::{
    auth::{Authenticator, Principal},
    bus::Bus,
    events::RedisEventStore,
    metrics::Metrics,
    rate_limit::{RateLimitError, RateLimiter},
    sessions::{Holder, Lease, Sessions},
};

mod envelope;

#[doc(hidden)]
pub use self::envelope::check_decoder;

/// The header of the 2025-era transport session.
const SESSION_HEADER: &str = "mcp-session-id";
/// The header of the protocol revision.
const VERSION_HEADER: &str = "mcp-protocol-version";

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

/// Where a 2025-era request for a live session is served.
enum Route {
    /// Here: this replica holds the session (or nobody does and it may not take it).
    Here,
    /// At the replica holding it.
    There(Holder),
}

/// The edge middleware; see the module docs.
pub(crate) async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    // GET streams last as long as their sessions: the drain ends them, never waits.
    let in_flight = (parts.method != Method::GET).then(|| edge.requests.token());
    let principal = match edge.auth.authenticate(&parts.headers) {
        Ok(principal) => principal,
        Err(e) => {
            tracing::info!(error = %e, "unauthenticated request refused");
            let challenge = edge.auth.challenge().cloned();
            return edge.refuse(EdgeError::Unauthorized { challenge }, None, started);
        }
    };
    let header_version = parts
        .headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json_post = parts.method == Method::POST && is_json(&parts.headers);
    let (envelope, bytes, body) = if json_post {
        let bytes = match axum::body::to_bytes(body, edge.max_body).await {
            Ok(bytes) => bytes,
            Err(_) => {
                let limit = edge.max_body;
                return edge.refuse(EdgeError::TooLarge { limit }, Some("invalid"), started);
            }
        };
        match Envelope::parse(&bytes, header_version.as_deref()) {
            Ok(envelope) => (envelope, Some(bytes.clone()), Body::from(bytes)),
            Err(e) => return edge.refuse(e, Some("invalid"), started),
        }
    } else {
        (
            Envelope::from_headers(header_version.as_deref()),
            None,
            body,
        )
    };
    // Only JSON-RPC POSTs are counted by method; GET and DELETE carry none.
    let label = json_post.then(|| envelope.method_label());
    let span = tracing::Span::current();
    if !span.is_disabled() {
        if let Some(label) = label {
            span.record("mcp_method", label);
        }
        if let Some(handle) = &envelope.handle {
            span.record("session_id", crate::ids::fingerprint(handle));
        }
    }

    let session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The session this request may act on: confirmed for its caller before rmcp runs,
    // and for a DELETE removed from the store only after rmcp accepted the request
    // (its Host and Origin checks come first).
    let mut confirmed = None;
    if let Some(id) = session
        && envelope.legacy
    {
        let forwarded = parts.headers.contains_key(FORWARDED_HEADER);
        let post = parts.method == Method::POST;
        let route = match edge.route(&principal, &id, forwarded, post).await {
            Ok(route) => route,
            Err(e) => return edge.refuse(e, label, started),
        };
        // Only a request whose body is in hand can be sent on (a POST that is not JSON
        // is rmcp's to refuse, here).
        if let Route::There(holder) = route
            && (bytes.is_some() || parts.method != Method::POST)
        {
            let body = bytes.clone().map(Body::from).unwrap_or_else(Body::empty);
            match edge
                .forwarder
                .forward(&holder.url, parts.clone(), body)
                .await
            {
                Ok(response) => {
                    edge.metrics.forward("forwarded");
                    return edge.answer(response, label, started, in_flight);
                }
                Err(e) => {
                    tracing::warn!(error = %e, holder = %holder.replica, "forward failed");
                    edge.metrics.forward("unreachable");
                    // Take the session over if its holder's lease has run out.
                    match edge.route(&principal, &id, true, false).await {
                        Ok(Route::Here) => edge.metrics.forward("taken_over"),
                        Ok(Route::There(_)) | Err(EdgeError::Moved) => {
                            return edge.refuse(EdgeError::HolderUnreachable, label, started);
                        }
                        Err(e) => return edge.refuse(e, label, started),
                    }
                }
            }
        }
        parts.extensions.insert(TransportSession(id.clone()));
        confirmed = Some(id);
    }
    match edge.rate_limit.check(principal.as_str()).await {
        Ok(()) => {}
        Err(RateLimitError::Limited(wait)) => {
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return edge.refuse(EdgeError::RateLimited { retry_after_secs }, label, started);
        }
        Err(RateLimitError::Unavailable) => {
            return edge.refuse(EdgeError::Unavailable, label, started);
        }
    }
    let deleting = (parts.method == Method::DELETE)
        .then(|| confirmed.map(|id| (principal.clone(), id)))
        .flatten();
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
    if let Some((principal, id)) = deleting
        && response.status().is_success()
    {
        return match edge.delete_session(&principal, &id).await {
            Ok(()) => edge.answer(
                StatusCode::NO_CONTENT.into_response(),
                label,
                started,
                in_flight,
            ),
            Err(e) => edge.refuse(e, label, started),
        };
    }
    if json_post && response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // The content type was right, so rmcp could not read the message itself.
        let detail = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        return edge.refuse(EdgeError::InvalidRequest(detail), Some("invalid"), started);
    }
    edge.answer(response, label, started, in_flight)
}

impl Edge {
    /// Slides the stored session's expiry, confirms it still exists and belongs to
    /// `principal`, and says where it is served: by the replica holding its lease, or
    /// here when that is this replica, when nobody holds it and this one takes it, or
    /// when nobody holds it and this one, draining, may not take it. A local copy of a
    /// session that expired or was deleted elsewhere is closed. A session this replica
    /// serves but has no worker for yet is offered to rmcp's restore with the state the
    /// touch returned, so the restore costs no second round trip and never reads a
    /// session the edge did not confirm for its caller.
    ///
    /// A `post` that is not `forwarded` skips the touch when this replica runs the
    /// session's worker for `principal` under a lease it knows is fresh
    /// ([`ReplicatedSessionManager::serve_without_touch`]): the keeper's next renewal
    /// slides the expiry instead. GET and DELETE always touch (a GET stream may outlive
    /// the lease; a DELETE must find the stored session).
    ///
    /// A `forwarded` request was sent here as to the holder: it never goes on, and
    /// finding the session held by yet another replica is [`EdgeError::Moved`].
    async fn route(
        &self,
        principal: &Principal,
        id: &str,
        forwarded: bool,
        post: bool,
    ) -> Result<Route, EdgeError> {
        if !crate::ids::is_well_formed(id) {
            return Err(EdgeError::SessionNotFound);
        }
        if post && !forwarded && self.manager.serve_without_touch(id, principal).await {
            return Ok(Route::Here);
        }
        let take = !self.draining.is_cancelled();
        let sent = tokio::time::Instant::now();
        match self
            .sessions
            .touch(principal.as_str(), id, Some(&self.lease), take)
            .await
        {
            Ok(Some(touched)) if !touched.transport.is_null() => match touched.holder {
                Some(holder) if holder.replica != self.lease.holder.replica => {
                    if forwarded {
                        self.metrics.forward("moved");
                        return Err(EdgeError::Moved);
                    }
                    Ok(Route::There(holder))
                }
                holder => {
                    let holds_lease = holder.is_some();
                    if !self.manager.touched(id, principal, sent, holds_lease).await {
                        self.restores.offer(id, touched.transport);
                    }
                    Ok(Route::Here)
                }
            },
            // Unknown, expired, another principal's, or a 2026-07-28 handle (which is
            // not a transport session).
            Ok(_) => {
                self.manager.close_not_found(id, principal).await;
                Err(EdgeError::SessionNotFound)
            }
            Err(e) => Err(self.unavailable(e)),
        }
    }

    /// Ends `principal`'s stored session `id` (an HTTP DELETE rmcp accepted; it has
    /// closed the local worker) and evicts its workers on every other replica.
    async fn delete_session(&self, principal: &Principal, id: &str) -> Result<(), EdgeError> {
        if !crate::ids::is_well_formed(id) {
            return Err(EdgeError::SessionNotFound);
        }
        match self.sessions.delete(principal.as_str(), id).await {
            Ok(true) => {}
            Ok(false) => return Err(EdgeError::SessionNotFound),
            Err(e) => return Err(self.unavailable(e)),
        }
        if let Some(bus) = &self.bus
            && let Err(e) = bus.publish(EVICT_TOPIC, id.as_bytes()).await
        {
            // The session is gone from the store: other replicas' sweeps close their
            // copies within a third of the lease.
            tracing::warn!(error = %e, "session eviction not published");
        }
        Ok(())
    }

    fn unavailable(&self, e: crate::sessions::SessionError) -> EdgeError {
        tracing::warn!(error = %e, "session store unavailable");
        // Until the lease keeper has heard from the store again, every request of a
        // session asks the store.
        self.manager.store_failed();
        self.metrics.store_error("transport");
        EdgeError::Unavailable
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

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}
