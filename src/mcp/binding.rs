//! Which state session a tool call acts on ([`Binding`]), and how a tool fails
//! ([`ToolFailure`]), so every tool finds its session and reports errors with `?`.
//!
//! A call names its session with a `session_id` argument (the 2026-07-28 way: a handle
//! minted by `session_create`). A 2025-era call may omit it and then uses its
//! connection's session, but only when the edge confirmed that session for this very
//! request ([`TransportSession`]): an `Mcp-Session-Id` header alone binds nothing.

use rmcp::{
    ErrorData as McpError, RoleServer,
    handler::server::tool::IntoCallToolResult,
    model::{CallToolResponse, CallToolResult, ContentBlock},
    service::RequestContext,
};

use super::edge::{EdgeError, TransportSession};
use crate::{metrics::Metrics, sessions::SessionError};

/// The state session of one call, and where its id came from (which decides how
/// errors read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// An explicit `session_id` handle.
    Handle(String),
    /// The 2025-era connection's own session, confirmed by the edge.
    Transport(String),
}

impl Binding {
    /// The explicit handle, else the confirmed transport session of the request.
    ///
    /// # Errors
    /// A [`ToolFailure::Refused`] that tells the caller to create a session.
    pub(crate) fn of(
        ctx: &RequestContext<RoleServer>,
        explicit: Option<String>,
    ) -> Result<Self, ToolFailure> {
        if let Some(id) = explicit {
            return Ok(Self::Handle(id));
        }
        transport_session(ctx).map(Self::Transport).ok_or_else(|| {
            ToolFailure::Refused(
                "Missing `session_id`: call the `session_create` tool first and pass the \
                 `session_id` it returns to this tool."
                    .to_owned(),
            )
        })
    }

    /// The session id.
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Handle(id) | Self::Transport(id) => id,
        }
    }

    /// Turns a session error into what the caller should see: an `isError` result for
    /// the caller's mistakes, a JSON-RPC error for the infrastructure's.
    pub(crate) fn failure(&self, e: SessionError, metrics: &Metrics) -> ToolFailure {
        match e {
            SessionError::NotFound(_) => ToolFailure::Refused(match self {
                Self::Handle(id) => format!(
                    "Session `{id}` is unknown or has expired. Call `session_create` to get a \
                     new `session_id`."
                ),
                Self::Transport(_) => "This connection's session has expired. Initialize a \
                                       new MCP session, or call `session_create` and pass \
                                       its `session_id`."
                    .to_owned(),
            }),
            other => ToolFailure::from_session(other, metrics),
        }
    }
}

/// The 2025-era transport session the edge confirmed for this request, if any: what a
/// handler should use when a call names no session of its own.
pub fn transport_session(ctx: &RequestContext<RoleServer>) -> Option<String> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<TransportSession>())
        .map(|session| session.0.clone())
}

/// Why a tool call did not succeed.
#[derive(Debug)]
pub(crate) enum ToolFailure {
    /// The caller can act on it: an `isError` result with this text.
    Refused(String),
    /// The server could not serve the call: a JSON-RPC error.
    Internal(McpError),
}

impl ToolFailure {
    /// A session error with no binding to phrase it by (e.g. creating a session).
    pub(crate) fn from_session(e: SessionError, metrics: &Metrics) -> Self {
        match e {
            SessionError::Unavailable(detail) => {
                metrics.store_error("sessions");
                tracing::warn!(%detail, "session store unavailable");
                Self::Internal(EdgeError::Unavailable.into())
            }
            other => Self::Refused(other.to_string()),
        }
    }
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
