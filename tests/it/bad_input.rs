//! Bad input gets a clear error and the server keeps serving.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    http::{
        expect_jsonrpc_error, initialize_2025, legacy_session, meta_2026, post_body, post_json,
        read_reply, tool_text, tools_call_2026, tools_call_2026_with_meta,
    },
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
};

/// A memory-backed replica that takes bodies of at most 4096 bytes.
async fn memory_replica() -> Replica {
    Replica::memory(&[("STATEFUL_MCP__SERVER__MAX_BODY_BYTES", "4096")]).await
}

/// POSTs a 2026-07-28 `tools/call` and returns the status and the JSON-RPC message.
async fn call_2026(url: &str, tool: &str, args: Value) -> (StatusCode, Value) {
    let response = tools_call_2026(&reqwest::Client::new(), url, tool, args)
        .send()
        .await
        .unwrap();
    read_reply(response).await
}

/// POSTs `body` as it is, with 2026-07-28 headers.
async fn post(url: &str, body: &str) -> (StatusCode, Value) {
    let response = post_body(&reqwest::Client::new(), url, body.to_owned())
        .header("MCP-Protocol-Version", "2026-07-28")
        .send()
        .await
        .unwrap();
    read_reply(response).await
}

async fn still_serves(url: &str) {
    let (status, msg) = call_2026(url, "session_create", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(msg["result"]["isError"], false, "{msg}");
}

#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let replica = memory_replica().await;
    let (status, msg) = post(&replica.url(), r#"{"jsonrpc":"2.0","id":1,"method":"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(msg["error"]["code"], -32700, "{msg}");
    let (status, msg) = post(&replica.url(), r#"{"hello":"world"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(msg["error"]["code"], -32600, "{msg}");
    still_serves(&replica.url()).await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let replica = memory_replica().await;
    let huge = "x".repeat(10_000);
    let (status, msg) = call_2026(
        &replica.url(),
        "history",
        json!({"operation": "add", "command": huge}),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{msg}");
    assert!(msg["raw"].as_str().unwrap().contains("4096"), "{msg}");
    still_serves(&replica.url()).await;
}

#[tokio::test]
async fn wrong_arguments_and_unknown_names_are_explained() {
    let replica = memory_replica().await;
    let url = replica.url();
    let (_, created) = call_2026(&url, "session_create", json!({})).await;
    let id = created["result"]["structuredContent"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (_, msg) = call_2026(
        &url,
        "counter",
        json!({"operation": "multiply", "session_id": id}),
    )
    .await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    assert!(
        tool_text(&msg).contains("unknown variant `multiply`"),
        "{msg}"
    );

    let (_, msg) = call_2026(
        &url,
        "counter",
        json!({"operation": "increment", "step": "two", "session_id": id}),
    )
    .await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    assert!(tool_text(&msg).contains("invalid type"), "{msg}");

    let (_, msg) = call_2026(
        &url,
        "history",
        json!({"operation": "add", "session_id": id}),
    )
    .await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    assert!(
        tool_text(&msg).contains("requires a non-empty `command`"),
        "{msg}"
    );

    let (_, msg) = call_2026(&url, "no_such_tool", json!({})).await;
    assert_eq!(msg["error"]["code"], -32602, "{msg}");
    assert!(
        msg["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool `no_such_tool`"),
        "{msg}"
    );

    let (_, msg) = call_2026(
        &url,
        "counter",
        json!({"operation": "get", "session_id": "0123456789abcdef0123456789abcdef01234567"}),
    )
    .await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    assert!(tool_text(&msg).contains("unknown or has expired"), "{msg}");
    assert!(tool_text(&msg).contains("session_create"), "{msg}");

    let (_, msg) = call_2026(
        &url,
        "counter",
        json!({"operation": "get", "session_id": "../../etc"}),
    )
    .await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");

    let (_, msg) = call_2026(
        &url,
        "counter",
        json!({"operation": "increment", "step": i64::MAX, "session_id": id}),
    )
    .await;
    assert_eq!(msg["result"]["isError"], false, "{msg}");
    let (_, msg) = call_2026(
        &url,
        "counter",
        json!({"operation": "increment", "session_id": id}),
    )
    .await;
    assert!(tool_text(&msg).contains("overflow"), "{msg}");
    let (_, msg) = call_2026(
        &url,
        "counter",
        json!({"operation": "get", "session_id": id}),
    )
    .await;
    assert_eq!(
        msg["result"]["structuredContent"]["value"],
        i64::MAX,
        "{msg}"
    );
    still_serves(&url).await;
}

#[tokio::test]
async fn foreign_hosts_are_refused() {
    let replica = memory_replica().await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let resp = post_body(&reqwest::Client::new(), &replica.url(), ping)
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    still_serves(&replica.url()).await;
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_refused_with_429() {
    let replica =
        Replica::memory(&[("STATEFUL_MCP__SESSION__MAX_SESSIONS_PER_PRINCIPAL", "1")]).await;
    legacy_session(&replica.url()).await;
    let init = initialize_2025("second");
    let refused = post_json(&reqwest::Client::new(), &replica.url(), &init)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("maximum number of live sessions")
    );
    // 2026-07-28 handles count against the same limit and say so in the tool result.
    let (_, msg) = call_2026(&replica.url(), "session_create", json!({})).await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    assert!(
        tool_text(&msg).contains("maximum of 1 live sessions"),
        "{msg}"
    );
}

#[tokio::test]
async fn deeply_nested_bodies_are_refused_and_the_server_survives() {
    let replica = memory_replica().await;
    for depth in [200, 1_500] {
        let args = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"counter","arguments":{{"operation":"get","x":{args}}}}}}}"#
        );
        let response = post_body(&reqwest::Client::new(), &replica.url(), body)
            .header("MCP-Protocol-Version", "2026-07-28")
            .send()
            .await
            .unwrap();
        // Valid JSON, but deeper than any MCP message: an invalid request.
        let message = expect_jsonrpc_error(response, -32600).await;
        assert!(message.contains("recursion limit"), "{message}");
    }
    still_serves(&replica.url()).await;
}

#[tokio::test]
async fn oversized_client_metadata_is_refused_and_not_stored() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("metadata-edge");
    let replica = Replica::start(
        redis.url(),
        &prefix,
        &[("STATEFUL_MCP__SESSION__MAX_CLIENT_METADATA_BYTES", "1024")],
    )
    .await;
    let url = replica.url();
    let stored_sessions = || async {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*:session"))
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        keys.len()
    };

    // A 2025-era `initialize` whose clientInfo is too large: 400 with -32602, no session.
    let mut init = initialize_2025("big");
    init["params"]["clientInfo"]["description"] = json!("d".repeat(2000));
    let response = post_json(&reqwest::Client::new(), &url, &init)
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("mcp-session-id").is_none());
    let message = expect_jsonrpc_error(response, -32602).await;
    assert!(message.contains("1024 bytes"), "{message}");
    assert_eq!(stored_sessions().await, 0);

    // A 2026-07-28 `session_create` whose clientInfo is too large: an error result.
    let mut meta = meta_2026();
    meta["io.modelcontextprotocol/clientInfo"]["description"] = json!("d".repeat(2000));
    let response = tools_call_2026_with_meta(
        &reqwest::Client::new(),
        &url,
        "session_create",
        json!({}),
        meta,
    )
    .send()
    .await
    .unwrap();
    let (status, msg) = read_reply(response).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    assert!(tool_text(&msg).contains("limit of 1024 bytes"), "{msg}");
    assert_eq!(stored_sessions().await, 0);

    // Ordinary clients are not affected.
    legacy_session(&url).await;
    still_serves(&url).await;
    assert_eq!(stored_sessions().await, 2);
}
