//! The in-process first level: a moka LRU bounded by bytes and by entry count, with
//! each entry's own expiry (and fail-safe grace) kept here on tokio's clock, so TTL
//! logic is testable with paused time.
//!
//! moka has one capacity. Both bounds are enforced through it by weighing each entry at
//! `max(its size, max_bytes / max_entries)`: the weights then sum to at most
//! `max_bytes`, so the entries' real sizes do too, and there can be at most
//! `max_entries` of them. Small entries pay for a slot of average size; that is the
//! price of keeping get and set O(1) with no second eviction structure.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use moka::{policy::EvictionPolicy, sync::Cache};
use tokio::time::Instant;

/// Limits of one L1.
#[derive(Debug, Clone, Copy)]
pub struct L1Limits {
    /// Most entries held.
    pub max_entries: u64,
    /// Most bytes of values held.
    pub max_bytes: u64,
    /// Longest time an entry stays fresh, whatever its TTL: the cross-replica staleness
    /// bound when an invalidation is lost.
    pub max_ttl: Duration,
    /// How long after expiry an entry may still be served while L2 is unreachable.
    pub grace: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    fresh_until: Instant,
    stale_until: Instant,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh value.
    Fresh(Bytes),
    /// An expired value still within the fail-safe grace.
    Stale(Bytes),
    /// Nothing usable.
    Miss,
}

/// A point in the L1's invalidation history, taken before reading L2 so a fill can be
/// refused if the key was invalidated meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch(u64);

/// The first cache level. Cheap to clone.
#[derive(Clone)]
pub struct L1 {
    entries: Cache<String, Entry>,
    /// Keys invalidated recently, with the epoch of their invalidation.
    tombstones: Cache<String, u64>,
    epoch: Arc<AtomicU64>,
    /// Fills that started before this epoch are refused (set by `clear`).
    cleared_at: Arc<AtomicU64>,
    limits: L1Limits,
}

impl std::fmt::Debug for L1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1").field("limits", &self.limits).finish()
    }
}

/// How long a tombstone is kept: longer than any L2 read can take.
const TOMBSTONE_TTL: Duration = Duration::from_secs(30);

impl L1 {
    /// An empty L1 with these limits.
    pub fn new(limits: L1Limits) -> Self {
        let slot = (limits.max_bytes / limits.max_entries.max(1)).max(1);
        let entries = Cache::builder()
            .max_capacity(limits.max_bytes)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(move |k: &String, e: &Entry| {
                let size = (k.len() + e.value.len()) as u64;
                u32::try_from(size.max(slot)).unwrap_or(u32::MAX)
            })
            // A memory bound only; freshness is decided by `fresh_until` below.
            .time_to_live(limits.max_ttl + limits.grace)
            .build();
        let tombstones = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(TOMBSTONE_TTL)
            .build();
        Self {
            entries,
            tombstones,
            epoch: Arc::new(AtomicU64::new(1)),
            cleared_at: Arc::new(AtomicU64::new(0)),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> L1Limits {
        self.limits
    }

    /// Looks a key up; expired entries beyond the grace are dropped.
    pub fn get(&self, key: &str) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        let now = Instant::now();
        if now < entry.fresh_until {
            Lookup::Fresh(entry.value)
        } else if now < entry.stale_until {
            Lookup::Stale(entry.value)
        } else {
            self.entries.invalidate(key);
            Lookup::Miss
        }
    }

    /// The current epoch; pass it to [`L1::fill`] after reading the lower level.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Installs a value read from below, unless `key` was invalidated (or the L1 was
    /// cleared) after `read_started`. Returns whether it was installed.
    pub fn fill(&self, key: &str, value: Bytes, ttl: Duration, read_started: Epoch) -> bool {
        if read_started.0 < self.cleared_at.load(Ordering::Acquire)
            || self
                .tombstones
                .get(key)
                .is_some_and(|at| at > read_started.0)
        {
            return false;
        }
        self.insert(key, value, ttl);
        true
    }

    /// Installs a value this replica just wrote: authoritative, never refused. Marks the
    /// key so concurrent fills of older values are refused.
    pub fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        self.mark(key);
        self.insert(key, value, ttl);
    }

    fn insert(&self, key: &str, value: Bytes, ttl: Duration) {
        let fresh_for = ttl.min(self.limits.max_ttl);
        if fresh_for.is_zero() {
            return;
        }
        let now = Instant::now();
        let fresh_until = now + fresh_for;
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                fresh_until,
                stale_until: fresh_until + self.limits.grace,
            },
        );
    }

    /// Drops `key` and refuses fills of it that started before now.
    pub fn invalidate(&self, key: &str) {
        self.mark(key);
        self.entries.invalidate(key);
    }

    fn mark(&self, key: &str) {
        let at = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.tombstones.insert(key.to_owned(), at);
    }

    /// Drops everything and refuses every fill that started before now.
    pub fn clear(&self) {
        let at = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.cleared_at.store(at, Ordering::Release);
        self.entries.invalidate_all();
    }

    /// Entries and weighted bytes, after moka's pending maintenance has run.
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> L1Limits {
        L1Limits {
            max_entries: 4,
            max_bytes: 400,
            max_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(5),
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl_then_grace() {
        let l1 = L1::new(limits());
        l1.put("k", b("v"), Duration::from_secs(2));
        assert_eq!(l1.get("k"), Lookup::Fresh(b("v")));
        tokio::time::advance(Duration::from_millis(2001)).await;
        assert_eq!(l1.get("k"), Lookup::Stale(b("v")));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l1.get("k"), Lookup::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn max_ttl_caps_long_ttls() {
        let l1 = L1::new(limits());
        l1.put("k", b("v"), Duration::from_secs(3600));
        tokio::time::advance(Duration::from_millis(9999)).await;
        assert_eq!(l1.get("k"), Lookup::Fresh(b("v")));
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(l1.get("k"), Lookup::Stale(b("v")));
    }

    #[test]
    fn entry_count_is_bounded() {
        let l1 = L1::new(limits());
        for i in 0..50 {
            l1.put(&format!("k{i}"), b("x"), Duration::from_secs(5));
        }
        let (entries, bytes) = l1.usage();
        assert!(entries <= 4, "{entries} entries");
        assert!(bytes <= 400, "{bytes} bytes");
    }

    #[test]
    fn byte_size_is_bounded() {
        let l1 = L1::new(limits());
        for i in 0..10 {
            l1.put(
                &format!("k{i}"),
                Bytes::from(vec![b'x'; 190]),
                Duration::from_secs(5),
            );
        }
        let (entries, bytes) = l1.usage();
        assert!(bytes <= 400, "{bytes} bytes");
        assert!(entries <= 2, "{entries} entries of ~190 bytes fit in 400");
    }

    #[test]
    fn least_recently_used_goes_first() {
        let l1 = L1::new(limits());
        for k in ["a", "b", "c", "d"] {
            l1.put(k, b("x"), Duration::from_secs(5));
        }
        l1.usage();
        // Touch "a" so "b" is the least recently used.
        assert!(matches!(l1.get("a"), Lookup::Fresh(_)));
        l1.usage();
        l1.put("e", b("x"), Duration::from_secs(5));
        l1.usage();
        assert!(
            matches!(l1.get("a"), Lookup::Fresh(_)),
            "recently used survives"
        );
        assert_eq!(l1.get("b"), Lookup::Miss, "least recently used evicted");
        assert!(matches!(l1.get("e"), Lookup::Fresh(_)));
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_refused() {
        let l1 = L1::new(limits());
        let before = l1.epoch();
        l1.invalidate("k");
        assert!(!l1.fill("k", b("old"), Duration::from_secs(5), before));
        assert_eq!(l1.get("k"), Lookup::Miss);
        let after = l1.epoch();
        assert!(l1.fill("k", b("new"), Duration::from_secs(5), after));
        assert_eq!(l1.get("k"), Lookup::Fresh(b("new")));

        let before = l1.epoch();
        l1.clear();
        assert!(!l1.fill("other", b("old"), Duration::from_secs(5), before));
        assert_eq!(l1.get("k"), Lookup::Miss);
    }
}
