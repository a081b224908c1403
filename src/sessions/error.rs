//! What can go wrong with a session operation, and how the Redis client's and the pool's
//! failures map onto it.

use crate::redis_pool::RedisPoolError;

/// What can go wrong with a session operation.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No live session with this id belongs to the caller (never existed, expired,
    /// deleted, or owned by another principal).
    #[error("session `{0}` is unknown or has expired")]
    NotFound(String),
    /// The write would take the session's data above its byte limit.
    #[error("session data would exceed the limit of {limit} bytes")]
    DataTooLarge {
        /// The configured `session.max_data_bytes`.
        limit: usize,
    },
    /// What the session would store about its client (`clientInfo` and the `initialize`
    /// parameters) is larger than allowed; nothing was stored.
    #[error(
        "client metadata (clientInfo and initialize parameters) of {size} bytes exceeds \
         the limit of {limit} bytes"
    )]
    ClientMetadataTooLarge {
        /// The serialized size of the metadata offered.
        size: usize,
        /// The configured `session.max_client_metadata_bytes`.
        limit: usize,
    },
    /// The principal already holds the maximum number of live sessions.
    #[error("principal already holds the maximum of {limit} live sessions; delete one first")]
    TooManySessions {
        /// The configured `session.max_sessions_per_principal`.
        limit: usize,
    },
    /// The counter would leave the signed 64-bit range.
    #[error("counter would overflow the 64-bit integer range")]
    CounterOverflow,
    /// A caller-supplied value is unusable (bad key, oversized entry, non-integer counter).
    #[error("{0}")]
    Invalid(String),
    /// The backend is unreachable or refused the operation before running it: nothing
    /// happened.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The operation was sent but no answer came back in time: it may or may not have
    /// been applied. Retrying it with the same [`Retry`](super::Retry) applies it at
    /// most once.
    #[error("session store did not answer in time: {0}")]
    OutcomeUnknown(String),
    /// The [`Retry`](super::Retry) key was already used for a request with other arguments.
    #[error("the idempotency key was already used with other arguments")]
    RetryConflict,
}

impl From<RedisPoolError> for SessionError {
    fn from(e: RedisPoolError) -> Self {
        match e {
            RedisPoolError::Command(e) => e.into(),
            e @ RedisPoolError::Unacknowledged { .. } => Self::OutcomeUnknown(e.to_string()),
            e @ RedisPoolError::Unavailable(_) => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<::redis::ParsingError> for SessionError {
    fn from(e: ::redis::ParsingError) -> Self {
        Self::Unavailable(format!("unexpected reply: {e}"))
    }
}

impl From<::redis::RedisError> for SessionError {
    fn from(e: ::redis::RedisError) -> Self {
        // Sent but unanswered (a timeout, or the connection lost under it): the script
        // may have run.
        if e.is_timeout() || e.is_connection_dropped() {
            Self::OutcomeUnknown(e.to_string())
        } else {
            Self::Unavailable(e.to_string())
        }
    }
}
