//! `[tasks]`: background tasks (the MCP tasks extension): the replica's worker pool and
//! queue, how long records are kept, and the owner leases that let any replica fail a
//! task whose owner died.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, positive};

/// Background tasks: the replica's worker pool and the records every replica reads.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskSettings {
    /// Tasks running at once on a replica.
    pub workers: usize,
    /// Tasks waiting for a worker on a replica; beyond it a new task is refused.
    pub queue: usize,
    /// Most tasks of one principal running or waiting on a replica (its share of
    /// `workers + queue`, and at most all of them); beyond it a new task of that
    /// principal is refused.
    pub max_per_principal: usize,
    /// Seconds a task's record is kept after its last change (its `ttlMs`).
    pub ttl_secs: u64,
    /// Milliseconds clients are asked to wait between two `tasks/get` (`pollIntervalMs`).
    pub poll_interval_ms: u64,
    /// Milliseconds a running task's owner lease lasts; a task whose lease ran out is
    /// marked failed by any replica.
    pub lease_ms: u64,
    /// Milliseconds between two renewals of the leases a replica holds (well below
    /// `lease_ms`); also how often a running task re-reads its record for a cancel or an
    /// input it may have missed on the bus.
    pub renew_interval_ms: u64,
    /// Milliseconds between two sweeps for tasks whose lease ran out.
    pub sweep_interval_ms: u64,
    /// Seconds a task waits for the answers to its input requests before it gives up
    /// (and fails), freeing its place and its worker.
    pub input_timeout_secs: u64,
}

impl TaskSettings {
    /// `renew_interval_ms` as a duration.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.renew_interval_ms)
    }

    /// `input_timeout_secs` as a duration.
    pub fn input_timeout(&self) -> Duration {
        Duration::from_secs(self.input_timeout_secs)
    }

    /// `sweep_interval_ms` as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }

    /// Checks the `tasks.*` keys.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("tasks.workers", self.workers as u64)?;
        positive("tasks.max_per_principal", self.max_per_principal as u64)?;
        positive("tasks.ttl_secs", self.ttl_secs)?;
        positive("tasks.poll_interval_ms", self.poll_interval_ms)?;
        positive("tasks.renew_interval_ms", self.renew_interval_ms)?;
        positive("tasks.sweep_interval_ms", self.sweep_interval_ms)?;
        positive("tasks.input_timeout_secs", self.input_timeout_secs)?;
        if self.lease_ms < 2 * self.renew_interval_ms {
            return Err(ConfigError::Invalid {
                key: "tasks.lease_ms",
                reason: "must be at least twice tasks.renew_interval_ms, so one late \
                         renewal does not fail a running task"
                    .into(),
            });
        }
        Ok(())
    }
}
