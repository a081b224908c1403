//! The HTTP surface: `/mcp` (rmcp's Streamable HTTP service), `/healthz` (liveness, no
//! Redis) and `/readyz` (Redis reachable when the backend is Redis, and not draining).

use std::time::Duration;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::{
    mcp::{
        server::StatefulServer,
        session_manager::{ReplicatedSessionManager, store_failure_status},
    },
    startup::AppState,
};

/// How long readiness waits for Redis before answering "not ready".
const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds the router of one replica.
pub fn router(state: AppState, session_manager: ReplicatedSessionManager) -> Router {
    let settings = &state.settings.server;
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(settings.sse_keep_alive_secs)))
        .with_max_request_body_bytes(settings.max_body_bytes)
        .with_cancellation_token(state.mcp_shutdown.clone());
    config.sse_retry = Some(Duration::from_secs(1));
    if !settings.allowed_hosts.is_empty() {
        config = config.with_allowed_hosts(settings.allowed_hosts.clone());
    }
    if !settings.allowed_origins.is_empty() {
        config = config.with_allowed_origins(settings.allowed_origins.clone());
    }
    config.session_store = Some(std::sync::Arc::new(session_manager.restore_store()));
    let server = StatefulServer::new(state.sessions.clone());
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        std::sync::Arc::new(session_manager),
        config,
    );
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn(store_failure_status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining".to_owned());
    }
    let Some(pool) = &state.redis else {
        return (StatusCode::OK, "ready".to_owned());
    };
    match tokio::time::timeout(READINESS_TIMEOUT, pool.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready".to_owned()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis: no answer within 1s".to_owned(),
        ),
    }
}
