//! A principal's token bucket, where the replicas' leases come from: one hash in Redis
//! changed by one script ([`Buckets::Redis`]), or an in-process twin of it
//! ([`Buckets::Memory`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use moka::sync::Cache;
// tokio's clock, so tests can run on paused time.
use tokio::time::Instant;

use crate::{keys::Keys, redis_pool::RedisPool};

/// The shared bucket: refill by elapsed time, grant up to ARGV[3] tokens, report how long
/// until the next token when none is left.
const TAKE_SCRIPT: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
local wait = 0
if granted == 0 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {granted, wait}
";

/// The shape every bucket has: `rate` tokens a second, at most `burst` of them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub(super) rate: f64,
    pub(super) burst: u32,
}

/// Where the buckets are: the closed set of backends.
pub(super) enum Buckets {
    /// Shared by every replica through Redis.
    Redis {
        pool: RedisPool,
        keys: Keys,
        script: redis::Script,
    },
    /// One per principal in this process, as many principals as the leases.
    Memory(Cache<String, Arc<Mutex<Bucket>>>),
}

impl Buckets {
    /// Buckets in Redis under `keys`.
    pub(super) fn redis(pool: RedisPool, keys: Keys) -> Self {
        let script = redis::Script::new(TAKE_SCRIPT);
        pool.name_scripts(&[("rate_limit.take", &script)]);
        Self::Redis { pool, keys, script }
    }

    /// Takes up to `want` tokens from `principal`'s bucket: how many, and how long until
    /// the next one when none was left.
    ///
    /// # Errors
    /// Why Redis could not be asked or did not answer.
    pub(super) async fn take(
        &self,
        principal: &str,
        shape: Shape,
        want: u32,
    ) -> Result<(u32, Duration), String> {
        let (pool, keys, script) = match self {
            Self::Memory(buckets) => {
                let bucket = buckets.get_with_by_ref(principal, || {
                    Arc::new(Mutex::new(Bucket {
                        tokens: f64::from(shape.burst),
                        at: Instant::now(),
                    }))
                });
                let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
                return Ok(bucket.take(shape, want));
            }
            Self::Redis { pool, keys, script } => (pool, keys, script),
        };
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        let (granted, wait_ms): (u32, u64) = script
            .key(keys.rate_limit(principal))
            .arg(shape.rate)
            .arg(shape.burst)
            .arg(want)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok((granted, Duration::from_millis(wait_ms)))
    }
}

/// An in-process token bucket (memory backend).
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The in-process twin of the Redis script.
    fn take(&mut self, shape: Shape, want: u32) -> (u32, Duration) {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * shape.rate;
        self.tokens = (self.tokens + refill).min(f64::from(shape.burst));
        self.at = now;
        let granted = self.tokens.floor().min(f64::from(want)).max(0.0);
        self.tokens -= granted;
        let wait = if granted == 0.0 {
            Duration::from_secs_f64((1.0 - self.tokens) / shape.rate)
        } else {
            Duration::ZERO
        };
        // `granted` is a whole number between 0 and `want`.
        (granted as u32, wait)
    }
}
