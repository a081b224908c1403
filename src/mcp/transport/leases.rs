//! Which replica serves each 2025-era session: the one holding its lease.
//!
//! rmcp runs a session in one worker in one process: the requests it sends the client
//! (sampling, elicitation, roots) wait there for their responses, a
//! `notifications/cancelled` stops a call only there, and its notifications reach only
//! a GET stream open there. So every request of a session is served by one replica,
//! the *holder*, and the others forward to it ([`super::forward`]). The holder is
//! recorded in the session's Redis record under a lease that the touch script of every
//! request reads, takes (when free or expired) and renews in the same round trip
//! ([`crate::sessions::Sessions::touch`]).
//!
//! [`LeaseKeeper`] is the holder's side, run on the replica's background tasks:
//! - [`LeaseKeeper::sweep`], every third of the lease: closes the workers idle for
//!   `session.local_idle_secs`, renews the leases of the sessions this replica still
//!   serves in one round trip per batch (the same round trip slides the expiry of the
//!   sessions the edge served without a touch since the last sweep), and closes the
//!   local worker of every session that was deleted, expired, or taken over by another
//!   replica (its own lease ran out) — within seconds, not at the 30-minute keep-alive;
//! - evictions on the bus (topic [`EVICT_TOPIC`]): a DELETE served anywhere closes the
//!   session's worker wherever one runs, at once;
//! - the drain: when shutdown starts, [`LeaseKeeper::hand_over`] releases every lease
//!   this replica holds, so the next request of each session, on any other replica,
//!   takes it over at once rather than after the lease runs out; clients reopen their
//!   GET streams (with `Last-Event-ID`) there.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::session_manager::ReplicatedSessionManager;
use crate::{
    bus::{Bus, BusHandler, BusMessage},
    jobs::Jobs,
    metrics::Metrics,
    sessions::{Lease, LeaseState, SessionError, Sessions},
};

/// The bus topic of session evictions; the payload is the session id.
pub const EVICT_TOPIC: &str = "sessions.evict";

/// Ends `principal`'s stored session `id` everywhere, as an HTTP DELETE does: the
/// store's delete (record, indexes, tombstone), then an eviction on the bus so the
/// replica holding its worker closes it at once (without a bus, or when the publish
/// fails, holders find it gone at their next sweep). `false` when there was no such
/// session.
///
/// # Errors
/// [`SessionError`] when the store could not delete it (nothing was published then).
pub(crate) async fn end_session(
    sessions: &Sessions,
    bus: Option<&Bus>,
    principal: &str,
    id: &str,
) -> Result<bool, SessionError> {
    if !sessions.delete(principal, id).await? {
        return Ok(false);
    }
    if let Some(bus) = bus
        && let Err(e) = bus.publish(EVICT_TOPIC, id.as_bytes()).await
    {
        // The session is gone from the store: other replicas' sweeps close their
        // copies within a third of the lease.
        tracing::warn!(error = %e, "session eviction not published");
    }
    Ok(true)
}

/// Evictions waiting for the keeper; beyond it they are dropped (the next sweep closes
/// those workers).
const EVICT_QUEUE: usize = 1024;

/// Renews this replica's leases and closes the local workers of sessions it no longer
/// serves. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LeaseKeeper {
    lease: Lease,
    sessions: Sessions,
    manager: Arc<ReplicatedSessionManager>,
    metrics: Metrics,
}

impl LeaseKeeper {
    /// A keeper of this replica's `lease` over the sessions `manager` serves.
    pub(crate) fn new(
        lease: Lease,
        sessions: Sessions,
        manager: Arc<ReplicatedSessionManager>,
        metrics: Metrics,
    ) -> Self {
        Self {
            lease,
            sessions,
            manager,
            metrics,
        }
    }

    /// One round: closes the workers idle for `session.local_idle_secs` (their leases
    /// are renewed no more, so any replica takes their sessions once the leases run
    /// out), then renews the lease of every session still served here, sliding the
    /// expiry of those served without a touch since the last round, and closes the
    /// workers of those this replica no longer serves; then hands the memory of the
    /// closed workers back to the system once enough were closed. Returns how many it
    /// closed.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] when Redis cannot be asked (the workers of live
    /// sessions stay, idle ones are closed all the same).
    pub(crate) async fn sweep(&self) -> Result<usize, SessionError> {
        let idle = self.manager.close_idle().await;
        let renewed = self.renew().await;
        self.manager.release_memory().await;
        Ok(idle + renewed?)
    }

    /// Renews the lease of every session served here; returns how many workers it
    /// closed for sessions this replica no longer serves.
    async fn renew(&self) -> Result<usize, SessionError> {
        let renewals = self.manager.renewals().await;
        let sent = tokio::time::Instant::now();
        let states = match self.sessions.renew_leases(&self.lease, &renewals).await {
            Ok(states) => states,
            Err(e) => {
                self.manager.store_failed();
                self.manager.not_renewed(&renewals).await;
                return Err(e);
            }
        };
        let held = renewals
            .iter()
            .zip(&states)
            .filter(|(_, state)| **state == LeaseState::Held)
            .map(|(renewal, _)| renewal);
        self.manager.renewed(held, sent).await;
        let mut closed = 0;
        for (renewal, state) in renewals.iter().zip(states) {
            if state != LeaseState::Held {
                tracing::info!(
                    session_id = %crate::ids::fingerprint(&renewal.id),
                    ?state,
                    "closing the local copy of a session this replica no longer serves"
                );
                self.manager.close_local(&renewal.id).await;
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Releases every lease this replica holds (the drain), so other replicas take the
    /// sessions over at their next request. Returns how many it released.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`]: the leases then run out by themselves.
    pub(crate) async fn hand_over(&self) -> Result<usize, SessionError> {
        let ids = self.manager.local_ids().await;
        let states = self
            .sessions
            .release_leases(&self.lease.holder, &ids)
            .await?;
        Ok(states.iter().filter(|s| **s == LeaseState::Held).count())
    }

    /// Adds the keeper to `jobs` (the job `lease keeper`): a sweep every `every`,
    /// evictions from `bus` as they come, and the hand-over once `shutdown` (the drain)
    /// fires, after which it no longer sweeps (the drain ends the remaining workers),
    /// until its job stops.
    pub(crate) fn start(
        self,
        every: Duration,
        bus: Option<&Bus>,
        shutdown: CancellationToken,
        jobs: &Jobs,
    ) {
        let (evicted, mut evictions) = mpsc::channel::<String>(EVICT_QUEUE);
        if let Some(bus) = bus {
            bus.subscribe(EVICT_TOPIC, Arc::new(Evictions(evicted)));
        }
        jobs.add("lease keeper", move |background| async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut draining = false;
            loop {
                tokio::select! {
                    () = background.cancelled() => return,
                    () = shutdown.cancelled(), if !draining => {
                        draining = true;
                        match self.hand_over().await {
                            Ok(released) => tracing::info!(released, "draining: sessions handed over"),
                            Err(e) => tracing::warn!(error = %e, "draining: leases not released; they run out by themselves"),
                        }
                    }
                    _ = tick.tick(), if !draining => {
                        if let Err(e) = self.sweep().await {
                            self.metrics.store_error("leases");
                            tracing::warn!(error = %e, "session lease sweep failed");
                        }
                    }
                    Some(id) = evictions.recv() => self.manager.close_local(&id).await,
                }
            }
        });
    }
}

/// Hands evictions from the bus to the keeper without blocking the bus.
struct Evictions(mpsc::Sender<String>);

impl BusHandler for Evictions {
    fn on_message(&self, msg: BusMessage) {
        if let Ok(id) = String::from_utf8(msg.payload)
            && crate::ids::is_well_formed(&id)
        {
            // A full queue drops the eviction: the next sweep finds the session gone.
            let _ = self.0.try_send(id);
        }
    }

    fn on_gap(&self) {
        // Missed evictions are caught by the next sweep.
    }
}

#[cfg(test)]
mod tests {
    use rmcp::transport::streamable_http_server::session::local::SessionConfig;
    use rmcp::transport::streamable_http_server::session::{SessionId, SessionManager};

    use super::*;
    use crate::{config::Settings, sessions::NewSession, state::AppState};

    #[tokio::test]
    async fn a_sweep_keeps_live_sessions_and_closes_the_workers_of_gone_ones() {
        let state = AppState::build(Settings::load_with_env(None, Vec::new()).unwrap()).unwrap();
        let lease = Lease {
            holder: state.holder.clone(),
            ttl: Duration::from_secs(10),
        };
        let manager = Arc::new(ReplicatedSessionManager::new(
            SessionConfig::default(),
            None,
            state.sessions.clone(),
            state.metrics.clone(),
            lease.clone(),
            state.shutdown.clone(),
        ));
        let keeper = LeaseKeeper::new(
            lease,
            state.sessions.clone(),
            manager.clone(),
            state.metrics.clone(),
        );
        let mut ids = Vec::new();
        for _ in 0..2 {
            let session = state
                .sessions
                .create(NewSession {
                    principal: "anonymous".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            manager
                .restore_session(SessionId::from(session.id.as_str()))
                .await
                .unwrap();
            ids.push(session.id);
        }
        assert_eq!(keeper.sweep().await.unwrap(), 0);
        assert_eq!(manager.local_ids().await.len(), 2);

        assert!(state.sessions.delete("anonymous", &ids[0]).await.unwrap());
        assert_eq!(keeper.sweep().await.unwrap(), 1);
        assert_eq!(manager.local_ids().await, [ids[1].clone()]);
        assert_eq!(state.metrics.local_sessions.get(), 1);

        // A new session's worker answers its `initialize` before the session is
        // stored: the sweep leaves it alone meanwhile.
        let (fresh, _transport) = manager.create_session().await.unwrap();
        assert_eq!(keeper.sweep().await.unwrap(), 0);
        assert!(manager.local_ids().await.contains(&fresh.to_string()));
    }
}
