//! The two-level cache: a fast in-process L1 on every replica over a shared Redis L2,
//! kept coherent by invalidations on the pub/sub bus.
//!
//! - Reads go L1 → L2 → loader and fill the levels above on the way back.
//! - Writes and deletes go to both levels and publish an invalidation that every other
//!   replica applies to its L1. A replica that may have missed messages clears its L1;
//!   `cache.l1_max_ttl_ms` bounds staleness if a message is lost. A fill that raced an
//!   invalidation is refused ([`l1::L1::fill`]), so it cannot reinstall an old value.
//! - `clear` bumps a generation counter in Redis: O(1), Cluster-safe, only this
//!   cache's keys, never `FLUSHDB`.
//! - `get_or_load` runs the loader once per key even when many requests miss together:
//!   one flight per key on a replica (`flight.rs`), and a short Redis lock across replicas.
//!   A load that fails or is cancelled releases the lock and leaves its flight, so the
//!   next caller on any replica loads at once.
//! - When Redis is slow or down, `get` answers from L1 (an expired entry within the
//!   fail-safe grace too) and counts the error; L2 comes back by itself.
//!
//! The cache knows nothing of MCP; tools use it through [`CacheManager`].

mod flight;
pub mod l1;
mod l2;
mod stats;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use self::stats::CacheStats;
use self::{
    flight::Flights,
    l1::{L1, L1Limits, Lookup},
    l2::{Attempt, L2, LoadLock},
    stats::{CacheFigures, Counters},
};
use crate::{
    bus::{Bus, BusHandler, BusMessage},
    config::CacheSettings,
    keys::Keys,
    metrics::Metrics,
    redis_pool::{RedisPool, RedisPoolError},
};

/// The bus topic of cache invalidations.
pub const BUS_TOPIC: &str = "cache";
/// How often a replica waiting for another replica's load looks for the result.
const LOAD_POLL: Duration = Duration::from_millis(20);

/// What can go wrong with a cache operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// Redis could not be reached and L1 had nothing usable.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// A TTL of zero or above `cache.max_ttl_secs`.
    #[error("cache TTL must be between 1 ms and {max_secs} s")]
    InvalidTtl {
        /// The configured `cache.max_ttl_secs`.
        max_secs: u64,
    },
}

/// Why [`CacheManager::get_or_load`] returned no value.
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E> {
    /// The loader failed; its error is returned as is and nothing was cached.
    #[error("loader failed: {0}")]
    Loader(E),
    /// The cache refused the call (an invalid TTL).
    #[error(transparent)]
    Cache(CacheError),
}

impl From<RedisPoolError> for CacheError {
    fn from(e: RedisPoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// An invalidation on the bus.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Invalidation {
    /// One key changed or went away.
    Key { key: String },
    /// Everything went away; entries now live under `generation`.
    Clear { generation: u64 },
}

/// Cheap-clone handle on one replica's cache.
#[derive(Clone)]
pub struct CacheManager {
    shared: Arc<Shared>,
}

struct Shared {
    l1: L1,
    /// Shared with the load locks, which release themselves on a spawned task when a
    /// load is dropped.
    l2: Option<Arc<L2>>,
    bus: Option<Bus>,
    counters: Counters,
    replica_id: Arc<str>,
    default_ttl: Duration,
    max_ttl: Duration,
    lock_ttl: Duration,
    flights: Flights,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("replica_id", &self.shared.replica_id)
            .field("l2", &self.shared.l2.is_some())
            .finish_non_exhaustive()
    }
}

impl CacheManager {
    /// A cache of replica `replica_id`. With `l2` (a pool and the key builder) entries
    /// are shared through Redis; with `bus` the replicas' L1s are kept coherent. Without
    /// L2 the cache is one process's L1 and `l1_max_ttl_ms` does not apply (there is no
    /// other replica to be stale against).
    pub fn new(
        settings: &CacheSettings,
        replica_id: &str,
        l2: Option<(RedisPool, Keys)>,
        bus: Option<Bus>,
    ) -> Self {
        let max_ttl = Duration::from_secs(settings.max_ttl_secs);
        let l1_max_ttl = if l2.is_some() {
            Duration::from_millis(settings.l1_max_ttl_ms)
        } else {
            max_ttl
        };
        let l1 = L1::new(L1Limits {
            max_entries: settings.l1_max_entries,
            max_bytes: settings.l1_max_bytes,
            max_ttl: l1_max_ttl,
            grace: Duration::from_secs(settings.fail_safe_grace_secs),
        });
        let shared = Arc::new(Shared {
            l1,
            l2: l2.map(|(pool, keys)| Arc::new(L2::new(pool, keys, max_ttl))),
            bus: bus.clone(),
            counters: Counters::default(),
            replica_id: replica_id.into(),
            default_ttl: Duration::from_secs(settings.default_ttl_secs),
            max_ttl,
            lock_ttl: Duration::from_millis(settings.load_lock_ttl_ms),
            flights: Flights::default(),
        });
        if let Some(bus) = bus {
            bus.subscribe(
                BUS_TOPIC,
                Arc::new(Invalidator {
                    shared: Arc::downgrade(&shared),
                }),
            );
        }
        Self { shared }
    }

    fn check_ttl(&self, ttl: Duration) -> Result<Duration, CacheError> {
        if ttl.is_zero() || ttl > self.shared.max_ttl {
            return Err(CacheError::InvalidTtl {
                max_secs: self.shared.max_ttl.as_secs(),
            });
        }
        Ok(ttl)
    }

    /// Reads `key`: L1, then Redis (filling L1).
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when Redis fails and L1 has nothing, not even an
    /// entry within the fail-safe grace.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let s = &self.shared;
        let stale = match s.l1.get(key) {
            Lookup::Fresh(v) => {
                Counters::bump(&s.counters.hits_l1);
                return Ok(Some(v));
            }
            Lookup::Stale(v) => Some(v),
            Lookup::Miss => None,
        };
        let Some(l2) = &s.l2 else {
            Counters::bump(&s.counters.misses);
            return Ok(None);
        };
        let epoch = s.l1.epoch();
        match l2.get(key).await {
            Ok(Some((value, ttl))) => {
                Counters::bump(&s.counters.hits_l2);
                s.l1.fill(key, value.clone(), ttl, epoch);
                Ok(Some(value))
            }
            Ok(None) => {
                Counters::bump(&s.counters.misses);
                Ok(None)
            }
            Err(e) => {
                Counters::bump(&s.counters.errors);
                match stale {
                    Some(value) => {
                        tracing::debug!(key, error = %e, "cache L2 failed; serving stale L1");
                        Counters::bump(&s.counters.hits_l1);
                        Counters::bump(&s.counters.stale_hits);
                        Ok(Some(value))
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    /// Writes `key` to both levels for `ttl` (default: `cache.default_ttl_secs`) and
    /// tells the other replicas.
    ///
    /// # Errors
    /// [`CacheError::InvalidTtl`]; [`CacheError::Unavailable`] when Redis fails (L1 then
    /// drops the key rather than keep a value other replicas do not see).
    pub async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let ttl = self.check_ttl(ttl.unwrap_or(self.shared.default_ttl))?;
        let s = &self.shared;
        if let Some(l2) = &s.l2
            && let Err(e) = l2.set(key, &value, ttl).await
        {
            Counters::bump(&s.counters.errors);
            s.l1.invalidate(key);
            return Err(e.into());
        }
        s.l1.put(key, value, ttl);
        Counters::bump(&s.counters.sets);
        self.announce(Invalidation::Key {
            key: key.to_owned(),
        })
        .await;
        Ok(())
    }

    /// Deletes `key` from both levels and tells the other replicas.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when Redis fails.
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let s = &self.shared;
        s.l1.invalidate(key);
        if let Some(l2) = &s.l2
            && let Err(e) = l2.delete(key).await
        {
            Counters::bump(&s.counters.errors);
            return Err(e.into());
        }
        Counters::bump(&s.counters.deletes);
        self.announce(Invalidation::Key {
            key: key.to_owned(),
        })
        .await;
        Ok(())
    }

    /// Empties this cache on every replica (only this cache's keys: it starts a new
    /// generation in Redis).
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when Redis fails.
    pub async fn clear(&self) -> Result<(), CacheError> {
        let s = &self.shared;
        s.l1.clear();
        let Some(l2) = &s.l2 else {
            return Ok(());
        };
        let generation = l2.clear().await.inspect_err(|_| {
            Counters::bump(&s.counters.errors);
        })?;
        self.announce(Invalidation::Clear { generation }).await;
        Ok(())
    }

    /// Reads `key`, or runs `loader` once (across concurrent callers on this replica and,
    /// through a short Redis lock, across replicas), stores its value for `ttl` and
    /// returns it.
    ///
    /// Callers that wait for another caller's load and see it fail or go away take over:
    /// on this replica the next waiter runs its own loader; across replicas a waiter takes
    /// the released lock.
    ///
    /// # Errors
    /// [`LoadError::Loader`] with the loader's own error; [`LoadError::Cache`] for an
    /// invalid TTL. When Redis is down the loader still runs and its value is kept in L1
    /// only.
    ///
    /// # Cancel safety
    /// Dropping the future stops the load: the loader is dropped, this caller leaves the
    /// key's flight and a Redis lock it holds is released on a spawned task.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<Bytes, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let ttl = self
            .check_ttl(ttl.unwrap_or(self.shared.default_ttl))
            .map_err(LoadError::Cache)?;
        if let Ok(Some(value)) = self.get(key).await {
            return Ok(value);
        }
        let ticket = self.shared.flights.join(key);
        ticket
            .cell()
            .get_or_try_init(|| self.load(key, ttl, loader))
            .await
            .cloned()
    }

    /// The miss path of `get_or_load`, run by one caller per key on this replica.
    async fn load<F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        loader: F,
    ) -> Result<Bytes, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let s = &self.shared;
        let run = |loader: F| async move {
            Counters::bump(&s.counters.loader_calls);
            loader().await.map_err(LoadError::Loader)
        };
        let Some(l2) = &s.l2 else {
            let value = run(loader).await?;
            self.store_loaded(key, value.clone(), ttl).await;
            return Ok(value);
        };
        let lock = match self.await_lock(l2, key).await {
            Ok(LockWait::Stored(value)) => return Ok(value),
            Ok(LockWait::Taken(lock)) => lock,
            Ok(LockWait::TimedOut) => {
                let value = run(loader).await?;
                self.store_loaded(key, value.clone(), ttl).await;
                return Ok(value);
            }
            Err(e) => {
                Counters::bump(&s.counters.errors);
                tracing::debug!(key, error = %e, "cache L2 unavailable; loading without lock");
                let value = run(loader).await?;
                s.l1.put(key, value.clone(), ttl);
                return Ok(value);
            }
        };
        let value = match run(loader).await {
            Ok(value) => value,
            Err(e) => {
                if lock.release().await.is_err() {
                    Counters::bump(&s.counters.errors);
                }
                return Err(e);
            }
        };
        // The value was absent, so no replica holds it in L1 beyond what
        // `l1_max_ttl_ms` bounds: storing needs no invalidation broadcast.
        match lock.store(&value, ttl).await {
            Ok(()) => Counters::bump(&s.counters.sets),
            Err(e) => {
                Counters::bump(&s.counters.errors);
                tracing::debug!(key, error = %e, "loaded value kept in L1 only");
            }
        }
        s.l1.put(key, value.clone(), ttl);
        Ok(value)
    }

    /// Takes the load lock of `key`, or waits (up to the lock's TTL) for the replica that
    /// holds it to store the value; a lock released without a value is taken over.
    async fn await_lock(&self, l2: &Arc<L2>, key: &str) -> Result<LockWait, CacheError> {
        let s = &self.shared;
        let mut lock = l2.load_lock(key).await?;
        let deadline = tokio::time::Instant::now() + s.lock_ttl;
        loop {
            let epoch = s.l1.epoch();
            match lock.try_take(s.lock_ttl).await? {
                Attempt::Stored(value, remaining) => {
                    s.l1.fill(key, value.clone(), remaining, epoch);
                    return Ok(LockWait::Stored(value));
                }
                Attempt::Taken => return Ok(LockWait::Taken(lock)),
                Attempt::Busy if tokio::time::Instant::now() >= deadline => {
                    return Ok(LockWait::TimedOut);
                }
                Attempt::Busy => tokio::time::sleep(LOAD_POLL).await,
            }
        }
    }

    /// Stores a freshly loaded value; a Redis failure keeps it in L1 only.
    async fn store_loaded(&self, key: &str, value: Bytes, ttl: Duration) {
        if self.set(key, value.clone(), Some(ttl)).await.is_err() {
            self.shared.l1.put(key, value, ttl);
        }
    }

    async fn announce(&self, message: Invalidation) {
        let Some(bus) = &self.shared.bus else {
            return;
        };
        let Ok(payload) = serde_json::to_vec(&message) else {
            return;
        };
        match bus.publish(BUS_TOPIC, &payload).await {
            Ok(()) => Counters::bump(&self.shared.counters.invalidations_sent),
            Err(e) => {
                // Other replicas then see the old value for at most `l1_max_ttl_ms`.
                Counters::bump(&self.shared.counters.errors);
                tracing::warn!(error = %e, "cache invalidation not published");
            }
        }
    }

    /// Drops this replica's L1 copy of `key` only: the next read goes to Redis. Other
    /// replicas and L2 are untouched (use [`CacheManager::delete`] to remove a value).
    pub fn evict_local(&self, key: &str) {
        self.shared.l1.invalidate(key);
    }

    /// This replica's figures.
    pub fn stats(&self) -> CacheStats {
        let s = &self.shared;
        let limits = s.l1.limits();
        s.counters.snapshot(
            &s.replica_id,
            s.l1.usage(),
            (limits.max_entries, limits.max_bytes),
        )
    }

    /// Registers the cache's `cache_*` series with `metrics`, read from
    /// [`CacheManager::stats`] at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(CacheFigures(self.clone()));
    }

    /// One round of upkeep: refreshes the generation counter's TTL and, if a `clear`
    /// message was missed, notices the new generation and clears L1.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when Redis fails.
    pub async fn maintain(&self) -> Result<(), CacheError> {
        let Some(l2) = &self.shared.l2 else {
            return Ok(());
        };
        let before = l2.generation().await.ok();
        let now = l2.refresh_generation().await?;
        if before.is_some_and(|b| b != now) {
            self.shared.l1.clear();
        }
        Ok(())
    }
}

/// How waiting for the load lock of a key ended.
enum LockWait {
    /// Another loader stored the value.
    Stored(Bytes),
    /// The lock is ours: load.
    Taken(LoadLock),
    /// Another loader held the lock for its whole TTL without storing anything.
    TimedOut,
}

/// Applies other replicas' invalidations to this replica's L1.
struct Invalidator {
    shared: Weak<Shared>,
}

impl BusHandler for Invalidator {
    fn on_message(&self, msg: BusMessage) {
        if msg.is_own() {
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        match serde_json::from_slice::<Invalidation>(&msg.payload) {
            Ok(Invalidation::Key { key }) => shared.l1.invalidate(&key),
            Ok(Invalidation::Clear { generation }) => {
                shared.l1.clear();
                if let Some(l2) = &shared.l2 {
                    l2.adopt_generation(generation);
                }
            }
            Err(e) => {
                tracing::warn!(origin = %msg.origin, error = %e, "unreadable cache invalidation");
                return;
            }
        }
        Counters::bump(&shared.counters.invalidations_received);
    }

    fn on_gap(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.l1.clear();
            if let Some(l2) = &shared.l2 {
                l2.forget_generation();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;
    use crate::config::Settings;

    fn memory_cache() -> CacheManager {
        let settings = Settings::load_with_env(None, Vec::new()).unwrap().cache;
        CacheManager::new(&settings, "solo", None, None)
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn register_metrics_exposes_the_cache_figures() {
        let cache = memory_cache();
        let metrics = Metrics::new("r", "memory");
        cache.register_metrics(&metrics);
        cache.set("k", b("v"), None).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(b("v")));
        let text = metrics.render();
        for line in [
            "# TYPE stateful_mcp_cache_sets counter\n",
            "stateful_mcp_cache_sets_total{replica=\"r\"} 1\n",
            "stateful_mcp_cache_hits_l1_total{replica=\"r\"} 1\n",
            "# TYPE stateful_mcp_cache_hit_rate gauge\n",
            "stateful_mcp_cache_hit_rate{replica=\"r\"} 1.0\n",
            "stateful_mcp_cache_l1_entries{replica=\"r\"} 1.0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_load_leaves_no_flight_behind() {
        let cache = memory_cache();
        for key in ["a", "b", "c"] {
            let load = cache.get_or_load(key, None, pending::<Result<Bytes, ()>>);
            let cancelled = tokio::time::timeout(Duration::from_millis(10), load).await;
            assert!(cancelled.is_err(), "the loader never finishes");
        }
        assert_eq!(cache.shared.flights.len(), 0);
        let failed = cache
            .get_or_load("d", None, || async { Err::<Bytes, _>("no") })
            .await;
        assert!(matches!(failed, Err(LoadError::Loader("no"))));
        assert_eq!(cache.shared.flights.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_over_from_a_cancelled_leader() {
        let cache = memory_cache();
        let leader = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_load("k", None, pending::<Result<Bytes, ()>>)
                    .await
            }
        });
        tokio::task::yield_now().await;
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_load("k", None, || async { Ok::<_, ()>(b("from the waiter")) })
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(cache.shared.flights.len(), 1);
        assert!(!waiter.is_finished(), "the waiter waits for the leader");
        leader.abort();
        assert_eq!(waiter.await.unwrap().unwrap(), b("from the waiter"));
        assert_eq!(cache.shared.flights.len(), 0);
        assert_eq!(cache.stats().loader_calls, 2);
    }
}
