//! Builds one replica ([`Application::build`]) and runs it until shutdown
//! ([`Application::run_until_stopped`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::Bus,
    cache::CacheManager,
    config::{Backend, Settings},
    keys::Keys,
    listener::DrainingListener,
    mcp::event_store::{EventStoreSettings, RedisEventStore},
    mcp::session_manager::ReplicatedSessionManager,
    metrics::Metrics,
    redis_pool::RedisPool,
    sessions::{RedisSessions, Sessions},
};

/// How long the last responses get to leave their streams once in-flight calls are done,
/// before rmcp's token ends every stream.
const RESPONSE_SETTLE: Duration = Duration::from_millis(250);

/// Cheap-clone handles shared by every request of one replica.
#[derive(Clone)]
pub struct AppState {
    /// The settings this replica started with.
    pub settings: Arc<Settings>,
    /// This replica's id (logs, stats, per-replica Redis keys).
    pub replica_id: Arc<str>,
    /// The session layer.
    pub sessions: Sessions,
    /// The shared Redis pool, when the backend is Redis.
    pub redis: Option<RedisPool>,
    /// Fired when shutdown starts: readiness turns red at once.
    pub shutdown: CancellationToken,
    /// Fired to end rmcp's sessions and SSE streams, once in-flight work had its chance.
    pub mcp_shutdown: CancellationToken,
    /// The two-level cache.
    pub cache: CacheManager,
    /// The pub/sub bus, when the backend is Redis.
    pub bus: Option<Bus>,
    /// This replica's metrics.
    pub metrics: Metrics,
    /// In-flight tool calls, which a drain waits for.
    pub calls: TaskTracker,
}

/// A replica ready to serve: listener bound, background tasks started.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    tracker: TaskTracker,
    /// Stops background tasks (bus, event reader, upkeep) once the HTTP server is done.
    background: CancellationToken,
}

impl Application {
    /// Binds the listener and wires every component from `settings`.
    ///
    /// # Errors
    /// When the address cannot be bound or the Redis settings are unusable. A Redis
    /// server that is down is not an error: readiness reports it and requests fail fast
    /// until it is back.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let replica_id: Arc<str> = if settings.server.replica_id.is_empty() {
            crate::ids::mint()[..12].into()
        } else {
            settings.server.replica_id.as_str().into()
        };
        let shutdown = CancellationToken::new();
        let mcp_shutdown = CancellationToken::new();
        let background = CancellationToken::new();
        let tracker = TaskTracker::new();
        let timeout = settings.session.timeout();
        let mut local = LocalSessionManager::default();
        local.session_config = SessionConfig::default();
        local.session_config.keep_alive = Some(timeout);
        local.session_config.sse_retry = Some(Duration::from_secs(1));
        let (sessions, redis, bus, cache, local) = match settings.store.backend {
            Backend::Memory => (
                Sessions::memory(settings.session.clone()),
                None,
                None,
                CacheManager::new(&settings.cache, &replica_id, None, None),
                local,
            ),
            Backend::Redis => {
                let pool = RedisPool::new(&settings.redis).context("redis.url")?;
                let keys = Keys::new(&settings.redis.key_prefix);
                let sessions = Sessions::redis(
                    RedisSessions::new(pool.clone(), keys.clone(), timeout),
                    settings.session.clone(),
                );
                let bus = Bus::start(
                    pool.clone(),
                    keys.clone(),
                    replica_id.to_string(),
                    background.clone(),
                    &tracker,
                );
                let local = if settings.events.enabled {
                    local.with_event_store(RedisEventStore::start(
                        pool.clone(),
                        keys.clone(),
                        replica_id.to_string(),
                        EventStoreSettings {
                            ttl: Duration::from_secs(settings.events.ttl_secs),
                            max_len: settings.events.max_len,
                            follow_idle_timeout: Duration::from_secs(
                                settings.events.follow_idle_timeout_secs,
                            ),
                            ..EventStoreSettings::default()
                        },
                        background.clone(),
                        &tracker,
                    ))
                } else {
                    local
                };
                let cache_pool = if settings.cache.redis_url.is_empty() {
                    pool.clone()
                } else {
                    let mut cache_redis = settings.redis.clone();
                    cache_redis.url = settings.cache.redis_url.clone();
                    RedisPool::new(&cache_redis).context("cache.redis_url")?
                };
                let cache = CacheManager::new(
                    &settings.cache,
                    &replica_id,
                    Some((cache_pool, keys)),
                    Some(bus.clone()),
                );
                (sessions, Some(pool), Some(bus), cache, local)
            }
        };
        let metrics = Metrics::new(
            &replica_id,
            match settings.store.backend {
                Backend::Memory => "memory",
                Backend::Redis => "redis",
            },
            redis.clone(),
            cache.clone(),
        );
        let session_manager =
            ReplicatedSessionManager::new(local, sessions.clone()).with_metrics(metrics.clone());
        let state = AppState {
            settings: Arc::new(settings),
            replica_id,
            sessions,
            redis,
            shutdown,
            mcp_shutdown,
            cache,
            bus,
            metrics,
            calls: TaskTracker::new(),
        };
        let router = crate::http::router(state.clone(), session_manager);
        let listener = TcpListener::bind(state.settings.server.bind)
            .await
            .with_context(|| {
                format!(
                    "server.bind: cannot listen on {}",
                    state.settings.server.bind
                )
            })?;
        tracker.spawn(maintenance_loop(
            state.clone(),
            Duration::from_secs(state.settings.session.maintenance_interval_secs),
            background.clone(),
        ));
        Ok(Self {
            listener,
            router,
            state,
            tracker,
            background,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// The token that starts a graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.state.replica_id
    }

    /// Serves until the shutdown token fires, then drains in this order:
    ///
    /// 1. readiness turns red at once (`/readyz` answers 503), and every response from
    ///    now on carries `Connection: close`, so clients and balancers stop reusing
    ///    their connections to this replica;
    /// 2. the replica keeps serving for `server.prestop_delay_secs` (the balancer's time
    ///    to notice);
    /// 3. it stops accepting: connections already queued in the listen backlog are still
    ///    accepted and served, then the listener closes (new connections are refused,
    ///    which a balancer retries elsewhere);
    /// 4. open connections go on being served for `server.keepalive_drain_secs`, so a
    ///    balancer closes its idle keep-alive connections itself instead of racing a
    ///    close from this side with a new request; then idle connections close;
    /// 5. in-flight tool calls finish, then rmcp's cancellation token ends the remaining
    ///    SSE streams and sessions, and the last connections close;
    /// 6. background tasks stop and the call returns `Ok` (the binary exits 0).
    ///
    /// A hard timeout of prestop delay + `server.shutdown_timeout_secs` bounds the drain.
    ///
    /// # Errors
    /// When the server fails for another reason than shutdown.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            state,
            tracker,
            background,
        } = self;
        let prestop = Duration::from_secs(state.settings.server.prestop_delay_secs);
        let drain = Duration::from_secs(state.settings.server.shutdown_timeout_secs);
        tracing::info!(
            addr = %listener.local_addr()?,
            replica = %state.replica_id,
            backend = ?state.settings.store.backend,
            "serving MCP at /mcp"
        );
        let keepalive_drain = Duration::from_secs(state.settings.server.keepalive_drain_secs);
        let stop_accepting = CancellationToken::new();
        let backlog_drained = CancellationToken::new();
        let close_connections = CancellationToken::new();
        let listener =
            DrainingListener::new(listener, stop_accepting.clone(), backlog_drained.clone())?;
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(close_connections.clone().cancelled_owned())
            .into_future();

        let steps = {
            let state = state.clone();
            async move {
                state.shutdown.cancelled().await;
                tracing::info!(replica = %state.replica_id, ?prestop, "draining: readiness is red");
                tokio::time::sleep(prestop).await;
                stop_accepting.cancel();
                backlog_drained.cancelled().await;
                tracing::info!(replica = %state.replica_id, "draining: listener closed");
                // Open connections keep being served (each response says
                // `Connection: close`) until the balancer has closed its idle ones.
                tokio::time::sleep(keepalive_drain).await;
                close_connections.cancel();
                state.calls.close();
                state.calls.wait().await;
                // Let the last responses leave their streams before the token ends them.
                tokio::time::sleep(RESPONSE_SETTLE).await;
                tracing::info!(replica = %state.replica_id, "draining: ending SSE streams");
                state.mcp_shutdown.cancel();
                std::future::pending::<()>().await;
            }
        };
        let hard_stop = {
            let shutdown = state.shutdown.clone();
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(prestop + drain).await;
            }
        };
        tokio::select! {
            result = serve => result.context("http server")?,
            () = steps => unreachable!("the drain steps never finish on their own"),
            () = hard_stop => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
        state.mcp_shutdown.cancel();
        background.cancel();
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        tracing::info!(replica = %state.replica_id, "stopped");
        Ok(())
    }
}

/// Runs session and cache upkeep every `interval` until `shutdown`.
async fn maintenance_loop(state: AppState, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                match state.sessions.maintain().await {
                    Ok(expired) => {
                        state.metrics.sessions_expired.inc_by(expired);
                    }
                    Err(e) => {
                        state.metrics.store_error("sessions");
                        tracing::warn!(error = %e, "session maintenance failed");
                    }
                }
                if let Err(e) = state.cache.maintain().await {
                    tracing::warn!(error = %e, "cache maintenance failed");
                }
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
