//! [`TaskContext`]: what a running job can do with its task (report progress, ask the
//! client for input), through the runner's store and notices.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value as Json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Answers, Held, runner::Shared};

/// Why [`TaskContext::ask`] got no answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoInput {
    /// The job runs inline, outside any task: it cannot ask.
    Inline,
    /// The store could not record the request.
    NotRecorded,
    /// The task ended meanwhile (cancelled, or failed by another replica); the job is
    /// stopped.
    Ended,
    /// No answers came within `tasks.input_timeout_secs`.
    TimedOut,
}

impl std::fmt::Display for NoInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoInput::Inline => {
                "this tool asks for input while it runs: call it as a task \
                 (declare the io.modelcontextprotocol/tasks extension)"
            }
            NoInput::NotRecorded => "the input request could not be recorded; start the task again",
            NoInput::Ended => "the task ended while it waited for input",
            NoInput::TimedOut => {
                "no answer to the task's input requests came within tasks.input_timeout_secs; \
                 start the task again"
            }
        })
    }
}

/// What a running job can do with its task: report progress and ask the client for
/// input. A context made by [`TaskContext::inline`] (a task tool called without the
/// tasks extension) does neither.
pub struct TaskContext {
    id: String,
    /// The principal whose call started the job (empty inline: the replica's own).
    owner: Arc<str>,
    /// Where the call that started it came from (see [`super::TaskObserver`]).
    origin: Option<Arc<str>>,
    shared: Option<Arc<Shared>>,
    stop: CancellationToken,
    wake: Arc<Notify>,
}

impl TaskContext {
    /// The context of task `id` running on `shared`'s replica.
    pub(super) fn new(
        id: String,
        owner: Arc<str>,
        origin: Option<Arc<str>>,
        shared: Arc<Shared>,
        stop: CancellationToken,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            id,
            owner,
            origin,
            shared: Some(shared),
            stop,
            wake,
        }
    }

    /// The task's id (empty inline).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The principal whose call started the task (empty inline), for the shares the job
    /// draws on (the CPU pool).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Where the call that started the task came from, if it said.
    pub(super) fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The token that stops the job.
    pub(super) fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// A context for running a job's work in the request itself, outside any task.
    pub fn inline() -> Self {
        Self {
            id: String::new(),
            owner: "".into(),
            origin: None,
            shared: None,
            stop: CancellationToken::new(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Whether the job runs as a stored task (and can ask for input).
    pub fn is_task(&self) -> bool {
        self.shared.is_some()
    }

    /// Records `message` as the task's status message (best effort: a store error is
    /// logged and the work goes on).
    pub async fn progress(&self, message: &str) {
        let Some(shared) = &self.shared else { return };
        match shared
            .store
            .renew(&self.id, &shared.replica, Some(message), shared.times)
            .await
        {
            Ok(Held::Lost) => self.stop.cancel(),
            Ok(Held::Running(_)) => {}
            Err(e) => tracing::warn!(error = %e, "task progress not recorded"),
        }
    }

    /// Parks the task as `input_required` with `requests` (keyed by ids unique within
    /// the task) and waits until the client answered all of them with `tasks/update`,
    /// for at most `tasks.input_timeout_secs` (the task keeps its place and worker while
    /// it waits).
    ///
    /// # Errors
    /// [`NoInput`]: the job runs inline, the store could not record the request, its
    /// task ended meanwhile (the job is then stopped), or no answer came in time.
    pub async fn ask(
        &self,
        requests: BTreeMap<String, Json>,
    ) -> Result<BTreeMap<String, Json>, NoInput> {
        let shared = self.shared.as_ref().ok_or(NoInput::Inline)?;
        match shared.store.ask(&self.id, &shared.replica, &requests).await {
            Ok(Held::Running(_)) => {
                shared
                    .status_changed(&self.id, &self.owner, self.origin())
                    .await;
            }
            Ok(Held::Lost) => {
                self.stop.cancel();
                return Err(NoInput::Ended);
            }
            Err(e) => {
                tracing::warn!(error = %e, "task input request not recorded");
                return Err(NoInput::NotRecorded);
            }
        }
        let give_up = tokio::time::Instant::now() + shared.input_timeout;
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(shared.renew_interval) => {}
                () = tokio::time::sleep_until(give_up) => return Err(NoInput::TimedOut),
            }
            match shared.store.take(&self.id, &shared.replica).await {
                Ok(Answers::Ready(answers)) => {
                    shared
                        .status_changed(&self.id, &self.owner, self.origin())
                        .await;
                    return Ok(answers);
                }
                Ok(Answers::Waiting) => {}
                Ok(Answers::Lost) => {
                    self.stop.cancel();
                    return Err(NoInput::Ended);
                }
                // The store is down: keep waiting; the lease decides if it lasts.
                Err(e) => tracing::warn!(error = %e, "task input not read"),
            }
        }
    }
}
