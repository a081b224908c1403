//! The steps composed: the order in which they refuse, what reaches rmcp, and what is
//! counted. rmcp is stood in for by a handler that says what it was handed.

use std::sync::Arc;

use axum::{Router, body::Body, extract::Request, response::IntoResponse};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Edge, fixture};
use crate::{
    auth::Principal,
    mcp::{
        error::{EdgeError, RefusalSlot},
        extensions::{Deadline, IdempotencyKey, TransportSession},
        transport::forward::DEADLINE_HEADER,
    },
    sessions::NewSession,
    state::AppState,
};

/// The header that tells the stand-in for rmcp how to answer.
const ANSWER: &str = "x-test-answer";

/// rmcp's stand-in: answers 500 with a refusal in the slot, or 415, when asked to; else
/// 200 with what the edge put in the request's extensions.
async fn rmcp(request: Request) -> axum::response::Response {
    let extensions = request.extensions();
    match request.headers().get(ANSWER).map(|v| v.as_bytes()) {
        Some(b"refuse") => {
            let slot = extensions.get::<RefusalSlot>().unwrap();
            slot.set(EdgeError::TooManySessions);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Some(b"415") => StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
        _ => axum::Json(json!({
            "principal": extensions.get::<Principal>().map(Principal::as_str),
            "session": extensions.get::<TransportSession>().map(|s| &s.0),
            "key": extensions.get::<IdempotencyKey>().map(|k| &k.0),
            "slot": extensions.get::<RefusalSlot>().is_some(),
            "deadline_ms": extensions.get::<Deadline>().map(|d| d.remaining().as_millis()),
        }))
        .into_response(),
    }
}

fn app(edge: Edge) -> Router {
    Router::new()
        .fallback(rmcp)
        .layer(axum::middleware::from_fn_with_state(edge, super::edge))
}

/// A JSON POST to `/mcp`.
fn post() -> http::request::Builder {
    Request::post("/mcp").header(header::CONTENT_TYPE, "application/json")
}

/// A 2026-07-28 `tools/call` with an idempotency key.
fn stateless_call() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "counter", "idempotencyKey": "k-1", "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string()
}

async fn send(app: &Router, request: http::Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The requests counted under `method` so far.
fn counted(state: &AppState, method: &str) -> u64 {
    let label = format!("method=\"{method}\"");
    state
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with("stateful_mcp_mcp_requests_total{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn each_step_refuses_before_the_next_runs() {
    let mut state = fixture::state(&[
        ("STATEFUL_MCP__SERVER__MAX_BODY_BYTES", "512"),
        ("STATEFUL_MCP__RATE_LIMIT__REQUESTS_PER_SEC", "1"),
        ("STATEFUL_MCP__RATE_LIMIT__BURST", "1"),
    ]);
    let (auth, _keys) = fixture::api_key_auth();
    state.auth = Arc::new(auth);
    let app = app(fixture::edge(&state));
    let (key, name) = fixture::API_KEY;
    let bearer = format!("Bearer {key}");
    let signed = || post().header(header::AUTHORIZATION, &bearer);

    let too_large = "x".repeat(1000);
    let (status, _) = send(&app, post().body(too_large.clone().into()).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "authenticate, then decode"
    );
    let (status, _) = send(&app, signed().body(too_large.into()).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = send(&app, signed().body("{".into()).unwrap()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!(-32700))
    );

    let unknown = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let request = signed()
        .header("mcp-session-id", crate::ids::mint())
        .body(unknown.into())
        .unwrap();
    let (status, _) = send(&app, request).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "routed before the rate limit"
    );

    let (status, seen) = send(&app, signed().body(stateless_call().into()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let deadline_ms = seen["deadline_ms"].as_u64().expect("a deadline");
    assert!((1..=3000).contains(&deadline_ms), "{seen}");
    assert_eq!(
        seen,
        json!({"principal": name, "session": null, "key": "k-1", "slot": true,
            "deadline_ms": deadline_ms})
    );
    let (status, _) = send(&app, signed().body(stateless_call().into()).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the budget was spent"
    );

    assert_eq!(counted(&state, "invalid"), 2, "413 and -32700");
    assert_eq!(counted(&state, "ping"), 1);
    assert_eq!(counted(&state, "tools/call"), 2);
}

#[tokio::test]
async fn what_rmcp_reports_or_cannot_read_is_answered_by_the_edge() {
    let state = fixture::state(&[]);
    let app = app(fixture::edge(&state));
    let refused = post()
        .header(ANSWER, "refuse")
        .body(stateless_call().into())
        .unwrap();
    let (status, _) = send(&app, refused).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let unreadable = post()
        .header(ANSWER, "415")
        .body(stateless_call().into())
        .unwrap();
    let (status, body) = send(&app, unreadable).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!(-32600))
    );
    assert_eq!(counted(&state, "invalid"), 1);
    assert_eq!(counted(&state, "tools/call"), 1);

    let not_json = Request::post("/mcp")
        .header(header::CONTENT_TYPE, "text/plain")
        .header(ANSWER, "415")
        .body(Body::from("hello"))
        .unwrap();
    let (status, _) = send(&app, not_json).await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "rmcp's own answer"
    );
}

#[tokio::test]
async fn a_session_held_here_reaches_rmcp_confirmed_and_a_delete_ends_it() {
    let state = fixture::state(&[]);
    let app = app(fixture::edge(&state));
    let new = NewSession {
        principal: Principal::anonymous().as_str().into(),
        transport: Some(json!({"initialize": {}})),
        ..NewSession::default()
    };
    let id = state.sessions.create(new).await.unwrap().id;
    let with_session = |method: Method| {
        Request::builder()
            .method(method)
            .uri("/mcp")
            .header("mcp-session-id", &id)
            .body(Body::empty())
            .unwrap()
    };

    let (status, seen) = send(&app, with_session(Method::GET)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["session"], json!(id));
    let (status, _) = send(&app, with_session(Method::DELETE)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(&app, with_session(Method::GET)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_response_is_in_flight_until_read_and_a_get_stream_never_is() {
    let state = fixture::state(&[]);
    let app = app(fixture::edge(&state));
    let response = app
        .clone()
        .oneshot(post().body(Body::from(stateless_call())).unwrap())
        .await
        .unwrap();
    assert_eq!(state.requests.len(), 1, "answered, not yet read");
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(state.requests.is_empty());

    let get = Request::get("/mcp").body(Body::empty()).unwrap();
    let _stream = app.oneshot(get).await.unwrap();
    assert!(state.requests.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_request_s_deadline_is_the_replica_s_budget_or_what_its_forwarder_had_left() {
    let state = fixture::state(&[("STATEFUL_MCP__SERVER__REQUEST_DEADLINE_MS", "2000")]);
    let app = app(fixture::edge(&state));
    let deadline_ms = async |forwarded: Option<&str>| {
        let mut request = post();
        if let Some(left) = forwarded {
            request = request.header(DEADLINE_HEADER, left);
        }
        let (status, seen) = send(&app, request.body(stateless_call().into()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{seen}");
        seen["deadline_ms"].as_u64().expect("a deadline")
    };
    assert_eq!(deadline_ms(None).await, 2000);
    assert_eq!(deadline_ms(Some("250")).await, 250);
    assert_eq!(deadline_ms(Some("90000")).await, 2000, "never longer");
    assert_eq!(deadline_ms(Some("soon")).await, 2000, "not a number");
}
