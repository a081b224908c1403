//! `[rate_limit]`: requests per principal, shared by every replica, and what a request
//! gets when the limiter's Redis cannot be reached.

use serde::Deserialize;

use super::{ConfigError, positive};

/// Per-principal request rate limits.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    /// Sustained requests per second per principal across all replicas; 0 = no limit.
    pub requests_per_sec: u32,
    /// Requests a principal may make at once above the sustained rate.
    pub burst: u32,
    /// What a request gets when the limiter's Redis cannot be reached: `open` (served)
    /// or `closed` (503).
    pub on_redis_error: FailMode,
}

/// Whether requests pass or fail when a check cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Serve the request.
    Open,
    /// Refuse the request.
    Closed,
}

impl RateLimitSettings {
    /// Checks the `rate_limit.*` keys: a limit needs a burst.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `rate_limit.burst`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.requests_per_sec > 0 {
            positive("rate_limit.burst", u64::from(self.burst))?;
        }
        Ok(())
    }
}
