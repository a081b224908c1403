//! The tool server: the stateful tools and how each call finds its state session.
//!
//! A call names its session with a `session_id` argument (the 2026-07-28 way: a handle
//! minted by `session_create`). A 2025-era call may omit it and then uses the session
//! bound to its transport's `Mcp-Session-Id`. State lives in [`Sessions`], never in this
//! struct, so any replica can serve any call. The tools themselves are in [`tools`].

mod tools;

use std::{collections::HashMap, sync::Arc, time::Duration};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, Implementation,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
        Resource, ResourceContents, ResourceTemplate, ResultType, ServerCapabilities, ServerConfig,
        Tool,
    },
    service::RequestContext,
};
use serde_json::Value;
use tokio_util::task::TaskTracker;

use self::tools::tool_error;
pub use self::tools::{
    CounterArgs, CounterOperation, CounterOutput, CreateArgs, CreateOutput, DeleteArgs,
    DeleteOutput, HistoryArgs, HistoryOperation, HistoryOutput, PrimeCountArgs, PrimeCountOutput,
    SessionArgs, SessionInfoOutput,
};
use super::tool_cache::{self, CachePolicy, Scope};
use crate::{
    cache::{CacheManager, LoadError},
    config::ToolSettings,
    metrics::Metrics,
    primes,
    sessions::{ANONYMOUS, NewSession, SessionError, Sessions},
    telemetry::RequestId,
};

/// The first protocol revision without transport sessions.
const STATELESS_ERA: &str = "2026-07-28";

/// The MCP server handler. Cheap to clone: the factory builds one per stateless request.
#[derive(Clone)]
pub struct StatefulServer {
    sessions: Sessions,
    calls: TaskTracker,
    cache: CacheManager,
    metrics: Metrics,
    tools: Arc<ToolSettings>,
    tool_router: Arc<ToolRouter<Self>>,
    cache_policies: Arc<HashMap<&'static str, CachePolicy>>,
}

impl StatefulServer {
    /// A handler over the replica's components. Build it once and clone it per request.
    pub fn new(
        sessions: Sessions,
        calls: TaskTracker,
        cache: CacheManager,
        metrics: Metrics,
        tools: ToolSettings,
    ) -> Self {
        let mut cache_policies = HashMap::new();
        if tools.prime_count_cache_ttl_secs > 0 {
            cache_policies.insert(
                "prime_count",
                CachePolicy {
                    ttl: Duration::from_secs(tools.prime_count_cache_ttl_secs),
                    scope: Scope::Public,
                },
            );
        }
        Self {
            sessions,
            calls,
            cache,
            metrics,
            tools: Arc::new(tools),
            tool_router: Arc::new(Self::tool_router()),
            cache_policies: Arc::new(cache_policies),
        }
    }
}

/// Where a call's state session came from, which decides how errors read.
enum Binding {
    /// An explicit `session_id` handle.
    Handle(String),
    /// The session bound to the 2025-era transport's `Mcp-Session-Id`.
    Transport(String),
}

impl Binding {
    fn id(&self) -> &str {
        match self {
            Self::Handle(id) | Self::Transport(id) => id,
        }
    }
}

impl StatefulServer {
    /// Finds the call's state session: the explicit handle, else (2025-era only) the
    /// transport session. `Err` is the `isError` result to return.
    fn bind(
        &self,
        ctx: &RequestContext<RoleServer>,
        session_id: Option<String>,
    ) -> Result<Binding, CallToolResult> {
        if let Some(id) = session_id {
            return Ok(Binding::Handle(id));
        }
        let stateless = ctx
            .protocol_version()
            .is_some_and(|v| v.as_str() >= STATELESS_ERA);
        let transport_id = (!stateless)
            .then(|| ctx.extensions.get::<http::request::Parts>())
            .flatten()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok());
        match transport_id {
            Some(id) => Ok(Binding::Transport(id.to_owned())),
            None => Err(tool_error(
                "Missing `session_id`: call the `session_create` tool first and pass the \
                 `session_id` it returns to this tool.",
            )),
        }
    }

    /// Turns a session error into the `isError` result (caller mistakes) or the JSON-RPC
    /// error (infrastructure) it deserves.
    fn failure(&self, binding: &Binding, e: SessionError) -> Result<CallToolResult, McpError> {
        match e {
            SessionError::NotFound(_) => Ok(tool_error(match binding {
                Binding::Handle(id) => format!(
                    "Session `{id}` is unknown or has expired. Call `session_create` to get a \
                     new `session_id`."
                ),
                Binding::Transport(_) => "This connection's session has expired. Initialize \
                                          a new MCP session, or call `session_create` and \
                                          pass its `session_id`."
                    .to_owned(),
            })),
            SessionError::Unavailable(detail) => {
                self.metrics.store_error("sessions");
                tracing::warn!(%detail, "session store unavailable");
                Err(McpError::internal_error(
                    "session store unavailable; retry shortly",
                    None,
                ))
            }
            other => Ok(tool_error(other.to_string())),
        }
    }

    /// Runs `op` on the bound session. A 2025-era transport session whose state record
    /// is missing (created on first use) gets one, and `op` runs again.
    async fn with_session<T, F, Fut>(
        &self,
        binding: &Binding,
        op: F,
    ) -> Result<Result<T, CallToolResult>, McpError>
    where
        F: Fn(Sessions, String) -> Fut,
        Fut: Future<Output = Result<T, SessionError>>,
    {
        let id = binding.id().to_owned();
        let mut result = op(self.sessions.clone(), id.clone()).await;
        if let (Binding::Transport(_), Err(SessionError::NotFound(_))) = (binding, &result)
            && crate::ids::is_well_formed(&id)
        {
            let created = self
                .sessions
                .create(NewSession {
                    id: Some(id.clone()),
                    principal: ANONYMOUS.into(),
                    ..Default::default()
                })
                .await;
            if created.is_ok() {
                result = op(self.sessions.clone(), id).await;
            }
        }
        match result {
            Ok(v) => Ok(Ok(v)),
            Err(e) => self.failure(binding, e).map(Err),
        }
    }
}

/// The URI prefix of the `primes_below` resources.
const PRIMES_URI: &str = "primes://below/";

/// Whether the caller speaks a revision with SEP-2549 cache hints.
fn supports_cache_hints(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
}

/// Why a tool result was not cached.
enum Uncacheable {
    /// A result that is not a plain success (`isError`, input required, task).
    Response(CallToolResponse),
    /// A JSON-RPC error.
    Error(McpError),
}

impl StatefulServer {
    async fn route(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let tcc = ToolCallContext::new(self, request, context);
        self.tool_router.call(tcc).await
    }

    /// The owner of a cached result under `scope`, or `None` when the call has no
    /// session to scope it to (it then runs uncached).
    fn scope_owner(
        &self,
        scope: Scope,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Option<String> {
        match scope {
            Scope::Public => Some("public".to_owned()),
            Scope::Principal => Some(format!("p:{ANONYMOUS}")),
            Scope::Session => {
                let explicit = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("session_id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.bind(context, explicit)
                    .ok()
                    .map(|b| format!("s:{}", b.id()))
            }
        }
    }

    /// Serves a cacheable tool's call from the cache, or runs it (once per key across
    /// replicas) and caches a successful result.
    async fn call_cached(
        &self,
        policy: CachePolicy,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(owner) = self.scope_owner(policy.scope, &request, &context) else {
            return self.route(request, context).await;
        };
        let key = tool_cache::key(&request.name, &owner, request.arguments.as_ref());
        let loaded = self
            .cache
            .get_or_load(&key, Some(policy.ttl), || async {
                match self.route(request, context).await {
                    Ok(CallToolResponse::Complete(result)) if result.is_error != Some(true) => {
                        serde_json::to_vec(&result)
                            .map(bytes::Bytes::from)
                            .map_err(|e| {
                                Uncacheable::Error(McpError::internal_error(
                                    format!("serialize result: {e}"),
                                    None,
                                ))
                            })
                    }
                    Ok(other) => Err(Uncacheable::Response(other)),
                    Err(e) => Err(Uncacheable::Error(e)),
                }
            })
            .await;
        match loaded {
            Ok(bytes) => serde_json::from_slice::<CallToolResult>(&bytes)
                .map(CallToolResponse::Complete)
                .map_err(|e| {
                    McpError::internal_error(format!("cached result unreadable: {e}"), None)
                }),
            Err(LoadError::Loader(Uncacheable::Response(response))) => Ok(response),
            Err(LoadError::Loader(Uncacheable::Error(e))) => Err(e),
            Err(LoadError::Cache(e)) => Err(McpError::internal_error(e.to_string(), None)),
        }
    }
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
        let parts = context.extensions.get::<http::request::Parts>();
        let request_id = parts
            .and_then(|p| p.extensions.get::<RequestId>())
            .map(|id| id.0.clone())
            .unwrap_or_default();
        let session_id = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("session_id"))
            .and_then(Value::as_str)
            .or_else(|| {
                parts
                    .and_then(|p| p.headers.get("mcp-session-id"))
                    .and_then(|v| v.to_str().ok())
            })
            .filter(|id| crate::ids::is_well_formed(id))
            .unwrap_or_default()
            .to_owned();
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
        let call = async {
            match self.cache_policies.get(request.name.as_ref()) {
                Some(policy) => self.call_cached(*policy, request, context).await,
                None => self.route(request, context).await,
            }
        };
        // Tracked so a draining replica waits for the call before ending its stream.
        let call = self.calls.track_future(call);
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
        // One concrete member of the `primes_below` template, so a client can read a
        // resource without knowing the template.
        let example = Resource::new(format!("{PRIMES_URI}1000000"), "primes_below_1000000")
            .with_title("Primes below one million")
            .with_mime_type("application/json");
        let mut result = ListResourcesResult::with_all_items(vec![example]);
        if supports_cache_hints(&context) {
            result.ttl_ms = Some(self.tools.list_ttl_secs.saturating_mul(1000));
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let template = ResourceTemplate::new(format!("{PRIMES_URI}{{limit}}"), "primes_below")
            .with_title("Primes below a limit")
            .with_description(
                "The number of primes below `limit` and the largest of them, as JSON \
                 (the prime_count tool's answer, from the same cache).",
            )
            .with_mime_type("application/json");
        let mut result = ListResourceTemplatesResult::with_all_items(vec![template]);
        if supports_cache_hints(&context) {
            result.ttl_ms = Some(self.tools.list_ttl_secs.saturating_mul(1000));
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri;
        let Some(limit) = uri
            .strip_prefix(PRIMES_URI)
            .and_then(|l| l.parse::<u64>().ok())
        else {
            return Err(McpError::resource_not_found(
                format!("unknown resource `{uri}`; resources look like {PRIMES_URI}<limit>"),
                None,
            ));
        };
        let max = self.tools.prime_count_max_limit;
        if limit > max {
            return Err(McpError::invalid_params(
                format!("`limit` must be at most {max} (got {limit})"),
                None,
            ));
        }
        let compute = || async move {
            let r = primes::count_primes(limit, 1, |_, _| {}).await;
            let out = PrimeCountOutput {
                limit,
                count: r.count,
                largest: r.largest,
            };
            serde_json::to_vec(&out).map(bytes::Bytes::from)
        };
        let ttl = Duration::from_secs(self.tools.prime_count_cache_ttl_secs);
        let json = if ttl.is_zero() {
            compute().await.map_err(LoadError::Loader)
        } else {
            self.cache
                .get_or_load(&format!("resource:primes:{limit}"), Some(ttl), compute)
                .await
        }
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let text = String::from_utf8_lossy(&json).into_owned();
        let mut result = ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
            uri,
            mime_type: Some("application/json".into()),
            text,
            meta: None,
        }]);
        if supports_cache_hints(&context) {
            // From the same setting as the prime_count tool's result cache.
            result.ttl_ms = Some(ttl.as_millis().try_into().unwrap_or(u64::MAX));
            result.cache_scope = Some(CacheScope::Public);
        }
        Ok(ReadResourceResponse::Complete(result))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
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
