//! App replicas in this process (`Application::build` on port 0, stopped gracefully) on
//! the memory or the Redis backend, and a round-robin TCP hop in front of several of them;
//! the binaries as processes are `testkit`'s [`Process`]: the shipping one, and the one
//! with the conformance fixtures (which only exist in that binary).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use stateful_mcp::{config::Settings, startup::Application};
pub use testkit::replica::{Process, metric_value};
use testkit::replica::{in_process_env, redis_env};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::wait::within;

/// One running replica, asked to stop when dropped.
pub struct Replica {
    pub addr: SocketAddr,
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Replica {
    /// Starts a replica with the Redis backend on `redis_url` under `prefix`, with the
    /// [`TEST_MRTR_KEYS`](testkit::replica::TEST_MRTR_KEYS); `extra` are further `STATEFUL_MCP__*` overrides.
    pub async fn start(redis_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Self {
        Self::with_env(&redis_env(redis_url, prefix, extra)).await
    }

    /// Starts a replica with the memory backend; `extra` are `STATEFUL_MCP__*` overrides.
    pub async fn memory(extra: &[(&str, &str)]) -> Self {
        let mut env = vec![("STATEFUL_MCP__STORE__BACKEND", "memory")];
        env.extend_from_slice(extra);
        Self::with_env(&env).await
    }

    /// Starts a replica on a loopback port with a short drain, then `overrides`.
    async fn with_env(overrides: &[(&str, &str)]) -> Self {
        Self::with_settings(settings(overrides)).await
    }

    /// Starts a replica with the Redis backend (as [`Replica::start`]) whose `/mcp`
    /// serves the handlers `factory` makes, through the embedding API
    /// (`stateful_mcp::mcp::endpoint_with`).
    pub async fn with_handler<H, F>(
        redis_url: &str,
        prefix: &str,
        extra: &[(&str, &str)],
        factory: F,
    ) -> Self
    where
        H: rmcp::ServerHandler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let env = redis_env(redis_url, prefix, extra);
        let app = Application::build_with(settings(&env), |mcp| {
            stateful_mcp::mcp::endpoint_with(mcp, factory)
        })
        .await
        .unwrap();
        Self::run(app)
    }

    /// Starts a replica from explicit settings.
    pub async fn with_settings(settings: Settings) -> Self {
        Self::run(Application::build(settings).await.unwrap())
    }

    fn run(app: Application) -> Self {
        let addr = app.local_addr();
        let token = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            addr,
            token,
            task: Some(task),
        }
    }

    /// The MCP endpoint.
    pub fn url(&self) -> String {
        self.endpoint("/mcp")
    }

    /// The URL of `path` (`/readyz`, `/metrics`, ...) on this replica.
    pub fn endpoint(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The value of the first `/metrics` series whose line contains every one of `parts`.
    pub async fn metric(&self, parts: &[&str]) -> Option<f64> {
        let text = reqwest::get(self.endpoint("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric_value(&text, parts)
    }

    /// Graceful stop; returns once the replica has exited.
    pub async fn stop(&mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            within("the replica stops within its drain timeout", task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Settings of a replica on a loopback port with a short drain, then `overrides`.
fn settings(overrides: &[(&str, &str)]) -> Settings {
    Settings::load_with_env(None, in_process_env(overrides)).unwrap()
}

/// A round-robin TCP hop: each new connection goes to the next upstream that accepts
/// it (like nginx with `proxy_next_upstream error`). Counts connections per upstream.
pub struct RoundRobin {
    pub addr: SocketAddr,
    pub served: Arc<Vec<AtomicUsize>>,
    task: JoinHandle<()>,
}

impl RoundRobin {
    /// Listens on a loopback port and forwards to `upstreams` in turn.
    pub async fn start(upstreams: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served: Arc<Vec<AtomicUsize>> =
            Arc::new(upstreams.iter().map(|_| AtomicUsize::new(0)).collect());
        let counters = served.clone();
        let task = tokio::spawn(async move {
            let next = AtomicUsize::new(0);
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut chosen = None;
                for i in 0..upstreams.len() {
                    let idx = (start + i) % upstreams.len();
                    if let Ok(out) = tokio::net::TcpStream::connect(upstreams[idx]).await {
                        chosen = Some((idx, out));
                        break;
                    }
                }
                let Some((idx, mut outbound)) = chosen else {
                    continue;
                };
                counters[idx].fetch_add(1, Ordering::Relaxed);
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self { addr, served, task }
    }

    /// The MCP endpoint behind the hop.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Connections forwarded so far, per upstream.
    pub fn served(&self) -> Vec<usize> {
        self.served
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shipping binary.
pub const SERVER_BINARY: &str = env!("CARGO_BIN_EXE_stateful-mcp");
/// The binary that serves the conformance suite's fixtures in front of the production
/// handler.
pub const CONFORMANCE_BINARY: &str = env!("CARGO_BIN_EXE_stateful-mcp-conformance");
