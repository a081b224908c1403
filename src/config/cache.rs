//! `[cache]`: the two-level cache: each replica's L1 bounds, the TTLs, the load lock,
//! and the Redis that holds the L2.

use serde::Deserialize;

use super::{
    ConfigError, positive,
    redis::{AddressKeys, RedisMode, RedisSettings},
};

/// Two-level cache settings.
#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    /// Most entries in each replica's in-process L1.
    pub l1_max_entries: u64,
    /// Most bytes of values in each replica's L1.
    pub l1_max_bytes: u64,
    /// Longest time an L1 entry is served without going back to Redis: the bound on
    /// cross-replica staleness when an invalidation message is lost.
    pub l1_max_ttl_ms: u64,
    /// TTL of entries whose writer names none.
    pub default_ttl_secs: u64,
    /// Longest TTL accepted.
    pub max_ttl_secs: u64,
    /// How long after expiry an L1 entry may still be served while Redis is unreachable.
    pub fail_safe_grace_secs: u64,
    /// How long one replica may hold the lock to load a missing entry.
    pub load_lock_ttl_ms: u64,
    /// The kind of the cache's own Redis deployment; `None` (configured as `""`) =
    /// standalone at `redis_url` when that is set, else the sessions' deployment.
    /// Lets operators give the cache an evicting memory policy while session state
    /// stays on a `noeviction` deployment.
    #[serde(default, deserialize_with = "optional_mode")]
    pub redis_mode: Option<RedisMode>,
    /// The cache's own standalone Redis; empty = the sessions' deployment.
    pub redis_url: String,
    /// With `redis_mode = "cluster"`: the cache cluster's seed nodes.
    #[serde(default, deserialize_with = "super::comma_list")]
    pub redis_cluster_urls: Vec<String>,
    /// With `redis_mode = "sentinel"`: the sentinels of the cache's primary.
    #[serde(default, deserialize_with = "super::comma_list")]
    pub redis_sentinel_urls: Vec<String>,
    /// With `redis_mode = "sentinel"`: the name of the cache's primary.
    #[serde(default)]
    pub redis_sentinel_master: String,
}

/// The keys of the cache's own deployment, for error messages.
const CACHE_ADDRESS_KEYS: AddressKeys = AddressKeys {
    url: "cache.redis_url",
    cluster_urls: "cache.redis_cluster_urls",
    sentinel_urls: "cache.redis_sentinel_urls",
    sentinel_master: "cache.redis_sentinel_master",
};

/// `""` = not set; otherwise a [`RedisMode`].
fn optional_mode<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<RedisMode>, D::Error> {
    let raw = String::deserialize(de)?;
    if raw.trim().is_empty() {
        return Ok(None);
    }
    RedisMode::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(
        raw.trim(),
    ))
    .map(Some)
}

impl CacheSettings {
    /// Checks the `cache.*` keys but `cache.redis_url`, which only the Redis backend
    /// reads (`Settings::validate` checks it then).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("cache.l1_max_entries", self.l1_max_entries)?;
        positive("cache.l1_max_bytes", self.l1_max_bytes)?;
        positive("cache.l1_max_ttl_ms", self.l1_max_ttl_ms)?;
        positive("cache.default_ttl_secs", self.default_ttl_secs)?;
        positive("cache.max_ttl_secs", self.max_ttl_secs)?;
        positive("cache.load_lock_ttl_ms", self.load_lock_ttl_ms)?;
        if self.default_ttl_secs > self.max_ttl_secs {
            return Err(ConfigError::Invalid {
                key: "cache.default_ttl_secs",
                reason: "must not exceed cache.max_ttl_secs".into(),
            });
        }
        Ok(())
    }

    /// The cache's own Redis deployment, `None` when it shares `sessions` (the `[redis]`
    /// section): the connection settings of `sessions` with the cache's addresses.
    pub fn own_redis(&self, sessions: &RedisSettings) -> Option<RedisSettings> {
        let mode = match self.redis_mode {
            Some(mode) => mode,
            None if !self.redis_url.is_empty() => RedisMode::Standalone,
            None => return None,
        };
        Some(RedisSettings {
            mode,
            url: self.redis_url.clone(),
            cluster_urls: self.redis_cluster_urls.clone(),
            sentinel_urls: self.redis_sentinel_urls.clone(),
            sentinel_master: self.redis_sentinel_master.clone(),
            ..sessions.clone()
        })
    }

    /// Checks the addresses of the cache's own deployment, if it has one.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first missing or malformed `cache.redis_*` key.
    pub(super) fn check_addresses(&self, sessions: &RedisSettings) -> Result<(), ConfigError> {
        match self.own_redis(sessions) {
            Some(own) => own.check_addresses(&CACHE_ADDRESS_KEYS),
            None => Ok(()),
        }
    }
}
