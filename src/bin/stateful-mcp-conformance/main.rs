//! The `stateful-mcp-conformance` binary: the replica of `stateful-mcp` (same
//! settings, endpoint, edge, session manager and stores) with the fixtures the official
//! MCP conformance suite (`@modelcontextprotocol/conformance`) calls in front of its
//! handler. For conformance runs only (`scripts/conformance.sh`): the shipping binary
//! serves none of this.
//!
//! [`ConformanceServer`] wraps the production [`StatefulServer`]: a request that names
//! a fixture (tool, resource, prompt) is served here, anything else by the production
//! handler, and each list is the production list followed by the fixtures. `main`
//! serves it through the embedding seam ([`stateful_mcp::mcp::endpoint_with`]), so the
//! suite tests the real stack.
//!
//! - `tools.rs`: content, progress, logging and schema fixtures, and the 2026-07-28
//!   diagnostics;
//! - `requests.rs`: the 2025-era sampling and elicitation fixtures;
//! - `mrtr.rs`: the `test_input_required_result_*` tools and prompt (SEP-2322), their
//!   `requestState` sealed by rmcp's codec;
//! - `catalog.rs`: the `test://` resources and template, the prompts and the
//!   completions;
//! - `session_state.rs`: what a 2025-era session keeps for the fixtures (its log level,
//!   its resource subscriptions), in the session's own record so every replica sees it;
//! - `listen.rs`: what a `subscriptions/listen` stream may ask for; the streams
//!   themselves are the replica's [`Notifier`]'s, which the list-changed triggers
//!   publish to (every replica's streams hear them).
//! - `tasks.rs`: the tasks extension's fixtures (`greet`, `slow_compute`, ...), job
//!   tools of the production handler, which serves `tasks/*` for every task.
//!
//! Nothing here is per replica: `requestState` is sealed with the configured key ring
//! ([`RequestStates`]), notifications travel over the bus.

mod catalog;
mod listen;
mod mrtr;
mod requests;
mod session_state;
mod tasks;
mod tools;

use std::{process::ExitCode, sync::Arc};

#[expect(
    deprecated,
    reason = "the 2025-era suites test logging and subscriptions"
)]
use rmcp::model::{SetLevelRequestMethod, SetLevelRequestParams, SubscribeRequestParams};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, CompleteRequestParams,
        CompleteResult, GetPromptRequestParams, GetPromptResponse, GetTaskParams, GetTaskResult,
        ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
        PaginatedRequestParams, PromptsCapability, ReadResourceRequestParams, ReadResourceResponse,
        ServerConfig, SubscriptionFilter, Tool, ToolsCapability, UnsubscribeRequestParams,
        UpdateTaskParams,
    },
    service::{RequestContext, SubscriptionContext},
};
use stateful_mcp::{
    auth::Principal,
    mcp::{
        McpState, endpoint_with,
        error::DomainErrors,
        handler::{
            StatefulServer,
            binding::{caller, transport_session},
            notify::Notifier,
            request_state::RequestStates,
            schema::standard_schemas,
            until_cancelled,
        },
    },
    sessions::Sessions,
};

use self::{session_state::SessionState, tasks::task_fixtures};

#[tokio::main]
async fn main() -> ExitCode {
    stateful_mcp::cli::run("stateful-mcp-conformance", |mcp| {
        let production = StatefulServer::with_jobs(mcp, task_fixtures());
        let server = ConformanceServer::new(mcp, production);
        endpoint_with(mcp, move || server.clone())
    })
    .await
}

/// The production handler with the conformance fixtures in front of it. Cheap to
/// clone: the factory builds one per stateless request.
#[derive(Clone)]
struct ConformanceServer {
    production: StatefulServer,
    sessions: Sessions,
    errors: DomainErrors,
    fixtures: Arc<ToolRouter<Self>>,
    request_states: RequestStates,
    notifier: Notifier,
}

impl ConformanceServer {
    /// The fixtures over `production`, with the replica's session layer for what a
    /// 2025-era session keeps. Build it once and clone it per request.
    fn new(mcp: &McpState, production: StatefulServer) -> Self {
        Self {
            production,
            sessions: mcp.app.sessions.clone(),
            errors: DomainErrors::new(mcp.app.metrics.clone()),
            fixtures: Arc::new(standard_schemas(
                Self::fixture_tools() + Self::request_tools() + Self::mrtr_fixtures(),
            )),
            request_states: mcp.request_states.clone(),
            notifier: mcp.notifier.clone(),
        }
    }

    /// The fixtures' state in the request's confirmed 2025-era session.
    ///
    /// # Errors
    /// Method not found without one: `M` is a 2025-era method, which 2026-07-28 removed.
    fn legacy_state<M: rmcp::model::ConstString + Default>(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<SessionState<'_>, McpError> {
        let id = transport_session(context).ok_or_else(McpError::method_not_found::<M>)?;
        Ok(self.session_state(caller(context), id))
    }

    /// The fixtures' state in session `id` of `principal`.
    fn session_state(&self, principal: Principal, id: String) -> SessionState<'_> {
        SessionState {
            sessions: &self.sessions,
            errors: &self.errors,
            principal,
            id,
        }
    }
}

impl ServerHandler for ConformanceServer {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if !self.fixtures.has_route(&request.name) {
            return self.production.call_tool(request, context).await;
        }
        let cancelled = context.ct.clone();
        let call = self
            .fixtures
            .call(ToolCallContext::new(self, request, context));
        until_cancelled(&cancelled, call)
            .await
            .unwrap_or_else(|| Err(McpError::internal_error("request cancelled", None)))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut result = self.production.list_tools(request, context).await?;
        result.tools.extend(self.fixtures.list_all());
        Ok(result)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        self.production.get_task(request, context).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.production.update_task(request, context).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.production.cancel_task(request, context).await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.fixtures
            .get(name)
            .cloned()
            .or_else(|| self.production.get_tool(name))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut result = self.production.list_resources(request, context).await?;
        result.resources.extend(catalog::resources());
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let mut result = self
            .production
            .list_resource_templates(request, context)
            .await?;
        result.resource_templates.extend(catalog::templates());
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if let Some(result) = catalog::read(&request.uri) {
            return Ok(result.into());
        }
        self.production.read_resource(request, context).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let mut prompts = catalog::prompts();
        prompts.push(mrtr::prompt());
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if request.name == mrtr::MRTR_PROMPT {
            return mrtr::render_prompt(request.input_responses);
        }
        match catalog::prompt(&request.name, request.arguments.as_ref()) {
            Some(rendered) => rendered.map(Into::into),
            None => {
                let name: String = request.name.chars().take(64).collect();
                Err(McpError::invalid_params(
                    format!("unknown prompt `{name}`; prompts/list shows the available prompts"),
                    None,
                ))
            }
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        catalog::complete(&request)
    }

    #[expect(
        deprecated,
        reason = "logging/setLevel is what the 2025-era suites test"
    )]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.legacy_state::<SetLevelRequestMethod>(&context)?
            .set_log_level(request.level)
            .await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.legacy_state::<rmcp::model::SubscribeRequestMethod>(&context)?
            .subscribe(&request.uri)
            .await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.legacy_state::<rmcp::model::UnsubscribeRequestMethod>(&context)?
            .unsubscribe(&request.uri)
            .await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(listen::accepted(requested, &self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        self.notifier.serve(context).await
    }

    fn get_info(&self) -> ServerConfig {
        let mut info = self.production.get_info();
        let capabilities = &mut info.capabilities;
        let mut tools = ToolsCapability::default();
        tools.list_changed = Some(true);
        capabilities.tools = Some(tools);
        let mut prompts = PromptsCapability::default();
        prompts.list_changed = Some(true);
        capabilities.prompts = Some(prompts);
        let mut resources = capabilities.resources.take().unwrap_or_default();
        resources.subscribe = Some(true);
        capabilities.resources = Some(resources);
        capabilities.logging = Some(Default::default());
        capabilities.completions = Some(Default::default());
        info
    }
}
