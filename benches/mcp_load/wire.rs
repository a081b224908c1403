//! HTTP for the load: one keep-alive HTTP/1.1 connection (hyper, `TCP_NODELAY`) per
//! worker, the requests of both protocol eras built once and stamped with an id per call,
//! and a reader that finds the JSON-RPC reply in a JSON or an SSE body.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};

/// The two protocol eras the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28: no transport session; a handle from `session_create` in the arguments.
    V2026,
    /// 2025-11-25: `initialize`, then calls in the `Mcp-Session-Id` session.
    V2025,
}

impl Era {
    /// `2026` or `2025`, as the scenario names and `--era` say it.
    pub fn label(self) -> &'static str {
        match self {
            Self::V2026 => "2026",
            Self::V2025 => "2025",
        }
    }
}

/// The `Authorization` header every request of the run carries, if any.
static BEARER: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();

/// Sends `Authorization: Bearer <token>` with every request of the run (the replicas
/// authenticate every call; the anchor ignores it). Only the first call counts.
pub fn set_bearer(token: &str) {
    let _ = BEARER.set(HeaderValue::from_str(&format!("Bearer {token}")).expect("token"));
}

/// An MCP endpoint: where to connect, and the `Host` and path to send.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    host: HeaderValue,
    path: Uri,
}

impl Endpoint {
    /// Parses `http://host:port/path` (loopback addresses and names that resolve).
    ///
    /// # Errors
    /// When the URL is not `http://` or its address does not resolve.
    pub fn parse(url: &str) -> Result<Arc<Self>, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Arc::new(Self {
            addr,
            host: HeaderValue::from_str(authority).map_err(|e| format!("{url}: {e}"))?,
            path: path.parse().map_err(|e| format!("{url}: {e}"))?,
        }))
    }
}

/// A reply: its status, headers and whole body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One keep-alive connection to an endpoint, opened on first use and again after an
/// error.
pub struct Conn {
    endpoint: Arc<Endpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `endpoint`, not yet open.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Self {
            endpoint,
            sender: None,
        }
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.endpoint.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.endpoint.addr))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// POSTs `body` with `headers` (which must include `Host`, see [`base_headers`]) and
    /// reads the whole reply. After an error the connection is opened afresh next time.
    ///
    /// # Errors
    /// A text naming what failed: connecting, sending, or reading the body.
    pub async fn post(&mut self, headers: &HeaderMap, body: Bytes) -> Result<Reply, String> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.open().await?,
        };
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.endpoint.path.clone();
        *request.headers_mut() = headers.clone();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        // Kept only once the whole exchange succeeded.
        self.sender = Some(sender);
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The endpoint's `Host` header, content negotiation and the run's bearer token
    /// ([`set_bearer`]), for `headers` to extend.
    pub fn base_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, self.endpoint.host.clone());
        if let Some(bearer) = BEARER.get() {
            headers.insert(header::AUTHORIZATION, bearer.clone());
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers
    }
}

/// The per-request `_meta` of a 2026-07-28 request.
fn meta_2026() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-load", "version": "1"}
    })
}

/// A `tools/call` built once: its headers and its body around the JSON-RPC id.
pub struct CallTemplate {
    headers: HeaderMap,
    /// `{"jsonrpc":"2.0","id":`
    head: &'static [u8],
    /// `,"method":"tools/call","params":{...}}`
    tail: Bytes,
}

impl CallTemplate {
    /// `counter` `increment` in `session` (a handle in 2026-07-28, the transport
    /// session in 2025-11-25) on `conn`'s endpoint.
    pub fn counter_increment(conn: &Conn, era: Era, session: &str) -> Self {
        Self::tool_call(
            conn,
            era,
            session,
            "counter",
            json!({"operation": "increment"}),
        )
    }

    /// `tool` with `args` in `session`; in 2026-07-28 the session is added to the
    /// arguments as `session_id` (when not empty), in 2025-11-25 it is the
    /// `Mcp-Session-Id`.
    pub fn tool_call(conn: &Conn, era: Era, session: &str, tool: &str, mut args: Value) -> Self {
        let mut headers = conn.base_headers();
        let params = match era {
            Era::V2026 => {
                if !session.is_empty() {
                    args["session_id"] = json!(session);
                }
                headers.insert(
                    "mcp-protocol-version",
                    HeaderValue::from_static("2026-07-28"),
                );
                headers.insert("mcp-method", HeaderValue::from_static("tools/call"));
                headers.insert("mcp-name", HeaderValue::from_str(tool).expect("tool name"));
                json!({"name": tool, "arguments": args, "_meta": meta_2026()})
            }
            Era::V2025 => {
                headers.insert(
                    "mcp-protocol-version",
                    HeaderValue::from_static("2025-11-25"),
                );
                headers.insert(
                    "mcp-session-id",
                    HeaderValue::from_str(session).expect("session id"),
                );
                json!({"name": tool, "arguments": args})
            }
        };
        Self {
            headers,
            head: br#"{"jsonrpc":"2.0","id":"#,
            tail: format!(r#","method":"tools/call","params":{params}}}"#).into(),
        }
    }

    /// The headers to send.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body with JSON-RPC id `id` (one allocation).
    pub fn body(&self, id: u64) -> Bytes {
        let mut body = BytesMut::with_capacity(self.head.len() + 20 + self.tail.len());
        body.extend_from_slice(self.head);
        let _ = write!(body, "{id}");
        body.extend_from_slice(&self.tail);
        body.freeze()
    }
}

/// The fields of a JSON-RPC reply the load looks at.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    result: Option<ResultFlags>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ResultFlags {
    #[serde(rename = "isError", default)]
    is_error: bool,
}

/// The JSON texts a body may carry the reply in: the body itself when it is JSON, else
/// its SSE `data:` lines, last first.
fn candidates(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let json = body.trim_ascii_start().first() == Some(&b'{');
    let whole = json.then_some(body);
    let events = body
        .rsplit(|&b| b == b'\n')
        .filter(move |_| !json)
        .filter_map(|line| line.strip_prefix(b"data:"))
        .map(<[u8]>::trim_ascii)
        .filter(|data| data.first() == Some(&b'{'));
    whole.into_iter().chain(events)
}

/// The reply to request `id` of a successful call: `Ok` for a JSON-RPC result without
/// `isError`, else `Err` with the HTTP status and the body.
pub fn check_call(reply: &Reply, id: u64) -> Result<(), String> {
    let failed = || {
        let text = String::from_utf8_lossy(&reply.body);
        let text: String = text.chars().take(400).collect();
        format!("HTTP {}: {text}", reply.status)
    };
    if !reply.status.is_success() {
        return Err(failed());
    }
    let envelope = candidates(&reply.body)
        .filter_map(|text| serde_json::from_slice::<Envelope>(text).ok())
        .find(|e| e.result.is_some() || e.error.is_some())
        .ok_or_else(failed)?;
    match envelope {
        Envelope {
            id: Some(got),
            result: Some(ResultFlags { is_error: false }),
            ..
        } if got == id => Ok(()),
        _ => Err(failed()),
    }
}

/// The JSON-RPC reply in a body (JSON or SSE), for the calls that set the load up.
pub fn reply_message(body: &[u8]) -> Option<Value> {
    candidates(body)
        .filter_map(|text| serde_json::from_slice::<Value>(text).ok())
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
}
