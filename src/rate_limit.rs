//! [`RateLimiter`]: per-principal request budgets shared by every replica.
//!
//! One token bucket per principal lives in Redis (`rate_limit.requests_per_sec`,
//! `rate_limit.burst`), changed by one script (`rate_limit/bucket.rs`). A replica does
//! not ask Redis on every request: it leases a block of tokens (a fifth of the burst,
//! at least one) and spends them locally for up to a second (`rate_limit/lease.rs`).
//! Once a spend leaves the lease at a quarter of a block or less, and the principal
//! spends fast enough to use a new block within its lifetime, one renewal runs in the
//! background and adds its block to what is left, so under steady load no request
//! waits on Redis for its tokens; only a principal's first request, one after a pause,
//! or one that outruns the renewal does. The price of the blocks is precision: the
//! replicas together may admit up to their unspent leases above the budget (at most
//! replicas × (block + a quarter block)), and tokens left in an expired lease are lost.
//! With the memory backend the bucket is in-process.

mod bucket;
mod lease;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use self::{
    bucket::{Buckets, Shape},
    lease::{PrincipalGrant, Shortfall, Terms},
};
use crate::{
    config::{FailMode, RateLimitSettings},
    keys::Keys,
    metrics::{Metrics, encode_counter},
    redis_pool::RedisPool,
};

/// Most principals whose leases (or in-process buckets) a replica keeps.
const MAX_PRINCIPALS: u64 = 100_000;

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

/// How this replica's leases have served requests since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseFigures {
    /// Requests that found their principal's lease empty or expired and waited for a
    /// renewal (their own, or one in flight).
    pub misses: u64,
    /// Renewals started ahead of need, in the background.
    pub renewals_ahead: u64,
    /// Renewals ahead not landed yet.
    pub renewals_ahead_running: u64,
}

/// Per-principal rate limiting. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    shape: Shape,
    terms: Terms,
    fail: FailMode,
    buckets: Buckets,
    leases: Cache<String, Arc<PrincipalGrant>>,
    misses: AtomicU64,
    renewals_ahead: AtomicU64,
    renewals_ahead_running: AtomicU64,
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
        let buckets = match redis {
            Some((pool, keys)) => Buckets::redis(pool, keys),
            None => Buckets::Memory(cache()),
        };
        Self {
            inner: Some(Arc::new(Inner {
                shape: Shape {
                    rate: f64::from(settings.requests_per_sec),
                    burst: settings.burst.max(1),
                },
                terms: Terms::for_burst(settings.burst),
                fail: settings.on_redis_error,
                buckets,
                leases: cache(),
                misses: AtomicU64::new(0),
                renewals_ahead: AtomicU64::new(0),
                renewals_ahead_running: AtomicU64::new(0),
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
        let renew_ahead = match leased.spend(inner.terms) {
            Some(renew_ahead) => renew_ahead,
            None => {
                inner.misses.fetch_add(1, Ordering::Relaxed);
                inner.renew_and_spend(principal, &leased).await?
            }
        };
        if renew_ahead {
            inner.renew_ahead(principal, leased);
        }
        Ok(())
    }

    /// This replica's lease figures (all zero when the limit is off).
    pub fn figures(&self) -> LeaseFigures {
        let Some(inner) = &self.inner else {
            return LeaseFigures::default();
        };
        LeaseFigures {
            misses: inner.misses.load(Ordering::Relaxed),
            renewals_ahead: inner.renewals_ahead.load(Ordering::Relaxed),
            renewals_ahead_running: inner.renewals_ahead_running.load(Ordering::Relaxed),
        }
    }

    /// Registers the `rate_limit_*` series with `metrics`, read from
    /// [`RateLimiter::figures`] at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(LeaseCollector(self.clone()));
    }
}

impl Inner {
    /// The path of a request that found the lease empty: waits for the renewal in
    /// flight or runs one, then spends from it. `Ok(renew ahead)`.
    async fn renew_and_spend(
        &self,
        principal: &str,
        leased: &PrincipalGrant,
    ) -> Result<bool, RateLimitError> {
        let _renewing = leased.renewal.lock().await;
        // Another request (or a renewal ahead) may have renewed the lease while this
        // one waited, or found the bucket unreachable.
        if let Some(renew_ahead) = leased.spend(self.terms) {
            return Ok(renew_ahead);
        }
        if !leased.failed_recently() {
            let taken = self
                .buckets
                .take(principal, self.shape, self.terms.block)
                .await;
            match leased.settle(taken, Some(self.terms)) {
                Ok(renew_ahead) => return Ok(renew_ahead),
                Err(Shortfall::Empty(wait)) => return Err(RateLimitError::Limited(wait)),
                Err(Shortfall::Unreachable) => {}
            }
        }
        match self.fail {
            FailMode::Open => Ok(false),
            FailMode::Closed => Err(RateLimitError::Unavailable),
        }
    }

    /// Starts one renewal of `principal`'s lease in the background, unless one (a
    /// request's or another ahead) is in flight already.
    fn renew_ahead(self: &Arc<Self>, principal: &str, leased: Arc<PrincipalGrant>) {
        // Taken here, before the spawn, so a request that finds the lease empty in the
        // meantime waits for this renewal instead of starting its own.
        let Ok(renewing) = Arc::clone(&leased.renewal).try_lock_owned() else {
            return;
        };
        self.renewals_ahead.fetch_add(1, Ordering::Relaxed);
        self.renewals_ahead_running.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        let principal = principal.to_owned();
        tokio::spawn(async move {
            let taken = inner
                .buckets
                .take(&principal, inner.shape, inner.terms.block)
                .await;
            // An empty or unreachable bucket is the next request's to report.
            let _ = leased.settle(taken, None);
            inner.renewals_ahead_running.fetch_sub(1, Ordering::Relaxed);
            drop(renewing);
        });
    }
}

/// The `rate_limit_*` counters.
struct LeaseCollector(RateLimiter);

impl std::fmt::Debug for LeaseCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseCollector").finish_non_exhaustive()
    }
}

impl Collector for LeaseCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let figures = self.0.figures();
        encode_counter(
            &mut enc,
            "rate_limit_lease_misses",
            "Requests that found their principal's rate-limit lease on this replica empty \
             or expired and waited for Redis (a renewal of their own or one in flight)",
            figures.misses,
        )?;
        encode_counter(
            &mut enc,
            "rate_limit_renewals_ahead",
            "Rate-limit lease renewals started in the background before the lease ran out",
            figures.renewals_ahead,
        )
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

    /// Spends one token, then lets a renewal ahead it started land.
    async fn check_and_settle(limiter: &RateLimiter) -> Result<(), RateLimitError> {
        let checked = limiter.check("alice").await;
        while limiter.figures().renewals_ahead_running > 0 {
            tokio::task::yield_now().await;
        }
        checked
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_waits_for_no_renewal_after_the_first_request() {
        // Blocks of 10 tokens, renewed ahead once a spend leaves 2: at a request every
        // 10 ms each renewal lands before the lease runs out.
        let limiter = RateLimiter::new(&settings(1, 50), None);
        for _ in 0..30 {
            check_and_settle(&limiter).await.unwrap();
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let figures = limiter.figures();
        assert_eq!(figures.misses, 1, "{figures:?}");
        assert_eq!(figures.renewals_ahead, 3, "{figures:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_renewed_ahead_are_spent_before_the_budget_is_refused() {
        // Blocks of 4 renewed ahead at 1 left: the burst of 20 is served exactly, and
        // the request after it is refused.
        let limiter = RateLimiter::new(&settings(1, 20), None);
        for _ in 0..20 {
            check_and_settle(&limiter).await.unwrap();
        }
        assert!(matches!(
            check_and_settle(&limiter).await,
            Err(RateLimitError::Limited(_))
        ));
        assert!(
            limiter.figures().renewals_ahead >= 4,
            "{:?}",
            limiter.figures()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_stream_renews_nothing_ahead() {
        // At a request every 100 ms the 2 tokens left and a renewed block of 10 would
        // last 1.2 s, past their lifetime: part would be lost to the shared bucket. So
        // each lease runs out (or expires) and the next request renews it.
        let limiter = RateLimiter::new(&settings(100, 50), None);
        for _ in 0..20 {
            check_and_settle(&limiter).await.unwrap();
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let figures = limiter.figures();
        assert_eq!(figures.renewals_ahead, 0, "{figures:?}");
        assert_eq!(figures.misses, 2, "{figures:?}");
    }

    #[test]
    fn register_metrics_exposes_the_lease_figures() {
        let metrics = Metrics::new("r1", "memory");
        RateLimiter::new(&settings(0, 1), None).register_metrics(&metrics);
        let text = metrics.render();
        for name in ["rate_limit_lease_misses", "rate_limit_renewals_ahead"] {
            assert!(
                text.contains(&format!("stateful_mcp_{name}_total{{replica=\"r1\"}} 0\n")),
                "{text}"
            );
        }
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
