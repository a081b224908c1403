//! The app's side of a test's Redis (`testkit`'s [`RedisServer`] or [`RedisCluster`]):
//! the shipped Redis settings pointed at it, and a pool on it.
//!
//! With `REDIS_TEST_CLUSTER` set, a server's settings point at the test binary's shared
//! Redis Cluster instead (`testkit::redis_cluster::shared_seed_urls`), as the replicas'
//! do (`testkit::replica::redis_env`).

use stateful_mcp::{
    config::{RedisMode, RedisSettings, Settings},
    redis_pool::RedisPool,
};
pub use testkit::{
    redis_cluster::RedisCluster,
    redis_server::{RedisServer, unique_prefix},
};

/// The app's settings and pool for a test's Redis.
pub trait RedisServerExt {
    /// The shipped Redis settings, pointed at this server (or cluster).
    fn settings(&self) -> RedisSettings;

    /// A pool on this server (or cluster) with the shipped settings.
    fn pool(&self) -> RedisPool {
        RedisPool::new(&self.settings()).unwrap()
    }
}

impl RedisServerExt for RedisServer {
    fn settings(&self) -> RedisSettings {
        let mut settings = shipped();
        settings.url = self.url().to_owned();
        if let Some(ca) = self.tls_ca() {
            settings.tls_ca_file = ca.to_owned();
        }
        if let Some(seeds) = testkit::redis_cluster::shared_seed_urls() {
            on_cluster(&mut settings, seeds);
        }
        settings
    }
}

impl RedisServerExt for RedisCluster {
    fn settings(&self) -> RedisSettings {
        let mut settings = shipped();
        on_cluster(&mut settings, &self.seed_urls());
        settings
    }
}

/// Whether a test that injects faults into its own Redis must give way: with
/// `REDIS_TEST_CLUSTER` its replicas run on the shared cluster, which its faults would
/// miss. Says so on stderr when it does; such a test runs in the standalone suite.
pub fn skipped_on_shared_cluster(test: &str) -> bool {
    let skipped = testkit::redis_cluster::shared_enabled();
    if skipped {
        eprintln!("{test}: injects faults into its own Redis; not run on the shared cluster");
    }
    skipped
}

/// The `[redis]` section as shipped.
fn shipped() -> RedisSettings {
    Settings::load_with_env(None, Vec::new()).unwrap().redis
}

/// Points `settings` at the cluster of the comma-separated `seeds`.
fn on_cluster(settings: &mut RedisSettings, seeds: &str) {
    settings.mode = RedisMode::Cluster;
    settings.cluster_urls = seeds.split(',').map(str::to_owned).collect();
}
