//! Step 1, decode: what is asked. A JSON POST's body is read once (413 above
//! `server.max_body_bytes`) into an [`Envelope`] (400 with a `-32700` parse error or a
//! `-32600` invalid request when it is not a JSON-RPC message; rmcp would answer both
//! with a bare 415); any other request is described by its headers alone and its body
//! is left unread for rmcp.

use axum::body::{Body, Bytes};
use http::{Method, header, request::Parts};

use super::envelope::Envelope;
use crate::mcp::error::EdgeError;

/// The header of the protocol revision.
const VERSION_HEADER: &str = "mcp-protocol-version";

/// A request as the later steps see it.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// What the request is, as far as the edge is concerned.
    pub(crate) envelope: Envelope,
    /// Whether it is a POST of JSON: only those are read here and counted by method.
    pub(crate) json_post: bool,
    /// The body as read, to send on to another replica; `None` when it was not read.
    pub(crate) bytes: Option<Bytes>,
    /// The body for rmcp: the bytes read, or the untouched stream.
    pub(crate) body: Body,
}

/// Reads the request of `parts` and `body`, the body only when it is a JSON POST and at
/// most `max_body` bytes of it.
///
/// # Errors
/// [`EdgeError::TooLarge`] above `max_body`; [`EdgeError::Parse`],
/// [`EdgeError::InvalidRequest`] or [`EdgeError::InvalidIdempotencyKey`] for a body
/// that is no JSON-RPC message the edge accepts (see [`Envelope::parse`]).
pub(crate) async fn read(parts: &Parts, body: Body, max_body: usize) -> Result<Decoded, EdgeError> {
    let header_version = parts
        .headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok());
    let json_post = parts.method == Method::POST && is_json(&parts.headers);
    if !json_post {
        return Ok(Decoded {
            envelope: Envelope::from_headers(header_version),
            json_post,
            bytes: None,
            body,
        });
    }
    let bytes = axum::body::to_bytes(body, max_body)
        .await
        .map_err(|_| EdgeError::TooLarge { limit: max_body })?;
    let envelope = Envelope::parse(&bytes, header_version)?;
    Ok(Decoded {
        envelope,
        json_post,
        bytes: Some(bytes.clone()),
        body: Body::from(bytes),
    })
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, content_type: Option<&str>, version: Option<&str>) -> Parts {
        let mut request = http::Request::builder().method(method).uri("/mcp");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(version) = version {
            request = request.header(VERSION_HEADER, version);
        }
        request.body(()).unwrap().into_parts().0
    }

    async fn body_text(body: Body) -> String {
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_json_post_is_read_once_and_its_bytes_are_kept_for_a_forward() {
        let message = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let json = parts(Method::POST, Some("application/json; charset=utf-8"), None);
        let decoded = read(&json, Body::from(message), 1024).await.unwrap();
        assert!(decoded.json_post);
        assert_eq!(decoded.envelope.method.as_deref(), Some("tools/list"));
        assert!(decoded.envelope.legacy, "no version signal: 2025-era");
        assert_eq!(decoded.bytes.as_deref(), Some(message.as_bytes()));
        assert_eq!(body_text(decoded.body).await, message);
    }

    #[tokio::test]
    async fn other_requests_are_described_by_their_headers_and_left_unread() {
        for (method, content_type) in [
            (Method::GET, None),
            (Method::DELETE, None),
            (Method::POST, Some("text/plain")),
        ] {
            let request = parts(method.clone(), content_type, Some("2026-07-28"));
            let decoded = read(&request, Body::from("not json"), 1).await.unwrap();
            assert!(!decoded.json_post, "{method}");
            assert!(!decoded.envelope.legacy, "{method}: the header's era");
            assert_eq!(decoded.bytes, None);
            assert_eq!(body_text(decoded.body).await, "not json", "{method}");
        }
    }

    #[tokio::test]
    async fn bodies_too_large_or_not_json_rpc_are_refused() {
        let json = parts(Method::POST, Some("application/json"), None);
        let refused = |body: &'static str, limit| read(&json, Body::from(body), limit);
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","method":"ping"}"#, 8)
                .await
                .unwrap_err(),
            EdgeError::TooLarge { limit: 8 }
        );
        assert!(matches!(
            refused("{", 1024).await.unwrap_err(),
            EdgeError::Parse(_)
        ));
        assert!(matches!(
            refused(r#"{"jsonrpc":"1.0","method":"ping"}"#, 1024)
                .await
                .unwrap_err(),
            EdgeError::InvalidRequest(_)
        ));
    }
}
