//! [`RateLimiter`]: per-principal request budgets shared by every replica.
//!
//! One token bucket per principal lives in Redis (`rate_limit.requests_per_sec`,
//! `rate_limit.burst`), changed by one script. A replica does not ask Redis on every
//! request: it leases a batch of tokens (a fifth of the burst, at least one) and spends
//! them locally for up to a second, so a request costs an extra round trip only when
//! its replica's lease runs out. The price of the batch is precision: the replicas
//! together may admit up to their unspent leases above the budget (at most replicas ×
//! lease), and tokens left in an expired lease are lost. With the memory backend the
//! bucket is in-process.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use moka::sync::Cache;
// tokio's clock, so tests can run on paused time.
use tokio::time::Instant;

use crate::{
    config::{FailMode, RateLimitSettings},
    keys::Keys,
    redis_pool::RedisPool,
};

/// How long leased tokens may be spent.
const LEASE_LIFETIME: Duration = Duration::from_secs(1);
/// How long after a failed renewal the bucket counts as unreachable without asking.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// Most principals whose leases (or in-process buckets) a replica keeps.
const MAX_PRINCIPALS: u64 = 100_000;

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

/// Why a request may not run now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// The principal spent its budget; a token is back after this long.
    #[error("rate limit reached; retry after {0:?}")]
    Limited(Duration),
    /// The shared budget could not be read and `rate_limit.on_redis_error` is `closed`.
    #[error("rate limiter unavailable")]
    Unavailable,
}

/// Per-principal rate limiting. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    rate: f64,
    burst: u32,
    lease: u32,
    fail: FailMode,
    /// Redis and the key names, or `None` for an in-process bucket per principal.
    shared: Option<(RedisPool, Keys, redis::Script)>,
    leases: Cache<String, Arc<PrincipalGrant>>,
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

/// One principal's lease on this replica, and the lock that lets one request at a time
/// renew it: requests that find it empty while a renewal runs wait for that renewal and
/// spend from it, rather than each taking a lease of its own from the shared bucket
/// (which drained it, refusing requests while leased tokens sat unspent).
#[derive(Debug, Default)]
struct PrincipalGrant {
    lease: Mutex<Grant>,
    renewal: tokio::sync::Mutex<()>,
}

impl PrincipalGrant {
    fn spend(&self) -> bool {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).spend()
    }

    fn failed_recently(&self) -> bool {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        lease
            .failed_until
            .is_some_and(|until| until > Instant::now())
    }
}

/// Tokens this replica may spend without asking.
#[derive(Debug)]
struct Grant {
    tokens: u32,
    until: Instant,
    /// Until when the shared bucket counts as unreachable after a failed renewal: the
    /// requests that waited for that renewal apply `rate_limit.on_redis_error` at once
    /// instead of each trying Redis again in turn (a frozen Redis would otherwise hold
    /// the n-th of them n command timeouts long).
    failed_until: Option<Instant>,
}

/// An in-process token bucket (memory backend).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter under `settings`, sharing its buckets through `redis` when given.
    pub fn new(settings: &RateLimitSettings, redis: Option<(RedisPool, Keys)>) -> Self {
        if settings.requests_per_sec == 0 {
            return Self { inner: None };
        }
        fn cache<V: Clone + Send + Sync + 'static>() -> Cache<String, V> {
            Cache::builder()
                .max_capacity(MAX_PRINCIPALS)
                .time_to_idle(Duration::from_secs(60))
                .build()
        }
        Self {
            inner: Some(Arc::new(Inner {
                rate: f64::from(settings.requests_per_sec),
                burst: settings.burst.max(1),
                lease: (settings.burst / 5).max(1),
                fail: settings.on_redis_error,
                shared: redis.map(|(pool, keys)| (pool, keys, redis::Script::new(TAKE_SCRIPT))),
                leases: cache(),
                buckets: cache(),
            })),
        }
    }

    /// Spends one token of `principal`'s budget.
    ///
    /// # Errors
    /// [`RateLimitError::Limited`] when the budget is spent, [`RateLimitError::Unavailable`]
    /// when it cannot be read and the limiter fails closed.
    pub async fn check(&self, principal: &str) -> Result<(), RateLimitError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let leased = inner
            .leases
            .get_with_by_ref(principal, || Arc::new(PrincipalGrant::default()));
        if leased.spend() {
            return Ok(());
        }
        let _renewing = leased.renewal.lock().await;
        // Another request may have renewed the lease while this one waited, or found
        // the bucket unreachable.
        if leased.spend() {
            return Ok(());
        }
        let unavailable = || match inner.fail {
            FailMode::Open => Ok(()),
            FailMode::Closed => Err(RateLimitError::Unavailable),
        };
        if leased.failed_recently() {
            return unavailable();
        }
        match inner.take(principal).await {
            Ok((granted, _)) if granted > 0 => {
                let mut lease = leased.lease.lock().unwrap_or_else(|e| e.into_inner());
                lease.tokens = granted - 1;
                lease.until = Instant::now() + LEASE_LIFETIME;
                lease.failed_until = None;
                Ok(())
            }
            Ok((_, wait)) => Err(RateLimitError::Limited(wait)),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable");
                leased
                    .lease
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .failed_until = Some(Instant::now() + FAILURE_HOLD);
                unavailable()
            }
        }
    }
}

impl Default for Grant {
    fn default() -> Self {
        Self {
            tokens: 0,
            until: Instant::now(),
            failed_until: None,
        }
    }
}

impl Grant {
    fn spend(&mut self) -> bool {
        if self.tokens > 0 && self.until > Instant::now() {
            self.tokens -= 1;
            return true;
        }
        false
    }
}

impl Inner {
    /// Takes up to a lease of tokens from the principal's bucket: how many, and how long
    /// until the next one when none was left.
    async fn take(&self, principal: &str) -> Result<(u32, Duration), String> {
        let Some((pool, keys, script)) = &self.shared else {
            let bucket = self.buckets.get_with_by_ref(principal, || {
                Arc::new(Mutex::new(Bucket {
                    tokens: f64::from(self.burst),
                    at: Instant::now(),
                }))
            });
            let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(bucket.take(self.rate, self.burst, self.lease));
        };
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        let (granted, wait_ms): (u32, u64) = script
            .key(keys.rate_limit(principal))
            .arg(self.rate)
            .arg(self.burst)
            .arg(self.lease)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok((granted, Duration::from_millis(wait_ms)))
    }
}

impl Bucket {
    /// The in-process twin of the Redis script.
    fn take(&mut self, rate: f64, burst: u32, want: u32) -> (u32, Duration) {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(f64::from(burst));
        self.at = now;
        let granted = self.tokens.floor().min(f64::from(want)).max(0.0);
        self.tokens -= granted;
        let wait = if granted == 0.0 {
            Duration::from_secs_f64((1.0 - self.tokens) / rate)
        } else {
            Duration::ZERO
        };
        // `granted` is a whole number between 0 and `want`.
        (granted as u32, wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate: u32, burst: u32) -> RateLimitSettings {
        RateLimitSettings {
            requests_per_sec: rate,
            burst,
            on_redis_error: FailMode::Open,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate_per_principal() {
        let limiter = RateLimiter::new(&settings(2, 4), None);
        for _ in 0..4 {
            limiter.check("alice").await.unwrap();
        }
        let Err(RateLimitError::Limited(wait)) = limiter.check("alice").await else {
            panic!("the burst is spent");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        limiter.check("bob").await.unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        limiter.check("alice").await.unwrap();
        assert!(limiter.check("alice").await.is_err());
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_open_or_closed_as_configured() {
        let mut redis = crate::config::Settings::load_with_env(None, Vec::new())
            .unwrap()
            .redis;
        // Nothing listens on port 1 of loopback: every checkout is refused at once.
        redis.url = "redis://127.0.0.1:1".into();
        let shared = || Some((RedisPool::new(&redis).unwrap(), Keys::new("t")));
        let open = RateLimiter::new(&settings(1, 1), shared());
        assert_eq!(open.check("alice").await, Ok(()));
        let mut closed = settings(1, 1);
        closed.on_redis_error = FailMode::Closed;
        let closed = RateLimiter::new(&closed, shared());
        assert_eq!(
            closed.check("alice").await,
            Err(RateLimitError::Unavailable)
        );
    }

    #[tokio::test]
    async fn off_when_the_rate_is_zero() {
        let limiter = RateLimiter::new(&settings(0, 1), None);
        for _ in 0..100 {
            limiter.check("alice").await.unwrap();
        }
    }
}
