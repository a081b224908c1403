//! `[cache]`: the two-level cache: each replica's L1 bounds, the TTLs, the load lock,
//! and the Redis that holds the L2.

use serde::Deserialize;

use super::{ConfigError, positive};

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
    /// Redis for the cache's L2; empty = `redis.url`. Lets operators give the cache an
    /// evicting memory policy while session state stays on a `noeviction` server.
    pub redis_url: String,
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
}
