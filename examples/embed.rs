//! A plain rmcp server that keeps its state in Redis through stateful-mcp's public
//! stores, so several copies of it can run behind a round-robin load balancer.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example embed -- 127.0.0.1:9000
//! ```
//!
//! Its one tool, `visits`, counts calls per session: with a `session_id` from
//! `open_session` (2026-07-28 clients), or per `Mcp-Session-Id` (2025-era clients).

use std::sync::Arc;

use rmcp::{
    ErrorData, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{ServerCapabilities, ServerConfig},
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use serde::Deserialize;
use stateful_mcp::{
    config::{Backend, Settings},
    mcp::{
        McpState, endpoint_with,
        handler::binding::{caller, transport_session},
    },
    sessions::{CounterOp, NewSession, Sessions},
    state::AppState,
};

#[derive(Clone)]
struct Visits {
    sessions: Sessions,
    tool_router: Arc<ToolRouter<Self>>,
}

#[derive(Deserialize, JsonSchema)]
struct VisitArgs {
    /// Handle from `open_session`; optional on 2025-era connections.
    session_id: Option<String>,
}

#[tool_router]
impl Visits {
    #[tool(description = "Open a session and return its handle.")]
    async fn open_session(
        &self,
        ctx: RequestContext<rmcp::RoleServer>,
    ) -> Result<String, ErrorData> {
        let session = self
            .sessions
            .create(NewSession {
                // The caller the edge authenticated (`anonymous` with auth off).
                principal: caller(&ctx).as_str().to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(session.id)
    }

    #[tool(description = "Count this session's visits.")]
    async fn visits(
        &self,
        ctx: RequestContext<rmcp::RoleServer>,
        Parameters(args): Parameters<VisitArgs>,
    ) -> Result<String, ErrorData> {
        // The connection's session, once the edge has confirmed it for this request.
        let Some(id) = args.session_id.or_else(|| transport_session(&ctx)) else {
            return Err(ErrorData::invalid_params("call open_session first", None));
        };
        let n = self
            .sessions
            .counter(caller(&ctx).as_str(), &id, CounterOp::Add(1))
            .await
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
        Ok(format!("visit number {n}"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Visits {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    // STATEFUL_MCP__MRTR__KEYS (the requestState key ring every replica shares) comes
    // from the environment: the Redis backend does not start without it.
    let mut settings = Settings::load(None)?;
    settings.store.backend = Backend::Redis;
    if let Ok(url) = std::env::var("REDIS_URL") {
        settings.redis.url = url;
    }
    settings.redis.key_prefix = "embed-example".into();
    // Other replicas forward a 2025-era session's requests to the address it serves on.
    settings.server.bind = bind.parse()?;

    // Pool, sessions, bus and cache from the settings, and the MCP layer's own handles
    // beside them; then the whole transport (edge, 2025-era sessions restorable on any
    // replica, resumable streams) around this handler.
    let state = AppState::build(settings)?;
    let mcp = McpState::build(&state)?;
    let server = Visits {
        sessions: state.sessions.clone(),
        tool_router: Arc::new(Visits::tool_router()),
    };
    let app = axum::Router::new().nest_service("/mcp", endpoint_with(&mcp, move || server.clone()));
    // Everything is built: the background jobs (bus, stream reader, lease keeper, …) run.
    state.jobs.start();

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("embed example serving http://{bind}/mcp");
    // On Ctrl-C: hand the sessions held here to the other replicas, end the streams.
    let (draining, streams) = (state.shutdown.clone(), state.mcp_shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            draining.cancel();
            streams.cancel();
        })
        .await?;
    state.jobs.stop(std::time::Duration::from_secs(2)).await;
    Ok(())
}
