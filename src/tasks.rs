//! Background tasks any replica can answer for: durable records ([`TaskStore`]), the
//! replica's bounded worker pool ([`TaskManager`]), and what a running job sees
//! ([`TaskContext`]).
//!
//! A task's record (status, message, result or error, pending input, owner principal,
//! the replica running it) lives in the store with a TTL, so `tasks/get`, `tasks/update`
//! and `tasks/cancel` work on every replica; every change is one atomic step (one Lua
//! script on Redis) that checks the caller's principal or the running replica. The work
//! itself runs on the replica that accepted it, under an owner lease it renews: when a
//! replica dies, any replica's sweep marks its tasks failed once their lease ran out.
//! Cancels and input answers reach the running replica over the [`crate::bus`], and
//! the runner re-reads the record every renewal in case the bus missed one.
//!
//! The domain knows nothing of MCP: results, errors and input requests are JSON the MCP
//! layer ([`crate::mcp`]) writes and reads.

mod context;
mod memory;
mod observer;
mod redis;
mod runner;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value as Json;

pub use self::{
    context::{NoInput, TaskContext},
    memory::MemoryTasks,
    observer::TaskObserver,
    redis::RedisTasks,
    runner::{Job, Outcome, TaskManager},
};
use crate::{backend::dispatch, redis_pool::RedisPoolError};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Running (or waiting for a worker).
    Working,
    /// Waiting for the client to answer its input requests with `tasks/update`.
    InputRequired,
    /// Done, with a result (which may be a tool error).
    Completed,
    /// Ended by an error, or abandoned by a replica that died or shut down.
    Failed,
    /// Cancelled by its caller.
    Cancelled,
}

impl TaskStatus {
    /// The name stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Working => "working",
            Self::InputRequired => "input_required",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "working" => Self::Working,
            "input_required" => Self::InputRequired,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// One task as a caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The task's id (minted by [`crate::ids::mint`]).
    pub id: String,
    /// The principal that started it: nobody else sees it.
    pub owner: String,
    /// The replica that runs it.
    pub replica: String,
    /// The tool it runs.
    pub tool: String,
    /// Its status.
    pub status: TaskStatus,
    /// The latest progress or status message.
    pub message: Option<String>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Time of the last change, ms since the Unix epoch.
    pub updated_ms: i64,
    /// How long the record is kept after its last change, ms.
    pub ttl_ms: u64,
    /// How long clients should wait between two polls, ms.
    pub poll_ms: u64,
    /// The result of a completed task.
    pub result: Option<Json>,
    /// The error of a failed task (a JSON-RPC error object).
    pub error: Option<Json>,
    /// The input requests still unanswered, by key (while `input_required`).
    pub input_requests: BTreeMap<String, Json>,
    /// The W3C `traceparent` of the call that started it, while traces are exported:
    /// a replica answering for it puts the answer in that trace.
    pub trace: Option<String>,
}

impl TaskRecord {
    /// The record of `new` as created at `now_ms`: working, nothing reported yet.
    pub(crate) fn working(new: &NewTask, times: TaskTimes, now_ms: i64) -> Self {
        Self {
            id: new.id.clone(),
            owner: new.owner.clone(),
            replica: new.replica.clone(),
            tool: new.tool.clone(),
            status: TaskStatus::Working,
            message: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            ttl_ms: times.ttl_ms,
            poll_ms: times.poll_ms,
            result: None,
            error: None,
            input_requests: BTreeMap::new(),
            trace: new.trace.clone(),
        }
    }

    /// Builds a record from a stored hash's fields; unknown fields are ignored so an
    /// older build reads records a newer one wrote.
    fn from_fields(id: &str, fields: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut r = Self {
            id: id.to_owned(),
            owner: String::new(),
            replica: String::new(),
            tool: String::new(),
            status: TaskStatus::Failed,
            message: None,
            created_ms: 0,
            updated_ms: 0,
            ttl_ms: 0,
            poll_ms: 0,
            result: None,
            error: None,
            input_requests: BTreeMap::new(),
            trace: None,
        };
        let json = |v: &str| serde_json::from_str(v).unwrap_or(Json::Null);
        for (field, value) in fields {
            match field.as_str() {
                "owner" => r.owner = value,
                "replica" => r.replica = value,
                "tool" => r.tool = value,
                "status" => r.status = TaskStatus::parse(&value).unwrap_or(TaskStatus::Failed),
                "msg" => r.message = Some(value),
                "created" => r.created_ms = value.parse().unwrap_or_default(),
                "updated" => r.updated_ms = value.parse().unwrap_or_default(),
                "ttl" => r.ttl_ms = value.parse().unwrap_or_default(),
                "poll" => r.poll_ms = value.parse().unwrap_or_default(),
                "result" => r.result = Some(json(&value)),
                "error" => r.error = Some(json(&value)),
                "trace" if value.len() <= MAX_TRACE => r.trace = Some(value),
                _ => {
                    if let Some(key) = field.strip_prefix("q:") {
                        r.input_requests.insert(key.to_owned(), json(&value));
                    }
                }
            }
        }
        r
    }
}

/// A task about to be stored.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Its id.
    pub id: String,
    /// The principal starting it.
    pub owner: String,
    /// The replica that will run it.
    pub replica: String,
    /// The tool it runs.
    pub tool: String,
    /// The W3C `traceparent` of the call starting it (at most [`MAX_TRACE`] bytes),
    /// `None` while traces are not exported.
    pub trace: Option<String>,
}

/// Longest `traceparent` a task record keeps.
pub const MAX_TRACE: usize = 128;

/// Timing every record carries: retention, polling hint, lease.
#[derive(Debug, Clone, Copy)]
pub struct TaskTimes {
    /// Retention after the last change, ms.
    pub ttl_ms: u64,
    /// Polling hint, ms.
    pub poll_ms: u64,
    /// Owner lease, ms.
    pub lease_ms: u64,
}

impl From<&crate::config::TaskSettings> for TaskTimes {
    fn from(s: &crate::config::TaskSettings) -> Self {
        Self {
            ttl_ms: s.ttl_secs.saturating_mul(1000),
            poll_ms: s.poll_interval_ms,
            lease_ms: s.lease_ms,
        }
    }
}

/// What a caller's `tasks/update` or `tasks/cancel` did: the status after it and the
/// replica to tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// The task's status afterwards.
    pub status: TaskStatus,
    /// The replica running it.
    pub replica: String,
}

/// The running replica's view of its task's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Still ours, in this status.
    Running(TaskStatus),
    /// Ended (cancelled, or failed by the sweep), expired, or no longer ours: stop.
    Lost,
}

/// What waiting for input found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answers {
    /// Every request is answered: the answers by key.
    Ready(BTreeMap<String, Json>),
    /// Some requests are still unanswered.
    Waiting,
    /// The task ended meanwhile (or the record is gone): stop.
    Lost,
}

/// How a task ended, as the running replica reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Completed with this result (a tool error is a completed result too).
    Completed(Json),
    /// Failed with this JSON-RPC error object.
    Failed(Json),
    /// Stopped because it was cancelled.
    Cancelled,
}

/// A task a sweep failed because its replica stopped renewing its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The task's id.
    pub id: String,
    /// Its owner principal.
    pub owner: String,
}

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The store could not be reached or answered something unexpected.
    #[error("task store unavailable: {0}")]
    Unavailable(String),
    /// Every worker is busy and the queue is full.
    #[error(
        "the task queue is full ({capacity} tasks running or waiting on this replica); \
         retry later"
    )]
    QueueFull {
        /// Workers plus queue places.
        capacity: usize,
    },
    /// The caller's principal has its share of the places admitted on this replica.
    #[error(
        "you have {share} tasks running or waiting on this replica, your share; retry when \
         one has ended"
    )]
    ShareFull {
        /// The places one principal may hold (`tasks.max_per_principal`).
        share: usize,
    },
    /// The replica is shutting down and takes no new tasks.
    #[error("this replica is shutting down and takes no new tasks; retry")]
    Draining,
    /// The id is already used (never happens with minted ids).
    #[error("task id already in use")]
    Exists,
}

impl From<RedisPoolError> for TaskError {
    fn from(e: RedisPoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<::redis::RedisError> for TaskError {
    fn from(e: ::redis::RedisError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<::redis::ParsingError> for TaskError {
    fn from(e: ::redis::ParsingError) -> Self {
        Self::Unavailable(format!("unexpected reply: {e}"))
    }
}

/// The error a task gets when its replica stopped renewing its lease.
pub fn lease_lost_error() -> Json {
    serde_json::json!({
        "code": -32603,
        "message": "the replica running this task stopped (crashed or lost its store) \
                    before the task finished; start it again",
    })
}

/// The error a task gets when its replica shut down before it finished.
pub fn handed_back_error() -> Json {
    serde_json::json!({
        "code": -32603,
        "message": "the replica running this task shut down before the task finished; \
                    start it again",
    })
}

/// The task records: in this process, or in Redis for every replica. Each operation is
/// forwarded to the backend with the `dispatch!` of `src/backend.rs`.
#[derive(Clone)]
pub enum TaskStore {
    /// One replica's tasks in memory.
    Memory(MemoryTasks),
    /// Tasks in Redis, seen by every replica.
    Redis(RedisTasks),
}

impl TaskStore {
    /// Stores a new `working` task leased to its replica; once this returns, every
    /// replica finds it.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`], [`TaskError::Exists`].
    pub async fn create(&self, new: &NewTask, times: TaskTimes) -> Result<TaskRecord, TaskError> {
        dispatch!(TaskStore: self => create(new, times))
    }

    /// The task `id` of `owner`; `None` when it does not exist, expired, or is another
    /// principal's.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn get(&self, owner: &str, id: &str) -> Result<Option<TaskRecord>, TaskError> {
        dispatch!(TaskStore: self => get(owner, id))
    }

    /// Delivers `owner`'s answers to the task's pending input requests (keys it is not
    /// waiting on are ignored); `None` for an unknown task.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn update(
        &self,
        owner: &str,
        id: &str,
        answers: &BTreeMap<String, Json>,
    ) -> Result<Option<Changed>, TaskError> {
        dispatch!(TaskStore: self => update(owner, id, answers))
    }

    /// Cancels `owner`'s task unless it already ended; `None` for an unknown task.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn cancel(&self, owner: &str, id: &str) -> Result<Option<Changed>, TaskError> {
        dispatch!(TaskStore: self => cancel(owner, id))
    }

    /// Extends `replica`'s lease on task `id` (and sets its message, if given).
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn renew(
        &self,
        id: &str,
        replica: &str,
        message: Option<&str>,
        times: TaskTimes,
    ) -> Result<Held, TaskError> {
        dispatch!(TaskStore: self => renew(id, replica, message, times))
    }

    /// Parks `replica`'s working task `id` as `input_required` with `requests` pending.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn ask(
        &self,
        id: &str,
        replica: &str,
        requests: &BTreeMap<String, Json>,
    ) -> Result<Held, TaskError> {
        dispatch!(TaskStore: self => ask(id, replica, requests))
    }

    /// The answers to task `id`'s input requests, once all arrived (and forgets them).
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn take(&self, id: &str, replica: &str) -> Result<Answers, TaskError> {
        dispatch!(TaskStore: self => take(id, replica))
    }

    /// Settles `replica`'s task `id`; `false` when it had already ended (or is not
    /// `replica`'s any more) and nothing changed.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn finish(
        &self,
        id: &str,
        replica: &str,
        settled: &Settled,
    ) -> Result<bool, TaskError> {
        dispatch!(TaskStore: self => finish(id, replica, settled))
    }

    /// Fails every unfinished task whose lease ran out; returns how many.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn sweep(&self) -> Result<u64, TaskError> {
        Ok(self.sweep_failed().await?.len() as u64)
    }

    /// [`TaskStore::sweep`], naming the tasks it failed.
    ///
    /// # Errors
    /// [`TaskError::Unavailable`].
    pub async fn sweep_failed(&self) -> Result<Vec<Swept>, TaskError> {
        dispatch!(TaskStore: self => sweep())
    }
}

impl Settled {
    /// The stored status, payload field and payload.
    fn parts(&self) -> (TaskStatus, &'static str, String) {
        match self {
            Self::Completed(result) => (TaskStatus::Completed, "result", result.to_string()),
            Self::Failed(error) => (TaskStatus::Failed, "error", error.to_string()),
            Self::Cancelled => (TaskStatus::Cancelled, "", String::new()),
        }
    }
}
