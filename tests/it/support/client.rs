//! MCP clients of both protocol eras (rmcp's client over streamable HTTP) and readers of
//! their tool results.

use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion},
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

/// A running rmcp client.
pub type Client = RunningService<RoleClient, ClientConfig>;

/// An HTTP client that opens a new connection for every request, so a round-robin hop
/// spreads consecutive requests over the replicas.
fn fresh_connection_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The streamable HTTP transport to `url`, one connection per request.
fn transport(url: &str) -> StreamableHttpClientTransport<reqwest::Client> {
    StreamableHttpClientTransport::with_client(
        fresh_connection_client(),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()),
    )
}

/// A 2026-07-28 client (no transport session; state through handles).
pub async fn stateless_client(url: &str) -> Client {
    ClientConfig::default()
        .serve_with_lifecycle(
            transport(url),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("2026-07-28 client starts")
}

/// A 2025-11-25 client (initialize handshake, `Mcp-Session-Id`).
pub async fn legacy_client(url: &str) -> Client {
    legacy_client_with(url, ClientConfig::default()).await
}

/// A 2025-11-25 client whose `handler` answers the server's requests (sampling, ...).
pub async fn legacy_client_with<H: ClientHandler>(
    url: &str,
    handler: H,
) -> RunningService<RoleClient, H> {
    handler
        .serve(transport(url))
        .await
        .expect("2025-era client initializes")
}

/// Calls `tool` with the object `args`; `Err` is a protocol or transport failure.
pub async fn try_call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    let args = args.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
}

/// Calls `tool` with the object `args`; panics unless a result comes back.
pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    try_call(client, tool, args)
        .await
        .unwrap_or_else(|e| panic!("{tool} call failed: {e}"))
}

/// The text contents of a result, one line each.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The structured content of a result, `null` when there is none.
pub fn structured(result: &CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or(json!(null))
}

/// Calls `session_create` and returns the new handle.
pub async fn create_handle(client: &Client) -> String {
    let created = call(client, "session_create", json!({})).await;
    assert_ne!(created.is_error, Some(true), "{}", text(&created));
    structured(&created)["session_id"]
        .as_str()
        .expect("session_create returns a session_id")
        .to_owned()
}
