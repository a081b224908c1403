//! The hop between replicas: a 2025-era request that reached a replica which does not
//! hold its session is sent on to the one that does ([`Forwarder::forward`]), and the
//! holder's response streams back unbuffered (SSE included).
//!
//! The forwarded request keeps its method, path, query, headers (`Authorization` and
//! `Host` included: the holder authenticates and checks it again) and body, and gains
//! [`FORWARDED_HEADER`] naming the sending replica and the `x-request-id` this replica
//! logs it under. The header grants nothing: it only
//! stops a second hop, so a replica that receives it and does not hold the session
//! takes it over when it can and otherwise answers 503 (see the edge).
//!
//! The client's `Content-Length` is not passed on (the body sent is the one the edge
//! read, or none), and the holder's response head must come within
//! `server.forward_timeout_ms` and before the request's [`Deadline`]: a holder that
//! accepts and never answers fails the forward as an unreachable one does. The
//! forwarded request carries what is left of its deadline in [`DEADLINE_HEADER`], so
//! the holder's steps (its touch, the tool's store calls) spend the same deadline
//! rather than a new one ([`forwarded_budget`]). Like [`FORWARDED_HEADER`] it grants
//! nothing: a client that sends it can only shorten its own request's deadline.

use std::time::Duration;

use axum::{body::Body, extract::OriginalUri, response::Response};
use http::{HeaderName, HeaderValue, Uri, header, request::Parts};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::inflight::end_on;
use crate::{
    mcp::extensions::Deadline,
    telemetry::{OTEL_TARGET, RequestId, propagation},
};

/// Marks a request one replica forwarded to another; its value is the sender's id.
pub const FORWARDED_HEADER: &str = "x-stateful-mcp-forwarded";

/// The milliseconds left of a forwarded request's deadline when it was sent on.
pub const DEADLINE_HEADER: &str = "x-stateful-mcp-deadline-ms";

/// How long connecting to the holding replica may take before the forward fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Headers of one connection, never passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The holder's URL and the request's path do not make a URI.
    #[error("bad forward target: {0}")]
    Target(String),
    /// The holder could not be reached (refused, timed out, reset before a response).
    #[error("holding replica unreachable: {0}")]
    Unreachable(#[from] hyper_util::client::legacy::Error),
    /// The holder's response head did not come within `server.forward_timeout_ms`
    /// or before the request's deadline, whichever came first.
    #[error("no response head from the holding replica within {0:?}")]
    Timeout(Duration),
}

impl ForwardError {
    /// Whether no connection to the holder could be made (refused, or not within
    /// [`CONNECT_TIMEOUT`]): nothing reached it. A holder that accepted the connection
    /// and then failed or was slow to answer is not one.
    pub(crate) fn is_connect_failure(&self) -> bool {
        matches!(self, Self::Unreachable(e) if e.is_connect())
    }
}

/// Sends requests on to other replicas over pooled HTTP/1.1 connections. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Body>,
    /// This replica's id, the value of [`FORWARDED_HEADER`].
    origin: HeaderValue,
    /// Ends the streams relayed from other replicas, as it ends this replica's own
    /// (the drain's last step): the holder would keep a GET stream open for as long as
    /// its session lives.
    streams: CancellationToken,
    /// How long the holder's response head may take (`server.forward_timeout_ms`).
    head_timeout: Duration,
}

impl Forwarder {
    /// A forwarder for replica `origin` whose relayed streams end when `streams` fires,
    /// waiting at most `head_timeout` for each response head.
    pub(crate) fn new(origin: &str, streams: CancellationToken, head_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            origin: HeaderValue::from_str(origin)
                .unwrap_or_else(|_| HeaderValue::from_static("replica")),
            streams,
            head_timeout,
        }
    }

    /// Sends the request (`parts` and `body`) to the replica at `base` (`http://host:port`)
    /// with what is left of its `deadline`, and returns its response, whose body streams
    /// from the holder as it comes.
    ///
    /// # Errors
    /// [`ForwardError::Unreachable`] when no response head came back (connection refused
    /// or timed out, or lost before the head), [`ForwardError::Timeout`] when it did not
    /// come within `server.forward_timeout_ms` and before `deadline`; nothing is retried
    /// here.
    pub(crate) async fn forward(
        &self,
        base: &str,
        mut parts: Parts,
        body: Body,
        deadline: Deadline,
    ) -> Result<Response, ForwardError> {
        // Inside `nest_service("/mcp", …)` the URI lost its prefix; the original has it.
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let path = path.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{}{path}", base.trim_end_matches('/'))
            .parse::<Uri>()
            .map_err(|e| ForwardError::Target(e.to_string()))?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // The body sent on is the one read here (or none for a GET or a DELETE): the
        // client's length would promise the holder bytes that never come. hyper sets
        // the length of the body it sends.
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(FORWARDED_HEADER, self.origin.clone());
        // The holder logs the request under the id this replica logs it under.
        if let Some(id) = parts.extensions.get::<RequestId>()
            && let Ok(value) = HeaderValue::from_str(&id.0)
        {
            parts.headers.insert("x-request-id", value);
        }
        let wait = self.head_timeout.min(deadline.remaining());
        parts
            .headers
            .insert(DEADLINE_HEADER, HeaderValue::from(millis(wait)));
        // The hop is a client span whose context travels in `traceparent`, so the
        // holder's spans join the request's trace (the client's own trace context is
        // replaced: the holder takes it from this span).
        let span = tracing::info_span!(
            target: OTEL_TARGET,
            "mcp.forward",
            otel.name = "forward to holder",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        propagation::inject(&span, &mut parts.headers);
        let request = http::Request::from_parts(parts, body);
        let sent = tokio::time::timeout(wait, self.client.request(request))
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            match &sent {
                Ok(Ok(response)) => {
                    span.record("http.response.status_code", response.status().as_u16());
                    if response.status().is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                _ => {
                    span.record("otel.status_code", "ERROR");
                }
            }
        }
        let response = sent.map_err(|_| ForwardError::Timeout(wait))??;
        let (mut head, incoming) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let body = end_on(Body::new(incoming), self.streams.clone());
        Ok(Response::from_parts(head, body))
    }
}

/// The budget a request's deadline may have at most, by its [`DEADLINE_HEADER`]: what
/// the replica that forwarded it had left, if it says so in whole milliseconds.
pub(crate) fn forwarded_budget(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(DEADLINE_HEADER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_millis)
}

/// `duration` in whole milliseconds, rounded up so that a deadline with time left is
/// never sent on as spent.
fn millis(duration: Duration) -> u64 {
    let whole = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    whole.saturating_add(u64::from(
        !duration.subsec_nanos().is_multiple_of(1_000_000),
    ))
}

/// Removes the headers that belong to one connection, and those its `Connection`
/// header names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A holder on loopback that reads one request head and sends it back to the test,
    /// answering 200 unless `answer` is false (then it never answers); its base URL.
    async fn holder(answer: bool) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).to_lowercase());
            if answer {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                socket.write_all(ok).await.unwrap();
            }
            // Held open: a holder that never answers keeps its connection.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        (base, rx)
    }

    fn forwarder(head_timeout: Duration) -> Forwarder {
        Forwarder::new("a", CancellationToken::new(), head_timeout)
    }

    /// A deadline no forward here reaches.
    fn far() -> Deadline {
        Deadline::after(Duration::from_secs(600))
    }

    fn request(method: http::Method, content_length: &str) -> Parts {
        http::Request::builder()
            .method(method)
            .uri("/mcp")
            .header(header::CONTENT_LENGTH, content_length)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[tokio::test]
    async fn a_get_or_delete_goes_on_without_the_clients_content_length() {
        for method in [http::Method::GET, http::Method::DELETE] {
            let (base, head) = holder(true).await;
            let forwarder = forwarder(Duration::from_secs(10));
            let forward =
                forwarder.forward(&base, request(method.clone(), "5"), Body::empty(), far());
            let response = tokio::time::timeout(Duration::from_secs(10), forward)
                .await
                .expect("the forward does not hang")
                .unwrap();
            assert_eq!(response.status(), http::StatusCode::OK);
            let head = head.await.unwrap();
            assert!(!head.contains("content-length"), "{method}: {head}");
        }
        // A body read here goes with its own length.
        let (base, head) = holder(true).await;
        let parts = request(http::Method::POST, "999");
        let body = Body::from("{}");
        forwarder(Duration::from_secs(10))
            .forward(&base, parts, body, far())
            .await
            .unwrap();
        assert!(head.await.unwrap().contains("content-length: 2\r\n"));
    }

    #[tokio::test]
    async fn a_holder_that_never_answers_fails_the_forward_at_its_deadline() {
        let (base, head) = holder(false).await;
        let deadline = Duration::from_millis(200);
        let forwarder = forwarder(deadline);
        let forward =
            forwarder.forward(&base, request(http::Method::GET, "0"), Body::empty(), far());
        let outcome = tokio::time::timeout(Duration::from_secs(30), forward)
            .await
            .expect("the forward fails, not the test's patience");
        assert!(
            matches!(outcome, Err(ForwardError::Timeout(d)) if d == deadline),
            "{outcome:?}"
        );
        head.await.unwrap();
    }

    #[tokio::test]
    async fn the_holder_gets_what_is_left_of_the_request_s_deadline_and_no_more() {
        let (base, head) = holder(false).await;
        let forwarder = forwarder(Duration::from_secs(600));
        let deadline = Deadline::after(Duration::from_millis(300));
        let mut parts = request(http::Method::GET, "0");
        // A client's own value is replaced by what is left.
        parts
            .headers
            .insert(DEADLINE_HEADER, HeaderValue::from_static("900000"));
        let forward = forwarder.forward(&base, parts, Body::empty(), deadline);
        let outcome = tokio::time::timeout(Duration::from_secs(30), forward)
            .await
            .expect("the forward ends at the request's deadline");
        assert!(
            matches!(outcome, Err(ForwardError::Timeout(d)) if d <= Duration::from_millis(300)),
            "{outcome:?}"
        );
        let head = head.await.unwrap();
        let sent = head
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{DEADLINE_HEADER}: ")))
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no deadline in {head}"));
        assert!((1..=300).contains(&sent), "{sent} ms of {head}");
    }

    #[test]
    fn a_forwarded_budget_is_read_in_whole_milliseconds() {
        let budget = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(DEADLINE_HEADER, HeaderValue::from_static(value));
            forwarded_budget(&headers)
        };
        assert_eq!(budget("250"), Some(Duration::from_millis(250)));
        assert_eq!(budget("0"), Some(Duration::ZERO));
        for bad in ["-1", "1.5", "soon", ""] {
            assert_eq!(budget(bad), None, "{bad}");
        }
        assert_eq!(forwarded_budget(&http::HeaderMap::new()), None);
        assert_eq!(millis(Duration::from_micros(1500)), 2, "rounded up");
        assert_eq!(millis(Duration::from_millis(7)), 7);
    }

    #[test]
    fn connection_headers_are_not_passed_on() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-mine"),
        );
        headers.insert("x-mine", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("mcp-session-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "mcp-session-id"]);
    }
}
