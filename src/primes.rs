//! Counting primes with a segmented sieve of Eratosthenes: real, CPU-bound work whose
//! result is worth caching. [`count_primes`] is the plain computation: it reports
//! progress and checks a stop flag between segments. [`cached`] serves one result per
//! limit to every caller through the shared cache, and counts on a miss on the
//! [`CpuPool`] (off the async workers, under its limit), so a cancelled request stops
//! the sieve within one segment.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    cache::{CacheError, CacheManager, LoadError},
    cpu::{CpuError, CpuPool},
};

/// Why [`cached`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum PrimesError {
    /// The cache refused the TTL.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The sieve failed on the CPU pool.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// The sieve was stopped before it finished.
    #[error("the count was stopped")]
    Stopped,
    /// The cached entry is not `{limit, count, largest}`.
    #[error("unreadable primes entry: {0}")]
    Unreadable(#[from] serde_json::Error),
}

/// Numbers sieved per segment (odd numbers only, one byte each: 32 KiB fits L1 caches).
const SEGMENT: u64 = 32 * 1024;

/// The result of [`count_primes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimeCount {
    /// Primes strictly below the limit.
    pub count: u64,
    /// The largest of them, if any.
    pub largest: Option<u64>,
}

/// Counts the primes below `limit`, calling `progress(done, total)` about every
/// `1/steps` of the work; `None` when `stop` was raised (it is read between segments).
///
/// This is seconds of CPU for large limits and never yields: run it on a blocking thread
/// ([`CpuPool`]), never on an async worker.
pub fn count_primes(
    limit: u64,
    steps: u64,
    mut progress: impl FnMut(u64, u64),
    stop: &AtomicBool,
) -> Option<PrimeCount> {
    if limit <= 2 {
        return Some(PrimeCount {
            count: 0,
            largest: None,
        });
    }
    // Odd base primes up to sqrt(limit), by a simple sieve.
    let root = limit.isqrt() + 1;
    let mut small = vec![true; usize::try_from(root + 1).unwrap_or(usize::MAX)];
    let mut base = Vec::new();
    for i in 2..=root {
        if small[i as usize] {
            if i % 2 == 1 {
                base.push(i);
            }
            let mut j = i * i;
            while j <= root {
                small[j as usize] = false;
                j += i;
            }
        }
    }
    let mut count = 1; // the prime 2
    let mut largest = Some(2);
    // Segment k covers odd numbers 2*(lo + i) + 1 for i in 0..SEGMENT.
    let odd_total = limit / 2; // odd numbers below limit: 1, 3, ..., (< limit)
    let report_every = (odd_total / steps.max(1)).max(SEGMENT);
    let mut next_report = report_every;
    let mut sieve = vec![true; SEGMENT as usize];
    let mut lo = 0u64;
    while lo < odd_total {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let hi = (lo + SEGMENT).min(odd_total);
        let len = (hi - lo) as usize;
        sieve[..len].fill(true);
        for &p in &base {
            // First odd multiple of p that is >= max(p*p, 2*lo+1).
            let start_value = (p * p).max(2 * lo + 1);
            let mut m = start_value.div_ceil(p) * p;
            if m % 2 == 0 {
                m += p;
            }
            let mut idx = (m - 1) / 2;
            while idx < hi {
                sieve[(idx - lo) as usize] = false;
                idx += p;
            }
        }
        for (i, is_prime) in sieve[..len].iter().enumerate() {
            let n = 2 * (lo + i as u64) + 1;
            if *is_prime && n > 1 {
                count += 1;
                largest = Some(n);
            }
        }
        lo = hi;
        if lo >= next_report && lo < odd_total {
            progress(lo, odd_total);
            next_report += report_every;
        }
    }
    progress(odd_total, odd_total);
    Some(PrimeCount { count, largest })
}

/// The primes below a limit, as cached and served: `{limit, count, largest}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimesBelow {
    /// The limit asked for.
    pub limit: u64,
    /// How many primes are below it.
    pub count: u64,
    /// The largest of them, if any.
    pub largest: Option<u64>,
}

/// The primes below `limit` with their JSON encoding, from the cache entry every caller
/// shares (`primes:below:<limit>`, kept for `ttl`); on a miss they are counted once
/// across callers and replicas on `cpu` (for `principal`: the caller whose call counts),
/// reporting `progress` as [`count_primes`] does.
/// A zero `ttl` counts without the cache.
///
/// The cache's load lock is taken before the CPU permit: the lock says "this key is being
/// counted", so other callers of the same limit anywhere wait for this count instead of
/// queueing for permits of their own, and a permit is only ever taken by a caller that
/// really counts (a cache hit never waits for one, and no permit sits idle while its
/// holder waits for another replica's count). The permit is held for the sieve only,
/// not while the result is stored.
///
/// # Errors
/// [`PrimesError`] when the cache refuses the TTL or holds an unreadable entry, or the
/// sieve fails. An unreachable Redis is no error: the result is then computed and kept
/// in L1.
///
/// # Cancel safety
/// Dropping the future stops the sieve within one segment and releases the cache's load
/// lock.
pub async fn cached(
    cache: &CacheManager,
    cpu: &CpuPool,
    principal: &str,
    limit: u64,
    ttl: Duration,
    steps: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<(PrimesBelow, Bytes), PrimesError> {
    let compute = || async move {
        let counted = cpu
            .run(
                principal,
                move |job| count_primes(limit, steps, |d, t| job.report((d, t)), job.stop_flag()),
                |(done, total)| progress(done, total),
            )
            .await?;
        let r = counted.ok_or(PrimesError::Stopped)?;
        let value = PrimesBelow {
            limit,
            count: r.count,
            largest: r.largest,
        };
        Ok::<_, PrimesError>(Bytes::from(serde_json::to_vec(&value)?))
    };
    let json = if ttl.is_zero() {
        compute().await?
    } else {
        cache
            .get_or_load(&format!("primes:below:{limit}"), Some(ttl), compute)
            .await
            .map_err(|e| match e {
                LoadError::Loader(e) => e,
                LoadError::Cache(e) => e.into(),
            })?
    };
    let value = serde_json::from_slice(&json)?;
    Ok((value, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(limit: u64) -> PrimeCount {
        let is_prime = |n: u64| {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        let primes: Vec<u64> = (0..limit).filter(|&n| is_prime(n)).collect();
        PrimeCount {
            count: primes.len() as u64,
            largest: primes.last().copied(),
        }
    }

    fn go() -> AtomicBool {
        AtomicBool::new(false)
    }

    #[test]
    fn matches_trial_division_around_segment_edges() {
        for limit in [
            0, 1, 2, 3, 4, 5, 10, 100, 65_535, 65_536, 65_537, 65_539, 200_003,
        ] {
            assert_eq!(
                count_primes(limit, 10, |_, _| {}, &go()),
                Some(naive(limit)),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn known_counts_and_progress() {
        let mut reports = Vec::new();
        let r = count_primes(
            10_000_000,
            4,
            |done, total| reports.push((done, total)),
            &go(),
        )
        .unwrap();
        assert_eq!(r.count, 664_579);
        assert_eq!(r.largest, Some(9_999_991));
        assert!(reports.len() >= 4, "{reports:?}");
        assert!(reports.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(reports.last().unwrap().0, reports.last().unwrap().1);
    }

    #[test]
    fn a_raised_stop_flag_ends_the_sieve_at_the_next_segment() {
        let stop = go();
        let mut reports = 0;
        let r = count_primes(
            2_000_000_000,
            1_000,
            |_, _| {
                reports += 1;
                stop.store(true, Ordering::Relaxed);
            },
            &stop,
        );
        assert_eq!((r, reports), (None, 1));
    }

    #[tokio::test]
    async fn cached_counts_on_the_cpu_pool_with_progress() {
        let settings = crate::config::Settings::load_with_env(None, Vec::new()).unwrap();
        let cache = CacheManager::new(&settings.cache, "solo", None, None);
        let cpu = CpuPool::new(1);
        let mut reports = Vec::new();
        let (value, json) = cached(
            &cache,
            &cpu,
            "alice",
            1_000_000,
            Duration::from_secs(60),
            4,
            |d, t| {
                reports.push((d, t));
            },
        )
        .await
        .unwrap();
        assert_eq!((value.count, value.largest), (78_498, Some(999_983)));
        assert_eq!(serde_json::from_slice::<PrimesBelow>(&json).unwrap(), value);
        assert!(reports.len() >= 4, "{reports:?}");
        assert_eq!(cpu.stats().running, 0);
    }
}
