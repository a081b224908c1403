//! What a test node of one Redis-backed component (the bus, the event store, the cache)
//! runs on: its own pool, keys under the test's prefix, and the background jobs its
//! component adds (running as soon as they are added) — the part of a replica such a
//! test needs.

use std::time::Duration;

use stateful_mcp::{config::RedisSettings, jobs::Jobs, keys::Keys, redis_pool::RedisPool};

use super::{redis_server::RedisServerExt, wait::within};

/// A pool, keys and background jobs; dropping it aborts the jobs still running.
pub struct NodeBase {
    pub pool: RedisPool,
    pub keys: Keys,
    pub jobs: Jobs,
}

impl NodeBase {
    /// A pool with `redis` settings and keys under `prefix`, running the pool's own
    /// jobs (the Sentinel or cluster watcher), as a replica does.
    pub fn new(mut redis: RedisSettings, prefix: &str) -> Self {
        redis.key_prefix = prefix.to_owned();
        let pool = RedisPool::new(&redis).expect("valid settings");
        let jobs = Jobs::new();
        jobs.start();
        pool.add_jobs(&jobs);
        Self {
            pool,
            keys: Keys::new(prefix),
            jobs,
        }
    }

    /// Stops the background jobs and waits until `what` (they) have stopped.
    pub async fn stop(&self, what: &str) {
        let all = within(what, self.jobs.stop(Duration::from_secs(5))).await;
        assert!(all, "{what}: every job stopped within its grace");
    }
}

/// Settings for a pool of `pool_size` on `server` (or cluster) that notices a dead server
/// quickly: one second to connect or to run a command, `pool_wait` for a free connection.
pub fn quick_settings(
    server: &impl RedisServerExt,
    pool_size: usize,
    pool_wait: Duration,
) -> RedisSettings {
    RedisSettings {
        pool_size,
        pool_wait_timeout_ms: pool_wait.as_millis() as u64,
        command_timeout_ms: 1000,
        connect_timeout_ms: 1000,
        ..server.settings()
    }
}
