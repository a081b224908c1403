//! [`RedisEventStore`]: appending events to a response stream (one script per event,
//! none for a request stream's priming event), replaying a stream after an event id and
//! following it through the replica's readers ([`Reader`]), and the retention of finished
//! streams (see the module docs of [`crate::events`]).

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures::StreamExt;
use redis::{RedisError, streams::StreamRangeReply};

use super::{
    EventKind, EventStream,
    format::{
        COMMON_SUFFIX, EntryId, FIELD_KIND, KIND_BARE, KIND_FINAL, KIND_MESSAGE, PRIMED, SEPARATOR,
        check_session_id, check_stream_id, decode_entry, duration_ms, parse_event_id,
    },
    open::OpenStreams,
    reader::Reader,
    writer::{Write, Writer},
};
use crate::{
    ids::fingerprint,
    jobs::Jobs,
    keys::Keys,
    metrics::Metrics,
    redis_pool::{RedisPool, RedisPoolError},
};

/// Entries read per `XRANGE` page while replaying.
const PAGE: usize = 128;
/// How long a resumption after a minted event id waits for that event's write (it is
/// written behind, usually within a millisecond), polling at [`PENDING_POLL`].
const PENDING_WAIT: Duration = Duration::from_secs(1);
const PENDING_POLL: Duration = Duration::from_millis(20);

/// `XADD` and `PEXPIRE` in one round trip; returns the new entry id.
const STORE_SCRIPT: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'k', ARGV[2], 'm', ARGV[3], 'r', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return id
";

/// Limits and timing of the event store.
#[derive(Debug, Clone)]
pub struct EventStoreSettings {
    /// How long a stream is kept after its last event (refreshed by every event): the
    /// window in which a client can resume it.
    pub ttl: Duration,
    /// How long a request stream is kept once its final response is stored when its
    /// client lost the connection before the end (or this replica cannot tell): the
    /// window in which that client resumes. At most [`Self::ttl`].
    pub completed_ttl: Duration,
    /// How long a request stream started here is kept once its final response is stored
    /// while its client is still reading it: only a client whose connection breaks
    /// after the response left this replica resumes it, within the SSE retry delay.
    /// Redis holds finished streams for this long, so their memory is the call rate
    /// times this window. At most [`Self::completed_ttl`].
    pub delivered_ttl: Duration,
    /// Approximate largest number of events kept per stream (Redis trims whole nodes, so
    /// a stream may hold somewhat more); older events can no longer be replayed.
    pub max_len: usize,
    /// How long one blocking `XREAD` of the reader waits; it also bounds how long a
    /// follower whose consumer left stays in the reader's key set.
    pub block: Duration,
    /// A followed request stream ends when no event arrived for this long, so a follower
    /// never hangs on a stream whose writer died or while Redis is unreachable; the client
    /// then resumes with its last event id. Standalone streams have no such bound.
    pub follow_idle_timeout: Duration,
    /// First delay before a reader reconnects after an error.
    pub min_backoff: Duration,
    /// Largest delay between a reader's reconnection attempts.
    pub max_backoff: Duration,
    /// Most streams a replica follows at once (each follower holds a buffer of events
    /// and, on Redis Cluster, may need a reader connection of its own: one per hash slot
    /// followed). A resumption past it gets the stored events, then ends; its client
    /// resumes again after its retry delay.
    pub max_followers: usize,
    /// Read the followed streams per hash slot, as on Redis Cluster (where it is always
    /// so), also on a single node: for a node that refuses cross-slot commands (a
    /// one-node cluster reached as a standalone node). Costs a connection per slot
    /// followed instead of one per replica.
    pub per_slot_readers: bool,
}

impl Default for EventStoreSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(15 * 60),
            completed_ttl: Duration::from_secs(60),
            delivered_ttl: Duration::from_secs(3),
            max_len: 1000,
            block: Duration::from_secs(5),
            follow_idle_timeout: Duration::from_secs(120),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_followers: 1024,
            per_slot_readers: false,
        }
    }
}

/// Why storing or replaying an event failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisEventStoreError {
    /// The event id does not have the `<stream_id>/<ms>-<seq>` shape this store issues.
    /// Like every id variant, it holds the id's fingerprint, never the id: a stream id
    /// names its session, a bearer credential, and these errors are logged (by rmcp
    /// too, as "Resume failed").
    #[error("malformed event id (fingerprint {0})")]
    MalformedEventId(String),
    /// The stream id is empty, too long or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid stream id (fingerprint {0})")]
    InvalidStreamId(String),
    /// The session id is empty, too long or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid session id (fingerprint {0})")]
    InvalidSessionId(String),
    /// No such event: its stream expired or never held it.
    #[error("unknown event id (fingerprint {0})")]
    UnknownEvent(String),
    /// The event's message could not be serialised.
    #[error("event message cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// Redis could not be reached or a command failed.
    #[error(transparent)]
    Redis(#[from] RedisPoolError),
}

impl From<RedisError> for RedisEventStoreError {
    fn from(error: RedisError) -> Self {
        Self::Redis(error.into())
    }
}

/// The Redis Streams event store shared by every session of a replica.
pub struct RedisEventStore {
    pool: RedisPool,
    keys: Keys,
    settings: EventStoreSettings,
    reader: Reader,
    /// The request streams started here whose retention is not settled yet.
    open: Mutex<OpenStreams>,
    /// Writes the events of the request streams started here, behind their delivery.
    writer: Writer,
    store_script: redis::Script,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("followers", &self.follower_count())
            .field("readers", &self.reader_count())
            .field("reader_connected", &self.is_reader_connected())
            .finish_non_exhaustive()
    }
}

impl RedisEventStore {
    /// Builds the store and adds its stream reader to `jobs`.
    ///
    /// Never fails: the reader connects (and reconnects) in the background. When its
    /// job stops, every followed stream ends.
    pub fn start(
        pool: RedisPool,
        keys: Keys,
        replica_id: impl Into<String>,
        settings: EventStoreSettings,
        jobs: &Jobs,
    ) -> Arc<Self> {
        let reader = Reader::start(
            pool.clone(),
            keys.clone(),
            replica_id.into(),
            settings.clone(),
            jobs,
        );
        let store_script = redis::Script::new(STORE_SCRIPT);
        pool.name_scripts(&[("events.store", &store_script)]);
        Arc::new(Self {
            open: Mutex::new(OpenStreams::new(settings.delivered_ttl)),
            writer: Writer::start(pool.clone(), settings.max_len, jobs),
            pool,
            keys,
            settings,
            reader,
            store_script,
        })
    }

    /// Persists an event of `kind` (its JSON `message`, empty for
    /// [`EventKind::Bare`], and its SSE `retry` hint) in stream `stream_id` of session
    /// `session_id`, and returns its event id. An event of a request stream started
    /// here is queued and written behind (see the module docs of [`crate::events`]):
    /// its write failing later is counted in [`Self::write_failures`], not returned.
    ///
    /// # Errors
    /// [`RedisEventStoreError::InvalidStreamId`] or
    /// [`RedisEventStoreError::InvalidSessionId`] for an id this store cannot key, or
    /// [`RedisEventStoreError::Redis`] when an event stored before its id goes out
    /// could not be committed.
    pub async fn append(
        &self,
        session_id: &str,
        stream_id: &str,
        kind: EventKind,
        message: String,
        retry: Option<Duration>,
    ) -> Result<String, RedisEventStoreError> {
        check_stream_id(stream_id)?;
        check_session_id(session_id)?;
        let request_stream = !stream_id.ends_with(COMMON_SUFFIX);
        let kind = match kind {
            EventKind::Bare => KIND_BARE,
            EventKind::Message => KIND_MESSAGE,
            EventKind::Final => KIND_FINAL,
        };
        let retry = retry
            .map(|retry| retry.as_millis().to_string())
            .unwrap_or_default();
        let settings = &self.settings;
        let key = self.keys.event_stream(session_id, stream_id);
        let finishing = request_stream && kind == KIND_FINAL;
        let mut delivered = false;
        let mut minted = None;
        if request_stream {
            let mut open = lock(&self.open);
            if kind == KIND_BARE && open.start(stream_id, &key) {
                return Ok(format!("{stream_id}{SEPARATOR}{PRIMED}"));
            }
            if finishing {
                delivered = open.being_delivered(stream_id, &key);
            }
            minted = open.mint(stream_id, &key);
        }
        // Nothing follows a request's final response: only a client that lost it will
        // read the stream again, so it need not outlive the short window.
        let ttl = match (finishing, delivered) {
            (false, _) => settings.ttl,
            (true, false) => settings.completed_ttl.min(settings.ttl),
            (true, true) => settings
                .delivered_ttl
                .min(settings.completed_ttl)
                .min(settings.ttl),
        };
        let stored = match minted {
            Some(id) => {
                self.writer
                    .write(Write::Append {
                        key: key.clone(),
                        id,
                        kind,
                        message,
                        retry,
                        ttl,
                    })
                    .await;
                Ok(id.to_string())
            }
            None => self.store_entry(&key, kind, message, retry, ttl).await,
        };
        if finishing && lock(&self.open).finished(stream_id, stored.is_ok(), delivered) {
            // Its client left while the response was being stored.
            self.extend(key);
        }
        Ok(format!("{stream_id}{SEPARATOR}{}", stored?))
    }

    /// What became of the response stream `stream_id` started here: its body
    /// `ended` after everything was sent, or was dropped first (its client left). A
    /// stream whose client left keeps its events for the resumption window.
    pub fn stream_closed(&self, stream_id: &str, ended: bool) {
        let abandoned = lock(&self.open).closed(stream_id, ended);
        if let Some(key) = abandoned {
            self.extend(key);
        }
    }

    /// Keeps stream `key`, already finished, for the resumption window (in the
    /// background: the request that needed it is gone), after its entries queued for
    /// writing.
    fn extend(&self, key: String) {
        let ttl = self.settings.completed_ttl.min(self.settings.ttl);
        self.writer.write_soon(Write::Extend { key, ttl });
    }

    /// Events whose write behind their delivery failed since start: while it grows,
    /// what a replica knows of its sessions may no longer hold in Redis.
    pub fn write_failures(&self) -> u64 {
        self.writer.failures()
    }

    /// Registers the `event_write*` series of the write-behind with `metrics`: writes
    /// done and failed, and what is queued (count and bytes).
    pub fn register_metrics(&self, metrics: &Metrics) {
        self.writer.register_metrics(metrics);
    }

    /// Appends one entry to stream `key`; returns its Redis entry id.
    async fn store_entry(
        &self,
        key: &str,
        kind: &str,
        message: String,
        retry: String,
        ttl: Duration,
    ) -> Result<String, RedisEventStoreError> {
        let mut conn = self.pool.get().await?;
        Ok(self
            .store_script
            .key(key)
            .arg(self.settings.max_len.max(1))
            .arg(kind)
            .arg(message)
            .arg(retry)
            .arg(duration_ms(ttl))
            .invoke_async(&mut conn)
            .await?)
    }

    /// The events of session `session_id`'s stream after `last_event_id`, then (unless
    /// the stream already ended) the events appended later by any replica, until the
    /// final response, the idle bound, the consumer dropping the stream or shutdown.
    ///
    /// # Errors
    /// [`RedisEventStoreError::MalformedEventId`],
    /// [`RedisEventStoreError::InvalidStreamId`] or
    /// [`RedisEventStoreError::InvalidSessionId`] for an id this store did not issue,
    /// [`RedisEventStoreError::UnknownEvent`] when the stream expired, never held the
    /// event or belongs to another session, [`RedisEventStoreError::Redis`] when Redis
    /// cannot be read.
    pub async fn replay(
        &self,
        session_id: &str,
        last_event_id: &str,
    ) -> Result<EventStream, RedisEventStoreError> {
        let (stream_id, after) = parse_event_id(last_event_id)?;
        check_session_id(session_id)?;
        let key = self.keys.event_stream(session_id, stream_id);
        let ends_on_final = !stream_id.ends_with(COMMON_SUFFIX);
        if ends_on_final && after.ms == PRIMED.ms {
            // An id minted by a replica: if it was this one, the stream's events may
            // still be on their way to Redis.
            self.writer.settle(PENDING_WAIT).await;
        }
        let pending_since = tokio::time::Instant::now();
        let (mut conn, at_or_before, mut page) = loop {
            let mut conn = self.pool.get().await?;
            let (at_or_before, page) = self.first_page(&mut conn, &key, after).await?;
            // An id minted by a replica for an event written behind its delivery: its
            // entry (or, after the priming id, the entries after it) may not be in
            // Redis yet.
            let found = if after == PRIMED {
                !page.ids.is_empty() || lock(&self.open).is_open(stream_id, &key)
            } else {
                at_or_before
                    .ids
                    .first()
                    .is_some_and(|entry| EntryId::parse(&entry.id) == Some(after))
            };
            if found || after.ms != PRIMED.ms || pending_since.elapsed() >= PENDING_WAIT {
                break (conn, at_or_before, page);
            }
            // No pooled connection is held while waiting.
            drop(conn);
            tokio::time::sleep(PENDING_POLL).await;
        };
        match at_or_before.ids.first() {
            Some(entry) if EntryId::parse(&entry.id) == Some(after) => {
                let kind: Option<String> = entry.get(FIELD_KIND);
                if ends_on_final && kind.as_deref() == Some(KIND_FINAL) {
                    // The client already has the final response: nothing more will come.
                    return Ok(Box::pin(futures::stream::empty()));
                }
            }
            // The priming id was minted, never stored: every entry comes after it, and
            // while the request runs here its events may all be still to come.
            None if after == PRIMED
                && (!page.ids.is_empty() || lock(&self.open).is_open(stream_id, &key)) => {}
            None if !page.ids.is_empty() => {
                tracing::warn!(
                    stream = %fingerprint(stream_id),
                    event = %fingerprint(last_event_id),
                    "resumed event was trimmed; replaying what is left of the stream"
                );
            }
            _ => {
                return Err(RedisEventStoreError::UnknownEvent(fingerprint(
                    last_event_id,
                )));
            }
        }

        let mut events = Vec::new();
        let mut cursor = after;
        loop {
            let full = page.ids.len() >= PAGE;
            let page_start = cursor;
            for entry in &page.ids {
                let Some(decoded) = decode_entry(stream_id, entry) else {
                    continue;
                };
                cursor = decoded.id;
                events.push(decoded.event);
                if decoded.is_final && ends_on_final {
                    return Ok(Box::pin(futures::stream::iter(events)));
                }
            }
            // A page without a single usable id would be asked for again forever.
            if !full || cursor == page_start {
                break;
            }
            page = redis::cmd("XRANGE")
                .arg(&key)
                .arg(cursor.next().to_string())
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
        }
        drop(conn);

        let Some(follow) = self
            .reader
            .follow(key, stream_id, cursor, ends_on_final)
            .await
        else {
            return Ok(Box::pin(futures::stream::iter(events)));
        };
        Ok(Box::pin(futures::stream::iter(events).chain(follow)))
    }

    /// One round trip that both checks the id and reads the first page: the entry at
    /// or before `after` must be `after` itself, unless trimming removed everything up
    /// to and past it (then all that is left comes after it).
    async fn first_page(
        &self,
        conn: &mut crate::redis_pool::PooledConnection,
        key: &str,
        after: EntryId,
    ) -> Result<(StreamRangeReply, StreamRangeReply), RedisEventStoreError> {
        Ok(redis::pipe()
            .cmd("XREVRANGE")
            .arg(key)
            .arg(after.to_string())
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("XRANGE")
            .arg(key)
            .arg(after.next().to_string())
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?)
    }

    /// Followers currently registered with the reader.
    pub fn follower_count(&self) -> usize {
        self.reader.follower_count()
    }

    /// Blocking stream readers running, each on a connection of its own: the one of a
    /// single node, or on Redis Cluster one per hash slot with followers.
    pub fn reader_count(&self) -> usize {
        self.reader.reader_count()
    }

    /// Whether the readers work (readiness): on a single node its reader holds a
    /// connection; on Redis Cluster no slot's reader lost its connection or failed to
    /// make one.
    pub fn is_reader_connected(&self) -> bool {
        self.reader.is_connected()
    }
}

/// Locks `mutex`; only set and map operations run under it, so a poisoned one is still
/// consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
