//! The tools: their typed arguments (schemas generated with schemars, operations as
//! enums) and structured outputs, and what each does with the call's session.

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    handler::server::{common::schema_for_output, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, ProgressNotificationParam},
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StatefulServer;
use crate::{
    cache::CacheStats,
    managed::{KindStats, ResourceError, file::FileHandle},
    mcp::handler::{
        binding::{Binding, ToolFailure, caller, retry_of, tool_error},
        tasks::{Plan, Planner, tool_outcome},
    },
    primes,
    sessions::{CounterOp, HistoryOp, NewSession, SessionError},
    tasks::TaskContext,
};

/// What every tool returns: a result, an `isError` result, or a JSON-RPC error.
type ToolResult = Result<CallToolResult, ToolFailure>;

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
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
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

/// `file_read` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FileReadArgs {
    /// Path of the file, relative to the server's file root.
    pub path: String,
    /// Byte offset to start at (default 0).
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to read (default and maximum: the server's `resources.max_read_bytes`).
    #[serde(default)]
    pub length: Option<u64>,
}

/// `file_read` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileReadOutput {
    /// The path read.
    pub path: String,
    /// Where the read started.
    pub offset: u64,
    /// Bytes returned.
    pub bytes_read: u64,
    /// The file's size.
    pub size: u64,
    /// Whether the read reached the end of the file.
    pub eof: bool,
    /// `utf-8` when `content` is the text itself, `base64` when the bytes are not UTF-8.
    pub encoding: String,
    /// The bytes read.
    pub content: String,
}

/// `resource_stats` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResourceStatsOutput {
    /// The replica these figures are from.
    pub replica_id: String,
    /// Open resources, references, idle counts and totals by kind.
    pub kinds: std::collections::BTreeMap<String, KindStats>,
    /// The replica's Redis pool (absent on the memory backend).
    pub redis_pool: Option<PoolStats>,
}

/// The Redis pool's figures.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PoolStats {
    /// Open connections.
    pub size: u64,
    /// Largest number of connections.
    pub max_size: u64,
    /// Open connections not checked out.
    pub available: u64,
    /// Callers waiting for a connection.
    pub waiting: u64,
    /// Connections opened since start.
    pub created_total: u64,
    /// Checkouts since start.
    pub borrowed_total: u64,
    /// Checkouts given back since start.
    pub returned_total: u64,
    /// Failed checkouts and connections dropped after transport errors since start.
    pub errors_total: u64,
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

/// What `prime_count` needs, apart from where its progress goes: the same work runs in
/// a request (progress notifications) and as a task (the task's status message).
#[derive(Clone)]
pub(crate) struct PrimeCounter {
    pub(crate) cache: crate::cache::CacheManager,
    pub(crate) cpu: crate::cpu::CpuPool,
    pub(crate) tools: std::sync::Arc<crate::config::ToolSettings>,
}

impl PrimeCounter {
    /// Counts the primes below `args.limit` on the CPU pool (cached for every caller),
    /// handing each progress report to `report` until it returns `false`.
    ///
    /// # Cancel safety
    /// Dropping the future stops the sieve within one segment.
    pub(crate) async fn count<F, Fut>(&self, args: PrimeCountArgs, mut report: F) -> ToolResult
    where
        F: FnMut(u64, u64) -> Fut,
        Fut: Future<Output = bool>,
    {
        let max = self.tools.prime_count_max_limit;
        if args.limit > max {
            return Err(ToolFailure::Refused(format!(
                "`limit` must be at most {max} (got {})",
                args.limit
            )));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        // Reports are forwarded beside the sieve, so it never waits on the client.
        let forward = async move {
            while let Some((done, total)) = rx.recv().await {
                if !report(done, total).await {
                    break;
                }
            }
        };
        let ttl = Duration::from_secs(self.tools.prime_count_cache_ttl_secs);
        let count = primes::cached(&self.cache, &self.cpu, args.limit, ttl, 10, move |d, t| {
            let _ = tx.send((d, t));
        });
        let (counted, ()) = futures::join!(count, forward);
        let (counted, _) = counted.map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let out = PrimeCountOutput {
            limit: counted.limit,
            count: counted.count,
            largest: counted.largest,
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
}

impl StatefulServer {
    /// Awaits a session operation on `binding`'s session, phrasing its failure for the
    /// caller.
    async fn in_session<T>(
        &self,
        binding: &Binding,
        op: impl Future<Output = Result<T, SessionError>>,
    ) -> Result<T, ToolFailure> {
        op.await.map_err(|e| binding.failure(e, &self.metrics))
    }
}

#[tool_router(vis = "pub(super)")]
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
        Parameters(args): Parameters<CreateArgs>,
    ) -> ToolResult {
        let client_info = ctx
            .client_info()
            .and_then(|info| serde_json::to_value(info).ok());
        let principal = caller(&ctx).as_str().to_owned();
        let retry = retry_of(&ctx, &principal, "session_create", &args);
        let created = self
            .sessions
            .create(NewSession {
                id: None,
                principal,
                client_info,
                transport: None,
                retry,
                lease: None,
            })
            .await;
        let session = created.map_err(|e| ToolFailure::from_session(e, &self.metrics))?;
        self.metrics.sessions_created.inc();
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
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<DeleteArgs>,
    ) -> ToolResult {
        let binding = Binding::handle(args.session_id, caller(&ctx));
        let deleted = self
            .in_session(
                &binding,
                self.sessions.delete(binding.principal(), binding.id()),
            )
            .await?;
        if !deleted {
            let id = binding.id().to_owned();
            return Err(binding.failure(SessionError::NotFound(id), &self.metrics));
        }
        reply(
            format!("Session {} deleted.", binding.id()),
            &DeleteOutput {
                session_id: binding.id().to_owned(),
                deleted: true,
            },
        )
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
    ) -> ToolResult {
        let binding = Binding::of(&ctx, args.session_id)?;
        let session = self
            .in_session(
                &binding,
                self.sessions.get(binding.principal(), binding.id()),
            )
            .await?;
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
                       are cached for every caller. Runs as a task (progress in its status \
                       message, cancellable) for clients of the tasks extension.",
        output_schema = schema_for_output::<PrimeCountOutput>()
    )]
    async fn prime_count(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PrimeCountArgs>,
    ) -> ToolResult {
        let token = ctx.meta.get_progress_token();
        let peer = ctx.peer.clone();
        let primes = PrimeCounter {
            cache: self.cache.clone(),
            cpu: self.cpu.clone(),
            tools: self.tools.clone(),
        };
        primes
            .count(args, move |done, total| {
                let (token, peer) = (token.clone(), peer.clone());
                async move {
                    let Some(token) = token else { return false };
                    let param =
                        ProgressNotificationParam::new(token, done as f64).with_total(total as f64);
                    peer.notify_progress(param).await.is_ok()
                }
            })
            .await
    }

    /// This replica's cache figures.
    #[tool(
        description = "Show this replica's cache statistics: hits, misses, hit rate, hits per \
                       level, loader calls, errors, L1 usage and invalidations.",
        output_schema = schema_for_output::<CacheStats>()
    )]
    async fn cache_stats(&self) -> ToolResult {
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

    /// Reads part of a file under the configured root.
    #[tool(
        description = "Read a file under the server's file root (read-only): `path` relative \
                       to the root, `offset` and `length` in bytes (at most the server's \
                       `resources.max_read_bytes`). Returns UTF-8 text, or base64 for other \
                       bytes. Paths outside the root are refused.",
        output_schema = schema_for_output::<FileReadOutput>()
    )]
    async fn file_read(&self, Parameters(args): Parameters<FileReadArgs>) -> ToolResult {
        let max = self.max_read_bytes as u64;
        let length = args.length.unwrap_or(max);
        if length > max {
            return Err(ToolFailure::Refused(format!(
                "`length` must be at most {max} (got {length}); read in parts with `offset`"
            )));
        }
        let file = self
            .managed
            .get::<FileHandle>(crate::managed::file::KIND, &args.path)
            .await
            .map_err(|e| match e {
                ResourceError::UnknownKind(_) => ToolFailure::Refused(
                    "file access is off on this server (resources.file_root is not set)".to_owned(),
                ),
                ResourceError::ShuttingDown => {
                    ToolFailure::Internal(crate::mcp::error::EdgeError::Unavailable.into())
                }
                other => ToolFailure::Refused(other.to_string()),
            })?;
        let bytes = file
            .read(args.offset, length as usize)
            .await
            .map_err(|e| McpError::internal_error(format!("read failed: {e}"), None))?;
        let bytes_read = bytes.len() as u64;
        let (encoding, content) = match String::from_utf8(bytes) {
            Ok(text) => ("utf-8", text),
            Err(e) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                ("base64", encoded)
            }
        };
        let out = FileReadOutput {
            eof: args.offset.saturating_add(bytes_read) >= file.len(),
            path: args.path,
            offset: args.offset,
            bytes_read,
            size: file.len(),
            encoding: encoding.to_owned(),
            content,
        };
        let text = match out.encoding.as_str() {
            "utf-8" => out.content.clone(),
            _ => format!(
                "{} bytes of binary data from {} at offset {} (base64 in structured content)",
                out.bytes_read, out.path, out.offset
            ),
        };
        reply(text, &out)
    }

    /// This replica's managed resources and Redis pool.
    #[tool(
        description = "Show this replica's managed resources (open, referenced and idle \
                       by kind, created and cleaned totals) and its Redis connection pool \
                       (size, max, available, waiting, created, borrowed, returned, errors).",
        output_schema = schema_for_output::<ResourceStatsOutput>()
    )]
    async fn resource_stats(&self) -> ToolResult {
        let kinds = self
            .managed
            .stats()
            .into_iter()
            .map(|(kind, figures)| (kind.to_owned(), figures))
            .collect();
        let redis_pool = self.pool.as_ref().map(|pool| {
            let s = pool.status();
            PoolStats {
                size: s.size as u64,
                max_size: s.max_size as u64,
                available: s.available as u64,
                waiting: s.waiting as u64,
                created_total: s.created_total,
                borrowed_total: s.borrowed_total,
                returned_total: s.returned_total,
                errors_total: s.errors_total,
            }
        });
        let out = ResourceStatsOutput {
            replica_id: self.replica_id.to_string(),
            kinds,
            redis_pool,
        };
        let text = serde_json::to_string(&out)
            .map_err(|e| McpError::internal_error(format!("serialize: {e}"), None))?;
        reply(
            format!("Resources of replica {}: {text}", out.replica_id),
            &out,
        )
    }
}

/// `prime_count` as a job: the same count, its progress in the task's status message;
/// arguments the tool would refuse are refused before a task is made.
pub(super) fn prime_count_planner(primes: PrimeCounter) -> Planner {
    Box::new(move |params| {
        let arguments = Value::Object(params.arguments.clone().unwrap_or_default());
        let args: PrimeCountArgs = match serde_json::from_value(arguments) {
            Ok(args) => args,
            Err(e) => {
                return Plan::Answer(tool_error(format!("invalid arguments: {e}")).into());
            }
        };
        let primes = primes.clone();
        Plan::Run(Box::new(move |ctx: TaskContext| {
            Box::pin(async move {
                let ctx = &ctx;
                let result = primes
                    .count(args, |done, total| async move {
                        ctx.progress(&format!("sieved {done} of {total} segments"))
                            .await;
                        true
                    })
                    .await;
                tool_outcome(result)
            })
        }))
    })
}
