//! Counters of one replica's cache, the snapshot the `cache_stats` tool reports, and
//! the `cache_*` series `/metrics` reads from it.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use serde::Serialize;

use super::CacheManager;
use crate::metrics::{encode_counter, encode_gauge};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits_l1: AtomicU64,
    pub(crate) hits_l2: AtomicU64,
    pub(crate) stale_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) sets: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) loader_calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) invalidations_sent: AtomicU64,
    pub(crate) invalidations_received: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of one replica's cache figures.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CacheStats {
    /// The replica these figures belong to.
    pub replica_id: String,
    /// Lookups answered from either level (stale fail-safe answers included).
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before any lookup.
    pub hit_rate: f64,
    /// Hits answered by the in-process L1 (stale ones included).
    pub hits_l1: u64,
    /// Hits answered by Redis.
    pub hits_l2: u64,
    /// Hits answered from an expired L1 entry because Redis was unreachable.
    pub stale_hits: u64,
    /// Writes.
    pub sets: u64,
    /// Deletes.
    pub deletes: u64,
    /// Times a loader ran for `get_or_load`.
    pub loader_calls: u64,
    /// Redis errors met (the operation fell back to L1 or failed).
    pub errors: u64,
    /// Invalidations this replica published.
    pub invalidations_sent: u64,
    /// Invalidations from other replicas applied here.
    pub invalidations_received: u64,
    /// Entries in L1 now.
    pub l1_entries: u64,
    /// Most entries L1 holds.
    pub l1_max_entries: u64,
    /// Bytes L1 accounts for now (each entry weighs at least one average slot).
    pub l1_bytes: u64,
    /// Most bytes L1 holds.
    pub l1_max_bytes: u64,
}

impl Counters {
    pub(crate) fn snapshot(
        &self,
        replica_id: &str,
        (l1_entries, l1_bytes): (u64, u64),
        (l1_max_entries, l1_max_bytes): (u64, u64),
    ) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let hits_l1 = get(&self.hits_l1);
        let hits_l2 = get(&self.hits_l2);
        let hits = hits_l1 + hits_l2;
        let misses = get(&self.misses);
        let total = hits + misses;
        CacheStats {
            replica_id: replica_id.to_owned(),
            hits,
            misses,
            hit_rate: if total == 0 {
                0.0
            } else {
                hits as f64 / total as f64
            },
            hits_l1,
            hits_l2,
            stale_hits: get(&self.stale_hits),
            sets: get(&self.sets),
            deletes: get(&self.deletes),
            loader_calls: get(&self.loader_calls),
            errors: get(&self.errors),
            invalidations_sent: get(&self.invalidations_sent),
            invalidations_received: get(&self.invalidations_received),
            l1_entries,
            l1_max_entries,
            l1_bytes,
            l1_max_bytes,
        }
    }
}

/// The `cache_*` series: the cache's [`CacheStats`] at scrape time.
#[derive(Debug)]
pub(super) struct CacheFigures(pub(super) CacheManager);

impl Collector for CacheFigures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let c = self.0.stats();
        encode_counter(&mut enc, "cache_hits", "Cache lookups answered", c.hits)?;
        encode_counter(
            &mut enc,
            "cache_misses",
            "Cache lookups that found nothing",
            c.misses,
        )?;
        encode_counter(
            &mut enc,
            "cache_hits_l1",
            "Cache hits answered by L1",
            c.hits_l1,
        )?;
        encode_counter(
            &mut enc,
            "cache_hits_l2",
            "Cache hits answered by Redis",
            c.hits_l2,
        )?;
        encode_counter(
            &mut enc,
            "cache_stale_hits",
            "Expired L1 entries served while Redis was unreachable",
            c.stale_hits,
        )?;
        encode_counter(&mut enc, "cache_sets", "Cache writes", c.sets)?;
        encode_counter(&mut enc, "cache_deletes", "Cache deletes", c.deletes)?;
        encode_counter(
            &mut enc,
            "cache_loader_calls",
            "Loader runs",
            c.loader_calls,
        )?;
        encode_counter(&mut enc, "cache_errors", "Cache Redis errors", c.errors)?;
        encode_counter(
            &mut enc,
            "cache_invalidations_sent",
            "Invalidations published",
            c.invalidations_sent,
        )?;
        encode_counter(
            &mut enc,
            "cache_invalidations_received",
            "Invalidations applied from other replicas",
            c.invalidations_received,
        )?;
        encode_gauge(
            &mut enc,
            "cache_hit_rate",
            "hits / (hits + misses)",
            c.hit_rate,
        )?;
        encode_gauge(
            &mut enc,
            "cache_l1_entries",
            "L1 entries",
            c.l1_entries as f64,
        )?;
        encode_gauge(
            &mut enc,
            "cache_l1_max_entries",
            "L1 entry limit",
            c.l1_max_entries as f64,
        )?;
        encode_gauge(&mut enc, "cache_l1_bytes", "L1 bytes", c.l1_bytes as f64)?;
        encode_gauge(
            &mut enc,
            "cache_l1_max_bytes",
            "L1 byte limit",
            c.l1_max_bytes as f64,
        )
    }
}
