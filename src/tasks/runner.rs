//! [`TaskManager`]: the replica's bounded worker pool for tasks, their owner leases, the
//! sweep for tasks other replicas abandoned, and cancel/input delivery over the bus.
//!
//! Admission is bounded: at most `workers` jobs run and `queue` more wait for a worker;
//! one more is refused with [`TaskError::QueueFull`] before anything is stored. One
//! principal holds at most `max_per_principal` of those places (beyond it
//! [`TaskError::ShareFull`]), so one caller cannot take every place, and a free worker
//! goes to the waiting task whose principal runs fewest ([`FairPermits`]), so one
//! caller's queue does not stand before another's task. A place is held from admission
//! until the job ends: it completes or fails, its caller cancels it, its lease is lost,
//! or the replica hands it back; a caller that went away without cancelling leaves its
//! task running to its end (one waiting for input waits until answered or cancelled).
//! A job is a future; stopping it drops it at its next await point.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use serde_json::Value as Json;
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::{
    Held, NewTask, Settled, TaskContext, TaskError, TaskObserver, TaskRecord, TaskStore, TaskTimes,
    handed_back_error,
};
use crate::{
    bus::{Bus, BusHandler, BusMessage},
    config::TaskSettings,
    fair::FairPermits,
    metrics::{Metrics, encode_gauge},
};

/// The bus topic that carries cancels and input notices to the running replica.
const TOPIC: &str = "tasks";
/// How long a hand-back waits for stopped jobs to record that they were handed back.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// How a job ended on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A result (a tool error is a result too).
    Completed(Json),
    /// A JSON-RPC error object.
    Failed(Json),
}

/// The work of one task: given its context, a future to its outcome.
pub type Job = Box<dyn FnOnce(TaskContext) -> BoxFuture<'static, Outcome> + Send>;

/// Cheap-clone handle on the replica's task runner; clones share the pool.
#[derive(Clone)]
pub struct TaskManager {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) store: TaskStore,
    pub(super) replica: Arc<str>,
    pub(super) times: TaskTimes,
    pub(super) renew_interval: Duration,
    /// How long a task waits for its input (`tasks.input_timeout_secs`).
    pub(super) input_timeout: Duration,
    sweep_interval: Duration,
    /// Workers plus queue places.
    capacity: usize,
    /// The places one principal may hold.
    share: usize,
    /// Tasks admitted and not finished (running or waiting for a worker).
    admitted: AtomicUsize,
    /// Places held, by principal (no entry for none): at most `capacity` entries.
    admitted_by: Mutex<HashMap<Arc<str>, usize>>,
    workers: FairPermits,
    running: Mutex<HashMap<String, Running>>,
    tracker: TaskTracker,
    /// No new tasks: the replica is draining.
    draining: AtomicBool,
    /// Jobs stopped from now on were handed back, not cancelled by their caller.
    handing_back: AtomicBool,
    bus: Option<Bus>,
    /// Hears every status change of the tasks run here (set once, by the MCP layer).
    pub(super) observer: OnceLock<Arc<dyn TaskObserver>>,
}

/// A task this replica runs.
struct Running {
    stop: CancellationToken,
    /// Wakes a job waiting for input to re-read its record.
    wake: Arc<Notify>,
}

/// A place in the pool held for a principal, given back when dropped.
struct Slot {
    shared: Arc<Shared>,
    owner: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by = self.shared.admitted_by();
        if let Some(n) = by.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.owner);
            }
        }
        self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Tells the observer, if one is set, of task `id`'s status as the store holds it
    /// now (one read; nothing when no observer is set or the record is gone).
    pub(super) async fn status_changed(&self, id: &str, owner: &str, origin: Option<&str>) {
        let Some(observer) = self.observer.get() else {
            return;
        };
        match self.store.get(owner, id).await {
            Ok(Some(record)) => observer.status_changed(&record, origin).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "task status not read for its notification"),
        }
    }

    fn admitted_by(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Only counting runs under the lock.
        self.admitted_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a task of `owner`, within the pool and the owner's share.
    fn admit(self: &Arc<Self>, owner: &str) -> Result<Slot, TaskError> {
        let mut by = self.admitted_by();
        if self.admitted.load(Ordering::Acquire) >= self.capacity {
            return Err(TaskError::QueueFull {
                capacity: self.capacity,
            });
        }
        let owner: Arc<str> = owner.into();
        let held = by.entry(owner.clone()).or_default();
        if *held >= self.share {
            if *held == 0 {
                by.remove(&owner);
            }
            return Err(TaskError::ShareFull { share: self.share });
        }
        *held += 1;
        self.admitted.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            shared: self.clone(),
            owner,
        })
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        // Only plain map operations run under the lock.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Acts on a notice for task `id` if this replica runs it.
    fn notice(&self, kind: Notice, id: &str) {
        if let Some(task) = self.running().get(id) {
            match kind {
                Notice::Cancel => task.stop.cancel(),
                Notice::Input => task.wake.notify_one(),
            }
        }
    }
}

/// What a bus message tells the running replica.
#[derive(Debug, Clone, Copy)]
enum Notice {
    /// The task was cancelled: stop it.
    Cancel,
    /// Input arrived: re-read the record.
    Input,
}

impl Notice {
    fn byte(self) -> u8 {
        match self {
            Self::Cancel => b'c',
            Self::Input => b'i',
        }
    }
}

struct Listener(Arc<Shared>);

impl BusHandler for Listener {
    fn on_message(&self, msg: BusMessage) {
        let Some((&kind, id)) = msg.payload.split_first() else {
            return;
        };
        let kind = match kind {
            b'c' => Notice::Cancel,
            b'i' => Notice::Input,
            _ => return,
        };
        if let Ok(id) = std::str::from_utf8(id) {
            self.0.notice(kind, id);
        }
    }

    fn on_gap(&self) {
        // A cancel may have been missed: the next renewal re-reads every record anyway;
        // jobs waiting for input look now.
        for task in self.0.running().values() {
            task.wake.notify_one();
        }
    }
}

impl TaskManager {
    /// A runner for this replica over `store`, listening on `bus` for notices when
    /// there is one (the Redis backend). Start its upkeep with [`TaskManager::run_upkeep`].
    pub fn new(
        store: TaskStore,
        replica: Arc<str>,
        settings: &TaskSettings,
        bus: Option<Bus>,
    ) -> Self {
        let shared = Arc::new(Shared {
            store,
            replica,
            times: settings.into(),
            renew_interval: settings.renew_interval(),
            input_timeout: settings.input_timeout(),
            sweep_interval: settings.sweep_interval(),
            capacity: settings.workers.saturating_add(settings.queue),
            share: settings
                .max_per_principal
                .min(settings.workers.saturating_add(settings.queue)),
            admitted: AtomicUsize::new(0),
            admitted_by: Mutex::new(HashMap::new()),
            workers: FairPermits::new(settings.workers),
            running: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            draining: AtomicBool::new(false),
            handing_back: AtomicBool::new(false),
            bus,
            observer: OnceLock::new(),
        });
        if let Some(bus) = &shared.bus {
            bus.subscribe(TOPIC, Arc::new(Listener(shared.clone())));
        }
        Self { shared }
    }

    /// Has `observer` hear every status change of the tasks this replica runs from now
    /// on. Only the first observer set is kept; `false` when one was set already.
    pub fn observe(&self, observer: Arc<dyn TaskObserver>) -> bool {
        self.shared.observer.set(observer).is_ok()
    }

    /// The records, for reads and the caller's updates.
    pub fn store(&self) -> &TaskStore {
        &self.shared.store
    }

    /// Tasks admitted on this replica and not finished (running or queued).
    pub fn admitted(&self) -> usize {
        self.shared.admitted.load(Ordering::Acquire)
    }

    /// Most tasks admitted at once on this replica (workers plus queue places).
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Registers the runner's `tasks_*` series with `metrics`, read from
    /// [`TaskManager::admitted`] and [`TaskManager::capacity`] at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(TaskFigures(self.clone()));
    }

    /// Stores a task for `owner` running `tool` and starts `job` on the pool. The task is
    /// durably stored when this returns, so any replica answers for it at once.
    ///
    /// # Errors
    /// [`TaskError::QueueFull`] when every worker and queue place is taken,
    /// [`TaskError::ShareFull`] when `owner` holds its share of them,
    /// [`TaskError::Draining`] during a shutdown, [`TaskError::Unavailable`] when the
    /// store cannot take the record (nothing runs then).
    pub async fn submit(&self, owner: &str, tool: &str, job: Job) -> Result<TaskRecord, TaskError> {
        self.submit_from(owner, tool, job, None).await
    }

    /// [`TaskManager::submit`] for a call that came from `origin` (an opaque name the
    /// [`TaskObserver`] gets with every status change: the 2025-era session, if any).
    ///
    /// # Errors
    /// As [`TaskManager::submit`].
    pub async fn submit_from(
        &self,
        owner: &str,
        tool: &str,
        job: Job,
        origin: Option<&str>,
    ) -> Result<TaskRecord, TaskError> {
        let shared = &self.shared;
        if shared.draining.load(Ordering::Acquire) {
            return Err(TaskError::Draining);
        }
        let slot = shared.admit(owner)?;
        // The task's run is a span under the call starting it, and the record keeps
        // that call's trace context so whichever replica answers for the task joins it.
        let span = tracing::info_span!(
            target: crate::telemetry::OTEL_TARGET,
            "task",
            otel.name = tracing::field::Empty,
            gen_ai.tool.name = tool,
        );
        if !span.is_disabled() {
            span.record("otel.name", format!("task {tool}"));
        }
        let new = NewTask {
            id: crate::ids::mint(),
            owner: owner.to_owned(),
            replica: shared.replica.to_string(),
            tool: tool.to_owned(),
            trace: crate::telemetry::propagation::traceparent(&span),
        };
        let record = shared.store.create(&new, shared.times).await?;
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        shared.running().insert(
            new.id.clone(),
            Running {
                stop: stop.clone(),
                wake: wake.clone(),
            },
        );
        let origin: Option<Arc<str>> = origin.map(Into::into);
        let context = TaskContext::new(
            new.id.clone(),
            owner.into(),
            origin.clone(),
            shared.clone(),
            stop,
            wake,
        );
        tracing::info!(task = %crate::ids::fingerprint(&new.id), tool, "task started");
        shared
            .tracker
            .spawn(run(shared.clone(), job, context, slot, record.clone()).instrument(span));
        Ok(record)
    }

    /// Tells the replica running task `id` (this one or another, over the bus) that it
    /// was cancelled.
    pub async fn notify_cancel(&self, id: &str, replica: &str) {
        self.deliver(Notice::Cancel, id, replica).await;
    }

    /// Tells the replica running task `id` that input arrived.
    pub async fn notify_input(&self, id: &str, replica: &str) {
        self.deliver(Notice::Input, id, replica).await;
    }

    async fn deliver(&self, kind: Notice, id: &str, replica: &str) {
        if replica == &*self.shared.replica {
            self.shared.notice(kind, id);
            return;
        }
        let Some(bus) = &self.shared.bus else { return };
        let mut payload = Vec::with_capacity(1 + id.len());
        payload.push(kind.byte());
        payload.extend_from_slice(id.as_bytes());
        if let Err(e) = bus.publish(TOPIC, &payload).await {
            // The running replica re-reads the record at its next renewal.
            tracing::warn!(error = %e, "task notice not published");
        }
    }

    /// One renewal round: extends the lease of every task this replica runs, stops
    /// those that ended elsewhere (cancelled, or failed by a sweep), and wakes those
    /// waiting for input to re-read their record.
    pub async fn renew_once(&self) {
        let shared = &self.shared;
        let ids: Vec<String> = shared.running().keys().cloned().collect();
        for id in ids {
            match shared
                .store
                .renew(&id, &shared.replica, None, shared.times)
                .await
            {
                Ok(Held::Lost) => shared.notice(Notice::Cancel, &id),
                Ok(Held::Running(_)) => shared.notice(Notice::Input, &id),
                Err(e) => tracing::warn!(error = %e, "task lease not renewed"),
            }
        }
    }

    /// One sweep: fails every task whose owner lease ran out (any replica's).
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn sweep_once(&self) -> Result<u64, TaskError> {
        let swept = self.shared.store.sweep_failed().await?;
        if !swept.is_empty() {
            tracing::warn!(
                failed = swept.len(),
                "tasks failed: their replica stopped renewing leases"
            );
        }
        // Their replica cannot tell it: this one does (to the owners' listen streams;
        // which session started each task died with that replica).
        for task in &swept {
            self.shared
                .status_changed(&task.id, &task.owner, None)
                .await;
        }
        Ok(swept.len() as u64)
    }

    /// Renews leases and sweeps on their intervals until `shutdown`.
    pub async fn run_upkeep(self, shutdown: CancellationToken) {
        let mut renew = tokio::time::interval(self.shared.renew_interval);
        let mut sweep = tokio::time::interval(self.shared.sweep_interval);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = renew.tick() => self.renew_once().await,
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep_once().await {
                        tracing::warn!(error = %e, "task sweep failed");
                    }
                }
            }
        }
    }

    /// Takes no new tasks and waits for the running and queued ones to finish.
    ///
    /// # Cancel safety
    /// Dropping the future stops the wait only; [`TaskManager::hand_back`] ends the rest.
    pub async fn drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
        self.shared.tracker.close();
        let left = self.admitted();
        if left > 0 {
            tracing::info!(tasks = left, "draining: waiting for running tasks");
        }
        self.shared.tracker.wait().await;
    }

    /// Stops every task still running and records each as failed with an error that
    /// says the replica shut down, so callers learn it at once instead of after the
    /// lease.
    pub async fn hand_back(&self) {
        let shared = &self.shared;
        shared.draining.store(true, Ordering::Release);
        shared.handing_back.store(true, Ordering::Release);
        shared.tracker.close();
        let stopped: Vec<CancellationToken> =
            shared.running().values().map(|t| t.stop.clone()).collect();
        if stopped.is_empty() {
            return;
        }
        tracing::warn!(tasks = stopped.len(), "handing back unfinished tasks");
        stopped.iter().for_each(CancellationToken::cancel);
        if tokio::time::timeout(HAND_BACK_WAIT, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("handed-back tasks not all recorded; their leases will expire");
        }
    }
}

/// Runs one admitted job: waits for a worker, runs it unless stopped, records the end.
async fn run(shared: Arc<Shared>, job: Job, context: TaskContext, slot: Slot, created: TaskRecord) {
    let id = context.id().to_owned();
    let owner = context.owner().to_owned();
    let origin = context.origin().map(str::to_owned);
    // Told here rather than before the call is answered: the answer waits for no
    // notification, and every later change is told after this one, from this task.
    if let Some(observer) = shared.observer.get() {
        observer.status_changed(&created, origin.as_deref()).await;
    }
    let stop = context.stop_token();
    let ended = async {
        let _permit = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            permit = shared.workers.acquire(context.owner()) => permit,
        };
        let work = std::panic::AssertUnwindSafe(job(context)).catch_unwind();
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            outcome = work => Some(outcome.unwrap_or_else(|_| Outcome::Failed(serde_json::json!({
                "code": -32603,
                "message": "the task failed with an internal error",
            })))),
        }
    }
    .await;
    let settled = match ended {
        Some(Outcome::Completed(result)) => Settled::Completed(result),
        Some(Outcome::Failed(error)) => Settled::Failed(error),
        None if shared.handing_back.load(Ordering::Acquire) => Settled::Failed(handed_back_error()),
        // Cancelled by its caller (already recorded) or lost: this changes nothing
        // unless the record still says it runs here.
        None => Settled::Cancelled,
    };
    let task = crate::ids::fingerprint(&id);
    let ended = match shared.store.finish(&id, &shared.replica, &settled).await {
        Ok(true) => {
            tracing::info!(%task, status = ?settled_status(&settled), "task ended");
            true
        }
        Ok(false) => {
            tracing::info!(%task, "task stopped; its record had already ended");
            true
        }
        // The lease runs out and a sweep records the failure.
        Err(e) => {
            tracing::warn!(%task, error = %e, "task end not recorded");
            false
        }
    };
    if ended {
        // Whoever ended it (this job, its caller's cancel, a sweep), the record says how.
        shared.status_changed(&id, &owner, origin.as_deref()).await;
    }
    shared.running().remove(&id);
    drop(slot);
}

fn settled_status(settled: &Settled) -> super::TaskStatus {
    settled.parts().0
}

/// The `tasks_*` series: the runner's admissions at scrape time.
struct TaskFigures(TaskManager);

impl std::fmt::Debug for TaskFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFigures").finish_non_exhaustive()
    }
}

impl Collector for TaskFigures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        encode_gauge(
            &mut enc,
            "tasks_admitted",
            "Background tasks running or waiting for a worker on this replica",
            self.0.admitted() as f64,
        )?;
        encode_gauge(
            &mut enc,
            "tasks_capacity",
            "Most background tasks admitted at once (tasks.workers + tasks.queue)",
            self.0.capacity() as f64,
        )
    }
}

#[cfg(test)]
mod tests;
