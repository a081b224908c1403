//! The MCP handler ([`StatefulServer`]): rmcp's `ServerHandler` over the tools in
//! its tools (`handler/tools.rs`) and resources (`handler/resources.rs`), with each tool call timed, logged and
//! stopped when the client cancels it (the edge tracks the request for the drain).
//!
//! State lives in [`Sessions`] and the cache, never in this struct, so any replica can
//! serve any call; the struct is a bundle of cheap handles, cloned per request.

pub mod binding;
pub mod notify;
pub mod request_state;
mod resources;
pub mod schema;
pub mod tasks;
mod tools;

use std::sync::Arc;

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, CancelTaskParams, GetTaskParams,
        GetTaskResult, Implementation, ListResourceTemplatesResult, ListResourcesResult,
        ListToolsResult, PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams,
        ReadResourceResponse, ResultType, ServerCapabilities, ServerConfig, SubscriptionFilter,
        Tool, UpdateTaskParams,
    },
    service::{RequestContext, SubscriptionContext},
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(crate) use self::tools::PrimeCounter;
pub use self::tools::{
    CounterArgs, CounterOperation, CounterOutput, CreateArgs, CreateOutput, DeleteArgs,
    DeleteOutput, HistoryArgs, HistoryOperation, HistoryOutput, PrimeCountArgs, PrimeCountOutput,
    SessionArgs, SessionInfoOutput,
};
use self::{
    binding::{caller, transport_session},
    notify::Notifier,
    resources::Resources,
    schema::standard_schemas,
    tasks::{
        JobTool, JobTools, Plan, TaskSupport, client_declared_tasks, created, detailed,
        response_of, tasks_required, unknown_task,
    },
};
use crate::{
    cache::CacheManager,
    config::ToolSettings,
    cpu::CpuPool,
    managed::HandleManager,
    mcp::{McpState, error::DomainErrors, extensions::TraceSpan},
    metrics::Metrics,
    redis_pool::RedisPool,
    sessions::Sessions,
    state::AppState,
    tasks::{TaskContext, TaskManager},
    telemetry::RequestId,
};

/// The MCP server handler. Cheap to clone (one reference count): the factory makes one
/// per stateless request.
#[derive(Clone)]
pub struct StatefulServer(Arc<Components>);

impl std::ops::Deref for StatefulServer {
    type Target = Components;

    fn deref(&self) -> &Components {
        &self.0
    }
}

/// What every clone of a [`StatefulServer`] shares.
pub struct Components {
    sessions: Sessions,
    cache: CacheManager,
    cpu: CpuPool,
    metrics: Metrics,
    /// What clients see of the domain's errors.
    errors: DomainErrors,
    tools: Arc<ToolSettings>,
    resources: Resources,
    managed: HandleManager,
    pool: Option<RedisPool>,
    replica_id: Arc<str>,
    max_read_bytes: usize,
    tool_router: Arc<ToolRouter<StatefulServer>>,
    task_manager: TaskManager,
    /// Tools whose work can run as a task (and the fixtures that only run as jobs).
    job_tools: Arc<JobTools>,
    /// Where task statuses go: it learns here which worker each 2025-era session with
    /// tasks has on this replica.
    notifier: Notifier,
}

impl StatefulServer {
    /// A handler over the replica's components. Build it once and clone it per request.
    pub fn new(mcp: &McpState) -> Self {
        Self::with_jobs(mcp, Vec::new())
    }

    /// [`StatefulServer::new`] with `extra_jobs` beside the production tools (the tasks
    /// extension's fixtures of the `stateful-mcp-conformance` binary).
    pub fn with_jobs(mcp: &McpState, extra_jobs: Vec<JobTool>) -> Self {
        let state = &mcp.app;
        let tools = Arc::new(state.settings.tools.clone());
        Self(Arc::new(Components {
            sessions: state.sessions.clone(),
            cache: state.cache.clone(),
            cpu: state.cpu.clone(),
            metrics: state.metrics.clone(),
            errors: DomainErrors::new(state.metrics.clone()),
            resources: Resources::new(state.cache.clone(), state.cpu.clone(), tools.clone()),
            managed: state.handles.clone(),
            pool: state.redis.clone(),
            replica_id: state.replica_id.clone(),
            max_read_bytes: state.settings.resources.max_read_bytes,
            tool_router: Arc::new(standard_schemas(Self::tool_router())),
            task_manager: state.task_manager.clone(),
            job_tools: Arc::new(Self::job_tools(state, &tools, extra_jobs)),
            notifier: mcp.notifier.clone(),
            tools,
        }))
    }

    /// The tools that run as jobs: `prime_count` as a task, then `extra`.
    fn job_tools(state: &AppState, tools: &Arc<ToolSettings>, extra: Vec<JobTool>) -> JobTools {
        let mut jobs = JobTools::default();
        let router = Self::tool_router();
        if let Some(tool) = router.get("prime_count") {
            let primes = PrimeCounter {
                cache: state.cache.clone(),
                cpu: state.cpu.clone(),
                tools: tools.clone(),
            };
            jobs.add(JobTool {
                tool: tool.clone(),
                support: TaskSupport::Optional,
                routed: true,
                plan: tools::prime_count_planner(primes),
            });
        }
        extra.into_iter().for_each(|job| jobs.add(job));
        jobs
    }

    /// Answers a call to a job tool: as a task (stored before this returns) when the
    /// client declared the extension and the tool supports it, -32021 for a
    /// required-task tool otherwise, else in the request; `None` hands the call to the
    /// tool router.
    async fn call_job_tool(
        &self,
        tool: &JobTool,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<Option<CallToolResponse>, McpError> {
        let declared = client_declared_tasks(context);
        let as_task = match tool.support {
            TaskSupport::Forbidden => false,
            TaskSupport::Optional => declared,
            TaskSupport::Required if declared => true,
            TaskSupport::Required => return Err(tasks_required()),
        };
        if !as_task && tool.routed {
            return Ok(None);
        }
        let job = match (tool.plan)(request) {
            Plan::Answer(response) => return Ok(Some(response)),
            Plan::Run(job) => job,
        };
        if !as_task {
            return response_of(job(TaskContext::inline()).await).map(Some);
        }
        let owner = caller(context);
        let session = self.session_of(context);
        let record = self
            .task_manager
            .submit_from(owner.as_str(), &request.name, job, session.as_deref())
            .await
            .map_err(|e| self.errors.task(e))?;
        Ok(Some(created(&record)))
    }
}

impl StatefulServer {
    /// The confirmed 2025-era session of a task request, if any, remembered with its
    /// worker here so the statuses of its tasks reach it (see [`Notifier`]).
    fn session_of(&self, context: &RequestContext<RoleServer>) -> Option<String> {
        let session = transport_session(context)?;
        self.notifier.remember_session(&session, &context.peer);
        Some(session)
    }
}

/// A task id as the client sent it, if it can be one of ours (anything else is unknown
/// without a store round trip).
fn task_id(id: &str) -> Result<&str, McpError> {
    if crate::ids::is_well_formed(id) {
        Ok(id)
    } else {
        Err(unknown_task())
    }
}

/// Runs a tool `call` until it finishes, or `None` once the client cancels it. (A
/// drain waits for the responses in flight, not for calls: see `startup.rs`.)
///
/// rmcp only signals cancellation (a `notifications/cancelled`, or a 2026-07-28 client
/// dropping its response stream) through the token; dropping the call future at its
/// next await point is what actually stops the work.
pub async fn until_cancelled<F: Future>(
    cancelled: &CancellationToken,
    call: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = cancelled.cancelled() => None,
        result = call => Some(result),
    }
}

/// Whether the caller speaks a revision with SEP-2549 cache hints.
fn supports_cache_hints(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
}

impl ServerHandler for StatefulServer {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let job_tool = self.job_tools.get(&request.name);
        if self.tool_router.get(&request.name).is_none() && job_tool.is_none() {
            let name: String = request.name.chars().take(64).collect();
            return Err(McpError::invalid_params(
                format!("unknown tool `{name}`; tools/list shows the available tools"),
                None,
            ));
        }
        let timer = self.metrics.tool_call(&request.name);
        // rmcp runs handlers on tasks of its own, outside the HTTP request's span. A
        // debug span, like the request's: its fields cost a hash and some formatting,
        // spent only when it is enabled.
        let span = tracing::debug_span!(
            "tool",
            request_id = tracing::field::Empty,
            tool = %request.name,
            session_id = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if let Some(id) = context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.extensions.get::<RequestId>())
            {
                span.record("request_id", id.0.as_str());
            }
            if let Some(id) = request
                .arguments
                .as_ref()
                .and_then(|a| a.get("session_id"))
                .and_then(Value::as_str)
                .filter(|id| crate::ids::is_well_formed(id))
                .map(str::to_owned)
                .or_else(|| transport_session(&context))
            {
                span.record("session_id", crate::ids::fingerprint(&id));
            }
        }
        let started = std::time::Instant::now();
        let cancelled = context.ct.clone();
        // The request's exported span, if any: rmcp runs this on a task of its own.
        let traced = request_span(&context);
        let call = async {
            if let Some(tool) = job_tool
                && let Some(response) = self.call_job_tool(tool, &request, &context).await?
            {
                return Ok(response);
            }
            self.tool_router
                .call(ToolCallContext::new(self, request, context))
                .await
        }
        .instrument(traced);
        let Some(result) = until_cancelled(&cancelled, call).await else {
            // `timer` is dropped unfinished: counted as cancelled.
            return Err(McpError::internal_error("request cancelled", None));
        };
        let outcome = match &result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        span.in_scope(|| {
            tracing::debug!(
                outcome,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "tool call"
            );
        });
        timer.finish(outcome);
        result
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools: Vec<Tool> = self
            .tool_router
            .list_all()
            .into_iter()
            .map(|tool| self.job_tools.declare(tool))
            .collect();
        tools.extend(self.job_tools.unrouted());
        let mut result = ListToolsResult::with_all_items(tools);
        result.result_type = Some(ResultType::COMPLETE);
        if supports_cache_hints(&context) {
            // The tool list is the same for every caller and changes only with a deploy.
            result.ttl_ms = Some(self.tools.list_ttl_secs.saturating_mul(1000));
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        match self.tool_router.get(name) {
            Some(tool) => Some(self.job_tools.declare(tool.clone())),
            None => self.job_tools.get(name).map(|job| job.tool.clone()),
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let id = task_id(&request.task_id)?;
        self.session_of(&context);
        let record = self
            .task_manager
            .store()
            .get(caller(&context).as_str(), id)
            .await
            .map_err(|e| self.errors.task(e))?
            .ok_or_else(unknown_task)?;
        tasks::answered_in_trace(&record, "tasks/get", &request_span(&context));
        Ok(GetTaskResult::new(detailed(record)))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let id = task_id(&request.task_id)?;
        self.session_of(&context);
        let changed = self
            .task_manager
            .store()
            .update(caller(&context).as_str(), id, &request.input_responses)
            .await
            .map_err(|e| self.errors.task(e))?
            .ok_or_else(unknown_task)?;
        if changed.status == crate::tasks::TaskStatus::Working {
            self.task_manager.notify_input(id, &changed.replica).await;
        }
        Ok(())
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let id = task_id(&request.task_id)?;
        self.session_of(&context);
        let changed = self
            .task_manager
            .store()
            .cancel(caller(&context).as_str(), id)
            .await
            .map_err(|e| self.errors.task(e))?
            .ok_or_else(unknown_task)?;
        self.task_manager.notify_cancel(id, &changed.replica).await;
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(self.resources.list(supports_cache_hints(&context)))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(self.resources.templates(supports_cache_hints(&context)))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.resources
            .read(
                caller(&context).as_str(),
                request.uri,
                supports_cache_hints(&context),
            )
            .await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Nothing of the filter's kinds is advertised here (the lists change only with a
        // deploy): a stream of this handler carries its principal's task statuses.
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        self.notifier.serve(context).await
    }

    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_tasks()
            .build();
        // SEP-3182: `tools/call` takes an `idempotencyKey`; rmcp's tools capability has
        // no field for it yet, so it is announced among the experimental capabilities.
        let retention = self.sessions.limits().idempotency_ttl_secs;
        let idempotency = serde_json::json!({"retentionSecs": retention});
        capabilities.experimental = Some(
            [(
                "tools.idempotency".to_owned(),
                idempotency.as_object().cloned().unwrap_or_default(),
            )]
            .into(),
        );
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(env!("CARGO_PKG_NAME"), crate::VERSION))
            .with_instructions(
                "Stateful tools over Redis-backed sessions. Call `session_create` for a \
                 `session_id` handle and pass it to `counter`, `history` and `session_info`. \
                 On 2025-era connections the handle is optional: the connection's session is used.",
            )
    }
}

/// The exported span of the request `context` serves ([`TraceSpan`]), or a disabled
/// one: rmcp runs handlers on tasks of its own, outside the request's span.
fn request_span(context: &RequestContext<RoleServer>) -> tracing::Span {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<TraceSpan>())
        .map_or_else(tracing::Span::none, |s| s.0.clone())
}
