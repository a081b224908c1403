//! This replica's liveness mark, which lets the others tell a dead holder from a slow
//! one.
//!
//! A replica that cannot connect to the holder of a 2025-era session (refused, or no
//! connection within the forward's connect timeout) looks for the holder's mark
//! ([`crate::sessions::Sessions::is_alive`]): gone, the holder is dead and the session
//! is taken from it at once ([`crate::sessions::Sessions::take_over`]) rather than
//! after its lease runs out; there, the holder lives and keeps the session (503 with
//! `Retry-After` meanwhile). A holder that is slow but accepts connections is never
//! asked about: the forward waits for its answer.
//!
//! The mark lasts [`TTL`] and is renewed every [`BEAT`], by a job of its own so that a
//! long lease sweep never delays it; the job deletes it when it stops, at the end of
//! the drain (the leases were handed over when the drain began).

use std::time::Duration;

use crate::{
    jobs::Jobs,
    metrics::Metrics,
    sessions::{Holder, SessionError, Sessions},
};

/// How long a liveness mark lasts unless renewed: a dead replica's sessions move at
/// most this long after its death.
pub(crate) const TTL: Duration = Duration::from_millis(2500);

/// How often the mark is renewed: three times per [`TTL`], so two late or failed
/// renewals in a row do not let a live replica's mark lapse.
pub(crate) const BEAT: Duration = Duration::from_millis(800);

/// Keeps this replica's liveness mark. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Liveness {
    holder: Holder,
    sessions: Sessions,
    metrics: Metrics,
}

impl Liveness {
    /// The liveness of `holder` (this replica), marked in `sessions`' store.
    pub(crate) fn new(holder: Holder, sessions: Sessions, metrics: Metrics) -> Self {
        Self {
            holder,
            sessions,
            metrics,
        }
    }

    /// Sets the mark for [`TTL`] from now.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] when Redis cannot be asked.
    pub(crate) async fn beat(&self) -> Result<(), SessionError> {
        self.sessions.mark_alive(&self.holder, TTL).await
    }

    /// Adds the job `replica liveness` to `jobs`: a [`Liveness::beat`] every [`BEAT`]
    /// until the job stops, then the mark's deletion.
    pub(crate) fn start(self, jobs: &Jobs) {
        jobs.add("replica liveness", move |stop| async move {
            let mut tick = tokio::time::interval(BEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = self.beat().await {
                            self.metrics.store_error("liveness");
                            tracing::warn!(error = %e, "liveness mark not renewed");
                        }
                    }
                }
            }
            if let Err(e) = self.sessions.mark_gone(&self.holder).await {
                tracing::warn!(error = %e, "liveness mark not deleted; it runs out by itself");
            }
        });
    }
}
