//! A plain rmcp server that keeps its state in Redis through stateful-mcp's public
//! stores, so several copies of it can run behind a round-robin load balancer.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example embed -- 127.0.0.1:9000
//! ```
//!
//! Its one tool, `visits`, counts calls per session: with a `session_id` from
//! `open_session` (2026-07-28 clients), or per `Mcp-Session-Id` (2025-era clients).

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{ServerCapabilities, ServerConfig},
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde::Deserialize;
use stateful_mcp::{
    config::Settings,
    keys::Keys,
    mcp::{
        event_store::{EventStoreSettings, RedisEventStore},
        session_manager::{ReplicatedSessionManager, store_failure_status},
    },
    redis_pool::RedisPool,
    sessions::{ANONYMOUS, CounterOp, NewSession, RedisSessions, Sessions},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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
    async fn open_session(&self) -> Result<String, ErrorData> {
        let session = self
            .sessions
            .create(NewSession {
                principal: ANONYMOUS.into(),
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
        let transport = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(id) = args.session_id.or(transport) else {
            return Err(ErrorData::invalid_params("call open_session first", None));
        };
        let n = self
            .sessions
            .counter(ANONYMOUS, &id, CounterOp::Add(1))
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
    let mut settings = Settings::load(None)?;
    if let Ok(url) = std::env::var("REDIS_URL") {
        settings.redis.url = url;
    }
    settings.redis.key_prefix = "embed-example".into();

    let pool = RedisPool::new(&settings.redis)?;
    let keys = Keys::new(&settings.redis.key_prefix);
    let timeout = Duration::from_secs(settings.session.timeout_secs);
    let sessions = Sessions::redis(
        RedisSessions::new(pool.clone(), keys.clone(), timeout),
        settings.session.clone(),
    );
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let events = RedisEventStore::start(
        pool,
        keys,
        stateful_mcp::ids::mint(),
        EventStoreSettings::default(),
        shutdown.clone(),
        &tracker,
    );

    // rmcp's local session manager, wrapped so 2025-era sessions survive on any replica
    // and 2026-07-28 requests never use the event store.
    let manager = ReplicatedSessionManager::new(
        LocalSessionManager::default().with_event_store(events),
        sessions.clone(),
    );
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    config.session_store = Some(Arc::new(manager.restore_store()));
    let server = Visits {
        sessions,
        tool_router: Arc::new(Visits::tool_router()),
    };
    let service = StreamableHttpService::new(move || Ok(server.clone()), Arc::new(manager), config);
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(store_failure_status));

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("embed example serving http://{bind}/mcp");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        })
        .await?;
    tracker.close();
    tracker.wait().await;
    Ok(())
}
