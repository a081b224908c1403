//! How the MCP layer fails, in one place:
//!
//! - [`EdgeError`]: every refusal of the edge and of the session layer behind it, with
//!   its HTTP status, its JSON-RPC error where JSON-RPC defines one, and its
//!   `Retry-After` or `WWW-Authenticate` header; and the `RefusalSlot` in which the
//!   session layer, deep inside rmcp, leaves the refusal for the edge to answer;
//! - [`ToolFailure`]: how a tool call fails, an `isError` result or a JSON-RPC error;
//! - [`DomainErrors`]: the one conversion of the domain's errors ([`SessionError`],
//!   [`TaskError`], [`HandleError`]) into those, which logs the store's failures and
//!   counts them (`stateful_mcp_store_errors_total`) here and nowhere else.

use std::sync::{Arc, OnceLock};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use rmcp::{
    ErrorData as McpError,
    handler::server::tool::IntoCallToolResult,
    model::{CallToolResponse, CallToolResult, ContentBlock, ErrorCode},
};
use serde_json::json;

use crate::{managed::HandleError, metrics::Metrics, sessions::SessionError, tasks::TaskError};

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
    /// The client's address failed authentication too often: 429 with `Retry-After`,
    /// its token unchecked.
    #[error(
        "Too Many Requests: too many failed authentication attempts from this address; \
         retry after {retry_after_secs} s"
    )]
    TooManyFailures {
        /// Whole seconds until the address's attempts are counted afresh.
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
    /// The request's Redis steps did not finish within `server.request_deadline_ms`
    /// (a slow session store, or a slow replica holding the session): 503 with
    /// `Retry-After`.
    #[error(
        "Service Unavailable: the session store (or the replica serving this session) did \
         not answer within the request's deadline; retry shortly"
    )]
    DeadlineExceeded,
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
            Self::TooManySessions | Self::RateLimited { .. } | Self::TooManyFailures { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable
            | Self::HolderUnreachable
            | Self::Moved
            | Self::DeadlineExceeded
            | Self::TooManyListeners => StatusCode::SERVICE_UNAVAILABLE,
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

/// The header of a replica's [`EdgeError::Moved`] answer to a forwarded request: the
/// forwarding replica, which chose that holder from a touch a moment older, looks the
/// session up again and sends the request on once more instead of passing the 503 on.
/// Only read on the answer of a replica this one forwarded to.
pub const MOVED_HEADER: &str = "x-stateful-mcp-moved";

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
        if matches!(self, Self::Moved) {
            response
                .headers_mut()
                .insert(MOVED_HEADER, HeaderValue::from_static("1"));
        }
        match self {
            Self::Unavailable
            | Self::HolderUnreachable
            | Self::Moved
            | Self::DeadlineExceeded
            | Self::TooManyListeners => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited { retry_after_secs } | Self::TooManyFailures { retry_after_secs } => {
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
            EdgeError::Unavailable
            | EdgeError::HolderUnreachable
            | EdgeError::Moved
            | EdgeError::DeadlineExceeded => {
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

/// Why a tool call did not succeed.
#[derive(Debug)]
pub enum ToolFailure {
    /// The caller can act on it: an `isError` result with this text.
    Refused(String),
    /// The server could not serve the call: a JSON-RPC error.
    Internal(McpError),
}

impl From<McpError> for ToolFailure {
    fn from(e: McpError) -> Self {
        Self::Internal(e)
    }
}

impl IntoCallToolResult for ToolFailure {
    fn into_call_tool_result(self) -> Result<CallToolResponse, McpError> {
        match self {
            Self::Refused(text) => Ok(tool_error(text).into()),
            Self::Internal(e) => Err(e),
        }
    }
}

/// A tool-level failure the caller can act on.
pub(crate) fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

/// The one conversion of domain errors into what an MCP client sees: what the caller
/// can act on as a refusal, the store's trouble logged, counted under the component
/// that met it (a bounded label of this crate), and answered without its detail.
/// Cheap to clone: built once per component from the replica's metrics.
#[derive(Clone, Debug)]
pub struct DomainErrors {
    metrics: Metrics,
}

impl DomainErrors {
    /// The conversions, counting into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }

    /// A session error of a tool call. An unknown session reads as the error's own
    /// text: a tool that knows how the call named its session phrases that case itself.
    pub fn session(&self, e: SessionError) -> ToolFailure {
        match e {
            SessionError::OutcomeUnknown(detail) => {
                self.store_failed("sessions", &detail, "session store did not answer in time");
                ToolFailure::Internal(McpError::internal_error(
                    "session store unavailable, outcome unknown: no answer came back in \
                     time, so the change may or may not have been applied; retry with the \
                     same `idempotencyKey` to apply it exactly once",
                    None,
                ))
            }
            SessionError::RetryConflict => ToolFailure::Refused(
                "This `idempotencyKey` was already used for a call with other arguments; \
                 use a new key for a new request."
                    .to_owned(),
            ),
            SessionError::Unavailable(detail) => {
                self.store_failed("sessions", &detail, "session store unavailable");
                ToolFailure::Internal(EdgeError::Unavailable.into())
            }
            other => ToolFailure::Refused(other.to_string()),
        }
    }

    /// A session error met while confirming or storing a 2025-era transport session,
    /// as the edge's refusal.
    pub(crate) fn transport(&self, e: &SessionError) -> EdgeError {
        match e {
            SessionError::TooManySessions { .. } => EdgeError::TooManySessions,
            SessionError::ClientMetadataTooLarge { limit, .. } => {
                EdgeError::ClientMetadataTooLarge { limit: *limit }
            }
            // The id a client sent is a credential: not in the log.
            SessionError::NotFound(_) => {
                self.store_failed("transport", &"session not found", "session store refused");
                EdgeError::Unavailable
            }
            other => {
                self.store_failed("transport", other, "session store unavailable");
                EdgeError::Unavailable
            }
        }
    }

    /// A task error as a JSON-RPC error.
    pub fn task(&self, e: TaskError) -> McpError {
        match e {
            TaskError::Unavailable(detail) => {
                self.store_failed("tasks", &detail, "task store unavailable");
                McpError::internal_error("task store unavailable; retry shortly", None)
            }
            refused @ (TaskError::QueueFull { .. }
            | TaskError::ShareFull { .. }
            | TaskError::Draining) => McpError::new(
                ErrorCode::INTERNAL_ERROR,
                refused.to_string(),
                Some(json!({"retryable": true})),
            ),
            TaskError::Exists => McpError::internal_error(e.to_string(), None),
        }
    }

    /// A managed handle's error as a tool failure.
    pub fn handle(&self, e: HandleError) -> ToolFailure {
        match e {
            HandleError::UnknownKind(kind) if kind == crate::managed::file::KIND => {
                ToolFailure::Refused(
                    "file access is off on this server (resources.file_root is not set)".to_owned(),
                )
            }
            HandleError::ShuttingDown => ToolFailure::Internal(EdgeError::Unavailable.into()),
            other => ToolFailure::Refused(other.to_string()),
        }
    }

    /// Logs and counts a failure of the store `component` met.
    fn store_failed(
        &self,
        component: &'static str,
        detail: &dyn std::fmt::Display,
        message: &'static str,
    ) {
        self.metrics.store_error(component);
        tracing::warn!(component, %detail, "{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conversions over a fresh replica's metrics, and the metrics to read.
    fn errors() -> (DomainErrors, Metrics) {
        let metrics = Metrics::new("replica-e", "memory");
        (DomainErrors::new(metrics.clone()), metrics)
    }

    /// `stateful_mcp_store_errors_total` of `component`, as `/metrics` shows it.
    fn store_errors(metrics: &Metrics, component: &str) -> Option<String> {
        let label = format!("component=\"{component}\"");
        metrics
            .render()
            .lines()
            .find(|line| {
                line.starts_with("stateful_mcp_store_errors_total{") && line.contains(&label)
            })
            .and_then(|line| line.rsplit(' ').next().map(str::to_owned))
    }

    #[test]
    fn the_store_s_failures_are_counted_by_component_and_answered_without_detail() {
        let (errors, metrics) = errors();
        let ToolFailure::Internal(e) = errors.session(SessionError::Unavailable("10.0.0.7".into()))
        else {
            panic!("store trouble is not the caller's to act on");
        };
        assert!(!e.message.contains("10.0.0.7"), "{}", e.message);
        let ToolFailure::Internal(e) = errors.session(SessionError::OutcomeUnknown("t/o".into()))
        else {
            panic!("an unknown outcome is not the caller's to act on");
        };
        assert!(e.message.contains("idempotencyKey"), "{}", e.message);
        assert_eq!(store_errors(&metrics, "sessions").as_deref(), Some("2"));

        let e = errors.task(TaskError::Unavailable("10.0.0.7".into()));
        assert_eq!(e.message, "task store unavailable; retry shortly");
        assert_eq!(store_errors(&metrics, "tasks").as_deref(), Some("1"));

        let refusal = errors.transport(&SessionError::Unavailable("10.0.0.7".into()));
        assert_eq!(refusal, EdgeError::Unavailable);
        assert_eq!(store_errors(&metrics, "transport").as_deref(), Some("1"));
    }

    #[test]
    fn what_the_caller_can_act_on_is_refused_and_not_counted() {
        let (errors, metrics) = errors();
        assert!(matches!(
            errors.session(SessionError::RetryConflict),
            ToolFailure::Refused(text) if text.contains("idempotencyKey")
        ));
        assert!(matches!(
            errors.session(SessionError::CounterOverflow),
            ToolFailure::Refused(_)
        ));
        assert_eq!(
            errors.transport(&SessionError::TooManySessions { limit: 3 }),
            EdgeError::TooManySessions
        );
        assert_eq!(
            errors.transport(&SessionError::ClientMetadataTooLarge { size: 9, limit: 8 }),
            EdgeError::ClientMetadataTooLarge { limit: 8 }
        );
        let e = errors.task(TaskError::Draining);
        assert_eq!(e.data, Some(json!({"retryable": true})));
        assert!(matches!(
            errors.handle(HandleError::UnknownKind("file".into())),
            ToolFailure::Refused(text) if text.contains("resources.file_root")
        ));
        assert!(matches!(
            errors.handle(HandleError::UnknownKind("other".into())),
            ToolFailure::Refused(text) if text == "unknown resource kind `other`"
        ));
        assert!(matches!(
            errors.handle(HandleError::ShuttingDown),
            ToolFailure::Internal(_)
        ));
        assert_eq!(store_errors(&metrics, "sessions"), None);
        assert_eq!(store_errors(&metrics, "transport"), None);
        assert_eq!(store_errors(&metrics, "tasks"), None);
    }
}
