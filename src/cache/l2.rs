//! The shared second level in Redis: one string per entry under the current cache
//! generation, a TTL on every key, and the short lock that lets one replica load a
//! missing entry while the others wait.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use bytes::Bytes;
use redis::Script;

use crate::{
    keys::Keys,
    redis_pool::{RedisPool, RedisPoolError},
};

/// Generation value meaning "not read from Redis yet".
const UNKNOWN: u64 = u64::MAX;

pub(crate) struct L2 {
    pool: RedisPool,
    keys: Keys,
    generation: AtomicU64,
    /// TTL of the generation key: longer than any entry lives, so an expired counter
    /// cannot bring back entries of an old generation.
    generation_ttl_ms: u64,
    lock_and_get: Script,
    store_and_unlock: Script,
}

impl L2 {
    pub(crate) fn new(pool: RedisPool, keys: Keys, max_ttl: Duration) -> Self {
        Self {
            pool,
            keys,
            generation: AtomicU64::new(UNKNOWN),
            generation_ttl_ms: u64::try_from(max_ttl.as_millis() * 2).unwrap_or(u64::MAX),
            // KEYS: lock, entry. ARGV: token, lock ttl ms. Takes the lock, and whether or
            // not it did, returns the entry as it is now (someone may have just stored it).
            lock_and_get: Script::new(
                "local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) \
                 local v = redis.call('GET', KEYS[2]) \
                 if v then return {taken and 1 or 0, v, redis.call('PTTL', KEYS[2])} end \
                 return {taken and 1 or 0}",
            ),
            // KEYS: lock, entry. ARGV: token, value, ttl ms. Stores the loaded value and
            // releases the lock if this loader still holds it.
            store_and_unlock: Script::new(
                "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) \
                 if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end \
                 return 1",
            ),
        }
    }

    /// The current generation, read from Redis on first use and after a gap.
    pub(crate) async fn generation(&self) -> Result<u64, RedisPoolError> {
        let known = self.generation.load(Ordering::Acquire);
        if known != UNKNOWN {
            return Ok(known);
        }
        self.refresh_generation().await
    }

    /// Reads the generation (creating it if missing) and refreshes its TTL.
    pub(crate) async fn refresh_generation(&self) -> Result<u64, RedisPoolError> {
        let mut conn = self.pool.get().await?;
        let key = self.keys.cache_generation();
        let (_, _, generation): ((), (), u64) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("NX")
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(self.generation_ttl_ms)
            .cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        self.generation.store(generation, Ordering::Release);
        Ok(generation)
    }

    /// Forgets the known generation (messages may have been missed).
    pub(crate) fn forget_generation(&self) {
        self.generation.store(UNKNOWN, Ordering::Release);
    }

    /// Adopts a generation announced by another replica, if newer.
    pub(crate) fn adopt_generation(&self, generation: u64) {
        let _ = self
            .generation
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                (g == UNKNOWN || g < generation).then_some(generation)
            });
    }

    /// The value and its remaining TTL, in one round trip.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<(Bytes, Duration)>, RedisPoolError> {
        let generation = self.generation().await?;
        let entry = self.keys.cache_entry(generation, key);
        let mut conn = self.pool.get().await?;
        let (value, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .get(&entry)
            .pttl(&entry)
            .query_async(&mut conn)
            .await?;
        Ok(value.map(|v| {
            let ttl = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
            (Bytes::from(v), ttl)
        }))
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), RedisPoolError> {
        let generation = self.generation().await?;
        let mut conn = self.pool.get().await?;
        redis::cmd("SET")
            .arg(self.keys.cache_entry(generation, key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl).max(1))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), RedisPoolError> {
        let generation = self.generation().await?;
        let mut conn = self.pool.get().await?;
        redis::cmd("DEL")
            .arg(self.keys.cache_entry(generation, key))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Starts a new generation: every existing entry becomes unreachable at once and
    /// expires by its own TTL. Returns the new generation.
    pub(crate) async fn clear(&self) -> Result<u64, RedisPoolError> {
        let key = self.keys.cache_generation();
        let mut conn = self.pool.get().await?;
        let (generation, ()): (u64, ()) = redis::pipe()
            .incr(&key, 1)
            .pexpire(
                &key,
                i64::try_from(self.generation_ttl_ms).unwrap_or(i64::MAX),
            )
            .query_async(&mut conn)
            .await?;
        self.adopt_generation(generation);
        Ok(generation)
    }

    /// Tries to take the load lock of `key` for `ttl`, and reads the entry in the same
    /// round trip: `(taken, entry)`.
    pub(crate) async fn lock_and_get(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<(bool, Option<(Bytes, Duration)>), RedisPoolError> {
        let generation = self.generation().await?;
        let mut conn = self.pool.get().await?;
        let reply: Vec<redis::Value> = self
            .lock_and_get
            .key(self.keys.cache_lock(generation, key))
            .key(self.keys.cache_entry(generation, key))
            .arg(token)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        let mut items = reply.into_iter();
        let taken = matches!(items.next(), Some(redis::Value::Int(1)));
        let entry = match (items.next(), items.next()) {
            (Some(value), Some(redis::Value::Int(pttl))) => {
                let value: Vec<u8> = redis::from_redis_value(value)
                    .map_err(|e| RedisPoolError::Command(e.into()))?;
                let ttl = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
                Some((Bytes::from(value), ttl))
            }
            _ => None,
        };
        Ok((taken, entry))
    }

    /// Stores a loaded value and releases the load lock if `token` still holds it, in
    /// one round trip.
    pub(crate) async fn store_and_unlock(
        &self,
        key: &str,
        token: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), RedisPoolError> {
        let generation = self.generation().await?;
        let mut conn = self.pool.get().await?;
        self.store_and_unlock
            .key(self.keys.cache_lock(generation, key))
            .key(self.keys.cache_entry(generation, key))
            .arg(token)
            .arg(value)
            .arg(millis(ttl).max(1))
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
