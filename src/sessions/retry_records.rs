//! What the retry records of keyed calls cost a replica: each backend counts the records
//! it writes and those it drops before they expire to stay within
//! `session.max_retry_records` and `session.max_retry_bytes` ([`RetryRecordCounts`]);
//! [`super::Sessions`] reads them ([`RetryRecordFigures`]) and exposes them at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::Sessions;
use crate::metrics::encode_counter;

/// A backend's running totals.
#[derive(Debug, Default)]
pub(super) struct RetryRecordCounts {
    written: AtomicU64,
    dropped: AtomicU64,
}

impl RetryRecordCounts {
    /// Counts one record written, and `dropped` older ones removed to make room for it.
    pub(super) fn wrote(&self, dropped: u64) {
        self.written.fetch_add(1, Ordering::Relaxed);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    pub(super) fn figures(&self) -> RetryRecordFigures {
        RetryRecordFigures {
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The retry records this replica wrote and dropped since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryRecordFigures {
    /// Records written: the first reply of a keyed change, or a keyed create's session.
    pub written: u64,
    /// Records removed before they expired to make room for a newer one: a session's
    /// beyond `session.max_retry_records` or `session.max_retry_bytes`, a principal's
    /// keyed creates beyond `session.max_retry_records`.
    pub dropped: u64,
}

/// The `retry_records_*` counters, read at scrape time.
pub(super) struct RetryRecordCollector(pub(super) Sessions);

impl std::fmt::Debug for RetryRecordCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryRecordCollector")
            .finish_non_exhaustive()
    }
}

impl Collector for RetryRecordCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let figures = self.0.retry_records();
        encode_counter(
            &mut enc,
            "retry_records_written",
            "Retry records of calls with an idempotencyKey this replica wrote",
            figures.written,
        )?;
        encode_counter(
            &mut enc,
            "retry_records_dropped",
            "Retry records this replica dropped before they expired, to keep a session \
             within session.max_retry_records and session.max_retry_bytes or a \
             principal within session.max_retry_records keyed creates",
            figures.dropped,
        )
    }
}
