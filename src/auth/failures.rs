//! Failed authentication attempts per client address: after
//! `auth.max_failures_per_address` failures within `auth.failure_window_secs`, an address
//! is refused before its token is even checked, until the window (which starts at its
//! first failure) ends. Guessing tokens then costs the guesser time rather than the
//! replica CPU and log lines. Counted per replica, in a bounded map: behind a balancer
//! over N replicas an address gets up to N times the budget.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::metrics::{Metrics, encode_counter};

/// Addresses tracked at most: the map's memory is bounded (about 100 bytes each)
/// whatever the number of addresses that fail; past it, the least recently failing go
/// first.
const MAX_ADDRESSES: u64 = 65_536;

/// Failures per client address in the current window.
#[derive(Debug, Clone)]
pub struct FailedAttempts {
    /// `None` when `auth.max_failures_per_address` is 0 (no limit).
    counts: Option<Cache<IpAddr, Arc<AtomicU32>>>,
    max: u32,
    window: Duration,
    /// Requests refused for their address, since start (`/metrics`).
    refused: Arc<AtomicU64>,
}

impl FailedAttempts {
    /// At most `max` failures per address within `window` (0 = no limit).
    pub fn new(max: u32, window: Duration) -> Self {
        let counts = (max > 0).then(|| {
            Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_live(window)
                .build()
        });
        Self {
            counts,
            max,
            window,
            refused: Arc::default(),
        }
    }

    /// Whether `client` has used up its failures: its request is refused unread.
    pub fn is_refused(&self, client: IpAddr) -> bool {
        let Some(counts) = &self.counts else {
            return false;
        };
        let over = counts
            .get(&key(client))
            .is_some_and(|n| n.load(Ordering::Relaxed) >= self.max);
        if over {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        over
    }

    /// Counts one failed attempt of `client`.
    pub fn record(&self, client: IpAddr) {
        if let Some(counts) = &self.counts {
            counts
                .get_with(key(client), Arc::default)
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How long a refused address should wait: the window, an upper bound of what is
    /// left of it.
    pub fn retry_after(&self) -> Duration {
        self.window
    }

    /// Requests refused for their address since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Registers `auth_failures_refused_total` with `metrics`, read at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(RefusedFigure(self.refused.clone()));
    }
}

/// The `auth_failures_refused` counter.
#[derive(Debug)]
struct RefusedFigure(Arc<AtomicU64>);

impl Collector for RefusedFigure {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        encode_counter(
            &mut enc,
            "auth_failures_refused",
            "Requests refused unchecked: their client address failed authentication \
             auth.max_failures_per_address times within the window",
            self.0.load(Ordering::Relaxed),
        )
    }
}

/// The address an attempt is counted under: IPv6 by its /64, which one host usually
/// holds whole, so it cannot spread its attempts over its own addresses.
fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_is_refused_once_its_failures_are_used_up_and_others_are_not() {
        let attempts = FailedAttempts::new(3, Duration::from_secs(60));
        let guesser = ip("192.0.2.7");
        for _ in 0..3 {
            assert!(!attempts.is_refused(guesser));
            attempts.record(guesser);
        }
        assert!(attempts.is_refused(guesser));
        assert!(!attempts.is_refused(ip("192.0.2.8")));
        assert_eq!(attempts.refused_total(), 1);
    }

    #[test]
    fn the_addresses_of_one_ipv6_host_share_a_budget() {
        let attempts = FailedAttempts::new(2, Duration::from_secs(60));
        attempts.record(ip("2001:db8:1:2::1"));
        attempts.record(ip("2001:db8:1:2:ffff::9"));
        assert!(attempts.is_refused(ip("2001:db8:1:2::77")));
        assert!(!attempts.is_refused(ip("2001:db8:1:3::1")));
        attempts.record(ip("::ffff:192.0.2.1"));
        attempts.record(ip("192.0.2.1"));
        assert!(attempts.is_refused(ip("192.0.2.1")));
    }

    #[test]
    fn the_budget_comes_back_when_the_window_ends() {
        let attempts = FailedAttempts::new(1, Duration::from_millis(50));
        let guesser = ip("198.51.100.1");
        attempts.record(guesser);
        assert!(attempts.is_refused(guesser));
        std::thread::sleep(Duration::from_millis(120));
        assert!(!attempts.is_refused(guesser));
    }

    #[test]
    fn zero_means_no_limit() {
        let attempts = FailedAttempts::new(0, Duration::from_secs(60));
        let guesser = ip("198.51.100.2");
        for _ in 0..100 {
            attempts.record(guesser);
        }
        assert!(!attempts.is_refused(guesser));
    }
}
