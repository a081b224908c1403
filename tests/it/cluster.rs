//! Replicas on port 0 over one Redis, a round-robin TCP hop in front of them, and MCP
//! clients of both protocol eras.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion},
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use stateful_mcp::{config::Settings, startup::Application};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// One running replica.
pub struct Replica {
    pub addr: SocketAddr,
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Replica {
    /// Starts a replica with the Redis backend on `redis_url` under `prefix`;
    /// `extra` are further `STATEFUL_MCP__*` overrides.
    pub async fn start(redis_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Self {
        let mut env = vec![
            (
                "STATEFUL_MCP__SERVER__BIND".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            (
                "STATEFUL_MCP__STORE__BACKEND".to_owned(),
                "redis".to_owned(),
            ),
            ("STATEFUL_MCP__REDIS__URL".to_owned(), redis_url.to_owned()),
            (
                "STATEFUL_MCP__REDIS__KEY_PREFIX".to_owned(),
                prefix.to_owned(),
            ),
            (
                "STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS".to_owned(),
                "2".to_owned(),
            ),
            // No balancer keeps idle connections to these replicas.
            (
                "STATEFUL_MCP__SERVER__KEEPALIVE_DRAIN_SECS".to_owned(),
                "0".to_owned(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::with_settings(Settings::load_with_env(None, env).unwrap()).await
    }

    /// Starts a replica from explicit settings.
    pub async fn with_settings(settings: Settings) -> Self {
        let app = Application::build(settings).await.unwrap();
        let addr = app.local_addr();
        let token = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            addr,
            token,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Graceful stop; returns once the replica has exited.
    pub async fn stop(&mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("replica stops within its drain timeout")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A round-robin TCP hop: each new connection goes to the next upstream that accepts
/// it (like nginx with `proxy_next_upstream error`). Counts connections per upstream.
pub struct RoundRobin {
    pub addr: SocketAddr,
    pub served: Arc<Vec<AtomicUsize>>,
    task: JoinHandle<()>,
}

impl RoundRobin {
    pub async fn start(upstreams: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served: Arc<Vec<AtomicUsize>> =
            Arc::new(upstreams.iter().map(|_| AtomicUsize::new(0)).collect());
        let counters = served.clone();
        let task = tokio::spawn(async move {
            let next = AtomicUsize::new(0);
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut chosen = None;
                for i in 0..upstreams.len() {
                    let idx = (start + i) % upstreams.len();
                    if let Ok(out) = tokio::net::TcpStream::connect(upstreams[idx]).await {
                        chosen = Some((idx, out));
                        break;
                    }
                }
                let Some((idx, mut outbound)) = chosen else {
                    continue;
                };
                counters[idx].fetch_add(1, Ordering::Relaxed);
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self { addr, served, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn served(&self) -> Vec<usize> {
        self.served
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP client that opens a new connection for every request, so a round-robin hop
/// spreads consecutive requests over the replicas.
fn fresh_connection_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

pub type Client = RunningService<RoleClient, ClientConfig>;

/// A 2026-07-28 client (no transport session; state through handles).
pub async fn stateless_client(url: &str) -> Client {
    let transport = StreamableHttpClientTransport::with_client(
        fresh_connection_client(),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()),
    );
    ClientConfig::default()
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("2026-07-28 client starts")
}

/// A 2025-11-25 client (initialize handshake, `Mcp-Session-Id`).
pub async fn legacy_client(url: &str) -> Client {
    let transport = StreamableHttpClientTransport::with_client(
        fresh_connection_client(),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .expect("2025-era client initializes")
}

pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool} call failed: {e}"))
}

pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn structured(result: &CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or(json!(null))
}

/// The per-request `_meta` of a 2026-07-28 request.
pub fn meta_2026() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"}
    })
}

/// A JSON POST to `/mcp` that accepts both reply forms.
pub fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(body.to_string())
}

/// A raw 2026-07-28 `tools/call` (body `_meta` and the standard headers), ready to send.
pub fn tools_call_2026(
    client: &reqwest::Client,
    url: &str,
    tool: &str,
    args: Value,
) -> reqwest::RequestBuilder {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_meta": meta_2026()}});
    post_json(client, url, &body)
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", tool)
}

/// The status and JSON-RPC message of a reply: the last JSON `data:` line of an SSE body,
/// or a JSON body, or `{"raw": text}`.
pub async fn read_reply(response: reqwest::Response) -> (reqwest::StatusCode, Value) {
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

/// Initializes a 2025-11-25 session by hand (no client library) and returns its id.
pub async fn legacy_session(url: &str) -> String {
    let client = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "1"}}});
    let response = post_json(&client, url, &init).send().await.unwrap();
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

/// A POST in the 2025-11-25 session `session`.
pub fn legacy_post(
    client: &reqwest::Client,
    url: &str,
    session: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    post_json(client, url, body)
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-11-25")
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
