//! The MCP layer: the only part of the crate that speaks rmcp. Its rooms follow a
//! request's path.
//!
//! [`McpState`] holds what this layer keeps beside the replica's [`AppState`] (the
//! MRTR `requestState` codec and the `subscriptions/listen` streams, both rmcp-bound);
//! [`endpoint`] (or [`endpoint_with`], for another rmcp handler) builds the whole
//! Streamable HTTP service of `/mcp` from it:
//!
//! - [`edge`]: the middleware every request passes first; it reads the body once into
//!   an envelope (`edge/envelope.rs`), labels metrics and logs, confirms 2025-era
//!   transport sessions, sends each to the replica that serves it, and answers every
//!   refusal as one [`error::EdgeError`]; what it learnt travels to the handler in the
//!   request's [`extensions`];
//! - `transport`: how rmcp's 2025-era sessions live behind a round-robin balancer: the
//!   session manager (rmcp's local manager made safe across replicas), the restore
//!   store, the leases naming each session's holder, forwarding to it, and the response
//!   bodies a drain waits for; [`event_store`] is rmcp's `EventStore` for
//!   `Last-Event-ID` (2025-era streams only);
//! - [`handler`]: rmcp's `ServerHandler`, with its tools, the session each call binds to
//!   ([`handler::binding`]), resources, schemas, the tasks extension, MRTR request state
//!   and `subscriptions/listen` notifications.
//!
//! The official conformance suite's fixtures are not here: the
//! `stateful-mcp-conformance` binary wraps [`handler::StatefulServer`] in them and serves
//! that through [`endpoint_with`].

pub mod edge;
pub mod error;
pub mod event_store;
pub mod extensions;
pub mod handler;
mod transport;

#[doc(hidden)]
pub use self::edge::check_decoder;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use rmcp::{
    ServerHandler,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::SessionConfig,
    },
};

use self::{
    edge::Edge,
    handler::{StatefulServer, notify::Notifier, request_state::RequestStates},
    transport::{
        leases::LeaseKeeper,
        liveness::Liveness,
        session_manager::ReplicatedSessionManager,
        session_store::{Restores, TransportStore},
    },
};
use crate::{
    events::{EventStoreSettings, RedisEventStore},
    sessions::Lease,
    state::AppState,
};

pub use self::transport::forward::FORWARDED_HEADER;
pub(crate) use self::transport::leases::end_session;

/// The replica's [`AppState`] with what the MCP layer owns beside it: the handles a
/// handler needs that speak rmcp. Cheap to clone.
///
/// Build it once per replica, after [`AppState::build`] and before the replica's jobs
/// start: its [`Notifier`] joins the bus, and the edge's places for listen streams must
/// be the places of the notifier the handler serves them with.
#[derive(Clone)]
pub struct McpState {
    /// The replica's domain handles.
    pub app: AppState,
    /// Seals and opens MRTR `requestState` with the `[mrtr]` key ring (shared by every
    /// replica).
    pub request_states: RequestStates,
    /// The `subscriptions/listen` streams of this replica, and change notifications to
    /// every replica's streams.
    pub notifier: Notifier,
}

impl McpState {
    /// The MCP layer's handles over `app`.
    ///
    /// # Errors
    /// When `mrtr.keys` is unusable, or no random key can be drawn for a replica without
    /// one.
    pub fn build(app: &AppState) -> anyhow::Result<Self> {
        let settings = &app.settings;
        let ring = settings.mrtr.key_ring()?;
        let request_states = RequestStates::new(ring.as_ref()).context("mrtr.keys")?;
        let notifier = Notifier::new(
            app.bus.clone(),
            &settings.listen,
            app.metrics.listen.clone(),
        );
        // The first McpState of a replica is the one its endpoint serves.
        app.task_manager
            .observe(std::sync::Arc::new(notifier.task_publisher()));
        Ok(Self {
            app: app.clone(),
            request_states,
            notifier,
        })
    }
}

/// The `/mcp` service with this crate's tools and resources; mount it with
/// `Router::nest_service("/mcp", endpoint(&mcp))`.
pub fn endpoint(mcp: &McpState) -> Router {
    let server = StatefulServer::new(mcp);
    endpoint_with(mcp, move || server.clone())
}

/// The `/mcp` service for the handlers `factory` makes, over the replica's sessions,
/// stores and metrics: 2025-era sessions persisted before `initialize` is answered and
/// restored on any replica, response streams resumable on any replica (Redis backend,
/// `events.enabled`), every request through the [`edge`].
///
/// rmcp calls `factory` once per 2025-era session and once per 2026-07-28 request: keep
/// it cheap (clone a prebuilt handler, which may hold `mcp`'s
/// [`request_states`](McpState::request_states) and [`notifier`](McpState::notifier)).
/// It adds the keeper of this replica's session leases, the renewal of its liveness mark
/// and, with the Redis backend, the event store's reader to [`AppState::jobs`]: they run
/// once the jobs start.
pub fn endpoint_with<H, F>(mcp: &McpState, factory: F) -> Router
where
    H: ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let state = &mcp.app;
    let settings = &state.settings;
    let mut session_config = SessionConfig::default();
    session_config.keep_alive = Some(settings.session.timeout());
    session_config.sse_retry = Some(Duration::from_secs(1));
    let events = match &state.redis {
        Some(pool) if settings.events.enabled => Some(RedisEventStore::start(
            pool.clone(),
            state.keys.clone(),
            state.replica_id.to_string(),
            EventStoreSettings {
                ttl: Duration::from_secs(settings.events.ttl_secs),
                completed_ttl: Duration::from_secs(settings.events.completed_ttl_secs),
                delivered_ttl: Duration::from_secs(settings.events.delivered_ttl_secs),
                max_len: settings.events.max_len,
                follow_idle_timeout: Duration::from_secs(settings.events.follow_idle_timeout_secs),
                max_followers: settings.events.max_followers,
                per_slot_readers: settings.events.per_slot_readers,
                ..EventStoreSettings::default()
            },
            &state.jobs,
        )),
        _ => None,
    };
    if let Some(events) = &events {
        events.register_metrics(&state.metrics);
    }
    let lease = holder_lease(state);
    let manager = Arc::new(ReplicatedSessionManager::new(
        session_config,
        events.clone(),
        state.sessions.clone(),
        state.metrics.clone(),
        lease.clone(),
        state.shutdown.clone(),
    ));
    // Added before the keeper, so it stops after it: the mark goes last.
    Liveness::new(
        state.holder.clone(),
        state.sessions.clone(),
        state.metrics.clone(),
    )
    .start(&state.jobs);
    LeaseKeeper::new(
        lease.clone(),
        state.sessions.clone(),
        manager.clone(),
        state.metrics.clone(),
    )
    .start(
        (lease.ttl / 3).max(Duration::from_millis(100)),
        state.bus.as_ref(),
        state.shutdown.clone(),
        &state.jobs,
    );

    let server = &settings.server;
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(server.sse_keep_alive_secs)))
        .with_sse_retry(Some(Duration::from_secs(1)))
        .with_max_request_body_bytes(server.max_body_bytes)
        // A 2026-07-28 call whose handler sends nothing before its result is answered
        // with one JSON body rather than an SSE stream (rmcp falls back to SSE as soon
        // as a handler emits progress or a request first).
        .with_json_response(true)
        .with_cancellation_token(state.mcp_shutdown.clone());
    if !server.allowed_hosts.is_empty() {
        config = config.with_allowed_hosts(server.allowed_hosts.clone());
    }
    // Origin is always checked (the spec requires it): an empty list accepts no
    // browser origin at all, rather than every one.
    config = config.with_allowed_origins(server.allowed_origins.clone());
    if server.allowed_origins.is_empty() {
        config = config.enforce_origin_validation();
    }
    let restores = Restores::default();
    config.session_store = Some(Arc::new(TransportStore::new(restores.clone())));
    let service = StreamableHttpService::new(move || Ok(factory()), manager.clone(), config);
    let hosts = {
        let service = service.clone();
        edge::HostCheck::new(move |probe| {
            let service = service.clone();
            Box::pin(async move { service.handle(probe).await.map(axum::body::Body::new) })
        })
    };

    let edge = Edge::new(mcp, manager, restores, lease, events, hosts);
    Router::new()
        .fallback_service(service)
        .layer(axum::middleware::from_fn_with_state(edge, edge::edge))
}

/// This replica's claim on the 2025-era sessions it holds, renewed by the lease keeper.
pub(crate) fn holder_lease(state: &AppState) -> Lease {
    Lease {
        holder: state.holder.clone(),
        ttl: state.settings.session.lease(),
    }
}
