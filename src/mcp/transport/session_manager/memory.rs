//! Handing the memory of closed session workers back to the operating system.
//!
//! A 2025-era session's worker costs about 85 KiB (its tasks and channels, allocated in
//! pieces of a few KiB, far below glibc's mmap threshold). glibc keeps the heap pages
//! such pieces free: without help, a replica that once served 10,000 sessions stays at
//! about 850 MiB resident long after their workers went idle and were closed
//! (`BENCHMARKS.md`, idle memory). `malloc_trim` returns the free pages; it walks every
//! arena (about 100 ms for a heap of 900 MiB), so it runs on a blocking thread, and
//! only once enough workers were closed since the last time ([`Trimmer`]).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Closed workers after which freed memory is handed back (about 10 MiB of them).
const TRIM_AFTER_CLOSED: usize = 128;

/// Counts closed workers and says when to hand their memory back.
#[derive(Debug, Default)]
pub(super) struct Trimmer {
    closed: AtomicUsize,
}

impl Trimmer {
    /// `n` workers were closed.
    pub(super) fn closed(&self, n: usize) {
        self.closed.fetch_add(n, Ordering::AcqRel);
    }

    /// Whether to trim now, with `left` workers still running: after
    /// [`TRIM_AFTER_CLOSED`] closes, or after any once none is left. Resets the count
    /// when it says yes.
    pub(super) fn due(&self, left: usize) -> bool {
        let closed = self.closed.load(Ordering::Acquire);
        let due = closed >= TRIM_AFTER_CLOSED || (closed > 0 && left == 0);
        if due {
            self.closed.fetch_sub(closed, Ordering::AcqRel);
        }
        due
    }
}

/// Returns the free heap pages to the operating system (glibc); elsewhere a no-op.
pub(super) async fn release_freed_memory() {
    let _ = tokio::task::spawn_blocking(trim).await;
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    unsafe extern "C" {
        /// glibc (2.8 and later): releases the free memory at the top of each heap and
        /// the whole free pages inside them; returns 1 if it released any.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` takes no pointer and changes no allocation; glibc allows it
    // on any thread at any time (it takes each arena's lock in turn).
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_after_enough_closes_or_once_none_is_left() {
        let trimmer = Trimmer::default();
        assert!(!trimmer.due(0), "nothing closed");
        trimmer.closed(TRIM_AFTER_CLOSED - 1);
        assert!(!trimmer.due(10));
        trimmer.closed(1);
        assert!(trimmer.due(10));
        assert!(!trimmer.due(10), "the count starts again");
        trimmer.closed(1);
        assert!(trimmer.due(0), "the last worker is gone");
    }
}
