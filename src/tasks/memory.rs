//! The memory backend: one replica's task records in a map under a lock, with the same
//! transitions as the Redis scripts (each one step under the lock) and lazy expiry.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use serde_json::Value as Json;

use super::{
    Answers, Changed, Held, NewTask, Settled, Swept, TaskError, TaskRecord, TaskStatus, TaskTimes,
    lease_lost_error,
};

/// Cheap-clone handle on the in-process task records.
#[derive(Clone, Default)]
pub struct MemoryTasks {
    tasks: Arc<Mutex<HashMap<String, Entry>>>,
}

struct Entry {
    record: TaskRecord,
    /// When the record expires, ms: `ttl` after its last change or lease renewal, as
    /// the Redis record's TTL.
    expires_ms: i64,
    /// End of the owner lease, ms (unfinished tasks only).
    lease_until: i64,
    /// Answers received for requests no longer pending.
    answers: BTreeMap<String, Json>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Entry {
    fn expired(&self, now: i64) -> bool {
        now >= self.expires_ms
    }

    /// Keeps the record `ttl` from now.
    fn keep(&mut self, now: i64) {
        self.expires_ms = now.saturating_add_unsigned(self.record.ttl_ms);
    }

    fn touch(&mut self, now: i64) {
        self.record.updated_ms = now;
        self.keep(now);
    }

    fn settle(&mut self, settled: &Settled, now: i64) {
        let (status, _, _) = settled.parts();
        self.record.status = status;
        match settled {
            Settled::Completed(result) => self.record.result = Some(result.clone()),
            Settled::Failed(error) => self.record.error = Some(error.clone()),
            Settled::Cancelled => {}
        }
        self.record.input_requests.clear();
        self.answers.clear();
        self.touch(now);
    }

    /// The task as the running replica `replica` may still act on it.
    fn held_by(&self, replica: &str) -> Held {
        if self.record.replica != replica || self.record.status.is_terminal() {
            Held::Lost
        } else {
            Held::Running(self.record.status)
        }
    }
}

impl MemoryTasks {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every transition is a few field writes that cannot panic half-way.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the live entry `id`, dropping it first if it expired.
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Entry, i64) -> T) -> Option<T> {
        let now = now_ms();
        let mut tasks = self.lock();
        if tasks.get(id).is_some_and(|e| e.expired(now)) {
            tasks.remove(id);
        }
        tasks.get_mut(id).map(|e| f(e, now))
    }

    pub(super) async fn create(
        &self,
        new: &NewTask,
        times: TaskTimes,
    ) -> Result<TaskRecord, TaskError> {
        let now = now_ms();
        let record = TaskRecord::working(new, times, now);
        let mut tasks = self.lock();
        if tasks.get(&new.id).is_some_and(|e| !e.expired(now)) {
            return Err(TaskError::Exists);
        }
        tasks.insert(
            new.id.clone(),
            Entry {
                record: record.clone(),
                expires_ms: now.saturating_add_unsigned(times.ttl_ms),
                lease_until: now.saturating_add_unsigned(times.lease_ms),
                answers: BTreeMap::new(),
            },
        );
        Ok(record)
    }

    pub(super) async fn get(&self, owner: &str, id: &str) -> Result<Option<TaskRecord>, TaskError> {
        Ok(self
            .with(id, |e, _| {
                (e.record.owner == owner).then(|| e.record.clone())
            })
            .flatten())
    }

    pub(super) async fn update(
        &self,
        owner: &str,
        id: &str,
        answers: &BTreeMap<String, Json>,
    ) -> Result<Option<Changed>, TaskError> {
        Ok(self
            .with(id, |e, now| {
                if e.record.owner != owner {
                    return None;
                }
                if e.record.status == TaskStatus::InputRequired {
                    for (key, answer) in answers {
                        if e.record.input_requests.remove(key).is_some() {
                            e.answers.insert(key.clone(), answer.clone());
                        }
                    }
                    if e.record.input_requests.is_empty() {
                        e.record.status = TaskStatus::Working;
                    }
                    e.touch(now);
                }
                Some(Changed {
                    status: e.record.status,
                    replica: e.record.replica.clone(),
                })
            })
            .flatten())
    }

    pub(super) async fn cancel(&self, owner: &str, id: &str) -> Result<Option<Changed>, TaskError> {
        Ok(self
            .with(id, |e, now| {
                if e.record.owner != owner {
                    return None;
                }
                if !e.record.status.is_terminal() {
                    e.settle(&Settled::Cancelled, now);
                }
                Some(Changed {
                    status: e.record.status,
                    replica: e.record.replica.clone(),
                })
            })
            .flatten())
    }

    pub(super) async fn renew(
        &self,
        id: &str,
        replica: &str,
        message: Option<&str>,
        times: TaskTimes,
    ) -> Result<Held, TaskError> {
        Ok(self
            .with(id, |e, now| {
                let held = e.held_by(replica);
                if held != Held::Lost {
                    e.lease_until = now.saturating_add_unsigned(times.lease_ms);
                    e.keep(now);
                    if let Some(m) = message {
                        e.record.message = Some(m.to_owned());
                        e.touch(now);
                    }
                }
                held
            })
            .unwrap_or(Held::Lost))
    }

    pub(super) async fn ask(
        &self,
        id: &str,
        replica: &str,
        requests: &BTreeMap<String, Json>,
    ) -> Result<Held, TaskError> {
        Ok(self
            .with(id, |e, now| {
                if e.held_by(replica) != Held::Running(TaskStatus::Working) {
                    return Held::Lost;
                }
                e.record.input_requests = requests.clone();
                e.answers.clear();
                e.record.status = TaskStatus::InputRequired;
                e.touch(now);
                Held::Running(TaskStatus::InputRequired)
            })
            .unwrap_or(Held::Lost))
    }

    pub(super) async fn take(&self, id: &str, replica: &str) -> Result<Answers, TaskError> {
        Ok(self
            .with(id, |e, _| match e.held_by(replica) {
                Held::Running(TaskStatus::Working) => {
                    Answers::Ready(std::mem::take(&mut e.answers))
                }
                Held::Running(_) => Answers::Waiting,
                Held::Lost => Answers::Lost,
            })
            .unwrap_or(Answers::Lost))
    }

    pub(super) async fn finish(
        &self,
        id: &str,
        replica: &str,
        settled: &Settled,
    ) -> Result<bool, TaskError> {
        Ok(self
            .with(id, |e, now| {
                let running = e.held_by(replica) != Held::Lost;
                if running {
                    e.settle(settled, now);
                }
                running
            })
            .unwrap_or(false))
    }

    pub(super) async fn sweep(&self) -> Result<Vec<Swept>, TaskError> {
        let now = now_ms();
        let mut tasks = self.lock();
        tasks.retain(|_, e| !e.expired(now));
        let mut failed = Vec::new();
        for e in tasks.values_mut() {
            if !e.record.status.is_terminal() && e.lease_until <= now {
                e.settle(&Settled::Failed(lease_lost_error()), now);
                failed.push(Swept {
                    id: e.record.id.clone(),
                    owner: e.record.owner.clone(),
                });
            }
        }
        Ok(failed)
    }
}
