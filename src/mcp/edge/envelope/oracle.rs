//! The one oracle of a message's era: rmcp's Streamable HTTP service itself. Each
//! generated message is posted to a bare rmcp service naming a transport session it does
//! not have; rmcp answers "session not found" exactly when it routes the message into
//! the session named by `Mcp-Session-Id`, and serves it (or refuses it for other
//! reasons) when it does not. The envelope's [`Envelope::legacy`] must say the same for
//! every message both accept: that is what keeps the edge's owner check and rmcp's
//! routing one decision.

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use serde_json::{Map, Value, json};

use super::Envelope;
use crate::mcp::edge::fixture::bare_service;

/// How rmcp treated a message.
#[derive(Debug, PartialEq, Eq)]
enum Rmcp {
    /// Routed into the transport session its header names.
    Session,
    /// Served without a transport session.
    Stateless,
    /// Refused before its era mattered (headers, shape, size).
    Refused,
}

/// Posts `body` (with `header` as `MCP-Protocol-Version`) to a bare rmcp service naming
/// an unknown transport session.
async fn rmcp_view(body: &str, header: Option<&str>) -> Rmcp {
    let service = bare_service(StreamableHttpServerConfig::default().with_json_response(true));
    let mut request = http::Request::post("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-session-id", "an-unknown-session");
    if let Some(version) = header {
        request = request.header("mcp-protocol-version", version);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = service.handle(request).await;
    let status = response.status();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    if status == http::StatusCode::NOT_FOUND && text.as_ref() == b"Not Found: Session not found" {
        Rmcp::Session
    } else if status.is_success() {
        Rmcp::Stateless
    } else {
        Rmcp::Refused
    }
}

fn version() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("2024-11-05")),
        Just(json!("2025-03-26")),
        Just(json!("2025-06-18")),
        Just(json!("2025-11-25")),
        Just(json!("2026-07-28")),
        Just(json!("2027-01-01")),
        Just(json!("")),
        Just(json!(5)),
        Just(Value::Null),
    ]
}

fn capabilities() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!({"roots": 5})),
        Just(json!({"roots": {}})),
        Just(json!({"roots": {"listChanged": true}})),
        Just(json!({"roots": {"listChanged": "yes"}})),
        Just(json!({"sampling": {}, "elicitation": {}})),
        Just(json!({"sampling": []})),
        Just(json!({"experimental": 5})),
        Just(json!({"unknown": 5})),
        Just(json!([])),
        Just(json!("x")),
        Just(json!(5)),
        Just(Value::Null),
    ]
}

/// `_meta`: absent, not an object, or an object with or without each signal.
fn meta() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!(5))),
        (
            proptest::option::of(version()),
            proptest::option::of(capabilities())
        )
            .prop_map(|(version, capabilities)| {
                let mut meta = Map::new();
                if let Some(v) = version {
                    meta.insert("io.modelcontextprotocol/protocolVersion".into(), v);
                }
                if let Some(c) = capabilities {
                    meta.insert("io.modelcontextprotocol/clientCapabilities".into(), c);
                }
                Some(Value::Object(meta))
            }),
    ]
}

/// A JSON-RPC message of any shape rmcp knows (and a few it refuses), with or without
/// `params._meta` (a response's stray `params` included).
fn message() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just("ping"),
        Just("tools/list"),
        Just("initialize"),
        Just("server/discover"),
        Just("x/custom"),
        Just("notifications/cancelled"),
        Just("notifications/initialized"),
    ];
    let shape = prop_oneof![
        Just("request"),
        Just("notification"),
        Just("response"),
        Just("error"),
        Just("request with result"),
    ];
    (method, shape, meta()).prop_map(|(method, shape, meta)| {
        let mut message = json!({"jsonrpc": "2.0"});
        match shape {
            "request" => {
                message["id"] = json!(1);
                message["method"] = json!(method);
            }
            "notification" => message["method"] = json!(method),
            "response" => {
                message["id"] = json!(1);
                message["result"] = json!({});
            }
            "error" => {
                message["id"] = json!(1);
                message["error"] = json!({"code": -1, "message": "no"});
            }
            _ => {
                message["id"] = json!(1);
                message["method"] = json!(method);
                message["result"] = json!({});
            }
        }
        let mut params = if method == "notifications/cancelled" {
            json!({"requestId": 7})
        } else if method == "initialize" {
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "oracle", "version": "1"}})
        } else {
            json!({})
        };
        if let Some(meta) = meta {
            params["_meta"] = meta;
            message["params"] = params;
        }
        message
    })
}

fn header() -> impl Strategy<Value = Option<&'static str>> {
    proptest::option::of(prop_oneof![
        Just("2025-03-26"),
        Just("2025-06-18"),
        Just("2025-11-25"),
        Just("2026-07-28"),
        Just("2027-01-01"),
    ])
}

/// Whether the message carries the body version as its header too (rmcp refuses a
/// request whose `_meta` version and header differ before its era matters).
fn matching_header(message: &Value) -> Option<&str> {
    message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"].as_str()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_edge_and_rmcp_see_every_message_in_the_same_era(
        message in message(),
        header in header(),
        echo in any::<bool>(),
    ) {
        let header = if echo { matching_header(&message).or(header) } else { header };
        let body = message.to_string();
        let Ok(envelope) = Envelope::parse(body.as_bytes(), header) else {
            // Refused at the edge: rmcp never sees it.
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let rmcp = runtime.block_on(rmcp_view(&body, header));
        match rmcp {
            Rmcp::Session => prop_assert!(envelope.legacy, "{body} {header:?}"),
            Rmcp::Stateless => prop_assert!(!envelope.legacy, "{body} {header:?}"),
            Rmcp::Refused => {}
        }
    }
}

/// The reproductions of the issue, named: each is a message rmcp routes into the
/// transport session its header names, which the edge once classified as 2026-07-28
/// and so never checked for its caller.
#[tokio::test]
async fn messages_rmcp_routes_into_a_session_are_2025_era_whatever_their_meta() {
    let cases = [
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2025-06-18",
                "io.modelcontextprotocol/clientCapabilities": {"roots": 5}}}}),
            "2025-06-18",
        ),
        (
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
                "requestId": 7, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}),
            "2025-11-25",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 0, "result": {"action": "accept"}, "params": {
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}),
            "2025-11-25",
        ),
    ];
    for (message, header) in cases {
        let body = message.to_string();
        assert_eq!(
            rmcp_view(&body, Some(header)).await,
            Rmcp::Session,
            "{body}"
        );
        let envelope = Envelope::parse(body.as_bytes(), Some(header)).unwrap();
        assert!(envelope.legacy, "{body}");
    }
}
