//! The app's side of a test's `redis-server` (`testkit`'s [`RedisServer`]): the shipped
//! Redis settings pointed at it, and a pool on it.

use stateful_mcp::{
    config::{RedisSettings, Settings},
    redis_pool::RedisPool,
};
pub use testkit::redis_server::{RedisServer, unique_prefix};

/// The app's settings and pool for a [`RedisServer`].
pub trait RedisServerExt {
    /// The shipped Redis settings, pointed at this server.
    fn settings(&self) -> RedisSettings;

    /// A pool on this server with the shipped settings.
    fn pool(&self) -> RedisPool;
}

impl RedisServerExt for RedisServer {
    fn settings(&self) -> RedisSettings {
        let mut settings = Settings::load_with_env(None, Vec::new()).unwrap().redis;
        settings.url = self.url().to_owned();
        if let Some(ca) = self.tls_ca() {
            settings.tls_ca_file = ca.to_owned();
        }
        settings
    }

    fn pool(&self) -> RedisPool {
        RedisPool::new(&self.settings()).unwrap()
    }
}
