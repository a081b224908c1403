//! The replica's background jobs, started in one place and stopped in reverse.
//!
//! A component whose work goes on in the background (the bus subscriber, the event
//! stream reader, the liveness mark, the lease keeper, the upkeep of tasks, handles and
//! sessions) adds its loop to the replica's [`Jobs`] where it is built, under a name.
//! Nothing runs until [`Jobs::start`], which [`crate::startup`] calls once, when
//! everything is built: the jobs start in the order they were added. [`Jobs::stop`] stops them in the reverse
//! order, each with a token of its own and awaited before the next, so no job outlives
//! a job it depends on (the bus subscriber, added first, stops last).
//!
//! A job added after the start runs at once; one added after the stop never runs.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A job's loop: runs until its token fires.
type Run = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The background jobs of one replica. Cheap to clone: clones share the jobs.
#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Added, not started yet (before [`Jobs::start`]).
    pending: Vec<(&'static str, Run)>,
    /// Started, in start order.
    running: Vec<Running>,
    started: bool,
    stopped: bool,
}

struct Running {
    name: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Jobs {
    /// No jobs yet, none started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the job `name`: `job` gets the token that stops it and returns its loop,
    /// which runs from [`Jobs::start`] (at once when the jobs run already) until the
    /// token fires.
    pub fn add<F, Fut>(&self, name: &'static str, job: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let run: Run = Box::new(move |stop| Box::pin(job(stop)));
        let mut state = self.state();
        if state.stopped {
            tracing::debug!(job = name, "added after the stop; not started");
        } else if state.started {
            let running = spawn(name, run);
            state.running.push(running);
        } else {
            state.pending.push((name, run));
        }
    }

    /// Starts every job added so far, in the order they were added; later ones start as
    /// they are added. Starting twice does nothing more.
    pub fn start(&self) {
        let mut state = self.state();
        if state.started || state.stopped {
            return;
        }
        state.started = true;
        let pending = std::mem::take(&mut state.pending);
        for (name, run) in pending {
            let running = spawn(name, run);
            state.running.push(running);
        }
    }

    /// Stops the jobs in the reverse order of their start, each awaited for at most
    /// `grace` before the next is stopped (one that overruns it is aborted and
    /// logged). Returns whether every job stopped within its grace.
    pub async fn stop(&self, grace: Duration) -> bool {
        let running = {
            let mut state = self.state();
            state.stopped = true;
            state.pending.clear();
            std::mem::take(&mut state.running)
        };
        let mut all = true;
        for Running { name, stop, handle } in running.into_iter().rev() {
            stop.cancel();
            let abort = handle.abort_handle();
            match tokio::time::timeout(grace, handle).await {
                Ok(Ok(())) => tracing::debug!(job = name, "stopped"),
                Ok(Err(error)) => tracing::warn!(job = name, error = %error, "ended abnormally"),
                Err(_) => {
                    all = false;
                    abort.abort();
                    tracing::warn!(
                        job = name,
                        grace_ms = grace.as_millis() as u64,
                        "did not stop in time; aborted"
                    );
                }
            }
        }
        all
    }

    /// The names of the jobs added and not stopped, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        let state = self.state();
        state
            .running
            .iter()
            .map(|r| r.name)
            .chain(state.pending.iter().map(|(name, _)| *name))
            .collect()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Only vector operations run under this lock: a poisoned one is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn spawn(name: &'static str, run: Run) -> Running {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run(stop.clone()));
    tracing::debug!(job = name, "started");
    Running { name, stop, handle }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// A job that records its start and, once stopped, its stop.
    fn recording(jobs: &Jobs, name: &'static str, log: &Arc<StdMutex<Vec<String>>>) {
        let log = Arc::clone(log);
        jobs.add(name, move |stop| async move {
            log.lock().unwrap().push(format!("start {name}"));
            stop.cancelled().await;
            log.lock().unwrap().push(format!("stop {name}"));
        });
    }

    #[tokio::test]
    async fn jobs_start_in_order_only_when_started_and_stop_in_reverse() {
        let jobs = Jobs::new();
        let log = Arc::new(StdMutex::new(Vec::new()));
        for name in ["bus", "reader", "keeper"] {
            recording(&jobs, name, &log);
        }
        tokio::task::yield_now().await;
        assert!(log.lock().unwrap().is_empty(), "nothing runs before start");
        assert_eq!(jobs.names(), ["bus", "reader", "keeper"]);

        jobs.start();
        jobs.start();
        recording(&jobs, "late", &log);
        while log.lock().unwrap().len() < 4 {
            tokio::task::yield_now().await;
        }
        assert!(jobs.stop(Duration::from_secs(1)).await);
        let log = log.lock().unwrap().clone();
        assert_eq!(
            &log[4..],
            ["stop late", "stop keeper", "stop reader", "stop bus"]
        );
        assert!(jobs.names().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_ignores_its_token_is_aborted_after_its_grace() {
        let jobs = Jobs::new();
        jobs.add("stubborn", |_stop| std::future::pending::<()>());
        let stopped = Arc::new(StdMutex::new(false));
        let flag = Arc::clone(&stopped);
        jobs.add("polite", move |stop| async move {
            stop.cancelled().await;
            *flag.lock().unwrap() = true;
        });
        jobs.start();
        tokio::task::yield_now().await;
        assert!(!jobs.stop(Duration::from_secs(2)).await);
        assert!(*stopped.lock().unwrap(), "the jobs before it still stop");
        // Added after the stop: never runs.
        jobs.add("too late", |_stop| async { unreachable!("never started") });
        assert!(jobs.names().is_empty());
    }
}
