//! The replica's one blocking stream reader: followers of streams register here, and a
//! background task blocks in one `XREAD` over every followed stream (plus the replica's
//! wake stream, through which a new follower makes it re-issue the read with the new key
//! set) and hands new entries to the followers' channels. One connection per replica,
//! not per stream; it reconnects with backoff when Redis goes away.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    RedisError,
    aio::MultiplexedConnection,
    streams::{StreamId, StreamReadReply},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    EventStoreSettings, StoredEvent,
    format::{DecodedEntry, EntryId, decode_entry, duration_ms},
};
use crate::{
    jobs::Jobs,
    redis_pool::{Backoff, RedisPool, RedisPoolError},
};

/// Entries read per key per `XREAD`.
const PAGE: usize = 128;
/// Events a follower may have queued before the reader gives up on it.
const FOLLOWER_BUFFER: usize = 256;
/// Entries kept in a replica's wake stream: one unread entry is all a wake needs.
const WAKE_MAX_LEN: usize = 16;
/// Lifetime of a replica's wake stream after its last wake.
const WAKE_TTL: Duration = Duration::from_secs(60);

/// The reader of one replica; cheap to clone (one reference count).
#[derive(Clone)]
pub(super) struct Reader {
    inner: Arc<Inner>,
}

struct Inner {
    pool: RedisPool,
    replica_id: String,
    wake_key: String,
    settings: EventStoreSettings,
    followers: Mutex<Followers>,
    next_follower: AtomicU64,
    connected: AtomicBool,
}

impl Reader {
    /// Adds the reader to `jobs` (the job `event stream reader`).
    pub(super) fn start(
        pool: RedisPool,
        replica_id: String,
        wake_key: String,
        settings: EventStoreSettings,
        jobs: &Jobs,
    ) -> Self {
        let inner = Arc::new(Inner {
            pool,
            replica_id,
            wake_key,
            settings,
            followers: Mutex::new(Followers::default()),
            next_follower: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        });
        let reader = Arc::clone(&inner);
        jobs.add("event stream reader", move |stop| reader.run(stop));
        Self { inner }
    }

    /// Followers currently registered with the reader.
    pub(super) fn follower_count(&self) -> usize {
        self.inner
            .followers()
            .streams
            .values()
            .map(|stream| stream.followers.len())
            .sum()
    }

    /// Whether the reader holds a working connection (readiness).
    pub(super) fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Registers a follower of `key` from `cursor` and wakes the reader; `None` once the
    /// reader has stopped.
    pub(super) async fn follow(
        &self,
        key: String,
        stream_id: &str,
        cursor: EntryId,
        ends_on_final: bool,
    ) -> Option<impl futures::Stream<Item = StoredEvent> + Send + Sync + 'static> {
        let (tx, rx) = mpsc::channel(FOLLOWER_BUFFER);
        let id = self.inner.next_follower.fetch_add(1, Ordering::Relaxed);
        {
            let mut followers = self.inner.followers();
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
            shared: Arc::clone(&self.inner),
            key,
            id,
        };
        if let Err(error) = self.inner.wake().await {
            // The reader still picks the follower up when its current XREAD times out.
            tracing::warn!(
                replica = %self.inner.replica_id,
                stream_id,
                error = %error,
                "could not wake the stream reader"
            );
        }
        let idle = ends_on_final.then_some(self.inner.settings.follow_idle_timeout);
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
    tx: mpsc::Sender<StoredEvent>,
    ends_on_final: bool,
}

/// Unregisters its follower when the consumer drops the stream.
struct FollowerGuard {
    shared: Arc<Inner>,
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
struct CloseOnExit(Arc<Inner>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.connected.store(false, Ordering::Release);
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
    #[error("the Redis primary may have moved")]
    Moved,
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// One `XREAD` round: each followed key and the id it is read after.
struct Plan {
    keys: Vec<String>,
    from: Vec<EntryId>,
}

impl Inner {
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
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let _close = CloseOnExit(Arc::clone(&self));
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        loop {
            let outcome = self.reader_connection(&shutdown, &mut backoff).await;
            self.connected.store(false, Ordering::Release);
            if !backoff
                .reconnect_after(outcome, "event stream reader", &self.replica_id, &shutdown)
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
        let mut topology = self.pool.topology();
        topology.borrow_and_update();
        let mut conn: MultiplexedConnection = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            conn = tokio::time::timeout(connect_timeout, self.pool.dedicated()) => {
                conn.map_err(|_| ReaderLost::ConnectTimeout(connect_timeout))??
            }
        };
        self.connected.store(true, Ordering::Release);
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
                _ = topology.changed() => return Err(ReaderLost::Moved),
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
                {
                    match follower.tx.try_send(entry.event.clone()) {
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
