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

/// Tells `shared`'s observer, if it has one, of task `id`'s status as the store holds
/// it now (one read; nothing when no observer is set or the record is gone).
pub(super) async fn status_changed(
    shared: &super::runner::Shared,
    id: &str,
    owner: &str,
    origin: Option<&str>,
) {
    let Some(observer) = shared.observer.get() else {
        return;
    };
    match shared.store.get(owner, id).await {
        Ok(Some(record)) => observer.status_changed(&record, origin).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "task status not read for its notification"),
    }
}
