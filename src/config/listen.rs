//! `[listen]`: the bounds of the 2026-07-28 `subscriptions/listen` streams one replica
//! holds.

use serde::Deserialize;

use super::{ConfigError, positive};

/// Bounds of the `subscriptions/listen` streams one replica holds.
#[derive(Debug, Clone, Deserialize)]
pub struct ListenSettings {
    /// Most listen streams open on one replica; a further `subscriptions/listen` is
    /// refused before it is acknowledged.
    pub max_streams: usize,
    /// Notifications waiting to be written to one stream; a stream that falls this far
    /// behind is closed with an error (the client listens again) instead of growing.
    pub stream_buffer: usize,
}

impl ListenSettings {
    /// Checks the `listen.*` keys.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `listen.max_streams` or `listen.stream_buffer`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("listen.max_streams", self.max_streams as u64)?;
        positive("listen.stream_buffer", self.stream_buffer as u64)?;
        if self.max_streams > 65_536 || self.stream_buffer > 4096 {
            return Err(ConfigError::Invalid {
                key: "listen.max_streams",
                reason: "listen.max_streams must be at most 65536 and listen.stream_buffer \
                         at most 4096"
                    .into(),
            });
        }
        Ok(())
    }
}
