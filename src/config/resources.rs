//! `[resources]`: the lifecycle manager of the long-lived resources tools open (files,
//! dedicated Redis connections): what `file_read` serves, and when idle ones close.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, positive};

/// The resource lifecycle manager and the tools over it.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceSettings {
    /// Directory `file_read` serves (read-only, nothing outside it); empty = the `file`
    /// kind is off.
    pub file_root: PathBuf,
    /// Most bytes one `file_read` returns.
    pub max_read_bytes: usize,
    /// Seconds an unreferenced resource stays open before the sweep cleans it.
    pub idle_timeout_secs: u64,
    /// Seconds between idle sweeps.
    pub sweep_interval_secs: u64,
    /// Most open resources of one kind on a replica.
    pub max_per_kind: usize,
    /// Most open resources of one kind charged to one principal on a replica (its
    /// share of `max_per_kind`; at most all of them).
    pub max_per_principal: usize,
}

impl ResourceSettings {
    /// Checks the `resources.*` keys.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("resources.max_read_bytes", self.max_read_bytes as u64)?;
        if self.max_read_bytes > 16 << 20 {
            return Err(ConfigError::Invalid {
                key: "resources.max_read_bytes",
                reason: "must not exceed 16 MiB".into(),
            });
        }
        positive("resources.idle_timeout_secs", self.idle_timeout_secs)?;
        positive("resources.sweep_interval_secs", self.sweep_interval_secs)?;
        positive("resources.max_per_kind", self.max_per_kind as u64)?;
        positive("resources.max_per_principal", self.max_per_principal as u64)
    }
}
