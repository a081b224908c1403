//! The MCP tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28) over
//! [`crate::tasks`]: which tools run as jobs and whether as tasks ([`JobTools`]), what
//! `tools/call` answers for them, and the wire shapes of `tasks/get`, `tasks/update` and
//! `tasks/cancel`, served by [`super::StatefulServer`] from the store on any
//! replica.
//!
//! rmcp's `Tool` has no `taskSupport` field: a tool's support is declared in its `_meta`
//! under the extension's id (`{"taskSupport": "optional" | "required"}`), and a call to
//! a required-task tool from a client that did not declare the extension is refused
//! here with -32021 before anything runs.

use std::collections::HashMap;

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
        CreateTaskResult, DetailedTask, InputRequests, JsonObject, MetaObject, TASKS_EXTENSION_ID,
        Task, TaskPayload, TaskStatus as WireStatus, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value as Json, json};

use crate::{
    mcp::error::{ToolFailure, tool_error},
    tasks::{Job, Outcome, TaskRecord, TaskStatus},
};

/// Whether a tool runs as a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSupport {
    /// Never: the call is answered in the request.
    Forbidden,
    /// As a task when the client declared the extension, else in the request.
    Optional,
    /// Only as a task: clients without the extension get -32021.
    Required,
}

impl TaskSupport {
    fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// What a job tool does with one call.
pub enum Plan {
    /// Run this job: as a task when the client allows, else in the request.
    Run(Job),
    /// Answer at once (a refusal, or an MRTR input request before the task starts).
    Answer(CallToolResponse),
}

/// Builds the plan of one call from its parameters.
pub type Planner = Box<dyn Fn(&CallToolRequestParams) -> Plan + Send + Sync>;

/// A tool whose work is a [`Job`].
pub struct JobTool {
    /// Its definition, as `tools/list` shows it (`_meta` is added from `support`).
    pub tool: Tool,
    /// Whether it runs as a task.
    pub support: TaskSupport,
    /// Whether a call outside a task goes to the tool router instead (a router tool that
    /// can also run as a task).
    pub routed: bool,
    /// The call's plan.
    pub plan: Planner,
}

/// The job tools of a server, by name.
#[derive(Default)]
pub struct JobTools {
    tools: HashMap<String, JobTool>,
}

impl JobTools {
    /// Adds `tool`.
    pub fn add(&mut self, tool: JobTool) {
        self.tools.insert(tool.tool.name.to_string(), tool);
    }

    /// The job tool named `name`.
    pub fn get(&self, name: &str) -> Option<&JobTool> {
        self.tools.get(name)
    }

    /// The definitions of the tools the router does not list, sorted by name.
    pub fn unrouted(&self) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self
            .tools
            .values()
            .filter(|t| !t.routed)
            .map(|t| declared(t.tool.clone(), t.support))
            .collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// `tool` with its task support declared, if it is a job tool.
    pub fn declare(&self, tool: Tool) -> Tool {
        match self.tools.get(tool.name.as_ref()) {
            Some(job) => declared(tool, job.support),
            None => tool,
        }
    }
}

/// `tool` with `_meta[TASKS_EXTENSION_ID].taskSupport` set.
fn declared(mut tool: Tool, support: TaskSupport) -> Tool {
    let mut meta = tool
        .meta
        .take()
        .unwrap_or_else(|| MetaObject(JsonObject::new()));
    meta.0.insert(
        TASKS_EXTENSION_ID.to_owned(),
        json!({"taskSupport": support.as_str()}),
    );
    tool.meta = Some(meta);
    tool
}

/// Whether this request declared the tasks extension (in its `_meta`, or for a 2025-era
/// session at `initialize`).
pub fn client_declared_tasks(context: &RequestContext<RoleServer>) -> bool {
    context
        .client_capabilities()
        .is_some_and(|caps| caps.supports_tasks())
}

/// The -32021 refusal of a required-task tool called without the extension.
pub fn tasks_required() -> McpError {
    McpError::missing_required_client_capability(
        ClientCapabilities::builder().enable_tasks().build(),
    )
}

/// The -32602 answer for a task id the caller has no task under.
pub fn unknown_task() -> McpError {
    McpError::invalid_params(
        "unknown task: no task with this id exists for this caller (it may have expired)",
        None,
    )
}

/// A tool call's result or JSON-RPC error as a job outcome.
pub fn outcome_of(result: Result<CallToolResult, McpError>) -> Outcome {
    match result {
        Ok(result) => match serde_json::to_value(&result) {
            Ok(value) => Outcome::Completed(value),
            Err(e) => Outcome::Failed(error_json(&McpError::internal_error(
                format!("the result could not be encoded: {e}"),
                None,
            ))),
        },
        Err(error) => Outcome::Failed(error_json(&error)),
    }
}

/// A tool's result as a job outcome: a refusal is a completed `isError` result.
pub(crate) fn tool_outcome(result: Result<CallToolResult, ToolFailure>) -> Outcome {
    outcome_of(match result {
        Ok(result) => Ok(result),
        Err(ToolFailure::Refused(text)) => Ok(tool_error(text)),
        Err(ToolFailure::Internal(e)) => Err(e),
    })
}

/// A JSON-RPC error as the JSON a failed task carries.
pub fn error_json(error: &McpError) -> Json {
    serde_json::to_value(error).unwrap_or_else(|_| json!({"code": -32603, "message": "error"}))
}

/// A job's outcome as the answer of a call that ran in the request.
pub fn response_of(outcome: Outcome) -> Result<CallToolResponse, McpError> {
    match outcome {
        Outcome::Completed(value) => serde_json::from_value::<CallToolResult>(value)
            .map(CallToolResponse::from)
            .map_err(|e| McpError::internal_error(format!("malformed result: {e}"), None)),
        Outcome::Failed(error) => Err(serde_json::from_value::<McpError>(error)
            .unwrap_or_else(|e| McpError::internal_error(format!("malformed error: {e}"), None))),
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn wire_status(status: TaskStatus) -> WireStatus {
    match status {
        TaskStatus::Working => WireStatus::Working,
        TaskStatus::InputRequired => WireStatus::InputRequired,
        TaskStatus::Completed => WireStatus::Completed,
        TaskStatus::Failed => WireStatus::Failed,
        TaskStatus::Cancelled => WireStatus::Cancelled,
    }
}

/// The task fields every answer carries.
fn task_of(record: &TaskRecord) -> Task {
    let mut task = Task::new(
        record.id.clone(),
        wire_status(record.status),
        iso(record.created_ms),
        iso(record.updated_ms),
    )
    .with_ttl_ms(record.ttl_ms)
    .with_poll_interval_ms(record.poll_ms);
    task.status_message = record.message.clone();
    task
}

/// What `tools/call` answers once the task is stored.
pub fn created(record: &TaskRecord) -> CallToolResponse {
    CallToolResponse::Task(CreateTaskResult::new(task_of(record)))
}

/// What `tasks/get` answers: the task with its result, error or pending input inlined.
pub fn detailed(record: TaskRecord) -> DetailedTask {
    let task = task_of(&record);
    let object = |v: Option<Json>| match v {
        Some(Json::Object(map)) => map,
        _ => JsonObject::new(),
    };
    let payload = match record.status {
        TaskStatus::Working => TaskPayload::Working,
        TaskStatus::InputRequired => {
            let input_requests: InputRequests = record
                .input_requests
                .into_iter()
                .filter_map(|(key, request)| Some((key, serde_json::from_value(request).ok()?)))
                .collect();
            TaskPayload::InputRequired { input_requests }
        }
        TaskStatus::Completed => TaskPayload::Completed {
            result: object(record.result),
        },
        TaskStatus::Failed => TaskPayload::Failed {
            error: object(record.error),
        },
        TaskStatus::Cancelled => TaskPayload::Cancelled,
    };
    DetailedTask::new(task, payload)
}

/// A planner for a tool that always runs `job` built from the call's arguments.
pub fn planner<F>(job: F) -> Planner
where
    F: Fn(JsonObject) -> Job + Send + Sync + 'static,
{
    Box::new(move |params: &CallToolRequestParams| {
        Plan::Run(job(params.arguments.clone().unwrap_or_default()))
    })
}

/// Puts a replica's answer about `record` (to `method`) in the trace of the call that
/// started the task, as a child of the task's run, linked to the answering request's
/// own span (`request`): a task polled anywhere shows in its start's trace. Nothing
/// while traces are not exported, or when the task kept no trace context.
pub(super) fn answered_in_trace(
    record: &crate::tasks::TaskRecord,
    method: &'static str,
    request: &tracing::Span,
) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(parent) = record
        .trace
        .as_deref()
        .and_then(crate::telemetry::propagation::from_traceparent)
    else {
        return;
    };
    let span = tracing::info_span!(
        target: crate::telemetry::OTEL_TARGET,
        parent: None,
        "task.answer",
        otel.name = method,
        mcp.method.name = method,
        gen_ai.tool.name = record.tool.as_str(),
    );
    crate::telemetry::propagation::set_parent(&span, parent);
    if !span.is_disabled() && !request.is_disabled() {
        use opentelemetry::trace::TraceContextExt;
        span.add_link(request.context().span().span_context().clone());
    }
}
