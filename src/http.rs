//! The HTTP surface: `/mcp` (rmcp's Streamable HTTP service), `/healthz` (liveness, no
//! Redis) and `/readyz` (Redis reachable when the backend is Redis, and not draining).

use std::time::Duration;

use axum::{
    Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tracing::Instrument;

use crate::{
    mcp::{
        server::StatefulServer,
        session_manager::{ReplicatedSessionManager, store_failure_status},
    },
    metrics::Metrics,
    startup::AppState,
    telemetry::RequestId,
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
    let server = StatefulServer::new(
        state.sessions.clone(),
        state.calls.clone(),
        state.cache.clone(),
        state.metrics.clone(),
        state.settings.tools.clone(),
    );
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        std::sync::Arc::new(session_manager),
        config,
    );
    let max_body = settings.max_body_bytes;
    let metrics = state.metrics.clone();
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn(store_failure_status))
        .layer(axum::middleware::from_fn(move |req, next| {
            jsonrpc_guard(max_body, metrics.clone(), req, next)
        }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            close_when_draining,
        ))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// Gives every request an id and a span (request id, method, path, MCP session), so
/// each log line of the request carries them, and logs its outcome.
async fn request_span(mut request: Request, next: Next) -> Response {
    let id = RequestId::from_header(
        request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
    );
    let mcp_session = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| crate::ids::is_well_formed(v))
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        http_method = %request.method(),
        path = %request.uri().path(),
        mcp_session_id = %mcp_session,
        mcp_method = tracing::field::Empty,
        session_id = tracing::field::Empty,
    );
    request.extensions_mut().insert(id.clone());
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "request answered"
        );
    });
    if let Ok(value) = http::HeaderValue::from_str(&id.0) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// While draining, asks every client to close its connection after this response, so
/// balancers stop reusing connections to a replica that is going away.
async fn close_when_draining(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if state.shutdown.is_cancelled() {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Answers malformed JSON-RPC POST bodies the JSON-RPC way (HTTP 400 with a `-32700`
/// parse error or a `-32600` invalid request naming the problem) and oversized ones with
/// 413, before rmcp, which would answer both with a bare 415.
async fn jsonrpc_guard(
    max_body: usize,
    metrics: Metrics,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let is_json_post = request.method() == http::Method::POST
        && request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json_post {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, max_body).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload Too Large: request bodies are limited to {max_body} bytes"),
            )
                .into_response();
        }
    };
    let mut method = String::from("invalid");
    let rejection = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(e) => Some((-32700, format!("Parse error: {e}"))),
        Ok(value) => {
            method = match value.get("method").and_then(|m| m.as_str()) {
                Some(m) if m.len() <= 64 => m.to_owned(),
                Some(_) => "invalid".to_owned(),
                None => "response".to_owned(),
            };
            let span = tracing::Span::current();
            span.record("mcp_method", method.as_str());
            if let Some(handle) = value
                .pointer("/params/arguments/session_id")
                .and_then(|v| v.as_str())
                .filter(|v| crate::ids::is_well_formed(v))
            {
                span.record("session_id", handle);
            }
            serde_json::from_value::<ClientJsonRpcMessage>(value)
                .err()
                .map(|e| (-32600, format!("Invalid Request: {e}")))
        }
    };
    if let Some((code, message)) = rejection {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": code, "message": message},
        });
        metrics.observe_request("invalid", started);
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    metrics.observe_request(&method, started);
    response
}

/// `/metrics`: refreshes the figures that need Redis (bounded by the readiness
/// timeout), then renders everything in the Prometheus text format.
async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(Ok(stats)) = tokio::time::timeout(READINESS_TIMEOUT, state.sessions.stats()).await {
        state
            .metrics
            .sessions_active
            .set(i64::try_from(stats.total).unwrap_or(i64::MAX));
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
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
