//! The HTTP surface: `/mcp` (mounted from [`crate::mcp::endpoint`]), `/healthz`
//! (liveness, no Redis; says which release answers), `/readyz` (Redis reachable when the backend is Redis, and not
//! draining) and `/metrics`; request ids and spans; `Connection: close` while draining.

use std::time::Duration;

use axum::{
    Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use crate::{
    mcp::McpState,
    state::AppState,
    telemetry::{OTEL_TARGET, RequestId, propagation},
};

/// How long readiness waits for Redis before answering "not ready".
const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds the router of one replica: `/mcp` from [`crate::mcp::endpoint`], the health
/// endpoints, the drain's `Connection: close`, and a span per request.
pub fn router(mcp: &McpState) -> Router {
    router_with(mcp.app.clone(), crate::mcp::endpoint(mcp))
}

/// [`router`] with `mcp` mounted at `/mcp` (e.g. [`crate::mcp::endpoint_with`] over
/// another handler).
pub fn router_with(state: AppState, mcp: Router) -> Router {
    Router::new()
        .nest_service("/mcp", mcp)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/readyz", get(readyz))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(resource_metadata),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.shutdown.clone(),
            request_frame,
        ))
        .with_state(state)
}

/// Gives every request an id (echoed in `x-request-id`) and a debug-level span (request
/// id, method, path, MCP session fingerprint), so with `debug` on each line of the
/// request carries them and its outcome is logged; the default filter creates no span,
/// whose fields would otherwise be formatted on every request. While the replica drains
/// (`draining` fired), asks every client to close its connection after the response, so
/// balancers stop reusing connections to a replica that is going away.
async fn request_frame(
    State(draining): State<CancellationToken>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = RequestId::from_header(
        request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
    );
    let span = tracing::debug_span!(
        "request",
        request_id = %id.0,
        http_method = %request.method(),
        path = %request.uri().path(),
        mcp_session_id = tracing::field::Empty,
        mcp_method = tracing::field::Empty,
        session_id = tracing::field::Empty,
    );
    if !span.is_disabled()
        && let Some(session) = request
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| crate::ids::is_well_formed(v))
    {
        span.record("mcp_session_id", crate::ids::fingerprint(session));
    }
    let value = http::HeaderValue::from_str(&id.0).ok();
    request.extensions_mut().insert(id);
    let started = std::time::Instant::now();
    let server = server_span(&request);
    let mut response = next
        .run(request)
        .instrument(server.clone())
        .instrument(span.clone())
        .await;
    if !server.is_disabled() {
        let status = response.status();
        server.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            server.record("otel.status_code", "ERROR");
        }
    }
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "request answered"
        );
    });
    if let Some(value) = value {
        response.headers_mut().insert("x-request-id", value);
    }
    if draining.is_cancelled() {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The exported span of an `/mcp` request (OpenTelemetry's HTTP server span; disabled
/// while traces are not exported, and for the other paths, which probes and scrapers
/// call all the time): a child of the `traceparent` its headers carry, if any. The
/// edge gives it the parent of the request's `_meta` instead, once the body is read.
fn server_span(request: &Request) -> tracing::Span {
    if !request.uri().path().starts_with("/mcp") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: OTEL_TARGET,
        "http.server",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = tracing::field::Empty,
        http.route = "/mcp",
        http.response.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    // Only the methods the endpoint serves: another is any token a client chose.
    let (method, name) = match *request.method() {
        http::Method::POST => ("POST", "POST /mcp"),
        http::Method::GET => ("GET", "GET /mcp"),
        http::Method::DELETE => ("DELETE", "DELETE /mcp"),
        _ => ("_OTHER", "HTTP /mcp"),
    };
    span.record("otel.name", name);
    span.record("http.request.method", method);
    if let Some(parent) = propagation::from_headers(request.headers()) {
        propagation::set_parent(&span, parent);
    }
    span
}

/// `/metrics`: renders every figure in the Prometheus text format. A scrape costs
/// Redis nothing: the figures that need it (live sessions) are refreshed by the session
/// maintenance round, so scraping, which needs no credentials, cannot make Redis work
/// in proportion to the sessions.
async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// RFC 9728 protected-resource metadata (404 while authentication is off).
async fn resource_metadata(State(state): State<AppState>) -> Response {
    match state.auth.metadata() {
        Some(metadata) => axum::Json(metadata.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Liveness: 200 with `{"status":"ok","version":...}`, the release that answers (during
/// a rolling upgrade, which replicas already run the new one). Probes read the status only.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok", "version": crate::VERSION}))
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
        Ok(Err(e)) => {
            // The detail is for the logs: it can name hosts and users.
            tracing::warn!(error = %e, "not ready: redis unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "redis unreachable".to_owned(),
            )
        }
        Err(_) => {
            tracing::warn!("not ready: redis did not answer within 1s");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "redis unreachable".to_owned(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn healthz_names_the_release() {
        let response = healthz().await.into_response();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    }
}
