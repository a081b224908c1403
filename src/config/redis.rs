//! `[redis]`: the Redis deployment every Redis-backed component shares (one node, a
//! Sentinel-managed primary or a Cluster), its pool and timeouts, and the key prefix of
//! the deployment; also the check of a Redis URL.

use serde::Deserialize;

use super::{ConfigError, positive};

/// How the replicas reach Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One node at `redis.url`.
    #[default]
    Standalone,
    /// A primary found through the sentinels at `redis.sentinel_urls`.
    Sentinel,
    /// A Redis Cluster reached through the seed nodes at `redis.cluster_urls`.
    Cluster,
}

impl RedisMode {
    /// The mode as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }
}

/// Redis connection settings, shared by sessions, the event store and the bus.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// Which kind of deployment the addresses below name.
    #[serde(default)]
    pub mode: RedisMode,
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS: the node of
    /// `mode = "standalone"` (unused in the other modes).
    pub url: String,
    /// `mode = "cluster"`: seed nodes, `redis[s]://[user:password@]host:port`; the
    /// credentials and TLS of the first apply to every node.
    #[serde(default, deserialize_with = "super::comma_list")]
    pub cluster_urls: Vec<String>,
    /// `mode = "sentinel"`: the sentinels, `redis[s]://[user:password@]host:port[/db]`;
    /// the credentials, TLS and database of the first also reach the primary.
    #[serde(default, deserialize_with = "super::comma_list")]
    pub sentinel_urls: Vec<String>,
    /// `mode = "sentinel"`: the name the sentinels monitor the primary under.
    #[serde(default)]
    pub sentinel_master: String,
    /// For `rediss://`: a PEM file of the CA certificates to trust instead of the
    /// system's; empty = the system's roots.
    pub tls_ca_file: std::path::PathBuf,
    /// Prefix of every key and channel this deployment writes.
    pub key_prefix: String,
    /// Largest number of pooled multiplexed connections. Requests share them (their
    /// commands pipelined on one socket), so one carries the load until checkouts
    /// overlap; with `replica_acks` (`WAIT` blocks the connection it is sent on) and in
    /// `cluster` mode each request holds one alone.
    pub pool_size: usize,
    /// How long a request waits for a free pooled connection; waiting and connecting
    /// together take at most the longer of this and `connect_timeout_ms`.
    pub pool_wait_timeout_ms: u64,
    /// How long one command may take before it fails.
    pub command_timeout_ms: u64,
    /// How long establishing a connection may take.
    pub connect_timeout_ms: u64,
    /// How many replicas must have a state-changing script's writes before the call is
    /// acknowledged (`WAIT`, in the script's round trip); 0 = no wait. A wait that
    /// falls short answers "outcome unknown; retry with the same idempotencyKey".
    #[serde(default)]
    pub replica_acks: u32,
    /// How long that wait may take, in milliseconds.
    #[serde(default = "default_replica_ack_timeout_ms")]
    pub replica_ack_timeout_ms: u64,
}

fn default_replica_ack_timeout_ms() -> u64 {
    200
}

impl Default for RedisSettings {
    /// The shipped defaults (`config/default.toml`): one node on the local default port.
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".into(),
            cluster_urls: Vec::new(),
            sentinel_urls: Vec::new(),
            sentinel_master: String::new(),
            tls_ca_file: Default::default(),
            key_prefix: "stateful-mcp".into(),
            pool_size: 16,
            pool_wait_timeout_ms: 500,
            command_timeout_ms: 500,
            connect_timeout_ms: 1000,
            replica_acks: 0,
            replica_ack_timeout_ms: default_replica_ack_timeout_ms(),
        }
    }
}

impl RedisSettings {
    /// Checks the `redis.*` keys but the addresses, which only the Redis backend needs
    /// (`Settings::validate` checks them then, with [`RedisSettings::check_addresses`]).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("redis.pool_size", self.pool_size as u64)?;
        positive("redis.pool_wait_timeout_ms", self.pool_wait_timeout_ms)?;
        positive("redis.command_timeout_ms", self.command_timeout_ms)?;
        positive("redis.connect_timeout_ms", self.connect_timeout_ms)?;
        if self.replica_acks > 0 {
            positive("redis.replica_ack_timeout_ms", self.replica_ack_timeout_ms)?;
            if self.replica_ack_timeout_ms >= self.command_timeout_ms {
                return Err(ConfigError::Invalid {
                    key: "redis.replica_ack_timeout_ms",
                    reason: "must be below redis.command_timeout_ms (the wait shares the \
                             script's round trip)"
                        .into(),
                });
            }
        }
        let prefix = &self.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::Invalid {
                key: "redis.key_prefix",
                reason: "must be non-empty, without spaces or braces".into(),
            });
        }
        Ok(())
    }

    /// Checks the addresses `mode` uses: `url`, or every `cluster_urls` entry, or every
    /// `sentinel_urls` entry and `sentinel_master`. `keys` names them (the cache's own
    /// deployment spells them `cache.redis_*`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first missing or malformed address.
    pub(super) fn check_addresses(&self, keys: &AddressKeys) -> Result<(), ConfigError> {
        let all = |key: &'static str, urls: &[String]| {
            if urls.is_empty() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "needs at least one URL with mode = \"{}\"",
                        self.mode.as_str()
                    ),
                });
            }
            urls.iter().try_for_each(|url| check_url(key, url))
        };
        match self.mode {
            RedisMode::Standalone => check_url(keys.url, &self.url),
            RedisMode::Cluster => {
                all(keys.cluster_urls, &self.cluster_urls)?;
                // A cluster has database 0 only; a URL naming another would be refused
                // by every node at connect time, long after start-up.
                if self.cluster_urls.iter().any(|url| database(url) != 0) {
                    return Err(ConfigError::Invalid {
                        key: keys.cluster_urls,
                        reason: "a Redis Cluster has database 0 only: drop the /N from the URLs"
                            .into(),
                    });
                }
                Ok(())
            }
            RedisMode::Sentinel => {
                all(keys.sentinel_urls, &self.sentinel_urls)?;
                if self.sentinel_master.trim().is_empty() {
                    return Err(ConfigError::Invalid {
                        key: keys.sentinel_master,
                        reason: "names the monitored primary; required with mode = \"sentinel\""
                            .into(),
                    });
                }
                Ok(())
            }
        }
    }
}

/// The configuration keys of one deployment's addresses, for error messages.
#[derive(Debug)]
pub(super) struct AddressKeys {
    pub url: &'static str,
    pub cluster_urls: &'static str,
    pub sentinel_urls: &'static str,
    pub sentinel_master: &'static str,
}

/// The keys of the `[redis]` section's addresses.
pub(super) const REDIS_ADDRESS_KEYS: AddressKeys = AddressKeys {
    url: "redis.url",
    cluster_urls: "redis.cluster_urls",
    sentinel_urls: "redis.sentinel_urls",
    sentinel_master: "redis.sentinel_master",
};

/// The database a valid Redis URL names (0 when it names none).
fn database(url: &str) -> i64 {
    use ::redis::IntoConnectionInfo;
    url.into_connection_info()
        .map_or(0, |info| info.redis_settings().db())
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
