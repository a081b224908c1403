//! The session state layer: create, get (which slides the expiry), update, delete, list a
//! principal's sessions, and stats, over the memory and the Redis backends with one
//! behaviour.
//!
//! A session is both the state record of the 2026-07-28 handles (`session_create` mints
//! one) and the state of a 2025-era transport session (same id as `Mcp-Session-Id`, with
//! the client's `initialize` parameters kept in `transport`), so the two expire together.
//! Every operation names the caller's principal; a session owned by someone else looks
//! exactly like an unknown one.
//!
//! A 2025-era transport session is also *held* by one replica, under a [`Lease`]: the
//! replica whose process runs its worker, its SSE streams and the requests it sends the
//! client. [`Sessions::touch`] says which replica holds it (taking the lease when it is
//! free or expired, in the same script), the holder renews its leases with
//! [`Sessions::renew_leases`] and hands them over with [`Sessions::release_leases`].
//!
//! Every operation checks here what both backends share, then forwards the call with
//! the `dispatch!` of `src/backend.rs`.

mod memory;
mod record;
mod redis;

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

pub use self::memory::MemorySessions;
pub use self::record::{SCHEMA_VERSION, Session, SessionSummary};
pub use self::redis::RedisSessions;
use crate::{backend::dispatch, config::SessionSettings, redis_pool::RedisPoolError};

/// The principal of unauthenticated callers.
pub const ANONYMOUS: &str = "anonymous";

/// Longest accepted data key, in bytes.
pub const MAX_DATA_KEY_BYTES: usize = 128;

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
    /// been applied. Retrying it with the same [`Retry`] applies it at most once.
    #[error("session store did not answer in time: {0}")]
    OutcomeUnknown(String),
    /// The [`Retry`] key was already used for a request with other arguments.
    #[error("the idempotency key was already used with other arguments")]
    RetryConflict,
}

/// What makes a change idempotent: a digest naming the caller, the tool and the caller's
/// idempotency key, and a fingerprint of the request's arguments. The first result under
/// `key` is kept for `session.idempotency_ttl_secs` with the session; a retry under the
/// same key gets it back without a second change, and one with another fingerprint is a
/// [`SessionError::RetryConflict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Digest of (principal, tool, idempotency key): hex, key-safe.
    pub key: String,
    /// Digest of the request's arguments.
    pub fingerprint: String,
}

impl From<RedisPoolError> for SessionError {
    fn from(e: RedisPoolError) -> Self {
        Self::Unavailable(e.to_string())
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

/// Counter operations, applied atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOp {
    /// Read the value (0 when unset).
    Get,
    /// Add a (possibly negative) amount.
    Add(i64),
    /// Set it back to 0.
    Reset,
}

/// History operations, applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryOp {
    /// Read the entries, oldest first.
    List,
    /// Append an entry, dropping the oldest beyond the limit.
    Add(String),
    /// Remove every entry.
    Clear,
}

/// What [`Sessions::create`] stores in a new session.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// The id to use; `None` mints one (see [`crate::ids::mint`]).
    pub id: Option<String>,
    /// The owning principal.
    pub principal: String,
    /// The client's self-description (`clientInfo`), when known.
    pub client_info: Option<Value>,
    /// Transport state to restore a 2025-era session on another replica.
    pub transport: Option<Value>,
    /// An idempotent create: a retry with the same key and arguments gets the session
    /// the first call created (live or not) instead of a new one.
    pub retry: Option<Retry>,
    /// The lease the creating replica takes on a 2025-era transport session.
    pub lease: Option<Lease>,
}

/// A replica that can hold 2025-era transport sessions: its id and the URL other
/// replicas forward the session's requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The replica id.
    pub replica: String,
    /// Its advertised base URL (`http://10.0.0.7:8080`).
    pub url: String,
}

/// A replica's claim on the sessions it holds: who, and for how long without renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The claiming replica.
    pub holder: Holder,
    /// How long the claim lasts unless renewed.
    pub ttl: std::time::Duration,
}

impl Lease {
    /// The claim's length in whole milliseconds, at least 1 (0 tells the lease script to
    /// release).
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What [`Sessions::touch`] found for a live transport session.
#[derive(Debug, Clone, PartialEq)]
pub struct Touched {
    /// The stored transport state (`null` for a session that has none: a 2026-07-28
    /// handle).
    pub transport: Value,
    /// The replica holding the session under a live lease, if any (always `None` on the
    /// memory backend, where there is one replica).
    pub holder: Option<Holder>,
}

/// One session whose lease [`Sessions::renew_leases`] renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The session id.
    pub id: String,
    /// The session's owner when the holder served it without a touch since the last
    /// renewal: the renewal then also slides its expiry and records the access in its
    /// owner's index, as a touch would have.
    pub used_by: Option<String>,
}

impl Renewal {
    /// A renewal of session `id`'s lease alone.
    pub fn unused(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            used_by: None,
        }
    }
}

/// Where a replica's lease on one session stands after [`Sessions::renew_leases`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still this replica's (renewed or released as asked).
    Held,
    /// Another replica holds the session now (it took over an expired lease).
    Lost,
    /// The session no longer exists (deleted or expired).
    Gone,
}

/// Totals over every live session of the deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStats {
    /// Live sessions.
    pub total: u64,
    /// The live session created first.
    pub oldest: Option<SessionSummary>,
    /// Newest access to any session, in milliseconds since the Unix epoch. On Redis this
    /// includes other replicas' accesses up to the maintenance interval ago.
    pub most_recent_access_ms: Option<i64>,
}

/// The closed set of backends, each with the same operations (see [`crate::backend`]).
#[derive(Debug, Clone)]
enum Backend {
    Memory(MemorySessions),
    Redis(RedisSessions),
}

/// Cheap-clone handle on the session layer (clones share the same backend).
#[derive(Debug, Clone)]
pub struct Sessions {
    backend: Backend,
    limits: Arc<SessionSettings>,
}

impl Sessions {
    /// Sessions held in this process.
    pub fn memory(limits: SessionSettings) -> Self {
        Self {
            backend: Backend::Memory(MemorySessions::new(limits.timeout())),
            limits: Arc::new(limits),
        }
    }

    /// Sessions held in Redis, shared by every replica.
    pub fn redis(store: RedisSessions, limits: SessionSettings) -> Self {
        Self {
            backend: Backend::Redis(store),
            limits: Arc::new(limits),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &SessionSettings {
        &self.limits
    }

    /// Creates a session owned by `new.principal`.
    ///
    /// # Errors
    /// [`SessionError::TooManySessions`] at the per-principal limit,
    /// [`SessionError::ClientMetadataTooLarge`] when `client_info` and `transport`
    /// together exceed `session.max_client_metadata_bytes`,
    /// [`SessionError::Invalid`] for a malformed id, [`SessionError::Unavailable`].
    pub async fn create(&self, new: NewSession) -> Result<Session, SessionError> {
        if let Some(id) = &new.id
            && !crate::ids::is_well_formed(id)
        {
            return Err(SessionError::Invalid("malformed session id".into()));
        }
        // Checked here, before either backend stores anything: the metadata never changes
        // after creation, so this one check bounds it for the session's whole life.
        let size = [&new.client_info, &new.transport]
            .into_iter()
            .flatten()
            .map(json_len)
            .sum();
        let limit = self.limits.max_client_metadata_bytes;
        if size > limit {
            return Err(SessionError::ClientMetadataTooLarge { size, limit });
        }
        dispatch!(Backend: &self.backend => create(new, &self.limits))
    }

    /// Returns the session and slides its expiry.
    ///
    /// # Errors
    /// [`SessionError::NotFound`], [`SessionError::Unavailable`].
    pub async fn get(&self, principal: &str, id: &str) -> Result<Session, SessionError> {
        check_id(id)?;
        dispatch!(Backend: &self.backend => get(principal, id))
    }

    /// Slides the expiry and, if the session is live, returns its transport state and
    /// the replica holding it. With `lease`, in the same round trip: a session whose
    /// lease is free or expired is taken for `lease` (when `take`), and one the lease's
    /// replica already holds has its lease renewed (when `take`).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn touch(
        &self,
        principal: &str,
        id: &str,
        lease: Option<&Lease>,
        take: bool,
    ) -> Result<Option<Touched>, SessionError> {
        if !crate::ids::is_well_formed(id) {
            return Ok(None);
        }
        dispatch!(Backend: &self.backend => touch(principal, id, lease.filter(|_| take)))
    }

    /// Renews `lease` on each of `sessions` it still holds, in one round trip per batch;
    /// says where each stands (same order as `sessions`). The expiry of a session is
    /// slid only when it was used since its last renewal ([`Renewal::used_by`]).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn renew_leases(
        &self,
        lease: &Lease,
        sessions: &[Renewal],
    ) -> Result<Vec<LeaseState>, SessionError> {
        dispatch!(Backend: &self.backend => renew_leases(lease, sessions))
    }

    /// Gives up `holder`'s lease on each of `ids` it holds, so the next request on any
    /// replica takes the session over at once (a draining replica).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn release_leases(
        &self,
        holder: &Holder,
        ids: &[String],
    ) -> Result<Vec<LeaseState>, SessionError> {
        dispatch!(Backend: &self.backend => release_leases(holder, ids))
    }

    /// Sets (`Some`) or removes (`None`) one data value.
    ///
    /// # Errors
    /// [`SessionError::NotFound`], [`SessionError::DataTooLarge`],
    /// [`SessionError::Invalid`] for a bad key, [`SessionError::Unavailable`].
    pub async fn update(
        &self,
        principal: &str,
        id: &str,
        key: &str,
        value: Option<&Value>,
    ) -> Result<(), SessionError> {
        check_id(id)?;
        if key.is_empty() || key.len() > MAX_DATA_KEY_BYTES {
            return Err(SessionError::Invalid(format!(
                "data keys must be 1 to {MAX_DATA_KEY_BYTES} bytes long"
            )));
        }
        let value = value.map(Value::to_string);
        dispatch!(Backend: &self.backend => update(principal, id, key, value, &self.limits))
    }

    /// Applies a counter operation and returns the new value.
    ///
    /// # Errors
    /// [`SessionError::NotFound`], [`SessionError::CounterOverflow`],
    /// [`SessionError::DataTooLarge`], [`SessionError::Unavailable`].
    pub async fn counter(
        &self,
        principal: &str,
        id: &str,
        op: CounterOp,
    ) -> Result<i64, SessionError> {
        self.counter_once(principal, id, op, None).await
    }

    /// [`Sessions::counter`], applied at most once per `retry` key.
    ///
    /// # Errors
    /// As [`Sessions::counter`], and [`SessionError::RetryConflict`].
    pub async fn counter_once(
        &self,
        principal: &str,
        id: &str,
        op: CounterOp,
        retry: Option<&Retry>,
    ) -> Result<i64, SessionError> {
        check_id(id)?;
        dispatch!(Backend: &self.backend => counter(principal, id, op, retry, &self.limits))
    }

    /// Applies a history operation and returns the entries after it, oldest first.
    ///
    /// # Errors
    /// [`SessionError::NotFound`], [`SessionError::DataTooLarge`],
    /// [`SessionError::Invalid`] for an oversized entry, [`SessionError::Unavailable`].
    pub async fn history(
        &self,
        principal: &str,
        id: &str,
        op: HistoryOp,
    ) -> Result<Vec<String>, SessionError> {
        self.history_once(principal, id, op, None).await
    }

    /// [`Sessions::history`], applied at most once per `retry` key.
    ///
    /// # Errors
    /// As [`Sessions::history`], and [`SessionError::RetryConflict`].
    pub async fn history_once(
        &self,
        principal: &str,
        id: &str,
        op: HistoryOp,
        retry: Option<&Retry>,
    ) -> Result<Vec<String>, SessionError> {
        check_id(id)?;
        if let HistoryOp::Add(entry) = &op
            && entry.len() > self.limits.max_history_entry_bytes
        {
            return Err(SessionError::Invalid(format!(
                "history entries are limited to {} bytes",
                self.limits.max_history_entry_bytes
            )));
        }
        dispatch!(Backend: &self.backend => history(principal, id, op, retry, &self.limits))
    }

    /// Deletes the session; `false` when there was none to delete.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn delete(&self, principal: &str, id: &str) -> Result<bool, SessionError> {
        if !crate::ids::is_well_formed(id) {
            return Ok(false);
        }
        dispatch!(Backend: &self.backend => delete(principal, id))
    }

    /// The principal's live sessions, oldest first.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn list(&self, principal: &str) -> Result<Vec<SessionSummary>, SessionError> {
        dispatch!(Backend: &self.backend => list(principal))
    }

    /// Totals over every live session.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn stats(&self) -> Result<SessionStats, SessionError> {
        dispatch!(Backend: &self.backend => stats())
    }

    /// One round of background upkeep: on Redis, flushes this replica's newest access
    /// time, refreshes the TTL of the index of all sessions and prunes expired ids from it
    /// (principals' indexes are kept by the scripts themselves); in memory, drops expired
    /// sessions. Returns how many expired sessions it removed.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn maintain(&self) -> Result<u64, SessionError> {
        dispatch!(Backend: &self.backend => maintain())
    }
}

fn check_id(id: &str) -> Result<(), SessionError> {
    if crate::ids::is_well_formed(id) {
        Ok(())
    } else {
        Err(SessionError::NotFound(id.chars().take(64).collect()))
    }
}

/// The length of `value` serialized as compact JSON (as both backends store it), counted
/// without building the string.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Parses stored data values, keeping undecodable ones as strings so a record written by
/// a newer replica never fails to load.
fn decode_data(raw: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, Value> {
    raw.into_iter()
        .map(|(k, v)| {
            let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
            (k, value)
        })
        .collect()
}
