//! `[tools]`: tool limits (the prime sieve's bound, the CPU pool's size) and how long
//! tool results and the tool list may be cached.

use serde::Deserialize;

use super::{ConfigError, positive};

/// The largest `tools.cpu_concurrency` accepted: tokio's default number of blocking
/// threads, so every permit can have a thread.
pub const MAX_CPU_CONCURRENCY: usize = 512;

/// The largest `tools.prime_count_max_limit` accepted: about 100 s of one core, and a
/// base-prime table of a few hundred KiB.
const MAX_PRIME_LIMIT: u64 = 100_000_000_000;

/// Tool limits and result caching.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolSettings {
    /// Largest `limit` the `prime_count` tool accepts.
    pub prime_count_max_limit: u64,
    /// Seconds a `prime_count` result is served from the cache (public scope).
    pub prime_count_cache_ttl_secs: u64,
    /// Seconds clients may cache the tool list (the 2026-07-28 `ttlMs` hint).
    pub list_ttl_secs: u64,
    /// Most CPU-heavy computations (prime sieves) running at once on a replica, on
    /// blocking threads; 0 = the number of cores minus one, at least 1. Read it with
    /// [`ToolSettings::cpu_jobs`].
    pub cpu_concurrency: usize,
}

impl ToolSettings {
    /// The effective `cpu_concurrency`: the setting, or for 0 the number of cores minus
    /// one (at least 1), leaving a core to the async workers.
    pub fn cpu_jobs(&self) -> usize {
        if self.cpu_concurrency > 0 {
            return self.cpu_concurrency;
        }
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1)
    }

    /// Checks the `tools.*` keys but `tools.prime_count_cache_ttl_secs`, which is
    /// bounded by `cache.max_ttl_secs` (`Settings::validate` checks it).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("tools.prime_count_max_limit", self.prime_count_max_limit)?;
        if self.prime_count_max_limit > MAX_PRIME_LIMIT {
            return Err(ConfigError::Invalid {
                key: "tools.prime_count_max_limit",
                reason: format!(
                    "must be at most {MAX_PRIME_LIMIT} (a sieve that size takes minutes of CPU)"
                ),
            });
        }
        if self.cpu_concurrency > MAX_CPU_CONCURRENCY {
            return Err(ConfigError::Invalid {
                key: "tools.cpu_concurrency",
                reason: format!(
                    "must be at most {MAX_CPU_CONCURRENCY} (the runtime's blocking threads); \
                     0 = cores minus one"
                ),
            });
        }
        Ok(())
    }
}
