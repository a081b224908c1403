//! `[store]`: which backend holds sessions and tool state.

use serde::Deserialize;

/// Storage backend choice.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    /// `memory` (single replica, nothing to install) or `redis` (any number of replicas).
    pub backend: Backend,
}

/// The closed set of state backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process maps: state dies with the process; one replica only.
    Memory,
    /// Redis: state shared by every replica.
    Redis,
}
