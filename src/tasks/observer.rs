//! [`TaskObserver`]: who hears of a task's status changes on the replica that runs it.
//!
//! The runner calls it after each change it makes or sees (created working, waiting
//! for input, working again once answered, ended), with the record as `tasks/get` would
//! read it then and the opaque origin the task was submitted with (the 2025-era session
//! that started it, if any). What it does with them (notifications to the owner's
//! listen streams and session) is the MCP layer's business.

use async_trait::async_trait;

use super::TaskRecord;

/// Hears the status changes of the tasks this replica runs.
#[async_trait]
pub trait TaskObserver: Send + Sync {
    /// Task `record` is now in `record.status`; `origin` is what
    /// [`super::TaskManager::submit_from`] was given. Runs on the task's own worker, so
    /// it should return quickly; a failure is the observer's to log.
    async fn status_changed(&self, record: &TaskRecord, origin: Option<&str>);
}
