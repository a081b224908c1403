//! Holding on the memory backend: one replica holds every session, so a live session is
//! always held by it and never taken over; a touch only slides the expiry, and the
//! replica's liveness mark is itself.

use tokio::time::Instant;

use super::MemorySessions;
use crate::sessions::{Holder, Lease, LeaseState, Renewal, SessionError, Touched, Transport};

impl MemorySessions {
    /// Slides the expiry of the caller's live session and returns its transport state
    /// (read whether asked or not: it costs no copy over a network); there is no other
    /// replica to hold it, so no lease to take.
    pub(in crate::sessions) async fn touch(
        &self,
        principal: &str,
        id: &str,
        _claim: Option<&Lease>,
        _dead: Option<&str>,
        _reader: Option<&str>,
    ) -> Result<Option<Touched>, SessionError> {
        Ok(self
            .with_live(principal, id, |e| {
                Ok(e.transport
                    .clone()
                    .map_or(Transport::Absent, Transport::Read))
            })
            .ok()
            .map(|transport| Touched {
                transport,
                holder: None,
            }))
    }

    /// Nothing to mark: no other replica asks.
    pub(in crate::sessions) async fn mark_alive(
        &self,
        _replica: &str,
        _ttl: std::time::Duration,
    ) -> Result<(), SessionError> {
        Ok(())
    }

    /// The one replica, the one asking, is alive.
    pub(in crate::sessions) async fn is_alive(&self, _replica: &str) -> Result<bool, SessionError> {
        Ok(true)
    }

    /// Nothing to delete.
    pub(in crate::sessions) async fn mark_gone(&self, _replica: &str) -> Result<(), SessionError> {
        Ok(())
    }

    /// A live session is held (its expiry slid when it was used since its last
    /// renewal), any other gone.
    pub(in crate::sessions) async fn renew_leases(
        &self,
        _lease: &Lease,
        sessions: &[Renewal],
    ) -> Result<Vec<LeaseState>, SessionError> {
        Ok(sessions.iter().map(|s| self.renew(s)).collect())
    }

    /// A live session stays held (nobody else could take it over), any other is gone.
    pub(in crate::sessions) async fn release_leases(
        &self,
        _holder: &Holder,
        ids: &[String],
    ) -> Result<Vec<LeaseState>, SessionError> {
        Ok(ids.iter().map(|id| self.lease_state(id)).collect())
    }

    fn renew(&self, renewal: &Renewal) -> LeaseState {
        match &renewal.used_by {
            Some(owner) => match self.with_live(owner, &renewal.id, |_| Ok(())) {
                Ok(()) => LeaseState::Held,
                Err(_) => LeaseState::Gone,
            },
            None => self.lease_state(&renewal.id),
        }
    }

    fn lease_state(&self, id: &str) -> LeaseState {
        let inner = self.lock();
        match inner.sessions.get(id) {
            Some(e) if e.expires_at > Instant::now() => LeaseState::Held,
            _ => LeaseState::Gone,
        }
    }
}
