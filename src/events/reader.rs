//! The replica's blocking stream readers: followers of streams register here, and a
//! reader blocks in `XREAD` over the streams of its *group* (plus the group's wake
//! stream, through which a new follower makes it re-issue the read with the new key set)
//! and hands new entries to the followers' channels (`reader/connection.rs`).
//!
//! How streams are grouped is the one difference between deployments; the reader of a
//! group is the same code in both, and on one node it costs what a single reader did:
//! - **one node** (standalone, Sentinel): one group of every followed stream, so one
//!   `XREAD` and one connection per replica, running from start to shutdown and woken
//!   through `<p>:replica:<r>:wake`. Grouping by slot there too would cost a
//!   connection per slot followed for nothing.
//! - **Redis Cluster** (or `events.per_slot_readers`): a multi-key `XREAD` must stay in
//!   one hash slot, so there is one group per slot with followers, read on a connection
//!   to the node serving that slot ([`RedisPool::dedicated_for`]) and woken through
//!   `<p>:{w<n>}:wake:<r>`, a key of the same slot. A group starts with its first
//!   follower and stops, closing its connection, when its last follower leaves. Groups
//!   are slots rather than sessions because sessions of one slot can share a read:
//!   a replica holds at most one reader connection per follower
//!   ([`EventStoreSettings::max_followers`] caps both) and never more than one per slot.
//!
//! Each reader reconnects with backoff when its connection fails or a slot moved
//! (`MOVED`/`ASK`: the new connection is opened to the slot's node as it is known then),
//! and at once when [`RedisPool::topology`] changes.

mod connection;
mod registry;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::registry::{FollowedStream, Follower, Group, GroupId, Health, Registry, Start};

use super::{
    EventStoreSettings, StoredEvent,
    format::{EntryId, duration_ms},
};
use crate::{
    jobs::Jobs,
    keys::{Keys, hash_slot},
    redis_pool::{RedisPool, RedisPoolError},
};

/// Events a follower may have queued before the reader gives up on it.
const FOLLOWER_BUFFER: usize = 256;
/// Entries kept in a wake stream: one unread entry is all a wake needs.
const WAKE_MAX_LEN: usize = 16;
/// Lifetime of a wake stream after its last wake.
const WAKE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The readers of one replica; cheap to clone (one reference count).
#[derive(Clone)]
pub(super) struct Reader {
    inner: Arc<Inner>,
}

struct Inner {
    pool: RedisPool,
    keys: Keys,
    replica_id: String,
    settings: EventStoreSettings,
    /// Whether streams are grouped by hash slot (else: one group of all).
    per_slot: bool,
    registry: Mutex<Registry>,
    /// Ids of followers and of group instances.
    next_id: AtomicU64,
    /// Fires when the readers' job stops; every group's token is a child of it.
    shutdown: CancellationToken,
    /// The groups' reader tasks, awaited when the job stops.
    tasks: TaskTracker,
}

impl Reader {
    /// Adds the readers' job to `jobs` (the job `event stream reader`): streams are read
    /// per hash slot when `pool` is a Redis Cluster or `settings.per_slot_readers` is set.
    pub(super) fn start(
        pool: RedisPool,
        keys: Keys,
        replica_id: String,
        settings: EventStoreSettings,
        jobs: &Jobs,
    ) -> Self {
        let per_slot = pool.is_cluster() || settings.per_slot_readers;
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        if !per_slot {
            // The one reader of a single node runs whether or not anything is followed.
            let wake_key = keys.replica_wake(&replica_id);
            registry
                .groups
                .insert(GroupId::All, Group::new(0, wake_key, &shutdown));
        }
        let inner = Arc::new(Inner {
            pool,
            keys,
            replica_id,
            settings,
            per_slot,
            registry: Mutex::new(registry),
            next_id: AtomicU64::new(1),
            shutdown,
            tasks: TaskTracker::new(),
        });
        let job = Arc::clone(&inner);
        jobs.add("event stream reader", move |stop| job.run(stop));
        Self { inner }
    }

    /// Followers currently registered with the readers.
    pub(super) fn follower_count(&self) -> usize {
        self.inner
            .registry()
            .groups
            .values()
            .flat_map(|group| group.streams.values())
            .map(|stream| stream.followers.len())
            .sum()
    }

    /// Readers running or about to: the one of a single node, or one per hash slot
    /// with followers.
    pub(super) fn reader_count(&self) -> usize {
        self.inner.registry().groups.len()
    }

    /// Whether the readers are working (readiness): on a single node, its reader holds a
    /// connection; per slot, no group's reader has lost its connection or failed to make
    /// one (a group still making its first is not failing yet).
    pub(super) fn is_connected(&self) -> bool {
        let registry = self.inner.registry();
        if registry.closed || !registry.running {
            return false;
        }
        if self.inner.per_slot {
            registry
                .groups
                .values()
                .all(|group| group.health != Health::Failing)
        } else {
            registry
                .groups
                .get(&GroupId::All)
                .is_some_and(|group| group.health == Health::Connected)
        }
    }

    /// Registers a follower of `key` from `cursor`, and wakes its group's reader or
    /// starts one; `None` once the readers have stopped, or when
    /// [`EventStoreSettings::max_followers`] streams are followed already.
    pub(super) async fn follow(
        &self,
        key: String,
        stream_id: &str,
        cursor: EntryId,
        ends_on_final: bool,
    ) -> Option<impl futures::Stream<Item = StoredEvent> + Send + Sync + 'static> {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(FOLLOWER_BUFFER);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let group_id = inner.group_of(&key);
        let (wake_key, start) = {
            let mut registry = inner.registry();
            if registry.closed {
                return None;
            }
            if registry.live >= inner.settings.max_followers {
                drop(registry);
                tracing::warn!(
                    replica = %inner.replica_id,
                    max_followers = inner.settings.max_followers,
                    "too many followed streams; this one is replayed, not followed"
                );
                return None;
            }
            registry.live += 1;
            let running = registry.running;
            let mut start = None;
            let group = registry.groups.entry(group_id).or_insert_with(|| {
                let instance = inner.next_id.fetch_add(1, Ordering::Relaxed);
                let group = Group::new(instance, inner.wake_key(group_id), &inner.shutdown);
                start = running.then(|| group.start(group_id));
                group
            });
            group
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
            (group.wake_key.clone(), start)
        };
        let guard = FollowerGuard {
            inner: Arc::clone(inner),
            group: group_id,
            key,
            id,
        };
        match start {
            // A new reader plans its first read with this follower in it: no wake.
            Some(start) => inner.spawn(start),
            None => {
                if let Err(error) = inner.wake(&wake_key).await {
                    // The reader still picks the follower up when its current XREAD
                    // times out.
                    tracing::warn!(
                        replica = %inner.replica_id,
                        stream = %crate::ids::fingerprint(stream_id),
                        error = %error,
                        "could not wake the stream reader"
                    );
                }
            }
        }
        let idle = ends_on_final.then_some(inner.settings.follow_idle_timeout);
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

/// Unregisters its follower when the consumer drops the stream.
struct FollowerGuard {
    inner: Arc<Inner>,
    group: GroupId,
    key: String,
    id: u64,
}

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        let mut registry = self.inner.registry();
        registry.live = registry.live.saturating_sub(1);
        let Some(group) = registry.groups.get_mut(&self.group) else {
            return;
        };
        if let Some(stream) = group.streams.get_mut(&self.key) {
            stream.followers.remove(&self.id);
            if stream.followers.is_empty() {
                group.streams.remove(&self.key);
            }
        }
        registry.end_if_idle(self.group);
    }
}

/// Closes the registry when the readers' job ends, however it ends, so no follower
/// waits on a reader that is gone.
struct CloseOnExit(Arc<Inner>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Only map operations run under this lock; a poisoned lock leaves them consistent.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn group_of(&self, key: &str) -> GroupId {
        if self.per_slot {
            GroupId::Slot(hash_slot(key))
        } else {
            GroupId::All
        }
    }

    /// The wake stream of group `id`'s reader: a key of the group's slot on a cluster.
    fn wake_key(&self, id: GroupId) -> String {
        match id {
            GroupId::All => self.keys.replica_wake(&self.replica_id),
            GroupId::Slot(slot) => self.keys.slot_reader_wake(slot, &self.replica_id),
        }
    }

    /// The readers' job: starts the reader of every group there is, waits for `stop`,
    /// then ends every followed stream and waits for the readers to stop.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let _close = CloseOnExit(Arc::clone(&self));
        let starts: Vec<Start> = {
            let mut registry = self.registry();
            registry.running = true;
            registry
                .groups
                .iter()
                .map(|(&id, group)| group.start(id))
                .collect()
        };
        for start in starts {
            self.spawn(start);
        }
        stop.cancelled().await;
        self.close();
        self.tasks.close();
        self.tasks.wait().await;
        tracing::debug!(replica = %self.replica_id, "event stream readers stopped");
    }

    /// Starts the reader of a group.
    fn spawn(self: &Arc<Self>, start: Start) {
        self.tasks.spawn(Arc::clone(self).read_group(start));
    }

    /// Refuses new followers and ends every followed stream (dropping their senders)
    /// and every group's reader.
    fn close(&self) {
        let groups = {
            let mut registry = self.registry();
            registry.closed = true;
            registry.running = false;
            std::mem::take(&mut registry.groups)
        };
        self.shutdown.cancel();
        drop(groups);
    }

    /// Makes the reader blocked on `wake_key` return so it reads its new key set.
    async fn wake(&self, wake_key: &str) -> Result<(), RedisPoolError> {
        let mut conn = self.pool.get().await?;
        redis::pipe()
            .cmd("XADD")
            .arg(wake_key)
            .arg("MAXLEN")
            .arg(WAKE_MAX_LEN)
            .arg("*")
            .arg("w")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(wake_key)
            .arg(duration_ms(WAKE_TTL))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    fn set_health(&self, id: GroupId, instance: u64, health: Health) {
        if let Some(group) = self.registry().group_mut(id, instance) {
            group.health = health;
        }
    }
}
