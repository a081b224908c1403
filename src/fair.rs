//! [`FairPermits`]: a semaphore that hands its permits out fairly between principals,
//! the scheduling under the task workers and the CPU pool (which import it; it imports
//! neither).
//!
//! A permit that frees goes to the waiter whose principal holds the fewest permits at
//! that moment; on a tie, to the principal served least recently (then the earliest
//! waiter), not simply to the earliest waiter: principals take turns, so one caller's
//! backlog never stands between another caller and the next free permit. It is work-conserving: a free permit never waits while anyone
//! waits for it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;

/// Cheap-clone handle on a fair semaphore; clones share the permits.
#[derive(Clone, Debug)]
pub struct FairPermits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Permits held, by principal (no entry for none).
    held: HashMap<Arc<str>, usize>,
    /// Callers waiting, in arrival order; a sender whose caller went away is skipped.
    waiting: VecDeque<(Arc<str>, oneshot::Sender<FairPermit>)>,
    /// Permits handed out so far.
    grants: u64,
    /// When each principal holding or waiting was last handed a permit (by `grants`).
    served: HashMap<Arc<str>, u64>,
}

/// One permit, held for a principal until dropped.
#[derive(Debug)]
pub struct FairPermit {
    inner: Arc<Inner>,
    principal: Arc<str>,
    /// False once it was given back (or never handed out).
    armed: bool,
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.inner.lock();
            state.give_back(&self.principal);
            self.inner.dispatch(&mut state);
        }
    }
}

impl State {
    fn give_back(&mut self, principal: &str) {
        self.free += 1;
        if let Some(n) = self.held.get_mut(principal) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(principal);
            }
        }
    }

    fn take(&mut self, principal: &Arc<str>) {
        self.free -= 1;
        *self.held.entry(principal.clone()).or_default() += 1;
        self.grants += 1;
        self.served.insert(principal.clone(), self.grants);
    }

    /// Whose turn it is: fewest held, then least recently served, then first come.
    fn turn(&self, principal: &str) -> (usize, u64) {
        let served = self.served.get(principal).copied().unwrap_or(0);
        (self.held_by(principal), served)
    }

    fn held_by(&self, principal: &str) -> usize {
        self.held.get(principal).copied().unwrap_or(0)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only counting and queue operations run under the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands free permits to waiters, fewest held first.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        state.waiting.retain(|(_, tx)| !tx.is_closed());
        let State {
            held,
            waiting,
            served,
            ..
        } = &mut *state;
        served.retain(|p, _| held.contains_key(p) || waiting.iter().any(|(w, _)| w == p));
        while state.free > 0 {
            let Some(next) =
                (0..state.waiting.len()).min_by_key(|&i| state.turn(&state.waiting[i].0))
            else {
                return;
            };
            let (principal, tx) = state.waiting.remove(next).expect("an index of the queue");
            state.take(&principal);
            let permit = FairPermit {
                inner: self.clone(),
                principal: principal.clone(),
                armed: true,
            };
            if let Err(mut permit) = tx.send(permit) {
                // Its caller went away meanwhile: undo here, under the lock.
                permit.armed = false;
                state.give_back(&principal);
            }
        }
    }
}

impl FairPermits {
    /// `limit` permits (at least one).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            inner: Arc::new(Inner {
                limit,
                state: Mutex::new(State {
                    free: limit,
                    ..State::default()
                }),
            }),
        }
    }

    /// The number of permits.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Permits held now.
    pub fn held(&self) -> usize {
        self.inner.limit - self.inner.lock().free
    }

    /// Callers waiting now.
    pub fn waiting(&self) -> usize {
        let state = self.inner.lock();
        state
            .waiting
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .count()
    }

    /// A permit for `principal`, at once when one is free, else when its turn comes.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call leaves the queue, and a permit handed to it as it was
    /// dropped goes back to the next waiter.
    pub async fn acquire(&self, principal: &str) -> FairPermit {
        let principal: Arc<str> = principal.into();
        let granted = {
            let mut state = self.inner.lock();
            if state.free > 0 {
                // Free permits with callers still waiting only happen inside a dispatch,
                // so nobody is passed over here.
                state.take(&principal);
                return FairPermit {
                    inner: self.inner.clone(),
                    principal,
                    armed: true,
                };
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.push_back((principal, tx));
            rx
        };
        // The sender is only dropped by a dispatch that sent on it.
        granted
            .await
            .expect("a waiter's sender is kept until it is answered")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_next_free_permit_goes_to_whoever_holds_fewest() {
        let permits = FairPermits::new(1);
        let alice = permits.acquire("alice").await;
        let queued: Vec<_> = (0..3)
            .map(|i| {
                let permits = permits.clone();
                tokio::spawn(async move {
                    let permit = permits.acquire("alice").await;
                    (format!("alice-{i}"), permit)
                })
            })
            .collect();
        while permits.waiting() < 3 {
            tokio::task::yield_now().await;
        }
        let bob = tokio::spawn({
            let permits = permits.clone();
            async move { permits.acquire("bob").await }
        });
        while permits.waiting() < 4 {
            tokio::task::yield_now().await;
        }
        drop(alice);
        let bob = tokio::time::timeout(Duration::from_secs(10), bob)
            .await
            .expect("bob goes before alice's queue")
            .unwrap();
        assert_eq!((permits.held(), permits.waiting()), (1, 3));
        drop(bob);
        for task in queued {
            drop(task.await.unwrap().1);
        }
        assert_eq!((permits.held(), permits.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn a_caller_that_went_away_leaves_the_queue_and_loses_no_permit() {
        let permits = FairPermits::new(1);
        let held = permits.acquire("alice").await;
        let gone = tokio::time::timeout(Duration::from_millis(10), permits.acquire("bob")).await;
        assert!(gone.is_err());
        assert_eq!(permits.waiting(), 0);
        drop(held);
        assert_eq!(permits.held(), 0);
        let _again = permits.acquire("carol").await;
        assert_eq!(permits.held(), 1);
    }
}
