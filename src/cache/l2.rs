//! The shared second level in Redis: one string per entry under the current cache
//! generation, a TTL on every key, and the short lock that lets one replica load a
//! missing entry while the others wait ([`LoadLock`]: released when the load fails or is
//! dropped, so nobody waits out its TTL).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
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
    unlock: Script,
}

impl L2 {
    pub(crate) fn new(pool: RedisPool, keys: Keys, max_ttl: Duration) -> Self {
        let l2 = Self {
            pool,
            keys,
            generation: AtomicU64::new(UNKNOWN),
            generation_ttl_ms: u64::try_from(max_ttl.as_millis() * 2).unwrap_or(u64::MAX),
            // KEYS: lock, entry. ARGV: token, lock ttl ms. Returns the entry if someone
            // has stored it; otherwise tries to take the lock (a lock taken beside an
            // entry would only make the next load after its expiry wait).
            lock_and_get: Script::new(
                "local v = redis.call('GET', KEYS[2]) \
                 if v then return {0, v, redis.call('PTTL', KEYS[2])} end \
                 local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) \
                 return {taken and 1 or 0}",
            ),
            // KEYS: lock, entry. ARGV: token, value, ttl ms. Stores the loaded value and
            // releases the lock if this loader still holds it.
            store_and_unlock: Script::new(
                "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) \
                 if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end \
                 return 1",
            ),
            // KEYS: lock. ARGV: token. Releases the lock if this loader still holds it.
            unlock: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end \
                 return 1",
            ),
        };
        l2.pool.name_scripts(&[
            ("cache.lock_and_get", &l2.lock_and_get),
            ("cache.store_and_unlock", &l2.store_and_unlock),
            ("cache.unlock", &l2.unlock),
        ]);
        l2
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

    /// A load lock on `key` under the current generation, not taken yet.
    pub(crate) async fn load_lock(self: &Arc<Self>, key: &str) -> Result<LoadLock, RedisPoolError> {
        let generation = self.generation().await?;
        Ok(LoadLock {
            l2: self.clone(),
            lock: self.keys.cache_lock(generation, key),
            entry: self.keys.cache_entry(generation, key),
            token: crate::ids::mint(),
            maybe_held: false,
        })
    }
}

/// What [`LoadLock::try_take`] found.
pub(crate) enum Attempt {
    /// The entry is stored, with its remaining TTL: no load needed.
    Stored(Bytes, Duration),
    /// The entry is absent and the lock is now ours: load it.
    Taken,
    /// The entry is absent and another loader holds the lock.
    Busy,
}

/// The load lock of one entry, bound to the generation it was made under and to a token
/// of its own, so a release only ever deletes a lock this loader holds.
///
/// Finish a load with [`LoadLock::store`] or give up with [`LoadLock::release`]. A lock
/// dropped while it may be held (the load was cancelled) is released on a spawned task,
/// since `Drop` cannot wait for Redis.
pub(crate) struct LoadLock {
    l2: Arc<L2>,
    lock: String,
    entry: String,
    token: String,
    /// Set from just before a take attempt until a store or release completes: a take
    /// dropped mid-round-trip may have succeeded on the server.
    maybe_held: bool,
}

impl LoadLock {
    /// Reads the entry and, when it is absent, tries to take the lock for `ttl`, in one
    /// round trip.
    ///
    /// # Errors
    /// [`RedisPoolError`] when Redis fails.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the lock taken on the server; dropping the
    /// `LoadLock` then releases it.
    pub(crate) async fn try_take(&mut self, ttl: Duration) -> Result<Attempt, RedisPoolError> {
        self.maybe_held = true;
        let mut conn = self.l2.pool.get().await?;
        let reply: Vec<redis::Value> = self
            .l2
            .lock_and_get
            .key(&self.lock)
            .key(&self.entry)
            .arg(&self.token)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        let mut items = reply.into_iter();
        let taken = matches!(items.next(), Some(redis::Value::Int(1)));
        self.maybe_held = taken;
        match (items.next(), items.next()) {
            (Some(value), Some(redis::Value::Int(pttl))) => {
                let value: Vec<u8> = redis::from_redis_value(value)
                    .map_err(|e| RedisPoolError::Command(e.into()))?;
                let ttl = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
                Ok(Attempt::Stored(Bytes::from(value), ttl))
            }
            _ if taken => Ok(Attempt::Taken),
            _ => Ok(Attempt::Busy),
        }
    }

    /// Stores the loaded value for `ttl` and releases the lock if it is still ours, in
    /// one round trip.
    ///
    /// # Errors
    /// [`RedisPoolError`] when Redis fails (the lock then expires by its TTL).
    pub(crate) async fn store(mut self, value: &[u8], ttl: Duration) -> Result<(), RedisPoolError> {
        let mut conn = self.l2.pool.get().await?;
        self.l2
            .store_and_unlock
            .key(&self.lock)
            .key(&self.entry)
            .arg(&self.token)
            .arg(value)
            .arg(millis(ttl).max(1))
            .invoke_async::<i64>(&mut conn)
            .await?;
        self.maybe_held = false;
        Ok(())
    }

    /// Releases the lock if it is still ours, so the next loader on any replica need not
    /// wait out its TTL.
    ///
    /// # Errors
    /// [`RedisPoolError`] when Redis fails (the lock then expires by its TTL).
    pub(crate) async fn release(mut self) -> Result<(), RedisPoolError> {
        unlock(&self.l2, &self.lock, &self.token).await?;
        self.maybe_held = false;
        Ok(())
    }
}

impl Drop for LoadLock {
    fn drop(&mut self) {
        if !self.maybe_held {
            return;
        }
        // Outside a runtime (a process shutting down) the lock expires by its TTL.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (l2, lock, token) = (
            self.l2.clone(),
            std::mem::take(&mut self.lock),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            if let Err(e) = unlock(&l2, &lock, &token).await {
                tracing::debug!(error = %e, "cache load lock left to expire");
            }
        });
    }
}

async fn unlock(l2: &L2, lock: &str, token: &str) -> Result<(), RedisPoolError> {
    let mut conn = l2.pool.get().await?;
    l2.unlock
        .key(lock)
        .arg(token)
        .invoke_async::<i64>(&mut conn)
        .await?;
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
