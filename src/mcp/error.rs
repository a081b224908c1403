//! [`EdgeError`]: every refusal of the edge and of the session layer behind it, with
//! its HTTP status, its JSON-RPC error where JSON-RPC defines one, and its `Retry-After`
//! or `WWW-Authenticate` header; and the `RefusalSlot` in which the session layer,
//! deep inside rmcp, leaves the refusal for the edge to answer.

use std::sync::{Arc, OnceLock};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use rmcp::ErrorData as McpError;

/// Why the edge (or the session layer behind it) refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// No valid bearer token: 401 with the challenge.
    #[error("Unauthorized: a valid bearer token is required")]
    Unauthorized {
        /// The `WWW-Authenticate` value.
        challenge: Option<HeaderValue>,
    },
    /// The body is not JSON: 400, JSON-RPC `-32700`.
    #[error("Parse error: {0}")]
    Parse(String),
    /// The body is JSON but not a JSON-RPC message rmcp accepts: 400, `-32600`.
    #[error("Invalid Request: {0}")]
    InvalidRequest(String),
    /// The body is larger than allowed: 413.
    #[error("Payload Too Large: request bodies are limited to {limit} bytes")]
    TooLarge {
        /// `server.max_body_bytes`.
        limit: usize,
    },
    /// The named transport session does not exist (any more): 404.
    #[error("Not Found: Session not found")]
    SessionNotFound,
    /// The principal holds the maximum number of sessions: 429.
    #[error(
        "Too Many Requests: the maximum number of live sessions is reached; end one \
         (HTTP DELETE) or wait for one to expire"
    )]
    TooManySessions,
    /// `params.idempotencyKey` is not a string of 1 to 255 characters: 400, JSON-RPC
    /// `-32602`.
    #[error("Invalid params: `idempotencyKey` must be a string of 1 to 255 characters")]
    InvalidIdempotencyKey,
    /// The `initialize` parameters (with `clientInfo`) are larger than a session may
    /// keep: 400, JSON-RPC `-32602`.
    #[error(
        "Invalid params: the client's initialize parameters and clientInfo are limited \
         to {limit} bytes"
    )]
    ClientMetadataTooLarge {
        /// `session.max_client_metadata_bytes`.
        limit: usize,
    },
    /// The principal spent its request budget: 429 with `Retry-After`.
    #[error(
        "Too Many Requests: the request rate limit is reached; retry after {retry_after_secs} s"
    )]
    RateLimited {
        /// Whole seconds until a request is allowed again.
        retry_after_secs: u64,
    },
    /// The session store is unreachable: 503 with `Retry-After`.
    #[error("Service Unavailable: the session store is unreachable; retry shortly")]
    Unavailable,
    /// The replica serving the session cannot be reached and still holds it: 503 with
    /// `Retry-After`.
    #[error("Service Unavailable: the replica serving this session is unreachable; retry shortly")]
    HolderUnreachable,
    /// A request forwarded here for a session another replica holds now: 503 with
    /// `Retry-After` (the retry is routed afresh).
    #[error("Service Unavailable: the session moved to another replica; retry")]
    Moved,
    /// This replica holds `listen.max_streams` listen streams: 503 with `Retry-After`,
    /// JSON-RPC `-32603`, before rmcp could acknowledge the stream.
    #[error(
        "Service Unavailable: this server holds as many subscriptions/listen streams as it \
         may; retry shortly"
    )]
    TooManyListeners,
}

impl EdgeError {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Parse(_)
            | Self::InvalidRequest(_)
            | Self::InvalidIdempotencyKey
            | Self::ClientMetadataTooLarge { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::TooManySessions | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::HolderUnreachable | Self::Moved | Self::TooManyListeners => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The JSON-RPC error code, for the refusals JSON-RPC defines.
    pub fn jsonrpc_code(&self) -> Option<i32> {
        match self {
            Self::Parse(_) => Some(-32700),
            Self::InvalidRequest(_) => Some(-32600),
            Self::ClientMetadataTooLarge { .. } | Self::InvalidIdempotencyKey => Some(-32602),
            Self::TooManyListeners => Some(-32603),
            _ => None,
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match self.jsonrpc_code() {
            Some(code) => {
                let body = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": null,
                    "error": {"code": code, "message": self.to_string()},
                });
                (status, axum::Json(body)).into_response()
            }
            None => (status, self.to_string()).into_response(),
        };
        match self {
            Self::Unavailable | Self::HolderUnreachable | Self::Moved | Self::TooManyListeners => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Unauthorized {
                challenge: Some(challenge),
            } => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            _ => {}
        }
        response
    }
}

impl From<EdgeError> for McpError {
    /// The same refusal inside a request rmcp already accepted (a tool call).
    fn from(e: EdgeError) -> Self {
        match e {
            EdgeError::Unavailable | EdgeError::HolderUnreachable | EdgeError::Moved => {
                McpError::internal_error("session store unavailable; retry shortly", None)
            }
            other => McpError::invalid_request(other.to_string(), None),
        }
    }
}

/// Where the session manager, deep inside rmcp, leaves the reason it refused this
/// request. rmcp copies the request's `http::request::Parts` (extensions included)
/// into the `initialize` message it hands the manager, and clones share the slot.
#[derive(Debug, Clone, Default)]
pub(crate) struct RefusalSlot(Arc<OnceLock<EdgeError>>);

impl RefusalSlot {
    /// Records `refusal` (the first one wins).
    pub(crate) fn set(&self, refusal: EdgeError) {
        let _ = self.0.set(refusal);
    }

    /// The refusal recorded, if any.
    pub(crate) fn take(&self) -> Option<EdgeError> {
        self.0.get().cloned()
    }
}
