//! The tool server: the stateful tools and how each call finds its state session.
//!
//! A call names its session with a `session_id` argument (the 2026-07-28 way: a handle
//! minted by `session_create`). A 2025-era call may omit it and then uses the session
//! bound to its transport's `Mcp-Session-Id`. State lives in [`Sessions`], never in this
//! struct, so any replica can serve any call.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::{
        common::schema_for_output, router::tool::ToolRouter, tool::ToolCallContext,
        wrapper::Parameters,
    },
    model::{
        CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        Implementation, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
        PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ResourceContents,
        ResourceTemplate, ResultType, ServerCapabilities, ServerConfig, Tool,
    },
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::task::TaskTracker;

use super::tool_cache::{self, CachePolicy, Scope};
use crate::{
    cache::{CacheManager, CacheStats, LoadError},
    config::ToolSettings,
    metrics::Metrics,
    primes,
    sessions::{ANONYMOUS, CounterOp, HistoryOp, NewSession, SessionError, Sessions},
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
#[derive(Debug, Deserialize, JsonSchema)]
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
#[derive(Debug, Deserialize, JsonSchema)]
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

/// Arguments of tools that only need the session.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionArgs {
    /// Session handle from `session_create`; optional on 2025-era connections.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `session_info` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionInfoOutput {
    /// The session id.
    pub session_id: String,
    /// Creation time (ISO 8601, UTC).
    pub created_at: String,
    /// Last access time (ISO 8601, UTC), this call included.
    pub last_accessed: String,
    /// Keys of the values the session holds.
    pub data_keys: Vec<String>,
    /// What the client said about itself, when it did.
    pub client_info: Option<Value>,
    /// Seconds of inactivity after which the session expires.
    pub expires_after_secs: u64,
}

/// `session_create` arguments (none needed).
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct CreateArgs {}

/// `session_create` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateOutput {
    /// The new handle: pass it as `session_id` to the stateful tools.
    pub session_id: String,
    /// Seconds of inactivity after which the session expires.
    pub expires_after_secs: u64,
}

/// `session_delete` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteArgs {
    /// The handle to end.
    pub session_id: String,
}

/// `session_delete` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteOutput {
    /// The handle named.
    pub session_id: String,
    /// Whether a live session was ended.
    pub deleted: bool,
}

/// `prime_count` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PrimeCountArgs {
    /// Count the primes strictly below this number.
    pub limit: u64,
}

/// `prime_count` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PrimeCountOutput {
    /// The limit asked for.
    pub limit: u64,
    /// How many primes are below it.
    pub count: u64,
    /// The largest of them, if any.
    pub largest: Option<u64>,
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A successful result with both a text block and structured content.
fn reply<T: Serialize>(text: String, structured: &T) -> Result<CallToolResult, McpError> {
    let value = serde_json::to_value(structured)
        .map_err(|e| McpError::internal_error(format!("serialize result: {e}"), None))?;
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    Ok(result)
}

/// A tool-level failure the caller can act on.
fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
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

#[tool_router]
impl StatefulServer {
    /// Starts a session and returns its handle.
    #[tool(
        description = "Start a new session and return its `session_id` handle. Pass the \
                       handle to the stateful tools (counter, history, session_info).",
        output_schema = schema_for_output::<CreateOutput>()
    )]
    async fn session_create(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(_): Parameters<CreateArgs>,
    ) -> Result<CallToolResult, McpError> {
        let client_info = ctx
            .client_info()
            .and_then(|info| serde_json::to_value(info).ok());
        let created = self
            .sessions
            .create(NewSession {
                id: None,
                principal: ANONYMOUS.into(),
                client_info,
                transport: None,
            })
            .await;
        let session = match created {
            Ok(s) => {
                self.metrics.sessions_created.inc();
                s
            }
            Err(e) => return self.failure(&Binding::Handle(String::new()), e),
        };
        let out = CreateOutput {
            session_id: session.id,
            expires_after_secs: self.sessions.limits().timeout_secs,
        };
        reply(
            format!(
                "Session created: {}. Pass it as `session_id`; it expires after {} s without use.",
                out.session_id, out.expires_after_secs
            ),
            &out,
        )
    }

    /// Ends a session.
    #[tool(
        description = "End a session created with `session_create`.",
        output_schema = schema_for_output::<DeleteOutput>()
    )]
    async fn session_delete(
        &self,
        Parameters(args): Parameters<DeleteArgs>,
    ) -> Result<CallToolResult, McpError> {
        let binding = Binding::Handle(args.session_id.clone());
        match self.sessions.delete(ANONYMOUS, &args.session_id).await {
            Ok(true) => reply(
                format!("Session {} deleted.", args.session_id),
                &DeleteOutput {
                    session_id: args.session_id,
                    deleted: true,
                },
            ),
            Ok(false) => self.failure(&binding, SessionError::NotFound(args.session_id)),
            Err(e) => self.failure(&binding, e),
        }
    }

    /// Reads or changes the session's counter.
    #[tool(
        description = "A counter kept in the session: get, increment, decrement or reset it.",
        output_schema = schema_for_output::<CounterOutput>()
    )]
    async fn counter(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CounterArgs>,
    ) -> Result<CallToolResult, McpError> {
        let binding = match self.bind(&ctx, args.session_id) {
            Ok(b) => b,
            Err(e) => return Ok(e),
        };
        let op = match args.operation {
            CounterOperation::Get => CounterOp::Get,
            CounterOperation::Increment => CounterOp::Add(args.step),
            CounterOperation::Decrement => match args.step.checked_neg() {
                Some(n) => CounterOp::Add(n),
                None => return Ok(tool_error(SessionError::CounterOverflow.to_string())),
            },
            CounterOperation::Reset => CounterOp::Reset,
        };
        let value = match self
            .with_session(&binding, |s, id| async move {
                s.counter(ANONYMOUS, &id, op).await
            })
            .await?
        {
            Ok(v) => v,
            Err(e) => return Ok(e),
        };
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
    ) -> Result<CallToolResult, McpError> {
        let binding = match self.bind(&ctx, args.session_id) {
            Ok(b) => b,
            Err(e) => return Ok(e),
        };
        let op = match (args.operation, args.command) {
            (HistoryOperation::List, _) => HistoryOp::List,
            (HistoryOperation::Add, Some(cmd)) if !cmd.is_empty() => HistoryOp::Add(cmd),
            (HistoryOperation::Add, _) => {
                return Ok(tool_error(
                    "The `add` operation requires a non-empty `command` argument.",
                ));
            }
            (HistoryOperation::Clear, _) => HistoryOp::Clear,
        };
        let text_for_add = match &op {
            HistoryOp::Add(cmd) => Some(format!("Added to history: {cmd}")),
            _ => None,
        };
        let entries = match self
            .with_session(&binding, |s, id| {
                let op = op.clone();
                async move { s.history(ANONYMOUS, &id, op).await }
            })
            .await?
        {
            Ok(v) => v,
            Err(e) => return Ok(e),
        };
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

    /// Describes the session.
    #[tool(
        description = "Show the session's id, creation and last access times, data keys and \
                       client info.",
        output_schema = schema_for_output::<SessionInfoOutput>()
    )]
    async fn session_info(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SessionArgs>,
    ) -> Result<CallToolResult, McpError> {
        let binding = match self.bind(&ctx, args.session_id) {
            Ok(b) => b,
            Err(e) => return Ok(e),
        };
        let session = match self
            .with_session(&binding, |s, id| async move { s.get(ANONYMOUS, &id).await })
            .await?
        {
            Ok(v) => v,
            Err(e) => return Ok(e),
        };
        let out = SessionInfoOutput {
            session_id: session.id,
            created_at: iso(session.created_at_ms),
            last_accessed: iso(session.last_accessed_ms),
            data_keys: session.data.keys().cloned().collect(),
            client_info: session.client_info,
            expires_after_secs: self.sessions.limits().timeout_secs,
        };
        let client = out
            .client_info
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), Value::to_string);
        reply(
            format!(
                "Session {}\ncreated_at: {}\nlast_accessed: {}\ndata keys: {}\nclient: {client}",
                out.session_id,
                out.created_at,
                out.last_accessed,
                if out.data_keys.is_empty() {
                    "(none)".to_owned()
                } else {
                    out.data_keys.join(", ")
                },
            ),
            &out,
        )
    }

    /// Counts primes with a segmented sieve.
    #[tool(
        description = "Count the primes below `limit` (a segmented sieve of Eratosthenes). \
                       Reports progress when the request carries a progress token. Results \
                       are cached for every caller.",
        output_schema = schema_for_output::<PrimeCountOutput>()
    )]
    async fn prime_count(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PrimeCountArgs>,
    ) -> Result<CallToolResult, McpError> {
        let max = self.tools.prime_count_max_limit;
        if args.limit > max {
            return Ok(tool_error(format!(
                "`limit` must be at most {max} (got {})",
                args.limit
            )));
        }
        let token = ctx.meta.get_progress_token();
        let peer = ctx.peer.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        // Progress goes out on its own task so the sieve never waits on the client.
        let forward = token.map(|token| {
            tokio::spawn(async move {
                while let Some((done, total)) = rx.recv().await {
                    let param = ProgressNotificationParam::new(token.clone(), done as f64)
                        .with_total(total as f64);
                    if peer.notify_progress(param).await.is_err() {
                        break;
                    }
                }
            })
        });
        let result = primes::count_primes(args.limit, 10, |done, total| {
            let _ = tx.send((done, total));
        })
        .await;
        drop(tx);
        if let Some(forward) = forward {
            let _ = forward.await;
        }
        let out = PrimeCountOutput {
            limit: args.limit,
            count: result.count,
            largest: result.largest,
        };
        let largest = out
            .largest
            .map_or_else(|| "none".to_owned(), |p| p.to_string());
        reply(
            format!(
                "There are {} primes below {}; the largest is {largest}.",
                out.count, out.limit
            ),
            &out,
        )
    }

    /// This replica's cache figures.
    #[tool(
        description = "Show this replica's cache statistics: hits, misses, hit rate, hits per \
                       level, loader calls, errors, L1 usage and invalidations.",
        output_schema = schema_for_output::<CacheStats>()
    )]
    async fn cache_stats(&self) -> Result<CallToolResult, McpError> {
        let s = self.cache.stats();
        reply(
            format!(
                "Cache stats of replica {}: hits {} (L1 {}, L2 {}), misses {}, hit rate {:.1}%, \
                 sets {}, deletes {}, loader calls {}, errors {}, L1 {}/{} entries, {}/{} bytes, \
                 invalidations sent {} received {}",
                s.replica_id,
                s.hits,
                s.hits_l1,
                s.hits_l2,
                s.misses,
                s.hit_rate * 100.0,
                s.sets,
                s.deletes,
                s.loader_calls,
                s.errors,
                s.l1_entries,
                s.l1_max_entries,
                s.l1_bytes,
                s.l1_max_bytes,
                s.invalidations_sent,
                s.invalidations_received,
            ),
            &s,
        )
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
        let mut result = ListResourcesResult::with_all_items(Vec::new());
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
