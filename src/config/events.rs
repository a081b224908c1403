//! `[events]`: the Redis event store behind `Last-Event-ID` resumption of 2025-era
//! response streams: how long streams are kept, and how long a resumed one waits.

use serde::Deserialize;

use super::{ConfigError, positive};

/// Largest `events.max_followers`, the number of Redis Cluster hash slots: past it a
/// replica's slot readers could not grow, only the followers' buffers.
const MAX_FOLLOWERS: usize = 16_384;

/// Settings of the Redis event store behind `Last-Event-ID` resumption.
#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    /// Whether 2025-era response streams are stored for `Last-Event-ID` resumption (on
    /// the Redis backend). Off saves one Redis round trip per SSE event.
    pub enabled: bool,
    /// Seconds a stream's events are kept after its last event.
    pub ttl_secs: u64,
    /// Seconds a request stream is kept once its final response is stored: the window
    /// in which a client that lost the response can resume (at most `ttl_secs`).
    pub completed_ttl_secs: u64,
    /// Seconds a request stream is kept once its final response is stored while its
    /// client still reads it (at most `completed_ttl_secs`): a delivered response needs
    /// no resumption but by a client whose connection broke right after it.
    pub delivered_ttl_secs: u64,
    /// Events kept per stream (approximately: Redis trims whole nodes).
    pub max_len: usize,
    /// Seconds a resumed stream waits for its next event before it ends (the client can
    /// resume again).
    pub follow_idle_timeout_secs: u64,
    /// Most streams a replica follows at once (resumed streams waiting for events); on
    /// Redis Cluster also the most reader connections it opens (one per hash slot
    /// followed). A resumption past it gets the stored events and ends.
    pub max_followers: usize,
    /// Read followed streams per hash slot also when `redis.mode` is not `cluster`: for a
    /// single node that refuses cross-slot commands.
    pub per_slot_readers: bool,
}

impl EventSettings {
    /// Checks the `events.*` keys: each TTL positive and no longer than the one before.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key out of range.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("events.ttl_secs", self.ttl_secs)?;
        positive("events.completed_ttl_secs", self.completed_ttl_secs)?;
        if self.completed_ttl_secs > self.ttl_secs {
            return Err(ConfigError::Invalid {
                key: "events.completed_ttl_secs",
                reason: "must not exceed events.ttl_secs".into(),
            });
        }
        positive("events.delivered_ttl_secs", self.delivered_ttl_secs)?;
        if self.delivered_ttl_secs > self.completed_ttl_secs {
            return Err(ConfigError::Invalid {
                key: "events.delivered_ttl_secs",
                reason: "must not exceed events.completed_ttl_secs".into(),
            });
        }
        positive("events.max_len", self.max_len as u64)?;
        positive(
            "events.follow_idle_timeout_secs",
            self.follow_idle_timeout_secs,
        )?;
        positive("events.max_followers", self.max_followers as u64)?;
        if self.max_followers > MAX_FOLLOWERS {
            return Err(ConfigError::Invalid {
                key: "events.max_followers",
                reason: format!("must be at most {MAX_FOLLOWERS}"),
            });
        }
        Ok(())
    }
}
