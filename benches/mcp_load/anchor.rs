//! The anchor: an rmcp server in the pattern of rmcp's counter example, with this crate's
//! tool shapes (`counter`, `session_create`) and its state in process memory, served by
//! rmcp's `StreamableHttpService` on axum. It answers what the replicas answer, with none
//! of their work (no Redis, no edge, no auth), so the replicas' cost is read against it.
//!
//! `cargo bench --bench mcp_load -- anchor --port P` runs it; the benchmark starts it so.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::serve::ListenerExt;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::{common::schema_for_output, router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig},
    service::RequestContext,
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde::Serialize;
// The replicas' own argument and result types: the anchor's tools have their shape by
// construction.
use stateful_mcp::mcp::handler::{CounterArgs, CounterOperation, CounterOutput, CreateOutput};

/// One handler instance: rmcp makes one per 2025-era session and one per stateless
/// (2026-07-28) request, so the handles' counters are shared and the session's own is
/// the instance's.
#[derive(Clone)]
pub struct Anchor {
    /// Counters of the handles `session_create` minted, shared by every instance.
    handles: Arc<Mutex<HashMap<String, i64>>>,
    /// This instance's counter (a 2025-era session's, when no handle is given).
    own: Arc<Mutex<i64>>,
    /// Built once: the factory runs for every stateless request.
    tool_router: Arc<ToolRouter<Self>>,
}

/// A successful result with a text block and structured content, as the replicas reply.
fn reply<T: Serialize>(text: String, structured: &T) -> Result<CallToolResult, McpError> {
    let value = serde_json::to_value(structured)
        .map_err(|e| McpError::internal_error(format!("serialize result: {e}"), None))?;
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    Ok(result)
}

/// An `isError` result.
fn refused(text: String) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(text)]))
}

#[tool_router]
impl Anchor {
    /// Mints a handle (160 random bits) with a counter at 0.
    #[tool(
        description = "Start a new session and return its `session_id` handle.",
        output_schema = schema_for_output::<CreateOutput>()
    )]
    async fn session_create(&self) -> Result<CallToolResult, McpError> {
        let id = stateful_mcp::ids::mint();
        self.handles.lock().unwrap().insert(id.clone(), 0);
        let out = CreateOutput {
            session_id: id,
            expires_after_secs: 1800,
        };
        reply(format!("Session created: {}.", out.session_id), &out)
    }

    /// Reads or changes a counter: the handle's, or this session's own.
    #[tool(
        description = "A counter kept in the session: get, increment, decrement or reset it.",
        output_schema = schema_for_output::<CounterOutput>()
    )]
    async fn counter(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<CounterArgs>,
    ) -> Result<CallToolResult, McpError> {
        let apply = |value: &mut i64| -> Option<i64> {
            *value = match args.operation {
                CounterOperation::Get => *value,
                CounterOperation::Increment => value.checked_add(args.step)?,
                CounterOperation::Decrement => value.checked_sub(args.step)?,
                CounterOperation::Reset => 0,
            };
            Some(*value)
        };
        let (session_id, value) = match args.session_id {
            Some(id) => {
                let mut handles = self.handles.lock().unwrap();
                let Some(counter) = handles.get_mut(&id) else {
                    return refused(format!("Unknown session `{id}`: call session_create."));
                };
                let value = apply(counter);
                (id, value)
            }
            None => {
                let id = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| parts.headers.get("mcp-session-id"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (id, apply(&mut self.own.lock().unwrap()))
            }
        };
        let Some(value) = value else {
            return refused("The counter would overflow.".to_owned());
        };
        let name = match args.operation {
            CounterOperation::Get => "get",
            CounterOperation::Increment => "increment",
            CounterOperation::Decrement => "decrement",
            CounterOperation::Reset => "reset",
        };
        reply(
            format!("Counter {name}: {value}"),
            &CounterOutput {
                session_id,
                operation: args.operation,
                value,
            },
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Anchor {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Serves the anchor on `127.0.0.1:port` until the process is killed, logging as a
/// replica does with its default settings (`telemetry.filter` of `config/default.toml`).
///
/// # Errors
/// When the port cannot be bound or the server fails.
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let defaults = stateful_mcp::config::Settings::load_with_env(None, Vec::new())?;
    // Traces stay off (the default): the anchor measures the request path without them.
    let _telemetry = stateful_mcp::telemetry::init(&defaults.telemetry, "anchor");

    let handles = Arc::new(Mutex::new(HashMap::new()));
    let tool_router = Arc::new(Anchor::tool_router());
    let factory = move || {
        Ok(Anchor {
            handles: handles.clone(),
            own: Arc::new(Mutex::new(0)),
            tool_router: tool_router.clone(),
        })
    };
    // JSON answers to 2026-07-28 requests; 2025-era sessions (on by default) in memory.
    let config = StreamableHttpServerConfig::default()
        .with_json_response(true)
        .with_allowed_hosts(["127.0.0.1", "localhost"]);
    let service =
        StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(port, "anchor listening");
    axum::serve(listener, router).await?;
    Ok(())
}
