//! Builds one replica ([`Application::build`]) and runs it until shutdown
//! ([`Application::run_until_stopped`]).

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    listener::DrainingListener,
    mcp::McpState,
    serve::{ConnectionLimits, Connections},
    state::AppState,
};

/// How long the last responses get to leave their streams once in-flight requests are
/// done, before rmcp's token ends every stream.
const RESPONSE_SETTLE: Duration = Duration::from_millis(250);
/// How long each background job gets to stop at the end of a shutdown.
const JOB_GRACE: Duration = Duration::from_secs(2);

/// A replica ready to serve: listener bound, background jobs started.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    connections: Connections,
    state: AppState,
}

impl Application {
    /// Binds the listener and wires every component from `settings`.
    ///
    /// # Errors
    /// When the address cannot be bound or the Redis settings are unusable. A Redis
    /// server that is down is not an error: readiness reports it and requests fail fast
    /// until it is back.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, crate::mcp::endpoint).await
    }

    /// [`Application::build`] with `/mcp` built by `mcp` from the replica's state, e.g.
    /// `|mcp| endpoint_with(mcp, factory)` to serve another rmcp handler.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with(
        mut settings: Settings,
        mcp: impl FnOnce(&McpState) -> axum::Router,
    ) -> anyhow::Result<Self> {
        let bind = settings.server.bind;
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("server.bind: cannot listen on {bind}"))?;
        // Other replicas forward to the address actually bound (port 0 picks one).
        settings.server.advertise_url = settings.server.advertised_url(listener.local_addr().ok());
        let state = AppState::build(settings)?;
        let router = crate::http::router_with(state.clone(), mcp(&McpState::build(&state)?));
        let connections = Connections::new(ConnectionLimits {
            header_read_timeout: Duration::from_secs(
                state.settings.server.header_read_timeout_secs,
            ),
            max_connections: state.settings.server.max_connections,
            idle_timeout: Duration::from_secs(state.settings.server.idle_timeout_secs),
        });
        connections.register_metrics(&state.metrics);
        let upkeep = state.clone();
        let every = Duration::from_secs(state.settings.session.maintenance_interval_secs);
        state.jobs.add("session maintenance", move |stop| {
            maintenance_loop(upkeep, every, stop)
        });
        // The one place every background job starts, in the order added: the bus
        // subscriber first, session maintenance last; the drain stops them in reverse.
        state.jobs.start();
        Ok(Self {
            listener,
            router,
            connections,
            state,
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
    /// 5. in-flight requests finish (their responses end, or their clients go away:
    ///    a call nobody waits for any more does not hold the drain), then rmcp's
    ///    cancellation token ends the remaining SSE streams, sessions and the calls
    ///    still running in them, and the last connections close;
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
            connections,
            state,
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
        let serve = crate::serve::serve(listener, router, connections, close_connections.clone());

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
                // Requests, not tool calls: a 2025-era call keeps running after its
                // client left (for a resumption), and one waiting on that client
                // (sampling, elicitation) would never end before its session does.
                state.requests.close();
                state.requests.wait().await;
                // Background tasks run on: they finish here, or the hard stop below
                // hands them back.
                state.task_manager.drain().await;
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
            () = serve => {}
            () = steps => unreachable!("the drain steps never finish on their own"),
            () = hard_stop => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
        state.mcp_shutdown.cancel();
        state.task_manager.hand_back().await;
        if !state.jobs.stop(JOB_GRACE).await {
            tracing::warn!("background jobs did not all stop in time");
        }
        tracing::info!(replica = %state.replica_id, "stopped");
        Ok(())
    }
}

/// Runs session and cache upkeep, and re-reads changed key files, every `interval`
/// until `shutdown`.
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
                        state.metrics.store_reachable.set(1);
                    }
                    Err(e) => {
                        state.metrics.store_reachable.set(0);
                        state.metrics.store_error("sessions");
                        tracing::warn!(error = %e, "session maintenance failed");
                    }
                }
                // `/metrics` shows this round's count: a scrape never asks Redis.
                match state.sessions.stats().await {
                    Ok(stats) => {
                        state
                            .metrics
                            .sessions_active
                            .set(i64::try_from(stats.total).unwrap_or(i64::MAX));
                    }
                    Err(e) => tracing::debug!(error = %e, "session count not refreshed"),
                }
                if let Err(e) = state.cache.maintain().await {
                    tracing::warn!(error = %e, "cache maintenance failed");
                }
                match state.auth.reload() {
                    Ok(true) => tracing::info!("authentication keys reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "authentication keys unchanged: the new file is unusable"),
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
