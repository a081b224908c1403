//! What the tests of the edge's steps build on: the edge of a memory-backed replica.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::SessionConfig;

use super::Edge;
use crate::{
    config::Settings,
    mcp::transport::{
        forward::Forwarder, session_manager::ReplicatedSessionManager, session_store::Restores,
    },
    sessions::Lease,
    state::AppState,
};

/// A memory-backed replica under the defaults and the `STATEFUL_MCP__*` pairs of `env`
/// (call it on a Tokio runtime: it starts background tasks).
pub(crate) fn state(env: &[(&str, &str)]) -> AppState {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    AppState::build(Settings::load_with_env(None, env).unwrap()).unwrap()
}

/// The edge of `state`, wired as [`crate::mcp::endpoint_with`] wires it, without the
/// event store (the memory backend has none).
pub(crate) fn edge(state: &AppState) -> Edge {
    let lease = Lease {
        holder: state.holder.clone(),
        ttl: state.settings.session.lease(),
    };
    let manager = Arc::new(ReplicatedSessionManager::new(
        SessionConfig::default(),
        None,
        state.sessions.clone(),
        state.metrics.clone(),
        lease.clone(),
        state.shutdown.clone(),
    ));
    Edge {
        auth: state.auth.clone(),
        rate_limit: state.rate_limit.clone(),
        sessions: state.sessions.clone(),
        metrics: state.metrics.clone(),
        manager,
        restores: Restores::default(),
        max_body: state.settings.server.max_body_bytes,
        lease,
        forwarder: Forwarder::new(&state.replica_id, state.mcp_shutdown.clone()),
        draining: state.shutdown.clone(),
        bus: state.bus.clone(),
        requests: state.requests.clone(),
        notifier: state.notifier.clone(),
        events: None,
    }
}
