//! The edge of `/mcp`: the one place every request passes before rmcp sees it, an
//! ordered stack of small steps, each in its own file:
//!
//! - before all, `origin.rs`: where from; rmcp's own Host and Origin checks (403), so a
//!   refused request is neither authenticated nor charged to a rate limit;
//! 0. `authenticate.rs`: who is asking; 401 with a `WWW-Authenticate` challenge naming
//!    the RFC 9728 metadata, else the caller's [`Principal`];
//! 1. `decode.rs`: what is asked; a JSON POST's body read once (413 above
//!    `server.max_body_bytes`) into an envelope (`envelope.rs`; 400 with `-32700` or
//!    `-32600` when it is not a JSON-RPC message);
//! 2. `label.rs`: the name it is counted and logged under (known methods only);
//!    `trace.rs`: the request's exported span takes the parent its `_meta` names, and
//!    the MCP method's span begins (both only while traces are exported);
//! 3. `route.rs`: where it is served; a message naming an `Mcp-Session-Id` has its
//!    session confirmed for its caller whatever its era (404, or 503 while the store is
//!    down); a 2025-era one (classified as rmcp routes it) is forwarded to the replica
//!    holding it, or served here marked with the [`TransportSession`];
//! 4. `rate_limit.rs`: one token of the caller's budget, where it is served (429);
//! 5. `admit.rs`: what it takes into rmcp (the caller, idempotency key and deadline in
//!    its extensions, a listen stream's place: 503 when there is none) and holds until
//!    its response ends (the drain's count of requests in flight, taken on arrival);
//! 6. rmcp serves it; then `refusals.rs` answers what the session manager reported
//!    through the request's `RefusalSlot` (rmcp would answer a bare 500) and turns
//!    rmcp's 415 to a JSON POST into `-32600`, and a DELETE rmcp accepted ends its
//!    stored session (`route.rs`).
//!
//! One middleware, `edge`, calls the steps in that order: they are plain functions
//! called in turn, not a tower layer each. An axum `from_fn` layer boxes its future and
//! a clone of the service behind it on every request, and what one layer hands the next
//! must be boxed into the request's extensions and looked up again: seven layers would
//! pay that seven times for an order that never changes. Here what one step learns that
//! a later one needs (the principal, the decoded request, the route decision, the label
//! and start instant in a `Meter`) is an argument or a return value; only what rmcp and
//! the handler need travels in the request's extensions ([`crate::mcp::extensions`]).
//! Each step is tested alone beside its code, the composition in `edge/tests.rs`.
//!
//! Every refusal is an [`EdgeError`], which maps to its HTTP status and, for the
//! JSON-RPC ones, to a JSON-RPC error body; a request is counted once, refused or
//! answered, under its label.
//!
//! Once its body is read a request has one [`Deadline`] for all its Redis steps
//! (`server.request_deadline_ms`, or less when the replica that forwarded it had less
//! left): routing with its forward, the rate limit and a DELETE's end run within it
//! here ([`EdgeError::DeadlineExceeded`] past it), a new session's writes and the
//! tools' store calls behind rmcp (they find it in the request's extensions). rmcp's
//! own work is not bounded as a whole: a 2026-07-28 call's response head comes after
//! its tool has run, however long that takes, and response bodies stream on.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::request::Parts;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use self::{
    label::Meter,
    route::{Routed, Routing},
};
use super::{
    McpState,
    error::{DomainErrors, EdgeError},
    extensions::{Deadline, TraceSpan},
    handler::notify::Notifier,
    transport::{
        forward::{self, Forwarder},
        session_manager::ReplicatedSessionManager,
        session_store::Restores,
    },
};
#[cfg(doc)]
use crate::mcp::extensions::TransportSession;
use crate::{
    auth::{Authenticator, Principal},
    bus::Bus,
    events::RedisEventStore,
    metrics::Metrics,
    rate_limit::RateLimiter,
    sessions::{Lease, Sessions},
};

mod admit;
mod authenticate;
mod decode;
mod envelope;
#[cfg(test)]
mod fixture;
mod label;
mod origin;
mod rate_limit;
mod refusals;
mod route;
#[cfg(test)]
mod tests;
mod trace;

#[doc(hidden)]
pub use self::envelope::check_decoder;
pub(crate) use self::origin::HostCheck;

/// The target of the edge's log lines, whichever step writes them.
const LOG_TARGET: &str = module_path!();

/// What the edge middleware works with; cheap to clone.
#[derive(Clone)]
pub(crate) struct Edge {
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) rate_limit: RateLimiter,
    pub(crate) sessions: Sessions,
    pub(crate) metrics: Metrics,
    /// What clients see of the session store's errors.
    pub(crate) errors: DomainErrors,
    pub(crate) manager: Arc<ReplicatedSessionManager>,
    pub(crate) restores: Restores,
    pub(crate) max_body: usize,
    /// `server.request_deadline_ms`: how long a request's Redis steps may take.
    pub(crate) request_deadline: Duration,
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
    /// rmcp's Host and Origin checks, run first.
    pub(crate) hosts: HostCheck,
    /// `server.trusted_proxy_header`: where a client's address is read, else its peer.
    pub(crate) client_header: Option<http::HeaderName>,
}

impl Edge {
    /// The edge of `mcp`'s replica in front of `manager`, which rmcp's service shares
    /// (as it shares `restores` with its session store); `lease` is the replica's claim
    /// on the sessions it holds, `events` the event store of 2025-era streams, if any.
    pub(crate) fn new(
        mcp: &McpState,
        manager: Arc<ReplicatedSessionManager>,
        restores: Restores,
        lease: Lease,
        events: Option<Arc<RedisEventStore>>,
        hosts: HostCheck,
    ) -> Self {
        let state = &mcp.app;
        let server = &state.settings.server;
        Self {
            auth: state.auth.clone(),
            rate_limit: state.rate_limit.clone(),
            sessions: state.sessions.clone(),
            metrics: state.metrics.clone(),
            errors: DomainErrors::new(state.metrics.clone()),
            manager,
            restores,
            max_body: server.max_body_bytes,
            request_deadline: Duration::from_millis(server.request_deadline_ms),
            lease,
            forwarder: Forwarder::new(
                &state.replica_id,
                state.mcp_shutdown.clone(),
                Duration::from_millis(server.forward_timeout_ms),
            ),
            draining: state.shutdown.clone(),
            bus: state.bus.clone(),
            requests: state.requests.clone(),
            notifier: mcp.notifier.clone(),
            events,
            hosts,
            client_header: http::HeaderName::from_bytes(server.trusted_proxy_header.as_bytes())
                .ok(),
        }
    }
}

/// The edge middleware: the steps of the module docs, in order; the request is counted
/// once it is answered or refused.
pub(crate) async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let mut meter = Meter::start();
    let (parts, body) = request.into_parts();
    if let Some(refusal) = edge.hosts.refusal(&parts).await {
        // Its body is never read: counted as `other`.
        meter.label(Some("other"));
        meter.count(&edge.metrics);
        return refusal;
    }
    let in_flight = admit::in_flight(&edge.requests, &parts.method);
    let outcome = edge.steps(parts, body, next, &mut meter).await;
    meter.count(&edge.metrics);
    match outcome {
        Ok(response) => admit::hold(response, in_flight, edge.events.as_ref()),
        Err(refusal) => refusal.into_response(),
    }
}

impl Edge {
    /// Steps 0 to 6 of the module docs: rmcp's response (or the holder's, or a DELETE's
    /// 204), or the first refusal.
    async fn steps(
        &self,
        parts: Parts,
        body: Body,
        next: Next,
        meter: &mut Meter,
    ) -> Result<Response, EdgeError> {
        // 0. Who is asking.
        let client = authenticate::client_address(&parts, self.client_header.as_ref());
        let principal = authenticate::caller(&self.auth, client, &parts.headers)?;
        // 1. What is asked.
        let request = decode::read(&parts, body, self.max_body)
            .await
            .map_err(|e| meter.invalid(e))?;
        // 2. Under which name it is counted and logged (and traced).
        meter.label(label::label(&request));
        let span = trace::method_span(&parts, &request.envelope);
        self.serve(parts, request, principal, next, meter, span.clone())
            .instrument(span)
            .await
    }

    /// Steps 3 to 6 of the module docs, for the decoded `request` of `principal`.
    async fn serve(
        &self,
        mut parts: Parts,
        mut request: decode::Decoded,
        principal: Principal,
        next: Next,
        meter: &mut Meter,
        span: tracing::Span,
    ) -> Result<Response, EdgeError> {
        if !span.is_disabled() {
            parts.extensions.insert(TraceSpan(span));
        }
        // From here on its Redis steps share one deadline.
        let deadline = self.deadline(&parts);
        // 3. Where it is served.
        let routing = self.routing(deadline);
        let route = routing.route(
            &principal,
            &mut parts,
            &request.envelope,
            request.bytes.as_ref(),
        );
        let deletion = match within(&self.metrics, deadline, "route", route).await?? {
            Routed::Forwarded(response) => return Ok(response),
            Routed::Here(deletion) => deletion,
        };
        // 4. What it costs the caller, here where it is served.
        let spend = rate_limit::spend(&self.rate_limit, &principal);
        within(&self.metrics, deadline, "rate_limit", spend).await??;
        // 5. What it takes into rmcp.
        admit::hand_over(
            &mut parts.extensions,
            principal,
            &mut request.envelope,
            deadline,
        );
        let place = admit::listen_place(&self.notifier, &request.envelope)?;
        // 6. rmcp, then the refusals it could not answer itself and a DELETE's end.
        let slot = refusals::slot(&mut parts.extensions);
        let response = next.run(Request::from_parts(parts, request.body)).await;
        let response = admit::keep_place(response, place);
        refusals::reported(&slot)?;
        let finish = routing.finish(deletion, response);
        let response = within(&self.metrics, deadline, "finish", finish).await??;
        refusals::unreadable(request.json_post, response)
            .await
            .map_err(|e| meter.invalid(e))
    }

    /// The deadline of a request that arrives now with `parts`: the replica's
    /// budget, or what the replica that forwarded it had left when that is less.
    fn deadline(&self, parts: &Parts) -> Deadline {
        let budget = forward::forwarded_budget(&parts.headers)
            .map_or(self.request_deadline, |left| {
                left.min(self.request_deadline)
            });
        Deadline::after(budget)
    }

    /// The handles routing works with, for a request due by `deadline`.
    fn routing(&self, deadline: Deadline) -> Routing<'_> {
        Routing {
            sessions: &self.sessions,
            manager: &self.manager,
            restores: &self.restores,
            lease: &self.lease,
            forwarder: &self.forwarder,
            draining: &self.draining,
            metrics: &self.metrics,
            errors: &self.errors,
            bus: self.bus.as_ref(),
            deadline,
        }
    }
}

/// `step`'s output, or [`EdgeError::DeadlineExceeded`] when `deadline` passes first:
/// logged with the step's name, counted by step
/// (`stateful_mcp_request_deadlines_expired_total`) and as a failure of the store the
/// step waited on (`stateful_mcp_store_errors_total{component="transport"}`, as the
/// session manager counts a new session's late writes).
///
/// A combinator rather than an `async fn`, which would keep `future` as an argument
/// beside the deadline's timeout holding it: the request's future would carry each
/// step twice (and copy it).
fn within<'a, T>(
    metrics: &'a Metrics,
    deadline: Deadline,
    step: &'static str,
    future: impl Future<Output = T> + 'a,
) -> impl Future<Output = Result<T, EdgeError>> + 'a {
    futures::FutureExt::map(deadline.bound(future), move |output| {
        output.ok_or_else(|| {
            metrics.store_error("transport");
            metrics.deadline_expired(step);
            tracing::warn!(target: LOG_TARGET, step, "request deadline passed");
            EdgeError::DeadlineExceeded
        })
    })
}
