//! The request streams started on this replica whose retention is not settled yet: their
//! priming id was minted without a write (a resume after it waits here for their
//! events), the ids of their later events are minted here too (they are written behind,
//! `writer.rs`), and whether their response got through decides how long Redis keeps
//! them.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::format::{EntryId, PRIMED};

/// Most request streams a replica tracks as open; beyond it priming events are stored.
const MAX_OPEN_STREAMS: usize = 100_000;
/// Open streams below which finished entries are not swept (see [`OpenStreams::start`]).
const MIN_SWEEP: usize = 1024;

/// The request streams started on this replica, by stream id, until their final event is
/// stored and their body has ended or been dropped.
pub(super) struct OpenStreams {
    streams: HashMap<String, OpenStream>,
    /// Size at which [`Self::start`] next sweeps finished streams nobody reported on.
    sweep_at: usize,
    /// How long a finished stream waits for its body's report.
    delivered_ttl: Duration,
}

struct OpenStream {
    key: String,
    /// The sequence of the next entry id minted for it (`0-<next>`).
    next: u64,
    /// Its body was dropped (or ended) before the final response: its client resumes.
    abandoned: bool,
    /// When the final response was stored with the delivered window.
    finished_at: Option<Instant>,
}

impl OpenStreams {
    pub(super) fn new(delivered_ttl: Duration) -> Self {
        Self {
            streams: HashMap::new(),
            sweep_at: MIN_SWEEP,
            delivered_ttl,
        }
    }

    /// Tracks a new request stream; false when it is not new or too many are tracked.
    pub(super) fn start(&mut self, stream_id: &str, key: &str) -> bool {
        if self.streams.len() >= self.sweep_at {
            // Finished streams whose body was never reported on (it did not pass the
            // edge): their delivered window is over, nothing can extend them any more.
            let window = self.delivered_ttl;
            self.streams
                .retain(|_, s| s.finished_at.is_none_or(|at| at.elapsed() < window));
            self.sweep_at = (self.streams.len() * 2).max(MIN_SWEEP);
        }
        if self.streams.len() >= MAX_OPEN_STREAMS || self.streams.contains_key(stream_id) {
            return false;
        }
        self.streams.insert(
            stream_id.to_owned(),
            OpenStream {
                key: key.to_owned(),
                next: PRIMED.seq + 1,
                abandoned: false,
                finished_at: None,
            },
        );
        true
    }

    /// Whether stream `stream_id` (at `key`) is open here and its final event not stored.
    pub(super) fn is_open(&self, stream_id: &str, key: &str) -> bool {
        self.streams
            .get(stream_id)
            .is_some_and(|s| s.key == key && s.finished_at.is_none())
    }

    /// The entry id for the next event of `stream_id` (at `key`): minted here, after its
    /// priming id, while the stream is open and its final event not stored; `None`
    /// otherwise (the event is stored under an id Redis gives).
    pub(super) fn mint(&mut self, stream_id: &str, key: &str) -> Option<EntryId> {
        let stream = self.streams.get_mut(stream_id)?;
        if stream.key != key || stream.finished_at.is_some() {
            return None;
        }
        let id = EntryId {
            ms: PRIMED.ms,
            seq: stream.next,
        };
        stream.next += 1;
        Some(id)
    }

    /// Whether the final response about to be stored in `stream_id` is still being read
    /// by its client (it gets the short window).
    pub(super) fn being_delivered(&self, stream_id: &str, key: &str) -> bool {
        self.streams
            .get(stream_id)
            .is_some_and(|s| s.key == key && !s.abandoned)
    }

    /// The final response of `stream_id` was stored (`stored`) or not, with the short
    /// window when `short`; true when its client has left meanwhile, so the stream
    /// must be kept for the resumption window after all.
    pub(super) fn finished(&mut self, stream_id: &str, stored: bool, short: bool) -> bool {
        let Some(stream) = self.streams.get_mut(stream_id) else {
            return false;
        };
        if stream.abandoned || !stored {
            let extend = stored && short;
            self.streams.remove(stream_id);
            return extend;
        }
        stream.finished_at = Some(Instant::now());
        false
    }

    /// The body of `stream_id` `ended` or was dropped; the key to keep for resumption
    /// when its final response is stored with the short window but did not get through.
    pub(super) fn closed(&mut self, stream_id: &str, ended: bool) -> Option<String> {
        let stream = self.streams.get_mut(stream_id)?;
        if stream.finished_at.is_none() {
            // The final response is still to come, and its client will resume for it.
            stream.abandoned = true;
            return None;
        }
        let stream = self.streams.remove(stream_id)?;
        (!ended).then_some(stream.key)
    }
}
