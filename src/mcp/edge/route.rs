//! Step 3, route: where a request is served. Only a request naming an `Mcp-Session-Id`
//! has a say; every other one is served here.
//!
//! Whatever its era, a message (request, notification or response) naming a transport
//! session its caller does not own is refused 404: which session a message belongs to
//! is decided by the header, for the owner check and for rmcp alike, never by its
//! `_meta`. One rmcp serves without the session (2026-07-28, by the envelope's
//! classification, which is rmcp's own) is served here once confirmed, with no
//! [`TransportSession`] to bind to.
//!
//! Such a request touches its stored session (one round trip: slides its expiry, finds
//! out whether it still exists and which replica holds it, taking it when nobody does:
//! see `leases.rs`), except for a POST of the session's owner on the replica that runs
//! its worker under a lease known to be fresh, served without it (the keeper slides the
//! expiry then). An expired or deleted session, or one of another principal, gets 404
//! on every replica, an unreachable store 503 with `Retry-After`. A session another
//! replica holds is forwarded there (`forward.rs`) and answered from there; when that
//! replica cannot be reached, this one takes the session over at once if it is dead (no
//! connection and no liveness mark: `liveness.rs`), else once its lease has run out,
//! and answers 503 with `Retry-After` until then. A holder that gave the session up
//! between the touch and the forward (it drained) answers "moved"
//! ([`MOVED_HEADER`]): the request is routed once more from a fresh touch rather than
//! refused. A session held here marks the
//! request with the [`TransportSession`] the tools may bind to. A DELETE rmcp accepted
//! then removes the stored session (for its owner only), evicts its workers on every
//! replica through the bus and answers 204 ([`Routing::finish`]).
//!
//! A forward waits for the holder's response head no longer than the request's
//! [`Deadline`] allows, and hands the holder what is left of it; the edge bounds the
//! rest of routing by the same deadline.

use axum::{
    body::{Body, Bytes},
    response::{IntoResponse, Response},
};
use http::{Method, StatusCode, request::Parts};
use tokio_util::sync::CancellationToken;

use super::{LOG_TARGET, envelope::Envelope};
use crate::{
    auth::Principal,
    bus::Bus,
    mcp::{
        error::{DomainErrors, EdgeError, MOVED_HEADER},
        extensions::{Deadline, TransportSession},
        transport::{
            forward::{FORWARDED_HEADER, Forwarder},
            leases::end_session,
            session_manager::ReplicatedSessionManager,
            session_store::Restores,
        },
    },
    metrics::Metrics,
    sessions::{Holder, Lease, SessionError, Sessions, Touched, Transport},
};

/// The header of the 2025-era transport session.
const SESSION_HEADER: &str = "mcp-session-id";

/// What routing works with, borrowed from the edge's handles: building it per request
/// costs nothing.
pub(crate) struct Routing<'a> {
    /// The stored sessions.
    pub(crate) sessions: &'a Sessions,
    /// This replica's workers of the sessions it serves.
    pub(crate) manager: &'a ReplicatedSessionManager,
    /// Stored session state handed to rmcp's restore without a second round trip.
    pub(crate) restores: &'a Restores,
    /// This replica's claim on the sessions it serves.
    pub(crate) lease: &'a Lease,
    /// Sends requests on to the replica holding their session.
    pub(crate) forwarder: &'a Forwarder,
    /// Fired when the replica drains: it then takes no session over.
    pub(crate) draining: &'a CancellationToken,
    /// Counts forwards.
    pub(crate) metrics: &'a Metrics,
    /// Answers (and counts) the store's errors.
    pub(crate) errors: &'a DomainErrors,
    /// Evictions of deleted sessions go to every replica (Redis backend).
    pub(crate) bus: Option<&'a Bus>,
    /// The request's deadline, which a forward's wait for its head respects.
    pub(crate) deadline: Deadline,
}

/// What routing decided for a request.
#[derive(Debug)]
pub(crate) enum Routed {
    /// The replica holding its session answered it.
    Forwarded(Response),
    /// It is served here; a DELETE of its confirmed session carries what to end once
    /// rmcp accepted it.
    Here(Option<Deletion>),
}

/// A DELETE of a transport session confirmed for its caller: the stored session is
/// removed only after rmcp accepted the request (its Host and Origin checks come first).
#[derive(Debug)]
pub(crate) struct Deletion {
    principal: Principal,
    id: String,
}

/// Where a 2025-era request for a live session is served.
enum Holding {
    /// Here: this replica holds the session (or nobody does and it may not take it).
    Here,
    /// At the replica holding it.
    There(Holder),
}

impl Routing<'_> {
    /// Routes `principal`'s request of `parts`, described by `envelope`, its body read
    /// into `bytes` or left unread (see the module docs); a request served here for a
    /// confirmed session gets its [`TransportSession`] extension.
    ///
    /// # Errors
    /// [`EdgeError::SessionNotFound`], [`EdgeError::Unavailable`],
    /// [`EdgeError::HolderUnreachable`], or [`EdgeError::Moved`] for a request
    /// forwarded here for a session yet another replica holds.
    pub(crate) async fn route(
        &self,
        principal: &Principal,
        parts: &mut Parts,
        envelope: &Envelope,
        bytes: Option<&Bytes>,
    ) -> Result<Routed, EdgeError> {
        let Some(id) = parts
            .headers
            .get(SESSION_HEADER)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
        else {
            return Ok(Routed::Here(None));
        };
        if !envelope.legacy {
            // rmcp serves it without its transport session; naming one that is not the
            // caller's is refused all the same.
            self.confirm(principal, &id).await?;
            return Ok(Routed::Here(None));
        }
        let forwarded = parts.headers.contains_key(FORWARDED_HEADER);
        let post = parts.method == Method::POST;
        let mut holding = self.locate(principal, &id, forwarded, post, None).await?;
        let mut rerouted = false;
        // Only a request whose body is in hand can be sent on (a POST that is not JSON
        // is rmcp's to refuse, here).
        while let Holding::There(holder) = holding
            && (bytes.is_some() || !post)
        {
            let body = bytes.cloned().map(Body::from).unwrap_or_else(Body::empty);
            match self
                .forwarder
                .forward(&holder.url, parts.clone(), body, self.deadline)
                .await
            {
                // The holder gave the session up between this replica's touch and the
                // forward (it drained, or its lease ran out): once, look again.
                Ok(response) if !rerouted && response.headers().contains_key(MOVED_HEADER) => {
                    rerouted = true;
                    self.metrics.forward("rerouted");
                    holding = self.locate(principal, &id, false, post, None).await?;
                }
                Ok(response) => {
                    self.metrics.forward("forwarded");
                    return Ok(Routed::Forwarded(response));
                }
                Err(e) => {
                    tracing::warn!(
                        target: LOG_TARGET,
                        error = %e,
                        holder = %holder.replica,
                        "forward failed"
                    );
                    self.metrics.forward("unreachable");
                    // Take the session over if its holder is dead (no connection and no
                    // liveness mark) or its lease has run out.
                    let dead = e.is_connect_failure() && self.is_dead(&holder).await;
                    let dead = dead.then_some(&holder);
                    match self.locate(principal, &id, true, false, dead).await {
                        Ok(Holding::Here) => self.metrics.forward("taken_over"),
                        Ok(Holding::There(_)) | Err(EdgeError::Moved) => {
                            return Err(EdgeError::HolderUnreachable);
                        }
                        Err(e) => return Err(e),
                    }
                    break;
                }
            }
        }
        parts.extensions.insert(TransportSession(id.clone()));
        let deletion = (parts.method == Method::DELETE).then(|| Deletion {
            principal: principal.clone(),
            id,
        });
        Ok(Routed::Here(deletion))
    }

    /// rmcp's `response`, or for a `deletion` rmcp accepted, 204 once the stored
    /// session is gone.
    ///
    /// # Errors
    /// [`EdgeError::SessionNotFound`] when the session is gone already,
    /// [`EdgeError::Unavailable`].
    pub(crate) async fn finish(
        &self,
        deletion: Option<Deletion>,
        response: Response,
    ) -> Result<Response, EdgeError> {
        match deletion {
            Some(Deletion { principal, id }) if response.status().is_success() => {
                self.delete(&principal, &id).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            _ => Ok(response),
        }
    }

    /// Slides the stored session's expiry, confirms it still exists and belongs to
    /// `principal`, and says where it is served: by the replica holding its lease, or
    /// here when that is this replica, when nobody holds it and this one takes it, or
    /// when nobody holds it and this one, draining, may not take it. A local copy of a
    /// session that expired or was deleted elsewhere is closed. A session this replica
    /// serves but has no worker for yet is offered to rmcp's restore with the state the
    /// touch returned, so the restore costs no second round trip and never reads a
    /// session the edge did not confirm for its caller; a replica that runs the
    /// session's worker has the touch leave the state out (most of its reply's bytes).
    ///
    /// A `post` skips the touch when this replica runs the session's worker for
    /// `principal` under a lease it knows is fresh
    /// ([`ReplicatedSessionManager::serve_without_touch`]): the keeper's next renewal
    /// slides the expiry instead. A `forwarded` one too: the forwarding replica's touch
    /// found this replica holding the session, which is what this one knows already. GET and DELETE always touch (a GET stream may outlive
    /// the lease; a DELETE must find the stored session).
    ///
    /// A `forwarded` request was sent here as to the holder: it never goes on, and
    /// finding the session held by yet another replica is [`EdgeError::Moved`].
    ///
    /// With `dead` (a holder this replica could not connect to, whose liveness mark is
    /// gone) the touch also takes the session from that holder, if it still holds it.
    async fn locate(
        &self,
        principal: &Principal,
        id: &str,
        forwarded: bool,
        post: bool,
        dead: Option<&Holder>,
    ) -> Result<Holding, EdgeError> {
        if !crate::ids::is_well_formed(id) {
            return Err(EdgeError::SessionNotFound);
        }
        if post && self.manager.serve_without_touch(id, principal).await {
            return Ok(Holding::Here);
        }
        let take = !self.draining.is_cancelled();
        // Only a replica about to restore the session's worker needs its state.
        let read = !self.manager.runs(id).await;
        let sent = tokio::time::Instant::now();
        let touched = match dead {
            Some(dead) if take => {
                self.sessions
                    .take_over(principal.as_str(), id, self.lease, dead, read)
                    .await
            }
            _ => {
                self.sessions
                    .touch(principal.as_str(), id, Some(self.lease), take, read)
                    .await
            }
        };
        match touched {
            Ok(Some(touched)) if touched.is_transport() => match touched.holder {
                Some(holder) if holder.replica != self.lease.holder.replica => {
                    if forwarded {
                        self.metrics.forward("moved");
                        return Err(EdgeError::Moved);
                    }
                    Ok(Holding::There(holder))
                }
                holder => {
                    let holds_lease = holder.is_some();
                    if !self.manager.touched(id, principal, sent, holds_lease).await {
                        self.offer_restore(principal, id, touched.transport).await?;
                    }
                    Ok(Holding::Here)
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

    /// Offers rmcp's restore the transport state of session `id`, which this replica
    /// serves without a worker: the state the touch read, or when it did not (the
    /// worker here was closed since the touch was sent), the state one more touch
    /// reads. A session gone or moved by then is offered nothing, and its restore finds
    /// none.
    async fn offer_restore(
        &self,
        principal: &Principal,
        id: &str,
        transport: Transport,
    ) -> Result<(), EdgeError> {
        let state = match transport {
            Transport::Read(state) => state,
            Transport::Absent | Transport::Unread => {
                match self
                    .sessions
                    .touch(principal.as_str(), id, Some(self.lease), false, true)
                    .await
                {
                    Ok(Some(Touched {
                        transport: Transport::Read(state),
                        ..
                    })) => state,
                    Ok(_) => return Ok(()),
                    Err(e) => return Err(self.unavailable(e)),
                }
            }
        };
        self.restores.offer(id, state);
        Ok(())
    }

    /// Confirms that `principal` owns the live transport session `id` (sliding its
    /// expiry), for a message rmcp serves without it: no lease is taken, no worker
    /// restored or closed.
    async fn confirm(&self, principal: &Principal, id: &str) -> Result<(), EdgeError> {
        match self
            .sessions
            .touch(principal.as_str(), id, None, false, false)
            .await
        {
            Ok(Some(touched)) if touched.is_transport() => Ok(()),
            Ok(_) => Err(EdgeError::SessionNotFound),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    /// Whether `holder`, which could not be connected to, is dead: its liveness mark is
    /// gone. One command, on this failure path only; a store that cannot say leaves the
    /// holder its lease.
    async fn is_dead(&self, holder: &Holder) -> bool {
        match self.sessions.is_alive(holder).await {
            Ok(alive) => !alive,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, error = %e, "holder liveness unknown");
                false
            }
        }
    }

    /// Ends `principal`'s stored session `id` (an HTTP DELETE rmcp accepted; it has
    /// closed the local worker) and evicts its workers on every other replica.
    async fn delete(&self, principal: &Principal, id: &str) -> Result<(), EdgeError> {
        if !crate::ids::is_well_formed(id) {
            return Err(EdgeError::SessionNotFound);
        }
        match end_session(self.sessions, self.bus, principal.as_str(), id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(EdgeError::SessionNotFound),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    fn unavailable(&self, e: SessionError) -> EdgeError {
        // Until the lease keeper has heard from the store again, every request of a
        // session asks the store.
        self.manager.store_failed();
        self.errors.transport(&e)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{mcp::edge::fixture, sessions::NewSession, state::AppState};

    fn parts(method: Method, session: Option<&str>) -> Parts {
        let mut request = http::Request::builder().method(method).uri("/mcp");
        if let Some(session) = session {
            request = request.header(SESSION_HEADER, session);
        }
        request.body(()).unwrap().into_parts().0
    }

    /// A 2025-era request without a body, and one of 2026-07-28.
    fn legacy() -> Envelope {
        Envelope::from_headers(None)
    }

    fn stateless() -> Envelope {
        Envelope::from_headers(Some("2026-07-28"))
    }

    /// A stored 2025-era transport session of `owner`.
    async fn stored(state: &AppState, owner: &str) -> String {
        let new = NewSession {
            principal: owner.into(),
            transport: Some(json!({"initialize": {}})),
            ..NewSession::default()
        };
        state.sessions.create(new).await.unwrap().id
    }

    fn confirmed(parts: &Parts) -> Option<&str> {
        parts
            .extensions
            .get::<TransportSession>()
            .map(|s| s.0.as_str())
    }

    #[tokio::test]
    async fn a_live_session_is_confirmed_for_its_owner_and_no_one_else() {
        let state = fixture::state(&[]);
        let edge = fixture::edge(&state);
        let routing = edge.routing(fixture::far());
        let alice = Principal::new("alice").unwrap();
        let id = stored(&state, "alice").await;

        let mut get = parts(Method::GET, Some(&id));
        let routed = routing.route(&alice, &mut get, &legacy(), None).await;
        assert!(matches!(routed, Ok(Routed::Here(None))), "{routed:?}");
        assert_eq!(confirmed(&get), Some(id.as_str()));

        let bob = Principal::new("bob").unwrap();
        for (who, id) in [
            (&bob, id.clone()),
            (&alice, crate::ids::mint()),
            (&alice, "not an id".to_owned()),
        ] {
            let mut get = parts(Method::GET, Some(&id));
            let routed = routing.route(who, &mut get, &legacy(), None).await;
            assert_eq!(routed.unwrap_err(), EdgeError::SessionNotFound, "{id}");
            assert_eq!(confirmed(&get), None);
        }
    }

    #[tokio::test]
    async fn a_message_rmcp_serves_statelessly_is_refused_a_session_not_its_callers() {
        let state = fixture::state(&[]);
        let edge = fixture::edge(&state);
        let routing = edge.routing(fixture::far());
        let alice = Principal::new("alice").unwrap();
        let bob = Principal::new("bob").unwrap();
        let id = stored(&state, "alice").await;

        let mut none = parts(Method::DELETE, None);
        let routed = routing.route(&alice, &mut none, &legacy(), None).await;
        assert!(matches!(routed, Ok(Routed::Here(None))), "{routed:?}");

        // The owner's is served here, bound to nothing: rmcp serves it without it.
        let mut own = parts(Method::POST, Some(&id));
        let routed = routing.route(&alice, &mut own, &stateless(), None).await;
        assert!(matches!(routed, Ok(Routed::Here(None))), "{routed:?}");
        assert_eq!(confirmed(&own), None, "a header on its own binds nothing");

        for (who, id) in [
            (&bob, id.as_str()),
            (&alice, "not an id"),
            (&alice, crate::ids::mint().as_str()),
        ] {
            let mut post = parts(Method::POST, Some(id));
            let routed = routing.route(who, &mut post, &stateless(), None).await;
            assert_eq!(routed.unwrap_err(), EdgeError::SessionNotFound, "{id}");
        }
    }

    #[tokio::test]
    async fn a_refused_caller_never_closes_a_restored_worker_whose_owner_is_unknown() {
        use rmcp::transport::streamable_http_server::session::SessionManager;

        let state = fixture::state(&[]);
        let edge = fixture::edge(&state);
        let routing = edge.routing(fixture::far());
        let id = stored(&state, "alice").await;
        // A worker restored for alice knows its owner only at her next touch.
        edge.manager
            .restore_session(id.clone().into())
            .await
            .unwrap();

        let bob = Principal::new("bob").unwrap();
        let mut get = parts(Method::GET, Some(&id));
        let routed = routing.route(&bob, &mut get, &legacy(), None).await;
        assert_eq!(routed.unwrap_err(), EdgeError::SessionNotFound);
        assert_eq!(
            edge.manager.local_ids().await,
            std::slice::from_ref(&id),
            "alice's worker"
        );

        // Her own request that finds the session gone closes it.
        let alice = Principal::new("alice").unwrap();
        let mut get = parts(Method::GET, Some(&id));
        routing
            .route(&alice, &mut get, &legacy(), None)
            .await
            .unwrap();
        state.sessions.delete("alice", &id).await.unwrap();
        let mut get = parts(Method::GET, Some(&id));
        let routed = routing.route(&alice, &mut get, &legacy(), None).await;
        assert_eq!(routed.unwrap_err(), EdgeError::SessionNotFound);
        assert!(edge.manager.local_ids().await.is_empty());
    }

    #[tokio::test]
    async fn a_delete_ends_the_stored_session_once_rmcp_accepted_it() {
        let state = fixture::state(&[]);
        let edge = fixture::edge(&state);
        let routing = edge.routing(fixture::far());
        let alice = Principal::new("alice").unwrap();
        let id = stored(&state, "alice").await;
        let delete = async || {
            let mut delete = parts(Method::DELETE, Some(&id));
            match routing.route(&alice, &mut delete, &legacy(), None).await {
                Ok(Routed::Here(Some(deletion))) => deletion,
                other => panic!("{other:?}"),
            }
        };

        let refused = StatusCode::FORBIDDEN.into_response();
        let answer = routing.finish(Some(delete().await), refused).await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::FORBIDDEN,
            "rmcp's refusal stands"
        );
        assert!(state.sessions.get("alice", &id).await.is_ok());

        let accepted = StatusCode::ACCEPTED.into_response();
        let answer = routing
            .finish(Some(delete().await), accepted)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert!(state.sessions.get("alice", &id).await.is_err());
        let mut again = parts(Method::DELETE, Some(&id));
        let routed = routing.route(&alice, &mut again, &legacy(), None).await;
        assert_eq!(routed.unwrap_err(), EdgeError::SessionNotFound);
    }
}
