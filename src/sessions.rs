//! The session state layer: create, get (which slides the expiry), update, counter,
//! history, delete, list a principal's sessions, stats and upkeep, over the memory and
//! the Redis backends with one behaviour.
//!
//! A session is both the state record of the 2026-07-28 handles (`session_create` mints
//! one) and the state of a 2025-era transport session (same id as `Mcp-Session-Id`, with
//! the client's `initialize` parameters kept in `transport`), so the two expire together.
//! Every operation names the caller's principal; a session owned by someone else looks
//! exactly like an unknown one. Which replica holds a 2025-era session, under a
//! [`Lease`], is the other half of the layer ([`Sessions::touch`],
//! [`Sessions::renew_leases`], [`Sessions::release_leases`]).
//!
//! Files: this one is the handle ([`Sessions`]) and its record operations; `record.rs`
//! the record and its tolerant decoding; `error.rs` the error; `holding.rs` the holding
//! types and operations; `retry_records.rs` the figures of keyed calls' retry records;
//! `memory.rs` and `redis.rs` the backends, each with its holding
//! operations in a `holding.rs` beside it (and Redis's create and delete steps in
//! `redis/create.rs`, its indexes in `redis/index.rs`).
//! Every operation checks here what both backends share, then forwards the call with
//! the `dispatch!` of `src/backend.rs`.

mod error;
mod holding;
mod memory;
mod record;
mod redis;
mod retry_records;

use std::sync::Arc;

use serde_json::Value;

pub use self::error::SessionError;
pub use self::holding::{Holder, Lease, LeaseState, Renewal, Touched, Transport};
pub use self::memory::MemorySessions;
pub use self::record::{SCHEMA_VERSION, Session, SessionSummary, StoredSession};
pub use self::redis::RedisSessions;
use self::retry_records::RetryRecordCollector;
pub use self::retry_records::RetryRecordFigures;
use crate::{backend::dispatch, config::SessionSettings, metrics::Metrics};

/// The principal of unauthenticated callers.
pub const ANONYMOUS: &str = "anonymous";

/// Longest accepted data key, in bytes.
pub const MAX_DATA_KEY_BYTES: usize = 128;

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
    /// the first call created (live or not) instead of a new one. A principal keeps the
    /// records of its `session.max_retry_records` latest keyed creates at most.
    pub retry: Option<Retry>,
    /// The lease the creating replica takes on a 2025-era transport session.
    pub lease: Option<Lease>,
}

/// Totals over every live session of the deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStats {
    /// Live sessions. On Redis this also counts sessions being created and those that
    /// ended since the last maintenance round or two ([`Sessions::maintain`] finds them).
    pub total: u64,
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

    /// The retry records this replica wrote and dropped since start.
    pub fn retry_records(&self) -> RetryRecordFigures {
        match &self.backend {
            Backend::Memory(backend) => backend.retry_records(),
            Backend::Redis(backend) => backend.retry_records(),
        }
    }

    /// Registers the `retry_records_*` series with `metrics`, read from
    /// [`Sessions::retry_records`] at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(RetryRecordCollector(self.clone()));
    }

    /// Creates a session owned by `new.principal`.
    ///
    /// # Errors
    /// [`SessionError::TooManySessions`] at the per-principal limit,
    /// [`SessionError::ClientMetadataTooLarge`] when `client_info` and `transport`
    /// together exceed `session.max_client_metadata_bytes`,
    /// [`SessionError::Invalid`] for a malformed id, [`SessionError::Unavailable`] (on
    /// Redis also when the store was too slow to write the session before its
    /// reservation ran out: nothing was made).
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
        // A read changes nothing, so its retry needs no record: it reads again.
        let retry = retry.filter(|_| !matches!(op, CounterOp::Get));
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
        let retry = retry.filter(|_| !matches!(op, HistoryOp::List));
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

    /// Totals over every live session (on Redis, a constant number of commands in one
    /// round trip, whatever the number of sessions).
    ///
    /// # Errors
    /// [`SessionError::Unavailable`].
    pub async fn stats(&self) -> Result<SessionStats, SessionError> {
        dispatch!(Backend: &self.backend => stats())
    }

    /// Calls `visit` with every live session until it returns `false`: on Redis, the
    /// buckets of the index of every session a page at a time (`ZSCAN`), each page's
    /// records in one round trip, on a single node or a cluster alike.
    ///
    /// # Errors
    /// [`SessionError::Unavailable`], also on the memory backend (its sessions live in
    /// the serving process only).
    pub async fn census(
        &self,
        visit: &mut (dyn FnMut(StoredSession) -> bool + Send),
    ) -> Result<(), SessionError> {
        match &self.backend {
            Backend::Redis(redis) => redis.census(visit).await,
            Backend::Memory(_) => Err(SessionError::Unavailable(
                "the memory backend's sessions live in the serving process only".to_owned(),
            )),
        }
    }

    /// One round of background upkeep: on Redis, flushes this replica's newest access
    /// time and checks a bounded batch of each bucket of the index of all sessions
    /// (entries whose score has passed: gone ones leave the bucket and their owner's
    /// index, live ones are scored again); in memory, drops expired sessions. Returns
    /// how many ended sessions it removed.
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
