//! The holding of 2025-era transport sessions: which replica runs a session's worker, its
//! SSE streams and the requests it sends the client, under a [`Lease`] kept in the
//! session's record.
//!
//! [`Sessions::touch`] says which replica holds a session (taking the lease when it is
//! free or expired, in the same round trip), the holder renews its leases with
//! [`Sessions::renew_leases`] and hands them over with [`Sessions::release_leases`]. On
//! the memory backend one replica holds every live session.
//!
//! A holder that dies keeps its leases until they run out. So that its sessions move
//! sooner, each replica keeps a short-lived liveness mark ([`Sessions::mark_alive`]);
//! a replica that cannot connect to a session's holder asks whether the holder's mark
//! is still there ([`Sessions::is_alive`]), and only when it is gone takes the session
//! from exactly that holder ([`Sessions::take_over`]). A holder that is alive but slow
//! keeps its mark, and a forward that connects waits for it, so it keeps its sessions.

use serde_json::Value;

use super::{Backend, SessionError, Sessions};
use crate::backend::dispatch;

/// A replica that can hold 2025-era transport sessions: its id and the URL other
/// replicas forward the session's requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The replica id.
    pub replica: String,
    /// Its advertised base URL (`http://10.0.0.7:8080`).
    pub url: String,
}

/// A replica's claim on the sessions it holds: who, and for how long without renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The claiming replica.
    pub holder: Holder,
    /// How long the claim lasts unless renewed.
    pub ttl: std::time::Duration,
}

impl Lease {
    /// The claim's length in whole milliseconds, at least 1 (0 tells the lease script to
    /// release).
    pub(super) fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What [`Sessions::touch`] found for a live session.
#[derive(Debug, Clone, PartialEq)]
pub struct Touched {
    /// The session's transport state, or whether it has one.
    pub transport: Transport,
    /// The replica holding the session under a live lease, if any (always `None` on the
    /// memory backend, where there is one replica).
    pub holder: Option<Holder>,
}

/// A touched session's transport state (the client's `initialize` parameters, which
/// restore a 2025-era session's worker on another replica).
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// None: the session is a 2026-07-28 handle, not a transport session.
    Absent,
    /// A transport session, whose state the touch was not asked to read.
    Unread,
    /// A transport session's stored state (on the memory backend, always read).
    Read(Value),
}

impl Touched {
    /// Whether the session is a 2025-era transport session.
    pub fn is_transport(&self) -> bool {
        !matches!(self.transport, Transport::Absent)
    }
}

/// One session whose lease [`Sessions::renew_leases`] renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The session id.
    pub id: String,
    /// The session's owner when the holder served it without a touch since the last
    /// renewal: the renewal then also slides its expiry and records the access in its
    /// owner's index, as a touch would have.
    pub used_by: Option<String>,
}

impl Renewal {
    /// A renewal of session `id`'s lease alone.
    pub fn unused(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            used_by: None,
        }
    }
}

/// Where a replica's lease on one session stands after [`Sessions::renew_leases`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still this replica's (renewed or released as asked).
    Held,
    /// Another replica holds the session now (it took over an expired lease).
    Lost,
    /// The session no longer exists (deleted or expired).
    Gone,
}

impl Sessions {
    /// Slides the expiry and, if the session is live, says whether it is a transport
    /// session and which replica holds it. With `lease`, in the same round trip: a
    /// session whose lease is free or expired is taken for `lease` (when `take`), and
    /// one the lease's replica already holds has its lease renewed (when `take`); and
    /// when `read`, the stored transport state comes too if the session is left to
    /// `lease`'s replica (it holds the lease, or nobody does). Only a replica about to
    /// restore the session's worker needs the state, and it is most of a touch's reply.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn touch(
        &self,
        principal: &str,
        id: &str,
        lease: Option<&Lease>,
        take: bool,
        read: bool,
    ) -> Result<Option<Touched>, SessionError> {
        if !crate::ids::is_well_formed(id) {
            return Ok(None);
        }
        let reader = lease.filter(|_| read).map(|l| l.holder.replica.as_str());
        dispatch!(Backend: &self.backend => touch(principal, id, lease.filter(|_| take), None, reader))
    }

    /// [`Sessions::touch`] taking the session for `lease` from `dead` as well: a replica
    /// that could not be connected to and whose liveness mark is gone. The lease is taken
    /// only when `dead` still holds it (or nobody does), in the same script, so a session
    /// another replica took meanwhile stays that replica's.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn take_over(
        &self,
        principal: &str,
        id: &str,
        lease: &Lease,
        dead: &Holder,
        read: bool,
    ) -> Result<Option<Touched>, SessionError> {
        if !crate::ids::is_well_formed(id) {
            return Ok(None);
        }
        let dead = Some(dead.replica.as_str());
        let reader = read.then_some(lease.holder.replica.as_str());
        dispatch!(Backend: &self.backend => touch(principal, id, Some(lease), dead, reader))
    }

    /// Sets `holder`'s liveness mark for `ttl` (one command; nothing on the memory
    /// backend, whose one replica nobody else asks about).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn mark_alive(
        &self,
        holder: &Holder,
        ttl: std::time::Duration,
    ) -> Result<(), SessionError> {
        dispatch!(Backend: &self.backend => mark_alive(&holder.replica, ttl))
    }

    /// Whether `holder`'s liveness mark is there (one command; always on the memory
    /// backend).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn is_alive(&self, holder: &Holder) -> Result<bool, SessionError> {
        dispatch!(Backend: &self.backend => is_alive(&holder.replica))
    }

    /// Deletes `holder`'s liveness mark (the end of a drain, its leases handed over).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn mark_gone(&self, holder: &Holder) -> Result<(), SessionError> {
        dispatch!(Backend: &self.backend => mark_gone(&holder.replica))
    }

    /// Renews `lease` on each of `sessions` it still holds, in one round trip per batch;
    /// says where each stands (same order as `sessions`). The expiry of a session is
    /// slid only when it was used since its last renewal ([`Renewal::used_by`]).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn renew_leases(
        &self,
        lease: &Lease,
        sessions: &[Renewal],
    ) -> Result<Vec<LeaseState>, SessionError> {
        dispatch!(Backend: &self.backend => renew_leases(lease, sessions))
    }

    /// Gives up `holder`'s lease on each of `ids` it holds, so the next request on any
    /// replica takes the session over at once (a draining replica).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn release_leases(
        &self,
        holder: &Holder,
        ids: &[String],
    ) -> Result<Vec<LeaseState>, SessionError> {
        dispatch!(Backend: &self.backend => release_leases(holder, ids))
    }
}
