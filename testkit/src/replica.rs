//! What every replica a test or a benchmark runs is told, whether it runs in that process
//! or as the binary: its settings as `STATEFUL_MCP__*` overrides ([`redis_env`],
//! [`in_process_env`]) with the shared key ring ([`TEST_MRTR_KEYS`]); the binary as a
//! child process ([`Process`]); and a reader of its `/metrics` ([`metric_value`]).
//!
//! A replica in the test's own process needs the crate itself (`Application::build`),
//! which this crate does not depend on: the integration tests' harness and the load
//! benchmark build one from [`in_process_env`].

use std::path::Path;

use crate::{
    port::free_port,
    process::{Child, Stop},
};

/// The `requestState` key ring every Redis replica of a test shares unless told
/// otherwise (`STATEFUL_MCP__MRTR__KEYS` in `extra`), as a deployment's replicas do. It
/// is published here, so a replica accepts it only with `mrtr.allow_public_keys`
/// ([`ALLOW_PUBLIC_KEYS`]).
pub const TEST_MRTR_KEYS: &str = "test:dGVzdC1yZXF1ZXN0LXN0YXRlLWtleS0wMTIzNDU2Nzg5YWJjZGVm";

/// The override that lets a replica seal with a published key such as
/// [`TEST_MRTR_KEYS`].
pub const ALLOW_PUBLIC_KEYS: (&str, &str) = ("STATEFUL_MCP__MRTR__ALLOW_PUBLIC_KEYS", "true");

/// The overrides of a Redis-backend replica on `redis_url` under `prefix` with the
/// [`TEST_MRTR_KEYS`] (and [`ALLOW_PUBLIC_KEYS`]), then `extra`. With `REDIS_TEST_CLUSTER` set, the replica runs on
/// the test binary's shared Redis Cluster instead
/// ([`shared_seed_urls`](crate::redis_cluster::shared_seed_urls)), unless `extra` names
/// another mode.
pub fn redis_env<'a>(
    redis_url: &'a str,
    prefix: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("STATEFUL_MCP__STORE__BACKEND", "redis"),
        ("STATEFUL_MCP__REDIS__URL", redis_url),
        ("STATEFUL_MCP__REDIS__KEY_PREFIX", prefix),
        ("STATEFUL_MCP__MRTR__KEYS", TEST_MRTR_KEYS),
        ALLOW_PUBLIC_KEYS,
    ];
    if crate::redis_server::RedisServer::one_node_cluster() {
        // A one-node cluster refuses the one cross-slot XREAD of a single node's reader.
        env.push(("STATEFUL_MCP__EVENTS__PER_SLOT_READERS", "true"));
    }
    if let Some(seeds) = crate::redis_cluster::shared_seed_urls() {
        env.push(("STATEFUL_MCP__REDIS__MODE", "cluster"));
        env.push(("STATEFUL_MCP__REDIS__CLUSTER_URLS", seeds));
    }
    env.extend_from_slice(extra);
    env
}

/// The overrides of a replica in this process: a loopback port of the system's choosing,
/// a short drain, then `overrides` (for `Settings::load_with_env`).
pub fn in_process_env(overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let base = [
        ("STATEFUL_MCP__SERVER__BIND", "127.0.0.1:0"),
        ("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", "2"),
        // No balancer keeps idle connections to these replicas.
        ("STATEFUL_MCP__SERVER__KEEPALIVE_DRAIN_SECS", "0"),
    ];
    base.iter()
        .chain(overrides)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of the first series of the Prometheus `text` whose line contains every one
/// of `parts`.
pub fn metric_value(text: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A replica run as the real binary, for what an in-process replica cannot do: die
/// without a word (`kill -9`), or be measured alone. Killed when dropped.
pub struct Process {
    child: Child,
    port: u16,
}

impl Process {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_stateful-mcp")` in a test or a benchmark)
    /// with the Redis backend on `redis_url` under `prefix`, on a free loopback port,
    /// `extra` overriding; returns once it answers `/healthz`.
    ///
    /// # Panics
    /// When it cannot be started, exits, or does not answer in time.
    pub async fn start(
        binary: impl AsRef<Path>,
        redis_url: &str,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_on(binary, free_port(), redis_url, prefix, extra).await
    }

    /// [`Process::start`] on the loopback `port`: a replica that takes the place of
    /// one stopped there (a balancer's upstream, a rolling upgrade's next release).
    ///
    /// # Panics
    /// As [`Process::start`].
    pub async fn start_on(
        binary: impl AsRef<Path>,
        port: u16,
        redis_url: &str,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::spawn(binary, port, &redis_env(redis_url, prefix, extra)).await
    }

    /// Starts `binary` with the memory backend; `extra` are `STATEFUL_MCP__*` overrides.
    ///
    /// # Panics
    /// As [`Process::start`].
    pub async fn memory(binary: impl AsRef<Path>, extra: &[(&str, &str)]) -> Self {
        let mut env = vec![("STATEFUL_MCP__STORE__BACKEND", "memory")];
        env.extend_from_slice(extra);
        Self::spawn(binary, free_port(), &env).await
    }

    /// Starts `binary` on the loopback `port` with the `STATEFUL_MCP__*` overrides
    /// `env`; returns once it answers `/healthz`.
    async fn spawn(binary: impl AsRef<Path>, port: u16, env: &[(&str, &str)]) -> Self {
        let mut command = std::process::Command::new(binary.as_ref());
        command
            .env("STATEFUL_MCP__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        let mut child = Child::spawn("replica", command, None, Stop::Kill);
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        child
            .wait_ready(async || reqwest::get(&healthz).await.is_ok())
            .await;
        Self { child, port }
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

    /// The MCP endpoint.
    pub fn url(&self) -> String {
        self.endpoint("/mcp")
    }

    /// The URL of `path` (`/metrics`, `/readyz`, ...) on this process.
    pub fn endpoint(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The operating system's id of the process.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends `signal` (`libc::SIGSTOP` freezes it, `libc::SIGCONT` resumes it).
    ///
    /// # Panics
    /// When it has been killed, or the signal cannot be sent.
    pub fn signal(&self, signal: libc::c_int) {
        self.child.signal(signal);
    }

    /// Kills it with `SIGKILL`: no drain, no hand-over, its connections reset.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Stops it as an orchestrator does: `SIGTERM`, then waits up to `limit` for the
    /// drain to end; its exit status.
    ///
    /// # Panics
    /// When it is still running after `limit` (it is then killed when dropped).
    pub async fn terminate(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        self.child.signal(libc::SIGTERM);
        self.child
            .wait_for_exit(limit)
            .await
            .unwrap_or_else(|| panic!("the replica still runs {limit:?} after SIGTERM"))
    }
}
