//! The CPU pool: CPU-heavy work (the prime sieve) runs on tokio's blocking threads, off
//! the async workers that serve every other request, at most `tools.cpu_concurrency`
//! jobs at a time, handed out fairly between principals ([`FairPermits`]): a free permit
//! goes to the waiting caller whose principal runs fewest jobs, so one caller's queue of
//! sieves never stands between another caller and the next free permit.
//!
//! A job reports progress through a channel that the caller's task drains, so the
//! caller's callback runs on the async side. Dropping the caller's future (a client
//! cancels) raises the job's stop flag; a job checks it between steps, so it ends within
//! one step and its permit goes back to the pool then, not before: the CPU is busy until
//! the job notices.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{
    fair::FairPermits,
    metrics::{Metrics, encode_gauge},
};

/// Why a job returned nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CpuError {
    /// The job panicked or could not be started.
    #[error("the computation failed: {0}")]
    Failed(String),
}

/// Cheap-clone handle on one replica's CPU pool (clones share the permits).
#[derive(Clone, Debug)]
pub struct CpuPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    permits: FairPermits,
    /// Callers waiting for a permit.
    waiting: AtomicUsize,
}

/// A snapshot of the pool: its limit and how many jobs run and wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    /// Most jobs running at once.
    pub limit: usize,
    /// Jobs running now (a cancelled job counts until it has stopped).
    pub running: usize,
    /// Callers waiting for a permit.
    pub waiting: usize,
}

/// What a running job sees of its caller: whether to stop, and where to report progress.
#[derive(Debug)]
pub struct Job<P> {
    stop: Arc<AtomicBool>,
    progress: mpsc::UnboundedSender<P>,
}

impl<P> Job<P> {
    /// Raised when the caller went away: the job should return as soon as it can.
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Sends `progress` to the caller's callback (dropped if the caller went away).
    pub fn report(&self, progress: P) {
        let _ = self.progress.send(progress);
    }
}

/// Raises a job's stop flag when the caller's future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Counts a caller as waiting until it has a permit or went away.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CpuPool {
    /// A pool running at most `limit` jobs at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                permits: FairPermits::new(limit),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// Runs `work` for `principal` on a blocking thread once a permit is free for it,
    /// calling `on_progress` here with what the job reports, and returns the job's
    /// result.
    ///
    /// # Errors
    /// [`CpuError::Failed`] when the job panicked.
    ///
    /// # Cancel safety
    /// Dropping the future gives up a place in the queue at once, or raises the running
    /// job's stop flag; the job's permit is returned when the job has returned.
    pub async fn run<T, P>(
        &self,
        principal: &str,
        work: impl FnOnce(&Job<P>) -> T + Send + 'static,
        mut on_progress: impl FnMut(P),
    ) -> Result<T, CpuError>
    where
        T: Send + 'static,
        P: Send + 'static,
    {
        let permit = {
            let _waiting = Waiting::new(&self.shared.waiting);
            self.shared.permits.acquire(principal).await
        };
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let (progress, mut reports) = mpsc::unbounded_channel();
        let job = Job { stop, progress };
        let mut handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&job)
        });
        loop {
            tokio::select! {
                biased;
                Some(report) = reports.recv() => on_progress(report),
                joined = &mut handle => {
                    // Reports sent just before the job returned still reach the caller.
                    while let Ok(report) = reports.try_recv() {
                        on_progress(report);
                    }
                    return joined.map_err(|e| CpuError::Failed(e.to_string()));
                }
            }
        }
    }

    /// The pool's figures now.
    pub fn stats(&self) -> CpuStats {
        let s = &self.shared;
        CpuStats {
            limit: s.permits.limit(),
            running: s.permits.held(),
            waiting: s.waiting.load(Ordering::Relaxed),
        }
    }

    /// Registers the pool's `cpu_jobs_*` series with `metrics`, read from
    /// [`CpuPool::stats`] at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(CpuFigures(self.clone()));
    }
}

/// The `cpu_jobs_*` series: the pool's [`CpuStats`] at scrape time.
#[derive(Debug)]
struct CpuFigures(CpuPool);

impl Collector for CpuFigures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let cpu = self.0.stats();
        encode_gauge(
            &mut enc,
            "cpu_jobs_limit",
            "Most CPU-heavy computations running at once (tools.cpu_concurrency)",
            cpu.limit as f64,
        )?;
        encode_gauge(
            &mut enc,
            "cpu_jobs_running",
            "CPU-heavy computations running (a cancelled one until it stops)",
            cpu.running as f64,
        )?;
        encode_gauge(
            &mut enc,
            "cpu_jobs_waiting",
            "Callers waiting for a CPU permit",
            cpu.waiting as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn register_metrics_exposes_the_pool_figures() {
        let metrics = Metrics::new("r", "memory");
        CpuPool::new(2).register_metrics(&metrics);
        let text = metrics.render();
        for line in [
            "# TYPE stateful_mcp_cpu_jobs_limit gauge\n",
            "stateful_mcp_cpu_jobs_limit{replica=\"r\"} 2.0\n",
            "stateful_mcp_cpu_jobs_running{replica=\"r\"} 0.0\n",
            "stateful_mcp_cpu_jobs_waiting{replica=\"r\"} 0.0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    /// A job that reports once, then spins until it is told to stop.
    fn until_stopped(job: &Job<()>) -> bool {
        job.report(());
        while !job.stop_flag().load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("not within 10 s: {what}"))
    }

    #[tokio::test]
    async fn progress_reaches_the_caller_and_the_result_comes_back() {
        let pool = CpuPool::new(2);
        let mut seen = Vec::new();
        let result = pool
            .run(
                "alice",
                |job| {
                    for i in 0..5 {
                        job.report(i);
                    }
                    "done"
                },
                |i| seen.push(i),
            )
            .await
            .unwrap();
        assert_eq!((result, seen), ("done", vec![0, 1, 2, 3, 4]));
        assert_eq!(pool.stats().running, 0);
    }

    #[tokio::test]
    async fn a_dropped_caller_stops_its_job_and_frees_the_permit() {
        let pool = CpuPool::new(1);
        let (started, mut has_started) = mpsc::unbounded_channel();
        let first = pool.run("alice", until_stopped, move |()| {
            let _ = started.send(());
        });
        // Dropped once the job runs, as a cancelled request drops it.
        tokio::select! {
            _ = first => panic!("the job runs until stopped"),
            _ = has_started.recv() => {}
        }
        let second = pool.run("alice", |_: &Job<()>| "second", |()| {});
        assert_eq!(
            bounded("the next job runs", second).await.unwrap(),
            "second"
        );
        assert_eq!(
            pool.stats(),
            CpuStats {
                limit: 1,
                running: 0,
                waiting: 0
            }
        );
    }

    #[tokio::test]
    async fn one_callers_queue_does_not_stand_before_another_caller() {
        let pool = CpuPool::new(1);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (started, mut has_started) = mpsc::unbounded_channel();
        let running = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run("alice", until_stopped, move |()| {
                    let _ = started.send(());
                })
                .await
            }
        });
        bounded("alice's first job starts", has_started.recv()).await;
        let queue = |who: &'static str| {
            let (pool, order) = (pool.clone(), order.clone());
            tokio::spawn(async move {
                pool.run(
                    who,
                    move |_: &Job<()>| order.lock().unwrap().push(who),
                    |()| {},
                )
                .await
            })
        };
        let mut queued = vec![queue("alice"), queue("alice")];
        while pool.stats().waiting < 2 {
            tokio::task::yield_now().await;
        }
        queued.push(queue("bob"));
        while pool.stats().waiting < 3 {
            tokio::task::yield_now().await;
        }
        running.abort();
        for job in queued {
            bounded("every queued job runs", job)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["bob", "alice", "alice"]);
    }

    #[tokio::test]
    async fn callers_beyond_the_limit_wait_and_a_panicking_job_is_an_error() {
        let pool = CpuPool::new(1);
        let (started, mut has_started) = mpsc::unbounded_channel();
        let running = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run("alice", until_stopped, move |()| {
                    let _ = started.send(());
                })
                .await
            }
        });
        bounded("the first job starts", has_started.recv()).await;
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run("alice", |_: &Job<()>| 1, |()| {}).await }
        });
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pool.stats(),
            CpuStats {
                limit: 1,
                running: 1,
                waiting: 1
            }
        );
        running.abort();
        assert_eq!(
            bounded("the queued job runs", queued)
                .await
                .unwrap()
                .unwrap(),
            1
        );
        let panicked = pool
            .run("alice", |_: &Job<()>| panic!("boom"), |()| {})
            .await;
        assert!(matches!(panicked, Err(CpuError::Failed(_))));
    }
}
