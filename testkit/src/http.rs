//! Raw HTTP to a replica's `/mcp`, for what a client library would not send and for load
//! without one: hand-built 2026-07-28 calls and 2025-11-25 sessions, odd bodies and
//! headers, and a reader for either reply form.

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// The per-request `_meta` of a 2026-07-28 request.
pub fn meta_2026() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"}
    })
}

/// A POST of `body` as it is to `/mcp`, accepting both reply forms.
pub fn post_body(client: &Client, url: &str, body: impl Into<reqwest::Body>) -> RequestBuilder {
    client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(body)
}

/// A JSON POST to `/mcp` that accepts both reply forms.
pub fn post_json(client: &Client, url: &str, body: &Value) -> RequestBuilder {
    post_body(client, url, body.to_string())
}

/// A raw 2026-07-28 `tools/call` (body `_meta` and the standard headers), ready to send.
pub fn tools_call_2026(client: &Client, url: &str, tool: &str, args: Value) -> RequestBuilder {
    tools_call_2026_with_meta(client, url, tool, args, meta_2026())
}

/// [`tools_call_2026`] with the body `_meta` given, e.g. [`meta_2026`] plus a
/// `progressToken`.
pub fn tools_call_2026_with_meta(
    client: &Client,
    url: &str,
    tool: &str,
    args: Value,
    meta: Value,
) -> RequestBuilder {
    let params = json!({"name": tool, "arguments": args, "_meta": meta});
    tools_call_2026_params(client, url, params)
}

/// A raw 2026-07-28 `tools/call` of `tool` with `extra` params (`inputResponses`,
/// `requestState`); its JSON-RPC reply.
pub async fn mrtr_call(url: &str, tool: &str, extra: Value) -> Value {
    let mut params = json!({"name": tool, "arguments": {}, "_meta": meta_2026()});
    params
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let response = tools_call_2026_params(&Client::new(), url, params)
        .send()
        .await
        .unwrap();
    read_reply(response).await.1
}

/// A raw 2026-07-28 `subscriptions/listen` with request id `id` for `notifications`
/// (a `SubscriptionFilter`), sent: the response streams its events.
pub async fn listen_2026(url: &str, id: u64, notifications: Value) -> reqwest::Response {
    listen_2026_with(&Client::new(), url, id, notifications).await
}

/// [`listen_2026`] with `client` (e.g. a [`bearer_client`]).
pub async fn listen_2026_with(
    client: &Client,
    url: &str,
    id: u64,
    notifications: Value,
) -> reqwest::Response {
    let params = json!({"_meta": meta_2026(), "notifications": notifications});
    let body =
        json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": params});
    post_json(client, url, &body)
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "subscriptions/listen")
        .send()
        .await
        .unwrap()
}

/// A raw 2026-07-28 `tools/call` with `params` as given (they name the tool and carry
/// the `_meta`, and may add `idempotencyKey`, `inputResponses`, `requestState`, ...),
/// with the standard headers, ready to send.
pub fn tools_call_2026_params(client: &Client, url: &str, params: Value) -> RequestBuilder {
    let tool = params["name"].as_str().unwrap_or_default().to_owned();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
    post_json(client, url, &body)
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", tool)
}

/// A raw 2026-07-28 `prime_count` call for `limit` with the progress token `token`: the
/// progress keeps its response stream writing, so a dropped stream is noticed and
/// cancels the call.
pub fn prime_count_2026_with_progress(
    client: &Client,
    url: &str,
    limit: u64,
    token: &str,
) -> RequestBuilder {
    let mut meta = meta_2026();
    meta["progressToken"] = json!(token);
    tools_call_2026_with_meta(client, url, "prime_count", json!({"limit": limit}), meta)
}

/// The status and JSON-RPC message of a reply: the last JSON `data:` line of an SSE body,
/// or a JSON body, or `{"raw": text}`.
pub async fn read_reply(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = text
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or(json!({"raw": text}));
    (status, message)
}

/// Reads a reply that must be HTTP 400 with the JSON-RPC error `code`; its message.
pub async fn expect_jsonrpc_error(response: reqwest::Response, code: i64) -> String {
    let (status, msg) = read_reply(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
    assert_eq!(msg["error"]["code"], code, "{msg}");
    msg["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The text of the first content block of a raw reply's tool result.
pub fn tool_text(msg: &Value) -> String {
    msg["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// One 2026-07-28 `tools/call`: the structured content of a successful result; `Err`
/// describes any failure (transport, HTTP status, JSON-RPC error or tool error).
pub async fn call_2026(
    client: &Client,
    url: &str,
    tool: &str,
    args: Value,
) -> Result<Value, String> {
    call_2026_keyed(client, url, tool, args, None).await
}

/// [`call_2026`] with an `idempotencyKey` when `key` is given.
pub async fn call_2026_keyed(
    client: &Client,
    url: &str,
    tool: &str,
    args: Value,
    key: Option<&str>,
) -> Result<Value, String> {
    let mut params = json!({"name": tool, "arguments": args, "_meta": meta_2026()});
    if let Some(key) = key {
        params["idempotencyKey"] = json!(key);
    }
    let response = tools_call_2026_params(client, url, params).send().await;
    tool_result(response).await
}

/// A `tools/call` of `tool` in the 2025-11-25 session `session` with JSON-RPC id `id`
/// and an `idempotencyKey` when `key` is given: the structured content of a successful
/// result; `Err` as [`call_2026`].
pub async fn call_2025_keyed(
    client: &Client,
    url: &str,
    session: &str,
    id: u64,
    tool: &str,
    args: Value,
    key: Option<&str>,
) -> Result<Value, String> {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(key) = key {
        params["idempotencyKey"] = json!(key);
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
    let response = legacy_post(client, url, session, &body).send().await;
    tool_result(response).await
}

/// The structured content of a sent `tools/call`'s successful result; `Err` describes
/// any failure (transport, HTTP status, JSON-RPC error or tool error).
async fn tool_result(response: reqwest::Result<reqwest::Response>) -> Result<Value, String> {
    let response = response.map_err(|e| format!("send: {e}"))?;
    match read_reply(response).await {
        (status, message) if status.is_success() => match message.get("result") {
            Some(result) if result["isError"] != true => Ok(result["structuredContent"].clone()),
            _ => Err(format!("error reply: {message}")),
        },
        (status, message) => Err(format!("HTTP {status}: {message}")),
    }
}

/// Calls `session_create` over raw 2026-07-28 HTTP and returns the new handle.
pub async fn create_handle(client: &Client, url: &str) -> String {
    call_2026(client, url, "session_create", json!({}))
        .await
        .unwrap()["session_id"]
        .as_str()
        .expect("session_create returns a session_id")
        .to_owned()
}

/// A 2025-11-25 `initialize` request from a client called `client_name`.
pub fn initialize_2025(client_name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": client_name, "version": "1"}}})
}

/// An HTTP client that sends `Authorization: Bearer <token>` with every request.
pub fn bearer_client(token: &str) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    Client::builder().default_headers(headers).build().unwrap()
}

/// Initializes a 2025-11-25 session by hand (no client library) and returns its id.
pub async fn legacy_session(url: &str) -> String {
    legacy_session_with(&Client::new(), url).await
}

/// [`legacy_session`] with `client` (e.g. a [`bearer_client`]).
pub async fn legacy_session_with(client: &Client, url: &str) -> String {
    legacy_session_as(client, url, "raw-test").await
}

/// [`legacy_session_with`] from a client called `client_name` (which the stored
/// `initialize` parameters carry).
pub async fn legacy_session_as(client: &Client, url: &str, client_name: &str) -> String {
    let client = client.clone();
    let response = post_json(&client, url, &initialize_2025(client_name))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let id = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.text().await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = legacy_post(&client, url, &id, &initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    id
}

/// An HTTP DELETE of the 2025-11-25 session `session`.
pub fn legacy_delete(client: &Client, url: &str, session: &str) -> RequestBuilder {
    client
        .delete(url)
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-11-25")
}

/// The GET stream of the 2025-11-25 session `session`.
pub fn legacy_get(client: &Client, url: &str, session: &str) -> RequestBuilder {
    client
        .get(url)
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-11-25")
}

/// A POST in the 2025-11-25 session `session`.
pub fn legacy_post(client: &Client, url: &str, session: &str, body: &Value) -> RequestBuilder {
    post_json(client, url, body)
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-11-25")
}
