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

use std::time::Duration;

use axum::{body::Body, extract::OriginalUri, response::Response};
use http::{HeaderName, HeaderValue, Uri, header, request::Parts};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use tokio_util::sync::CancellationToken;

use super::inflight::end_on;
use crate::telemetry::RequestId;

/// Marks a request one replica forwarded to another; its value is the sender's id.
pub const FORWARDED_HEADER: &str = "x-stateful-mcp-forwarded";

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
}

impl Forwarder {
    /// A forwarder for replica `origin` whose relayed streams end when `streams` fires.
    pub(crate) fn new(origin: &str, streams: CancellationToken) -> Self {
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
        }
    }

    /// Sends the request (`parts` and `body`) to the replica at `base` (`http://host:port`)
    /// and returns its response, whose body streams from the holder as it comes.
    ///
    /// # Errors
    /// [`ForwardError::Unreachable`] when no response head came back (connection refused
    /// or timed out, or lost before the head); nothing is retried here.
    pub(crate) async fn forward(
        &self,
        base: &str,
        mut parts: Parts,
        body: Body,
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
        parts.headers.insert(FORWARDED_HEADER, self.origin.clone());
        // The holder logs the request under the id this replica logs it under.
        if let Some(id) = parts.extensions.get::<RequestId>()
            && let Ok(value) = HeaderValue::from_str(&id.0)
        {
            parts.headers.insert("x-request-id", value);
        }
        let request = http::Request::from_parts(parts, body);
        let response = self.client.request(request).await?;
        let (mut head, incoming) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let body = end_on(Body::new(incoming), self.streams.clone());
        Ok(Response::from_parts(head, body))
    }
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
    use super::*;

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
