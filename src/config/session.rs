//! `[session]`: session lifetime, size limits, upkeep, and the lease on a 2025-era
//! session's worker.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, positive};

/// Session lifetime and limits.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionSettings {
    /// Sliding expiry: a session ends after this many seconds without access.
    pub timeout_secs: u64,
    /// Largest total size of a session's `data` values, in bytes.
    pub max_data_bytes: usize,
    /// Largest total size, in bytes, of what a session stores about its client: the
    /// `clientInfo` and the 2025-era `initialize` parameters, serialized as stored.
    pub max_client_metadata_bytes: usize,
    /// Largest number of live sessions one principal may hold.
    pub max_sessions_per_principal: usize,
    /// Entries `history` keeps.
    pub history_limit: usize,
    /// Largest length of one `history` entry, in bytes.
    pub max_history_entry_bytes: usize,
    /// Seconds between two rounds of session upkeep on each replica.
    pub maintenance_interval_secs: u64,
    /// How long the first result of a call with an `idempotencyKey` is kept, so a retry
    /// with the same key gets it back instead of applying the change again.
    pub idempotency_ttl_secs: u64,
    /// Most retry records one session keeps, and most keyed-create records one
    /// principal keeps (the oldest go first).
    pub max_retry_records: usize,
    /// Most bytes of retry records one session keeps (the oldest go first); a
    /// principal keeps at most `max_sessions_per_principal` times this.
    pub max_retry_bytes: usize,
    /// How long a replica's hold on a 2025-era session lasts without renewal (it renews
    /// every third of it): after a replica dies, its sessions move to another replica
    /// at their first request after this at the latest, and sooner once the dead
    /// replica's liveness mark has run out.
    pub lease_secs: u64,
    /// How long a replica keeps an idle 2025-era session's worker (no request, no open
    /// stream) before closing it; the session stays in the store and its next request
    /// restores a worker.
    pub local_idle_secs: u64,
}

impl SessionSettings {
    /// The sliding expiry as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The lease on a 2025-era session as a [`Duration`].
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// How long an idle 2025-era session's worker is kept, as a [`Duration`].
    pub fn local_idle(&self) -> Duration {
        Duration::from_secs(self.local_idle_secs)
    }

    /// Checks the `session.*` keys.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("session.timeout_secs", self.timeout_secs)?;
        positive("session.max_data_bytes", self.max_data_bytes as u64)?;
        positive(
            "session.max_client_metadata_bytes",
            self.max_client_metadata_bytes as u64,
        )?;
        positive(
            "session.max_sessions_per_principal",
            self.max_sessions_per_principal as u64,
        )?;
        positive("session.history_limit", self.history_limit as u64)?;
        positive(
            "session.max_history_entry_bytes",
            self.max_history_entry_bytes as u64,
        )?;
        positive(
            "session.maintenance_interval_secs",
            self.maintenance_interval_secs,
        )?;
        positive("session.idempotency_ttl_secs", self.idempotency_ttl_secs)?;
        positive("session.max_retry_records", self.max_retry_records as u64)?;
        positive("session.max_retry_bytes", self.max_retry_bytes as u64)?;
        positive("session.lease_secs", self.lease_secs)?;
        positive("session.local_idle_secs", self.local_idle_secs)?;
        if self.timeout_secs > i64::MAX as u64 / 1000 {
            return Err(ConfigError::Invalid {
                key: "session.timeout_secs",
                reason: "is too large".into(),
            });
        }
        Ok(())
    }
}
