//! Before step 0, where from: rmcp's own Host and Origin checks (DNS rebinding, browser
//! pages of other origins), run before the caller is authenticated or spends a token of
//! its rate limit, so a request a browser was tricked into sending learns nothing of
//! the credentials it carries and costs its principal nothing.
//!
//! The checks are rmcp's, not a copy: [`HostCheck`] shows rmcp's service a request with
//! only the Host, Origin and URI of the real one and a method rmcp serves for no one
//! (`PUT`). rmcp checks Host and Origin before it looks at the method, so it answers a
//! refusal (403, or 400 for a malformed Host) when they are not allowed, and 405 when
//! they are: the one answer that lets the request go on. The allowed lists are those
//! rmcp was built with, and rmcp checks the real request again anyway.

use std::sync::Arc;

use axum::{body::Body, response::Response};
use futures::future::BoxFuture;
use http::{Method, StatusCode, header, request::Parts};

/// rmcp's Host and Origin checks, as a function of a probe request. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HostCheck(
    Arc<dyn Fn(http::Request<Body>) -> BoxFuture<'static, Response> + Send + Sync>,
);

impl HostCheck {
    /// Checks with `service`, rmcp's handling of a request.
    pub(crate) fn new(
        service: impl Fn(http::Request<Body>) -> BoxFuture<'static, Response> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(service))
    }

    /// rmcp's refusal of the Host or Origin of `parts`, or `None` when they pass.
    pub(crate) async fn refusal(&self, parts: &Parts) -> Option<Response> {
        let mut probe = http::Request::new(Body::empty());
        *probe.method_mut() = Method::PUT;
        *probe.uri_mut() = parts.uri.clone();
        for name in [header::HOST, header::ORIGIN] {
            for value in parts.headers.get_all(&name) {
                probe.headers_mut().append(name.clone(), value.clone());
            }
        }
        let answer = (self.0)(probe).await;
        (answer.status() != StatusCode::METHOD_NOT_ALLOWED).then_some(answer)
    }
}

#[cfg(test)]
mod tests {
    use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;

    use super::*;
    use crate::mcp::edge::fixture::bare_service;

    /// rmcp's checks with its loopback defaults and one allowed browser origin.
    fn check() -> HostCheck {
        let config = StreamableHttpServerConfig::default()
            .with_allowed_origins(["http://localhost:*"])
            .enforce_origin_validation();
        let service = bare_service(config);
        HostCheck::new(move |probe| {
            let service = service.clone();
            Box::pin(async move { service.handle(probe).await.map(Body::new) })
        })
    }

    fn parts(method: Method, host: &str, origin: Option<&str>) -> Parts {
        let mut request = http::Request::builder()
            .method(method)
            .uri("/mcp")
            .header(header::HOST, host);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn only_hosts_and_origins_rmcp_allows_go_on_whatever_the_method() {
        let check = check();
        for method in [Method::POST, Method::GET, Method::DELETE, Method::PUT] {
            for (host, origin) in [
                ("localhost:8080", None),
                ("127.0.0.1", Some("http://localhost:3000")),
            ] {
                let passed = check.refusal(&parts(method.clone(), host, origin)).await;
                assert!(passed.is_none(), "{method} {host} {origin:?}");
            }
            for (host, origin, status) in [
                ("evil.example", None, StatusCode::FORBIDDEN),
                (
                    "localhost",
                    Some("http://evil.example"),
                    StatusCode::FORBIDDEN,
                ),
                ("localhost", Some("null"), StatusCode::FORBIDDEN),
                ("bad host", None, StatusCode::BAD_REQUEST),
            ] {
                let refused = check.refusal(&parts(method.clone(), host, origin)).await;
                assert_eq!(
                    refused.map(|r| r.status()),
                    Some(status),
                    "{host} {origin:?}"
                );
            }
        }
    }
}
