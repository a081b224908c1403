//! The tools, one file per family, each with its typed arguments (schemas generated
//! with schemars, operations as enums), its structured outputs and its own router:
//!
//! - `sessions.rs`: `session_create`, `session_delete` and `session_info`;
//! - `state.rs`: `counter` and `history`, the values a session keeps;
//! - `primes.rs`: `prime_count`, in a request or as a task;
//! - `diagnostics.rs`: `cache_stats` and `resource_stats`;
//! - `files.rs`: `file_read`.
//!
//! This file holds what the families share (the result type, the reply and time
//! helpers, the session call within the request's deadline) and
//! `StatefulServer::tool_router`, which joins their routers.

mod diagnostics;
mod files;
mod primes;
mod sessions;
mod state;

use rmcp::{
    ErrorData as McpError,
    handler::server::router::tool::ToolRouter,
    model::{CallToolResult, ContentBlock},
};
use serde::Serialize;

pub(crate) use self::primes::PrimeCounter;
pub(super) use self::primes::prime_count_planner;
pub use self::{
    primes::{PrimeCountArgs, PrimeCountOutput},
    sessions::{
        CreateArgs, CreateOutput, DeleteArgs, DeleteOutput, SessionArgs, SessionInfoOutput,
    },
    state::{
        CounterArgs, CounterOperation, CounterOutput, HistoryArgs, HistoryOperation, HistoryOutput,
    },
};
use super::StatefulServer;
use crate::{
    mcp::{error::ToolFailure, extensions::Deadline, handler::binding::Binding},
    metrics::Metrics,
    sessions::SessionError,
};

/// What every tool returns: a result, an `isError` result, or a JSON-RPC error.
type ToolResult = Result<CallToolResult, ToolFailure>;

impl StatefulServer {
    /// Every tool: the families' routers added together (`tools/list` sorts by name, so
    /// the order here is not the order clients see).
    pub(super) fn tool_router() -> ToolRouter<Self> {
        Self::sessions_tools()
            + Self::state_tools()
            + Self::primes_tools()
            + Self::diagnostics_tools()
            + Self::files_tools()
    }

    /// Awaits a session operation on `binding`'s session within the request's deadline,
    /// phrasing its failure for the caller.
    async fn in_session<T>(
        &self,
        binding: &Binding,
        op: impl Future<Output = Result<T, SessionError>>,
    ) -> Result<T, ToolFailure> {
        until_deadline(&self.metrics, binding.deadline(), op)
            .await
            .map_err(|e| match e {
                SessionError::NotFound(_) => binding.not_found(),
                other => self.errors.session(other),
            })
    }
}

/// `op`'s outcome, or, when `deadline` passes first, that of an operation sent without
/// an answer in time: it may have been applied (a retry with the same
/// `idempotencyKey` applies it at most once); counted in `metrics` (step `tool`).
async fn until_deadline<T>(
    metrics: &Metrics,
    deadline: Option<Deadline>,
    op: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    let Some(deadline) = deadline else {
        return op.await;
    };
    deadline.bound(op).await.unwrap_or_else(|| {
        metrics.deadline_expired("tool");
        Err(SessionError::OutcomeUnknown(
            "the request's deadline passed".to_owned(),
        ))
    })
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A successful result with both a text block and structured content.
fn reply<T: Serialize>(text: String, structured: &T) -> ToolResult {
    let value = serde_json::to_value(structured)
        .map_err(|e| McpError::internal_error(format!("serialize result: {e}"), None))?;
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    Ok(result)
}
