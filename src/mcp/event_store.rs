//! rmcp's [`EventStore`] on Redis Streams: every SSE event of a response stream is an
//! entry of `<prefix>:{<session_id>}:events:<stream_id>`, so a client can resume on any
//! replica, and only from its own session.
//!
//! - **Sessions**: rmcp tells a store the stream of an event but not its session (request
//!   streams have random ids; only the standalone stream is `<session>:common`), so each
//!   session gets its own [`SessionEvents`] ([`RedisEventStore::for_session`]), which puts
//!   the session into every key it writes and reads. An event id presented with another
//!   session's `Mcp-Session-Id` names a key that does not exist: it is an unknown event,
//!   and replays nothing.
//! - **Event ids** are `<stream_id>/<entry-id>` (`entry-id` is Redis's `<ms>-<seq>`): the
//!   stream is found from the id and the caller's session, and ids are unique because
//!   entry ids are unique within a stream and stream ids are unique. Stream and session
//!   ids may only use `[A-Za-z0-9_.:-]`, so the `/` separator is unambiguous and neither
//!   can break out of its key's `{hash tag}`.
//! - **Storing** is one script per event: `XADD` with an approximate `MAXLEN`, then
//!   `PEXPIRE`, so the event is committed (and bounded in time and size) before its id
//!   goes to the client. The one exception costs no round trip: the priming event a
//!   request stream starts with carries no message, so its id is minted here as
//!   `<stream_id>/0-1`, below every id Redis gives, and nothing is written. Resuming
//!   after it replays the whole stream; while the request runs here (its stream is
//!   open) and nothing is stored yet, it follows the stream for what comes;
//!   anywhere else, an empty stream is an unknown event as before.
//! - **Retention** follows open streams, not calls: every event keeps its stream for
//!   [`EventStoreSettings::ttl`]; the final response of a request stream shortens that
//!   in the same script. A response that reaches its client needs no resumption, so a
//!   request stream started here keeps its events only
//!   [`EventStoreSettings::delivered_ttl`] (seconds) after its final response, unless its
//!   client got an event of it and then lost the connection before the end: such a
//!   stream keeps them [`EventStoreSettings::completed_ttl`], the window in which that
//!   client resumes. The edge learns which it was from the response body
//!   ([`track_delivery`]): one that ends after the final response was stored was
//!   delivered; one dropped earlier was abandoned, and if its final response is stored
//!   already, its expiry is extended then (a command only on that rare path). A stream
//!   this replica does not track keeps the long window. What a finished call leaves in
//!   Redis is thus bounded by the call rate times a few seconds, not a minute. The
//!   standalone stream has no final event and keeps the long TTL.
//! - **Replaying** returns the stored events after the given id and then keeps following
//!   the stream until its final JSON-RPC response or error arrives, whichever replica
//!   writes it. The standalone stream (`<session>:common`) has no final event: it is
//!   followed until the consumer drops it or the replica shuts down.
//! - **Following** costs one connection per replica, not per stream: a background reader
//!   blocks in one `XREAD` over every followed stream and forwards new entries to the
//!   followers' channels. A new follower wakes it through the replica's wake stream so it
//!   re-issues `XREAD` with the new set of keys.
//!
//! On Redis Cluster a multi-key `XREAD` needs all its keys in one slot; there the single
//! reader has to become one reader per shard, each reading the streams of its slots.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use futures::StreamExt;
use redis::{
    RedisError,
    aio::MultiplexedConnection,
    streams::{StreamId, StreamRangeReply, StreamReadReply},
};
use rmcp::{
    model::{JsonRpcMessage, ServerJsonRpcMessage},
    transport::streamable_http_server::session::{
        EventId, EventStore, EventStoreError, EventStream, ServerSseMessage,
    },
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    keys::Keys,
    redis_pool::{Backoff, RedisPool, RedisPoolError},
};

/// Separates the stream id from the Redis entry id in an event id.
const SEPARATOR: char = '/';
/// Longest stream or session id accepted; rmcp's stream ids are UUIDs or
/// `<session id>:common`, our session ids 40 characters.
const MAX_ID_LEN: usize = 200;
/// Suffix rmcp gives the standalone (GET) stream of a session.
const COMMON_SUFFIX: &str = ":common";
/// Entries read per `XRANGE` page while replaying and per key per `XREAD`.
const PAGE: usize = 128;
/// The entry id of a request stream's priming event, which is never stored: below
/// every id `XADD *` gives.
const PRIMED: EntryId = EntryId { ms: 0, seq: 1 };
/// Most request streams a replica tracks as open; beyond it priming events are stored.
const MAX_OPEN_STREAMS: usize = 100_000;
/// Open streams below which finished entries are not swept (see [`OpenStreams::start`]).
const MIN_SWEEP: usize = 1024;
/// Events a follower may have queued before the reader gives up on it.
const FOLLOWER_BUFFER: usize = 256;
/// Entries kept in a replica's wake stream: one unread entry is all a wake needs.
const WAKE_MAX_LEN: usize = 16;
/// Lifetime of a replica's wake stream after its last wake.
const WAKE_TTL: Duration = Duration::from_secs(60);

/// Stream entry fields.
const FIELD_KIND: &str = "k";
const FIELD_MESSAGE: &str = "m";
const FIELD_RETRY: &str = "r";
/// Kinds: no message (a retry hint), a message, a message that ends its stream.
const KIND_BARE: &str = "b";
const KIND_MESSAGE: &str = "m";
const KIND_FINAL: &str = "f";

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
    /// First delay before the reader reconnects after an error.
    pub min_backoff: Duration,
    /// Largest delay between the reader's reconnection attempts.
    pub max_backoff: Duration,
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
        }
    }
}

/// Why storing or replaying an event failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisEventStoreError {
    /// The event id does not have the `<stream_id>/<ms>-<seq>` shape this store issues.
    #[error("malformed event id `{0}`")]
    MalformedEventId(String),
    /// The stream id is empty, too long or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid stream id `{0}`")]
    InvalidStreamId(String),
    /// The session id is empty, too long or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid session id `{0}`")]
    InvalidSessionId(String),
    /// No such event: its stream expired or never held it.
    #[error("unknown event id `{0}`")]
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

/// The Redis Streams event store shared by every session of a replica; rmcp reaches it
/// through each session's [`SessionEvents`].
pub struct RedisEventStore {
    shared: Arc<Shared>,
    store_script: redis::Script,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("replica_id", &self.shared.replica_id)
            .field("followers", &self.follower_count())
            .field("reader_connected", &self.is_reader_connected())
            .finish_non_exhaustive()
    }
}

impl RedisEventStore {
    /// Builds the store and starts its stream reader on `tracker`.
    ///
    /// Never fails: the reader connects (and reconnects) in the background. When
    /// `shutdown` is cancelled the reader stops and every followed stream ends.
    pub fn start(
        pool: RedisPool,
        keys: Keys,
        replica_id: impl Into<String>,
        settings: EventStoreSettings,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Self> {
        let replica_id = replica_id.into();
        let settings_delivered_ttl = settings.delivered_ttl;
        let shared = Arc::new(Shared {
            wake_key: keys.replica_wake(&replica_id),
            pool,
            keys,
            replica_id,
            settings,
            followers: Mutex::new(Followers::default()),
            next_follower: AtomicU64::new(0),
            reader_connected: AtomicBool::new(false),
            open: Mutex::new(OpenStreams::new(settings_delivered_ttl)),
        });
        tracker.spawn(Arc::clone(&shared).run_reader(shutdown));
        Arc::new(Self {
            shared,
            store_script: redis::Script::new(STORE_SCRIPT),
        })
    }

    /// The event store of session `session_id`, for rmcp's local session manager of
    /// that session.
    pub fn for_session(self: &Arc<Self>, session_id: impl Into<Arc<str>>) -> SessionEvents {
        SessionEvents {
            store: Arc::clone(self),
            session_id: session_id.into(),
        }
    }

    /// Persists `event` in stream `stream_id` of session `session_id` and returns its
    /// event id.
    ///
    /// # Errors
    /// [`RedisEventStoreError::InvalidStreamId`] or
    /// [`RedisEventStoreError::InvalidSessionId`] for an id this store cannot key,
    /// [`RedisEventStoreError::Encode`] when the message does not serialise, or
    /// [`RedisEventStoreError::Redis`] when the event could not be committed.
    pub async fn append(
        &self,
        session_id: &str,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, RedisEventStoreError> {
        check_stream_id(stream_id)?;
        check_session_id(session_id)?;
        let request_stream = !stream_id.ends_with(COMMON_SUFFIX);
        let (kind, message) = match event.message.as_deref() {
            None => (KIND_BARE, String::new()),
            Some(message) => (
                if is_final(message) {
                    KIND_FINAL
                } else {
                    KIND_MESSAGE
                },
                serde_json::to_string(message)?,
            ),
        };
        let retry = event
            .retry
            .map(|retry| retry.as_millis().to_string())
            .unwrap_or_default();
        let settings = &self.shared.settings;
        let key = self.shared.keys.event_stream(session_id, stream_id);
        let finishing = request_stream && kind == KIND_FINAL;
        let mut delivered = false;
        if request_stream {
            let mut open = lock(&self.shared.open);
            if kind == KIND_BARE && open.start(stream_id, &key) {
                return Ok(format!("{stream_id}{SEPARATOR}{PRIMED}"));
            }
            if finishing {
                delivered = open.being_delivered(stream_id, &key);
            }
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
        let stored = self.store_entry(&key, kind, message, retry, ttl).await;
        if finishing && lock(&self.shared.open).finished(stream_id, stored.is_ok(), delivered) {
            // Its client left while the response was being stored.
            self.extend(key);
        }
        Ok(format!("{stream_id}{SEPARATOR}{}", stored?))
    }

    /// What became of the response stream `stream_id` started here: its body
    /// `ended` after everything was sent, or was dropped first (its client left). A
    /// stream whose client left keeps its events for the resumption window.
    pub fn stream_closed(&self, stream_id: &str, ended: bool) {
        let abandoned = lock(&self.shared.open).closed(stream_id, ended);
        if let Some(key) = abandoned {
            self.extend(key);
        }
    }

    /// Keeps stream `key`, already finished, for the resumption window (in the
    /// background: the request that needed it is gone).
    fn extend(&self, key: String) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let ttl = shared.settings.completed_ttl.min(shared.settings.ttl);
            let outcome = async {
                let mut conn = shared.pool.get().await?;
                redis::cmd("PEXPIRE")
                    .arg(&key)
                    .arg(duration_ms(ttl))
                    .query_async::<()>(&mut conn)
                    .await?;
                Ok::<_, RedisEventStoreError>(())
            }
            .await;
            if let Err(error) = outcome {
                tracing::warn!(error = %error, "an abandoned response stream could not be kept for resumption");
            }
        });
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
        let mut conn = self.shared.pool.get().await?;
        Ok(self
            .store_script
            .key(key)
            .arg(self.shared.settings.max_len.max(1))
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
        let key = self.shared.keys.event_stream(session_id, stream_id);
        let ends_on_final = !stream_id.ends_with(COMMON_SUFFIX);
        let mut conn = self.shared.pool.get().await?;

        // One round trip both checks the id and reads the first page: the entry at or
        // before `after` must be `after` itself, unless trimming removed everything up
        // to and past it (then all that is left comes after it).
        let (at_or_before, mut page): (StreamRangeReply, StreamRangeReply) = redis::pipe()
            .cmd("XREVRANGE")
            .arg(&key)
            .arg(after.to_string())
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("XRANGE")
            .arg(&key)
            .arg(after.next().to_string())
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut conn)
            .await?;
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
                && (!page.ids.is_empty() || lock(&self.shared.open).is_open(stream_id, &key)) => {}
            None if !page.ids.is_empty() => {
                tracing::warn!(
                    stream_id,
                    event_id = last_event_id,
                    "resumed event was trimmed; replaying what is left of the stream"
                );
            }
            _ => return Err(RedisEventStoreError::UnknownEvent(last_event_id.to_owned())),
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
                events.extend(decoded.message);
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

        let Some(follow) = self.follow(key, stream_id, cursor, ends_on_final).await else {
            return Ok(Box::pin(futures::stream::iter(events)));
        };
        Ok(Box::pin(futures::stream::iter(events).chain(follow)))
    }

    /// Followers currently registered with the reader.
    pub fn follower_count(&self) -> usize {
        self.shared
            .followers()
            .streams
            .values()
            .map(|stream| stream.followers.len())
            .sum()
    }

    /// Whether the reader holds a working connection (readiness).
    pub fn is_reader_connected(&self) -> bool {
        self.shared.reader_connected.load(Ordering::Acquire)
    }

    /// Registers a follower of `key` from `cursor` and wakes the reader; `None` once the
    /// reader has stopped.
    async fn follow(
        &self,
        key: String,
        stream_id: &str,
        cursor: EntryId,
        ends_on_final: bool,
    ) -> Option<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static> {
        let (tx, rx) = mpsc::channel(FOLLOWER_BUFFER);
        let id = self.shared.next_follower.fetch_add(1, Ordering::Relaxed);
        {
            let mut followers = self.shared.followers();
            if followers.closed {
                return None;
            }
            followers
                .streams
                .entry(key.clone())
                .or_insert_with(|| FollowedStream {
                    stream_id: stream_id.to_owned(),
                    followers: HashMap::new(),
                })
                .followers
                .insert(
                    id,
                    Follower {
                        cursor,
                        tx,
                        ends_on_final,
                    },
                );
        }
        let guard = FollowerGuard {
            shared: Arc::clone(&self.shared),
            key,
            id,
        };
        if let Err(error) = self.shared.wake().await {
            // The reader still picks the follower up when its current XREAD times out.
            tracing::warn!(
                replica = %self.shared.replica_id,
                stream_id,
                error = %error,
                "could not wake the stream reader"
            );
        }
        let idle = ends_on_final.then_some(self.shared.settings.follow_idle_timeout);
        Some(futures::stream::unfold(
            (rx, guard),
            move |(mut rx, guard)| async move {
                let next = match idle {
                    Some(idle) => tokio::time::timeout(idle, rx.recv()).await.ok().flatten(),
                    None => rx.recv().await,
                };
                if next.is_none() && idle.is_some() && !rx.is_closed() {
                    tracing::debug!(key = %guard.key, "followed stream idle; ending it");
                }
                next.map(|event| (event, (rx, guard)))
            },
        ))
    }
}

/// One session's view of the [`RedisEventStore`]: the [`EventStore`] rmcp's local
/// session manager of that session writes to and resumes from. Only this session's
/// streams can be replayed through it.
#[derive(Clone)]
pub struct SessionEvents {
    store: Arc<RedisEventStore>,
    session_id: Arc<str>,
}

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEvents")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl EventStore for SessionEvents {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        Ok(self
            .store
            .append(&self.session_id, stream_id, event)
            .await?)
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        Ok(self.store.replay(&self.session_id, last_event_id).await?)
    }
}

/// `response` with its SSE body reporting to `store`, when it ends or is dropped, what
/// became of the request stream it carries (see the module docs on retention). Other
/// responses pass unchanged.
pub fn track_delivery(response: Response, store: &Arc<RedisEventStore>) -> Response {
    let is_sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return response;
    }
    let store = Arc::clone(store);
    response.map(|inner| {
        Body::new(Delivery {
            inner,
            store,
            sniffed: false,
            stream_id: None,
        })
    })
}

/// A request stream's SSE body that tells the store whether it got through.
struct Delivery {
    inner: Body,
    store: Arc<RedisEventStore>,
    /// Whether the first data frame was read for the stream id.
    sniffed: bool,
    /// The request stream, from its priming event's id, until it is reported on.
    stream_id: Option<String>,
}

impl Delivery {
    fn report(&mut self, ended: bool) {
        if let Some(stream_id) = self.stream_id.take() {
            self.store.stream_closed(&stream_id, ended);
        }
    }
}

/// The stream id in an SSE frame whose event id is a minted priming id.
fn primed_stream_id(frame: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(frame).ok()?;
    let suffix = format!("{SEPARATOR}{PRIMED}");
    text.lines()
        .filter_map(|line| line.strip_prefix("id:"))
        .map(|id| id.trim_start_matches(' '))
        .find_map(|id| id.strip_suffix(suffix.as_str()))
        .filter(|stream_id| is_keyable(stream_id))
}

impl http_body::Body for Delivery {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if !this.sniffed => {
                if let Some(data) = frame.data_ref() {
                    this.sniffed = true;
                    this.stream_id = primed_stream_id(data).map(str::to_owned);
                }
            }
            Poll::Ready(None) => this.report(true),
            Poll::Ready(Some(Err(_))) => this.report(false),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.report(false);
    }
}

/// A Redis stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    const ZERO: Self = Self { ms: 0, seq: 0 };

    fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one, for exclusive ranges on any Redis version.
    fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Whether `id` can be part of a key: `[A-Za-z0-9_.:-]`, 1 to [`MAX_ID_LEN`] characters.
fn is_keyable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn check_stream_id(stream_id: &str) -> Result<(), RedisEventStoreError> {
    if is_keyable(stream_id) {
        Ok(())
    } else {
        Err(RedisEventStoreError::InvalidStreamId(stream_id.to_owned()))
    }
}

fn check_session_id(session_id: &str) -> Result<(), RedisEventStoreError> {
    if is_keyable(session_id) {
        Ok(())
    } else {
        Err(RedisEventStoreError::InvalidSessionId(
            session_id.to_owned(),
        ))
    }
}

/// Splits `<stream_id>/<ms>-<seq>`, checking both parts.
fn parse_event_id(event_id: &str) -> Result<(&str, EntryId), RedisEventStoreError> {
    let malformed = || RedisEventStoreError::MalformedEventId(event_id.to_owned());
    let (stream_id, entry) = event_id.split_once(SEPARATOR).ok_or_else(malformed)?;
    let entry = EntryId::parse(entry).ok_or_else(malformed)?;
    check_stream_id(stream_id)?;
    Ok((stream_id, entry))
}

/// Locks `mutex`; only set and map operations run under these locks, so a poisoned one
/// is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A JSON-RPC response or error: the last event of a request's stream.
fn is_final(message: &ServerJsonRpcMessage) -> bool {
    matches!(
        message,
        JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_)
    )
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// One stored entry, rebuilt.
struct DecodedEntry {
    id: EntryId,
    /// `None` when the stored message no longer parses; the entry still counts.
    message: Option<ServerSseMessage>,
    is_final: bool,
}

/// Rebuilds the SSE event of a stream entry under its original event id; `None` for an
/// entry this store did not write.
fn decode_entry(stream_id: &str, entry: &StreamId) -> Option<DecodedEntry> {
    let Some(id) = EntryId::parse(&entry.id) else {
        tracing::warn!(stream_id, entry = %entry.id, "skipping stream entry with an odd id");
        return None;
    };
    let kind: String = entry.get(FIELD_KIND).unwrap_or_default();
    let message: String = entry.get(FIELD_MESSAGE).unwrap_or_default();
    let retry: String = entry.get(FIELD_RETRY).unwrap_or_default();
    let is_final = kind == KIND_FINAL;
    let mut event = ServerSseMessage::default();
    event.event_id = Some(format!("{stream_id}{SEPARATOR}{id}"));
    event.retry = retry.parse().ok().map(Duration::from_millis);
    if kind != KIND_BARE {
        match serde_json::from_str::<ServerJsonRpcMessage>(&message) {
            Ok(message) => event.message = Some(Arc::new(message)),
            Err(error) => {
                tracing::warn!(stream_id, entry = %id, error = %error, "stored event does not parse; skipping it");
                return Some(DecodedEntry {
                    id,
                    message: None,
                    is_final,
                });
            }
        }
    }
    Some(DecodedEntry {
        id,
        message: Some(event),
        is_final,
    })
}

struct Shared {
    pool: RedisPool,
    keys: Keys,
    replica_id: String,
    wake_key: String,
    settings: EventStoreSettings,
    followers: Mutex<Followers>,
    next_follower: AtomicU64,
    reader_connected: AtomicBool,
    /// The request streams started here whose final event is not stored yet (their
    /// priming id was minted without a write, and a resume after it waits for their
    /// events), or whose delivery is not settled yet.
    open: Mutex<OpenStreams>,
}

/// The request streams started on this replica, by stream id, until their final event is
/// stored and their body has ended or been dropped.
#[derive(Default)]
struct OpenStreams {
    streams: HashMap<String, OpenStream>,
    /// Size at which [`Self::start`] next sweeps finished streams nobody reported on.
    sweep_at: usize,
    /// How long a finished stream waits for its body's report.
    delivered_ttl: Duration,
}

struct OpenStream {
    key: String,
    /// Its body was dropped (or ended) before the final response: its client resumes.
    abandoned: bool,
    /// When the final response was stored with the delivered window.
    finished_at: Option<Instant>,
}

impl OpenStreams {
    fn new(delivered_ttl: Duration) -> Self {
        Self {
            streams: HashMap::new(),
            sweep_at: MIN_SWEEP,
            delivered_ttl,
        }
    }

    /// Tracks a new request stream; false when it is not new or too many are tracked.
    fn start(&mut self, stream_id: &str, key: &str) -> bool {
        if self.streams.len() >= self.sweep_at {
            // Finished streams whose body was never reported on (it did not pass the
            // edge): their delivered window is over, nothing can extend them any more.
            let window = self.delivered_ttl;
            self.streams
                .retain(|_, s| s.finished_at.is_none_or(|at| at.elapsed() < window));
            self.sweep_at = (self.streams.len() * 2).max(MIN_SWEEP);
        }
        if self.streams.len() >= MAX_OPEN_STREAMS || self.streams.contains_key(stream_id) {
            return false;
        }
        self.streams.insert(
            stream_id.to_owned(),
            OpenStream {
                key: key.to_owned(),
                abandoned: false,
                finished_at: None,
            },
        );
        true
    }

    /// Whether stream `stream_id` (at `key`) is open here and its final event not stored.
    fn is_open(&self, stream_id: &str, key: &str) -> bool {
        self.streams
            .get(stream_id)
            .is_some_and(|s| s.key == key && s.finished_at.is_none())
    }

    /// Whether the final response about to be stored in `stream_id` is still being read
    /// by its client (it gets the short window).
    fn being_delivered(&self, stream_id: &str, key: &str) -> bool {
        self.streams
            .get(stream_id)
            .is_some_and(|s| s.key == key && !s.abandoned)
    }

    /// The final response of `stream_id` was stored (`stored`) or not, with the short
    /// window when `short`; true when its client has left meanwhile, so the stream
    /// must be kept for the resumption window after all.
    fn finished(&mut self, stream_id: &str, stored: bool, short: bool) -> bool {
        let Some(stream) = self.streams.get_mut(stream_id) else {
            return false;
        };
        if stream.abandoned || !stored {
            let extend = stored && short;
            self.streams.remove(stream_id);
            return extend;
        }
        stream.finished_at = Some(Instant::now());
        false
    }

    /// The body of `stream_id` `ended` or was dropped; the key to keep for resumption
    /// when its final response is stored with the short window but did not get through.
    fn closed(&mut self, stream_id: &str, ended: bool) -> Option<String> {
        let stream = self.streams.get_mut(stream_id)?;
        if stream.finished_at.is_none() {
            // The final response is still to come, and its client will resume for it.
            stream.abandoned = true;
            return None;
        }
        let stream = self.streams.remove(stream_id)?;
        (!ended).then_some(stream.key)
    }
}

#[derive(Default)]
struct Followers {
    /// Followed streams by Redis key.
    streams: HashMap<String, FollowedStream>,
    /// Set when the reader stopped: nobody will feed new followers.
    closed: bool,
}

struct FollowedStream {
    stream_id: String,
    followers: HashMap<u64, Follower>,
}

struct Follower {
    /// The last entry this follower has (from the replay or from the reader).
    cursor: EntryId,
    tx: mpsc::Sender<ServerSseMessage>,
    ends_on_final: bool,
}

/// Unregisters its follower when the consumer drops the stream.
struct FollowerGuard {
    shared: Arc<Shared>,
    key: String,
    id: u64,
}

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        let mut followers = self.shared.followers();
        if let Some(stream) = followers.streams.get_mut(&self.key) {
            stream.followers.remove(&self.id);
            if stream.followers.is_empty() {
                followers.streams.remove(&self.key);
            }
        }
    }
}

/// Closes the follower registry when the reader task ends, however it ends, so no
/// follower waits on a reader that is gone.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.reader_connected.store(false, Ordering::Release);
        let mut followers = self.0.followers();
        followers.closed = true;
        // Dropping the senders ends every follower's stream.
        followers.streams.clear();
    }
}

/// Why a reader connection ended.
#[derive(Debug, thiserror::Error)]
enum ReaderLost {
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("XREAD got no reply within {0:?}")]
    ReadTimeout(Duration),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// One `XREAD` round: each followed key and the id it is read after.
struct Plan {
    keys: Vec<String>,
    from: Vec<EntryId>,
}

impl Shared {
    fn followers(&self) -> MutexGuard<'_, Followers> {
        // Only map operations run under this lock; a poisoned lock leaves them consistent.
        self.followers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the reader's blocked `XREAD` return so it reads the new key set.
    async fn wake(&self) -> Result<(), RedisPoolError> {
        let mut conn = self.pool.get().await?;
        redis::pipe()
            .cmd("XADD")
            .arg(&self.wake_key)
            .arg("MAXLEN")
            .arg(WAKE_MAX_LEN)
            .arg("*")
            .arg("w")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.wake_key)
            .arg(duration_ms(WAKE_TTL))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The reader task: one dedicated connection at a time, until `shutdown`.
    async fn run_reader(self: Arc<Self>, shutdown: CancellationToken) {
        let _close = CloseOnExit(Arc::clone(&self));
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        loop {
            let outcome = self.reader_connection(&shutdown, &mut backoff).await;
            self.reader_connected.store(false, Ordering::Release);
            let Err(error) = outcome else { break };
            if !backoff
                .wait_to_reconnect("event stream reader", &self.replica_id, &error, &shutdown)
                .await
            {
                break;
            }
        }
        tracing::debug!(replica = %self.replica_id, "event stream reader stopped");
    }

    /// Reads on one connection: `Ok` on shutdown, `Err` when it has to be replaced.
    async fn reader_connection(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), ReaderLost> {
        let connect_timeout = self.pool.connect_timeout();
        let mut conn: MultiplexedConnection = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            conn = tokio::time::timeout(connect_timeout, self.pool.dedicated()) => {
                conn.map_err(|_| ReaderLost::ConnectTimeout(connect_timeout))??
            }
        };
        self.reader_connected.store(true, Ordering::Release);
        backoff.reset();
        tracing::debug!(replica = %self.replica_id, "event stream reader connected");

        // Starting below every wake entry costs one extra round on connect, but a wake
        // sent between planning a round and issuing its XREAD is never missed (`$`
        // would miss it and leave the new follower waiting for a whole block).
        let mut wake_cursor = EntryId::ZERO;
        // The connection has no response timeout (it blocks by design), so a dead peer is
        // detected by the reply not arriving well after the block ends.
        let reply_bound = self.settings.block + self.pool.command_timeout() * 2;
        loop {
            let plan = self.plan();
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(duration_ms(self.settings.block))
                .arg("STREAMS")
                .arg(&self.wake_key)
                .arg(&plan.keys)
                .arg(wake_cursor.to_string())
                .arg(
                    plan.from
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                );
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                reply = tokio::time::timeout(reply_bound, xread.query_async(&mut conn)) => {
                    reply.map_err(|_| ReaderLost::ReadTimeout(reply_bound))??
                }
            };
            let read_from: HashMap<&str, EntryId> = plan
                .keys
                .iter()
                .map(String::as_str)
                .zip(plan.from.iter().copied())
                .collect();
            for stream in reply.map(|reply| reply.keys).unwrap_or_default() {
                if stream.key == self.wake_key {
                    if let Some(last) = stream.ids.last().and_then(|e| EntryId::parse(&e.id)) {
                        wake_cursor = last;
                    }
                    continue;
                }
                if let Some(&from) = read_from.get(stream.key.as_str()) {
                    self.dispatch(&stream.key, from, &stream.ids);
                }
            }
        }
    }

    /// The next `XREAD`: every followed key, read after its slowest follower. Followers
    /// whose consumer left are dropped here.
    fn plan(&self) -> Plan {
        let mut followers = self.followers();
        let mut plan = Plan {
            keys: Vec::new(),
            from: Vec::new(),
        };
        followers.streams.retain(|key, stream| {
            stream.followers.retain(|_, f| !f.tx.is_closed());
            let Some(from) = stream.followers.values().map(|f| f.cursor).min() else {
                return false;
            };
            plan.keys.push(key.clone());
            plan.from.push(from);
            true
        });
        plan
    }

    /// Hands the entries read after `read_from` to the followers of `key`.
    fn dispatch(&self, key: &str, read_from: EntryId, entries: &[StreamId]) {
        let Some(stream_id) = self
            .followers()
            .streams
            .get(key)
            .map(|s| s.stream_id.clone())
        else {
            return;
        };
        // Parse outside the lock: registrations and drops must not wait on JSON.
        let decoded: Vec<DecodedEntry> = entries
            .iter()
            .filter_map(|entry| decode_entry(&stream_id, entry))
            .collect();
        let mut followers = self.followers();
        let Some(stream) = followers.streams.get_mut(key) else {
            return;
        };
        stream.followers.retain(|_, follower| {
            // It joined after this round was planned with a later start: what it needs
            // may precede `read_from`, so the next round (read from its cursor) serves it.
            if follower.cursor < read_from {
                return true;
            }
            for entry in &decoded {
                if entry.id <= follower.cursor {
                    continue;
                }
                if let Some(message) = &entry.message {
                    match follower.tx.try_send(message.clone()) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // Ending the stream is safe: the client resumes from the last
                            // event it got, while blocking here would stall every stream.
                            tracing::warn!(
                                replica = %self.replica_id,
                                stream_id,
                                "follower fell behind; ending its stream"
                            );
                            return false;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                    }
                }
                follower.cursor = entry.id;
                if entry.is_final && follower.ends_on_final {
                    return false;
                }
            }
            true
        });
        if stream.followers.is_empty() {
            followers.streams.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let (stream, entry) = parse_event_id("5f0c-aa_b.c:common/1700000000000-7").unwrap();
        assert_eq!(stream, "5f0c-aa_b.c:common");
        assert_eq!(
            entry,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(entry.to_string(), "1700000000000-7");
    }

    #[test]
    fn malformed_event_ids_are_rejected() {
        for id in [
            "",
            "/",
            "abc",
            "abc/",
            "/1-0",
            "abc/1",
            "abc/1-",
            "abc/-1",
            "abc/1-x",
            "abc/+1-0",
            "abc/1-0/2-0",
            "a{b}/1-0",
            "a b/1-0",
            "abc/99999999999999999999-0",
        ] {
            assert!(parse_event_id(id).is_err(), "{id}");
        }
        assert!(parse_event_id(&format!("{}/1-0", "a".repeat(MAX_ID_LEN + 1))).is_err());
    }

    #[test]
    fn the_stream_of_a_primed_frame_is_found() {
        let stream = "6f1c2d3e-0000-4000-8000-000000000001";
        assert_eq!(
            primed_stream_id(format!("data:\nid:{stream}/0-1\nretry:1000\n\n").as_bytes()),
            Some(stream)
        );
        assert_eq!(
            primed_stream_id(format!("id: {stream}/0-1\r\ndata:\r\n\r\n").as_bytes()),
            Some(stream)
        );
        for frame in [
            format!("data:\nid:{stream}/1700000000000-0\n\n"),
            "data: {\"id\": \"x/0-1\"}\n\n".to_owned(),
            "id:a{b}/0-1\n\n".to_owned(),
            ": keep-alive\n\n".to_owned(),
        ] {
            assert_eq!(primed_stream_id(frame.as_bytes()), None, "{frame}");
        }
    }

    #[test]
    fn next_entry_id_is_the_smallest_later_one() {
        let id = EntryId { ms: 5, seq: 9 };
        assert_eq!(id.next(), EntryId { ms: 5, seq: 10 });
        let id = EntryId {
            ms: 5,
            seq: u64::MAX,
        };
        assert_eq!(id.next(), EntryId { ms: 6, seq: 0 });
        assert!(EntryId { ms: 5, seq: 10 } > EntryId { ms: 4, seq: 99 });
    }
}
