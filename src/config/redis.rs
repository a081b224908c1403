//! `[redis]`: the Redis connection every Redis-backed component shares, its pool and
//! timeouts, and the key prefix of the deployment; also the check of a Redis URL.

use serde::Deserialize;

use super::{ConfigError, positive};

/// Redis connection settings, shared by sessions, the event store and the bus.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// For `rediss://`: a PEM file of the CA certificates to trust instead of the
    /// system's; empty = the system's roots.
    pub tls_ca_file: std::path::PathBuf,
    /// Prefix of every key and channel this deployment writes.
    pub key_prefix: String,
    /// Largest number of pooled multiplexed connections.
    pub pool_size: usize,
    /// How long a request waits for a free pooled connection; waiting and connecting
    /// together take at most the longer of this and `connect_timeout_ms`.
    pub pool_wait_timeout_ms: u64,
    /// How long one command may take before it fails.
    pub command_timeout_ms: u64,
    /// How long establishing a connection may take.
    pub connect_timeout_ms: u64,
}

impl RedisSettings {
    /// Checks the `redis.*` keys but `redis.url`, which only the Redis backend needs
    /// (`Settings::validate` checks it then, with [`check_url`]).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("redis.pool_size", self.pool_size as u64)?;
        positive("redis.pool_wait_timeout_ms", self.pool_wait_timeout_ms)?;
        positive("redis.command_timeout_ms", self.command_timeout_ms)?;
        positive("redis.connect_timeout_ms", self.connect_timeout_ms)?;
        let prefix = &self.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::Invalid {
                key: "redis.key_prefix",
                reason: "must be non-empty, without spaces or braces".into(),
            });
        }
        Ok(())
    }
}

/// Checks that `url`, the value of `key`, is a `redis://` or `rediss://` (TLS) URL.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key`, never echoing the URL (it may hold a password).
pub(super) fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok || ::redis::parse_redis_url(url).is_none() {
        return Err(ConfigError::Invalid {
            key,
            reason: "not a redis:// or rediss:// URL".to_owned(),
        });
    }
    Ok(())
}
