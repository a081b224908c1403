//! The MCP handler ([`StatefulServer`]): rmcp's `ServerHandler` over the tools in
//! [`tools`] and the [`super::resources`], with each tool call timed, logged and
//! stopped when the client cancels it (the edge tracks the request for the drain).
//!
//! State lives in [`Sessions`] and the cache, never in this struct, so any replica can
//! serve any call; the struct is a bundle of cheap handles, cloned per request.

mod tools;

use std::sync::Arc;

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, Implementation,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ResultType,
        ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};
use serde_json::Value;

pub use self::tools::{
    CounterArgs, CounterOperation, CounterOutput, CreateArgs, CreateOutput, DeleteArgs,
    DeleteOutput, HistoryArgs, HistoryOperation, HistoryOutput, PrimeCountArgs, PrimeCountOutput,
    SessionArgs, SessionInfoOutput,
};
use super::{binding::transport_session, resources::Resources};
use crate::{
    cache::CacheManager, config::ToolSettings, cpu::CpuPool, metrics::Metrics, sessions::Sessions,
    state::AppState, telemetry::RequestId,
};

/// The MCP server handler. Cheap to clone: the factory builds one per stateless request.
#[derive(Clone)]
pub struct StatefulServer {
    sessions: Sessions,
    cache: CacheManager,
    cpu: CpuPool,
    metrics: Metrics,
    tools: Arc<ToolSettings>,
    resources: Resources,
    tool_router: Arc<ToolRouter<Self>>,
}

impl StatefulServer {
    /// A handler over the replica's components. Build it once and clone it per request.
    pub fn new(state: &AppState) -> Self {
        let tools = Arc::new(state.settings.tools.clone());
        Self {
            sessions: state.sessions.clone(),
            cache: state.cache.clone(),
            cpu: state.cpu.clone(),
            metrics: state.metrics.clone(),
            resources: Resources::new(state.cache.clone(), state.cpu.clone(), tools.clone()),
            tools,
            tool_router: Arc::new(Self::tool_router()),
        }
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
        if self.tool_router.get(&request.name).is_none() {
            let name: String = request.name.chars().take(64).collect();
            return Err(McpError::invalid_params(
                format!("unknown tool `{name}`; tools/list shows the available tools"),
                None,
            ));
        }
        let timer = self.metrics.tool_call(&request.name);
        let request_id = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<RequestId>())
            .map(|id| id.0.clone())
            .unwrap_or_default();
        let session_id = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("session_id"))
            .and_then(Value::as_str)
            .filter(|id| crate::ids::is_well_formed(id))
            .map(str::to_owned)
            .or_else(|| transport_session(&context))
            .map(|id| crate::ids::fingerprint(&id))
            .unwrap_or_default();
        // rmcp runs handlers on tasks of its own, outside the HTTP request's span.
        let span = tracing::info_span!(
            "tool",
            request_id = %request_id,
            tool = %request.name,
            session_id = %session_id,
        );
        let started = std::time::Instant::now();
        // rmcp only signals cancellation (a `notifications/cancelled`, or a 2026-07-28
        // client dropping its response stream) through the token; dropping the call
        // future at its next await point is what actually stops the work.
        let cancelled = context.ct.clone();
        let call = self
            .tool_router
            .call(ToolCallContext::new(self, request, context));
        let result = tokio::select! {
            biased;
            () = cancelled.cancelled() => {
                // `timer` is dropped unfinished: counted as cancelled.
                return Err(McpError::internal_error("request cancelled", None));
            }
            result = call => result,
        };
        let outcome = match &result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        span.in_scope(|| {
            tracing::info!(
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
        let mut result = ListToolsResult::with_all_items(self.tool_router.list_all());
        result.result_type = Some(ResultType::COMPLETE);
        if supports_cache_hints(&context) {
            // The tool list is the same for every caller and changes only with a deploy.
            result.ttl_ms = Some(self.tools.list_ttl_secs.saturating_mul(1000));
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router.get(name).cloned()
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
            .read(request.uri, supports_cache_hints(&context))
            .await
    }

    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
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
            .with_server_info(Implementation::new(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Stateful tools over Redis-backed sessions. Call `session_create` for a \
                 `session_id` handle and pass it to `counter`, `history` and `session_info`. \
                 On 2025-era connections the handle is optional: the connection's session is used.",
            )
    }
}
