//! The state family: `counter` and `history`, the values a session keeps.

use rmcp::{
    RoleServer,
    handler::server::{common::schema_for_output, wrapper::Parameters},
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router,
};
use serde::{Deserialize, Serialize};

use super::{ToolResult, reply};
use crate::{
    mcp::{
        error::ToolFailure,
        handler::{
            StatefulServer,
            binding::{Binding, retry_of},
        },
    },
    sessions::{CounterOp, HistoryOp, SessionError},
};

/// `counter` operations: `get` reads the value, `increment` adds `step`, `decrement`
/// subtracts it, `reset` sets the counter to 0. (Variants carry no docs of their own so
/// the schema is a plain `enum` of strings, which every client understands.)
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
#[allow(missing_docs)]
pub enum CounterOperation {
    Get,
    Increment,
    Decrement,
    Reset,
}

/// `counter` arguments.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct CounterArgs {
    /// What to do with the counter.
    pub operation: CounterOperation,
    /// Amount for increment and decrement (default 1).
    #[serde(default = "one")]
    pub step: i64,
    /// Session handle from `session_create`. Optional on 2025-era connections, where the
    /// connection's own session is used.
    #[serde(default)]
    pub session_id: Option<String>,
}

fn one() -> i64 {
    1
}

/// `counter` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CounterOutput {
    /// The session the counter belongs to.
    pub session_id: String,
    /// The operation applied.
    pub operation: CounterOperation,
    /// The counter's value after it.
    pub value: i64,
}

/// `history` operations: `list` shows the entries, `add` appends `command`, `clear`
/// removes every entry.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
#[allow(missing_docs)]
pub enum HistoryOperation {
    List,
    Add,
    Clear,
}

/// `history` arguments.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct HistoryArgs {
    /// What to do with the history.
    pub operation: HistoryOperation,
    /// The entry to append (required for `add`).
    #[serde(default)]
    pub command: Option<String>,
    /// Session handle from `session_create`; optional on 2025-era connections.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `history` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryOutput {
    /// The session the history belongs to.
    pub session_id: String,
    /// The operation applied.
    pub operation: HistoryOperation,
    /// The entries after it, oldest first.
    pub entries: Vec<String>,
}

#[tool_router(router = state_tools, vis = "pub(super)")]
impl StatefulServer {
    /// Reads or changes the session's counter.
    #[tool(
        description = "A counter kept in the session: get, increment, decrement or reset it.",
        output_schema = schema_for_output::<CounterOutput>()
    )]
    async fn counter(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CounterArgs>,
    ) -> ToolResult {
        let binding = Binding::of(&ctx, args.session_id.clone())?;
        let retry = retry_of(&ctx, binding.principal(), "counter", &args);
        let op = match args.operation {
            CounterOperation::Get => CounterOp::Get,
            CounterOperation::Increment => CounterOp::Add(args.step),
            CounterOperation::Decrement => {
                CounterOp::Add(args.step.checked_neg().ok_or_else(|| {
                    ToolFailure::Refused(SessionError::CounterOverflow.to_string())
                })?)
            }
            CounterOperation::Reset => CounterOp::Reset,
        };
        let value = self
            .in_session(
                &binding,
                self.sessions
                    .counter_once(binding.principal(), binding.id(), op, retry.as_ref()),
            )
            .await?;
        let name = serde_json::to_value(args.operation)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        reply(
            format!("Counter {name}: {value}"),
            &CounterOutput {
                session_id: binding.id().to_owned(),
                operation: args.operation,
                value,
            },
        )
    }

    /// Reads or changes the session's command history.
    #[tool(
        description = "A command history kept in the session (the last 20 entries): list it, \
                       add a `command`, or clear it.",
        output_schema = schema_for_output::<HistoryOutput>()
    )]
    async fn history(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<HistoryArgs>,
    ) -> ToolResult {
        let binding = Binding::of(&ctx, args.session_id.clone())?;
        let retry = retry_of(&ctx, binding.principal(), "history", &args);
        let op = match (args.operation, args.command) {
            (HistoryOperation::List, _) => HistoryOp::List,
            (HistoryOperation::Add, Some(cmd)) if !cmd.is_empty() => HistoryOp::Add(cmd),
            (HistoryOperation::Add, _) => {
                return Err(ToolFailure::Refused(
                    "The `add` operation requires a non-empty `command` argument.".to_owned(),
                ));
            }
            (HistoryOperation::Clear, _) => HistoryOp::Clear,
        };
        let text_for_add = match &op {
            HistoryOp::Add(cmd) => Some(format!("Added to history: {cmd}")),
            _ => None,
        };
        let entries = self
            .in_session(
                &binding,
                self.sessions
                    .history_once(binding.principal(), binding.id(), op, retry.as_ref()),
            )
            .await?;
        let text = match args.operation {
            HistoryOperation::Add => text_for_add.unwrap_or_default(),
            HistoryOperation::Clear => "History cleared".to_owned(),
            HistoryOperation::List if entries.is_empty() => "No history available".to_owned(),
            HistoryOperation::List => entries
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{}. {e}", i + 1))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        reply(
            text,
            &HistoryOutput {
                session_id: binding.id().to_owned(),
                operation: args.operation,
                entries,
            },
        )
    }
}
