//! [`LocalSession`]: what a replica knows of one 2025-era session whose worker it runs,
//! so that the holder can serve the session's requests without touching the store and
//! close its worker once it idles; and the questions the edge and the lease keeper ask
//! of the sessions served here ([`ReplicatedSessionManager::serve_without_touch`],
//! [`ReplicatedSessionManager::renewals`], [`ReplicatedSessionManager::close_idle`]).
//!
//! The edge's fast path ([`LocalSession::serve`], see
//! [`ReplicatedSessionManager::serve_without_touch`]) needs three facts, each learnt from a
//! round trip this replica made anyway: who owns the session (its create, or a touch
//! here), until when this replica's lease on it lasts, and until when the stored session
//! lives without another access. The lease and the expiry are the instant *before* the
//! round trip plus what the script granted, so they never outlast what Redis holds. The
//! fast path leaves a third of the lease in hand, the interval at which the keeper
//! renews both (`leases.rs`), so a renewal always lands before either runs out; past
//! that the request takes the touch.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use rmcp::transport::streamable_http_server::session::{
    SessionId, SessionManager, local::LocalSessionManager,
};
use tokio::time::{Duration, Instant};

use super::{ReplicatedSessionManager, gauge};
use crate::{auth::Principal, sessions::Renewal};

/// A clock in milliseconds since an epoch, so the times fit in atomics.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// `at` in milliseconds since the epoch (0 before it).
    pub(super) fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn now(&self) -> u64 {
        self.ms(Instant::now())
    }
}

/// What this replica knows of one session it serves. Times are [`Clock`] milliseconds.
#[derive(Debug, Default)]
pub(super) struct LocalSession {
    /// The owning principal, once a create or a touch here confirmed it.
    owner: OnceLock<String>,
    /// Until when this replica's lease on the session is known to last (0: unknown).
    lease_until: AtomicU64,
    /// Until when the stored session is known to live without another access.
    expires_after: AtomicU64,
    /// Served without a touch since the keeper last renewed the lease: the next
    /// renewal slides the stored session's expiry too.
    used: AtomicBool,
    /// Response streams open (requests in flight, GET streams, resumptions).
    streams: AtomicUsize,
    /// The last request, or the end of the last stream.
    last_active: AtomicU64,
    /// In the store: restored from it, or created here and stored. The keeper leaves a
    /// new session alone until then (its renewal would find no session, and close the
    /// worker that is answering its `initialize`).
    stored: AtomicBool,
}

impl LocalSession {
    /// A session whose worker starts `now`; `stored` unless it is a new one.
    pub(super) fn new(now: u64, stored: bool) -> Self {
        let session = Self::default();
        session.last_active.store(now, Ordering::Relaxed);
        session.stored.store(stored, Ordering::Relaxed);
        session
    }

    /// Whether the session is in the store (see [`LocalSession::confirmed`]).
    pub(super) fn stored(&self) -> bool {
        self.stored.load(Ordering::Acquire)
    }

    /// The owner, when known.
    pub(super) fn owner(&self) -> Option<&str> {
        self.owner.get().map(String::as_str)
    }

    /// Whether `principal`'s request may be served without a touch at `now`: it owns
    /// the session, and the lease and the stored session both last beyond `now +
    /// margin`. Records the use when it may.
    pub(super) fn serve(&self, principal: &str, now: u64, margin: u64) -> bool {
        let horizon = now.saturating_add(margin);
        let fresh = self.owner() == Some(principal)
            && self.lease_until.load(Ordering::Acquire) > horizon
            && self.expires_after.load(Ordering::Acquire) > horizon;
        if fresh {
            self.used.store(true, Ordering::Release);
            self.active(now);
        }
        fresh
    }

    /// A create or a touch by `owner` confirmed the session; `lease_until` when it
    /// also confirmed this replica's lease, `expires_after` the stored session's new
    /// expiry.
    pub(super) fn confirmed(
        &self,
        owner: &str,
        lease_until: Option<u64>,
        expires_after: u64,
        now: u64,
    ) {
        // The owner of a stored session never changes.
        let _ = self.owner.set(owner.to_owned());
        self.stored.store(true, Ordering::Release);
        if let Some(until) = lease_until {
            self.lease_until.fetch_max(until, Ordering::AcqRel);
        }
        self.expires_after
            .fetch_max(expires_after, Ordering::AcqRel);
        self.active(now);
    }

    /// The owner of a session used without a touch since the last call, taking the
    /// mark (the keeper's renewal slides its expiry).
    pub(super) fn take_use(&self) -> Option<String> {
        if self.used.swap(false, Ordering::AcqRel) {
            // Only a session with a known owner is served without a touch.
            self.owner.get().cloned()
        } else {
            None
        }
    }

    /// Puts a taken use mark back (its renewal did not reach the store).
    pub(super) fn restore_use(&self) {
        self.used.store(true, Ordering::Release);
    }

    /// The keeper renewed the lease (and slid the expiry, when `slid`); the round trip
    /// was sent at `sent`.
    pub(super) fn renewed(&self, sent: u64, lease: Duration, timeout: Duration, slid: bool) {
        self.lease_until
            .fetch_max(sent.saturating_add(millis(lease)), Ordering::AcqRel);
        if slid {
            self.expires_after
                .fetch_max(sent.saturating_add(millis(timeout)), Ordering::AcqRel);
        }
    }

    /// Whether the worker has been idle for `idle` at `now`: no stream open, no use
    /// waiting for the keeper, nothing since `now - idle`.
    pub(super) fn idle(&self, now: u64, idle: Duration) -> bool {
        self.streams.load(Ordering::Acquire) == 0
            && !self.used.load(Ordering::Acquire)
            && self
                .last_active
                .load(Ordering::Acquire)
                .saturating_add(millis(idle))
                <= now
    }

    /// Something happened in the session at `now`.
    pub(super) fn active(&self, now: u64) {
        self.last_active.fetch_max(now, Ordering::AcqRel);
    }

    /// A response stream opened; it counts as open until [`LocalSession::stream_closed`].
    pub(super) fn stream_opened(&self, now: u64) {
        self.streams.fetch_add(1, Ordering::AcqRel);
        self.active(now);
    }

    /// A response stream ended at `now`.
    pub(super) fn stream_closed(&self, now: u64) {
        self.active(now);
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the store has answered this replica since it last failed to: a failed touch,
/// renewal or event write stops every fast path until the keeper's next renewal
/// succeeds, because a store that failed may have lost what the replica knows (a
/// restart without persistence loses every session, and with them their leases).
#[derive(Debug, Default)]
pub(super) struct StoreHealth {
    /// [`Clock`] milliseconds + 1 of the last failure (0: none).
    failed: AtomicU64,
    /// [`Clock`] milliseconds + 1 at which the last renewal that succeeded was sent.
    renewed: AtomicU64,
    /// The event writes that had failed when the keeper's round in flight was sent
    /// ([`crate::events::RedisEventStore::write_failures`]: they fail behind the
    /// requests, so they are counted rather than reported).
    event_failures_sent: AtomicU64,
    /// The same count when the last renewal that succeeded was sent.
    event_failures_renewed: AtomicU64,
}

impl StoreHealth {
    /// The store failed a request at `now`.
    pub(super) fn failed(&self, now: u64) {
        self.failed
            .fetch_max(now.saturating_add(1), Ordering::AcqRel);
    }

    /// A renewal round is sent while `event_failures` event writes have failed.
    pub(super) fn sending(&self, event_failures: u64) {
        self.event_failures_sent
            .store(event_failures, Ordering::Release);
    }

    /// A renewal sent at `sent` succeeded.
    pub(super) fn renewed(&self, sent: u64) {
        self.renewed
            .fetch_max(sent.saturating_add(1), Ordering::AcqRel);
        self.event_failures_renewed.fetch_max(
            self.event_failures_sent.load(Ordering::Acquire),
            Ordering::AcqRel,
        );
    }

    /// No failure since the last renewal was sent, `event_failures` (the event writes
    /// failed so far) included.
    pub(super) fn trusted(&self, event_failures: u64) -> bool {
        let failed = self.failed.load(Ordering::Acquire);
        (failed == 0 || failed < self.renewed.load(Ordering::Acquire))
            && event_failures <= self.event_failures_renewed.load(Ordering::Acquire)
    }
}

/// What the edge and the lease keeper ask of the sessions served here.
impl ReplicatedSessionManager {
    /// Whether `principal`'s request for session `id` may be served here without
    /// touching the stored session: this replica runs the session's worker, `principal`
    /// owns it, the replica is not draining, the store has not failed it since the
    /// keeper's last renewal ([`StoreHealth`]), and both the lease and the stored
    /// session are known to last a third of the lease beyond now (see
    /// [`LocalSession`]). The use is recorded for the keeper, whose next renewal slides
    /// the expiry.
    ///
    /// With the event store too: a request's events are written behind their delivery
    /// ([`crate::events`]), so a Redis that went away costs the events' resumability,
    /// not the response; the failed writes are counted and stop this fast path until
    /// the keeper's next renewal succeeds, so the next request is a touch, and a 503.
    pub(crate) async fn serve_without_touch(&self, id: &str, principal: &Principal) -> bool {
        if self.draining.is_cancelled() || !self.store.trusted(self.event_failures()) {
            return false;
        }
        let locals = self.locals.read().await;
        locals.get(id).is_some_and(|local| {
            local
                .session
                .serve(principal.as_str(), self.clock.now(), self.margin())
        })
    }

    /// Whether this replica runs a worker for session `id`.
    pub(crate) async fn runs(&self, id: &str) -> bool {
        self.locals.read().await.contains_key(id)
    }

    /// Records what a touch by `principal` sent at `sent` confirmed of session `id`: its
    /// owner, the stored session's new expiry and, when `holds_lease`, this replica's
    /// lease. Returns whether this replica runs a worker for the session.
    pub(crate) async fn touched(
        &self,
        id: &str,
        principal: &Principal,
        sent: Instant,
        holds_lease: bool,
    ) -> bool {
        let locals = self.locals.read().await;
        let Some(local) = locals.get(id) else {
            return false;
        };
        let sent = self.clock.ms(sent);
        // A touch renews its holder's lease once half of it is spent (touch.lua), so
        // at least half of it is left after one.
        let lease_until = holds_lease.then(|| sent.saturating_add(millis(self.lease.ttl / 2)));
        local.session.confirmed(
            principal.as_str(),
            lease_until,
            sent.saturating_add(millis(self.sessions.limits().timeout())),
            self.clock.now(),
        );
        true
    }

    /// Event writes that failed behind their delivery since start (0 without the event
    /// store).
    fn event_failures(&self) -> u64 {
        self.events
            .as_ref()
            .map_or(0, |events| events.write_failures())
    }

    /// The store failed a request of this replica (a touch, a renewal, an event
    /// write): no request goes without a touch until the keeper's next renewal
    /// succeeds.
    pub(crate) fn store_failed(&self) {
        self.store.failed(self.clock.now());
    }

    /// Closes this replica's copy of session `id`, which a touch by `principal` did not
    /// find, when the copy is known to be `principal`'s: then the session expired or
    /// was deleted. Otherwise the store may have refused `principal` a session of
    /// another's (a worker just restored does not know its owner until the owner's
    /// next touch), and the owner's session lives on; the keeper's next sweep closes a
    /// copy whose session is really gone.
    pub(crate) async fn close_not_found(&self, id: &str, principal: &Principal) {
        let owned_by_caller = self
            .locals
            .read()
            .await
            .get(id)
            .is_some_and(|local| local.session.owner() == Some(principal.as_str()));
        if owned_by_caller {
            self.close_local(id).await;
        }
    }

    /// The renewals of the keeper's next round: every session served here (a new one
    /// once it is stored), with its owner when it was served without a touch since the
    /// last round (taking that mark).
    pub(crate) async fn renewals(&self) -> Vec<Renewal> {
        self.store.sending(self.event_failures());
        let locals = self.locals.read().await;
        locals
            .iter()
            .filter(|(_, local)| local.session.stored())
            .map(|(id, local)| Renewal {
                id: id.to_string(),
                used_by: local.session.take_use(),
            })
            .collect()
    }

    /// Puts back the use marks of `renewals` that did not reach the store, for the
    /// next round.
    pub(crate) async fn not_renewed(&self, renewals: &[Renewal]) {
        let locals = self.locals.read().await;
        for renewal in renewals.iter().filter(|r| r.used_by.is_some()) {
            if let Some(local) = locals.get(renewal.id.as_str()) {
                local.session.restore_use();
            }
        }
    }

    /// Records `held`, renewals the store confirmed in a round trip sent at `sent`:
    /// this replica's lease on each lasts a lease from then, and the expiry of the used
    /// ones was slid.
    pub(crate) async fn renewed<'a>(
        &self,
        held: impl IntoIterator<Item = &'a Renewal>,
        sent: Instant,
    ) {
        let sent = self.clock.ms(sent);
        self.store.renewed(sent);
        let timeout = self.sessions.limits().timeout();
        let locals = self.locals.read().await;
        for renewal in held {
            if let Some(local) = locals.get(renewal.id.as_str()) {
                let slid = renewal.used_by.is_some();
                local.session.renewed(sent, self.lease.ttl, timeout, slid);
            }
        }
    }

    /// Closes the workers idle for `session.local_idle_secs` (no request, no open
    /// stream, no use the keeper has yet to record); their sessions stay in the store.
    /// Returns how many it closed.
    pub(crate) async fn close_idle(&self) -> usize {
        let idle = self.sessions.limits().local_idle();
        let now = self.clock.now();
        let closed: Vec<(SessionId, Arc<LocalSessionManager>)> = {
            let mut locals = self.locals.write().await;
            let ids: Vec<SessionId> = locals
                .iter()
                .filter(|(_, local)| local.session.idle(now, idle))
                .map(|(id, _)| id.clone())
                .collect();
            let closed = ids
                .into_iter()
                .filter_map(|id| locals.remove(&id).map(|local| (id, local.manager)))
                .collect();
            self.metrics.local_sessions.set(gauge(locals.len()));
            closed
        };
        self.trimmer.closed(closed.len());
        for (id, manager) in &closed {
            self.starting_lock().remove(id);
            tracing::debug!(
                session_id = %crate::ids::fingerprint(id),
                "closing an idle session's worker"
            );
            let _ = manager.close_session(id).await;
        }
        closed.len()
    }

    /// The lease left in hand when a request is served without a touch: the keeper's
    /// interval, so its renewal lands first.
    fn margin(&self) -> u64 {
        millis(self.lease.ttl / 3)
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(9);
    const TIMEOUT: Duration = Duration::from_secs(60);
    const MARGIN: u64 = 3_000;

    #[test]
    fn only_the_owner_is_served_and_only_while_lease_and_expiry_last_beyond_the_margin() {
        let s = LocalSession::new(0, true);
        assert!(!s.serve("alice", 0, MARGIN), "owner unknown");
        s.confirmed("alice", Some(9_000), 60_000, 0);
        assert!(s.serve("alice", 0, MARGIN));
        assert!(!s.serve("bob", 0, MARGIN), "another principal");
        assert!(s.serve("alice", 5_999, MARGIN));
        assert!(!s.serve("alice", 6_000, MARGIN), "lease within the margin");

        s.renewed(6_000, LEASE, TIMEOUT, false);
        assert!(s.serve("alice", 6_000, MARGIN));
        assert!(
            !s.serve("alice", 57_000, MARGIN),
            "expiry within the margin"
        );
        s.renewed(50_000, LEASE, TIMEOUT, true);
        assert!(s.serve("alice", 55_000, MARGIN));
    }

    #[test]
    fn a_touch_without_the_lease_leaves_the_known_lease_alone() {
        let s = LocalSession::new(0, true);
        s.confirmed("alice", None, 60_000, 0);
        assert!(!s.serve("alice", 0, MARGIN), "no lease known");
        s.renewed(0, LEASE, TIMEOUT, false);
        s.confirmed("alice", None, 60_000, 1_000);
        assert!(s.serve("alice", 1_000, MARGIN));
    }

    #[test]
    fn a_store_failure_is_forgiven_only_by_a_renewal_sent_after_it() {
        let health = StoreHealth::default();
        assert!(health.trusted(0));
        health.renewed(5);
        health.failed(10);
        assert!(!health.trusted(0));
        health.renewed(10);
        assert!(!health.trusted(0), "sent as the failure happened");
        health.renewed(11);
        assert!(health.trusted(0));
    }

    #[test]
    fn a_failed_event_write_is_forgiven_only_by_a_renewal_sent_after_it() {
        let health = StoreHealth::default();
        assert!(health.trusted(0));
        assert!(
            !health.trusted(2),
            "two writes failed behind their requests"
        );
        health.sending(0);
        health.renewed(20);
        assert!(
            !health.trusted(2),
            "the renewal was sent before the failures"
        );
        health.sending(2);
        health.renewed(30);
        assert!(health.trusted(2));
        assert!(!health.trusted(3));
    }

    #[test]
    fn a_use_is_taken_once_and_can_be_put_back() {
        let s = LocalSession::new(0, true);
        s.confirmed("alice", Some(9_000), 60_000, 0);
        assert_eq!(s.take_use(), None);
        assert!(s.serve("alice", 10, MARGIN));
        assert_eq!(s.take_use().as_deref(), Some("alice"));
        assert_eq!(s.take_use(), None);
        s.restore_use();
        assert_eq!(s.take_use().as_deref(), Some("alice"));
    }

    #[test]
    fn idle_means_no_stream_no_pending_use_and_nothing_for_the_whole_period() {
        let idle = Duration::from_secs(60);
        let s = LocalSession::new(1_000, true);
        assert!(!s.idle(60_999, idle));
        assert!(s.idle(61_000, idle));

        s.stream_opened(61_000);
        assert!(!s.idle(200_000, idle), "a stream is open");
        s.stream_closed(200_000);
        assert!(!s.idle(259_999, idle));
        assert!(s.idle(260_000, idle));

        s.confirmed("alice", Some(400_000), 400_000, 260_000);
        assert!(s.serve("alice", 260_000, MARGIN));
        assert!(!s.idle(400_000, idle), "a use the keeper has not flushed");
        s.take_use();
        assert!(s.idle(400_000, idle));
    }
}
