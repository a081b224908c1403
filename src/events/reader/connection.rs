//! The reader of one group: a dedicated connection to the node serving the group's
//! keys, blocking in one `XREAD` over the group's wake stream and followed streams,
//! the entries read handed to the followers; a new connection, after a backoff, when
//! this one fails; the end when the group ends.

use std::{collections::HashMap, time::Duration};

use redis::{
    RedisError, ServerErrorKind,
    aio::MultiplexedConnection,
    streams::{StreamId, StreamReadReply},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Inner,
    registry::{GroupId, Health, Start},
};
use crate::{
    events::format::{DecodedEntry, EntryId, decode_entry, duration_ms},
    redis_pool::Backoff,
};

/// Entries read per key per `XREAD`.
const PAGE: usize = 128;

/// Why a reader connection ended.
#[derive(Debug, thiserror::Error)]
enum ReaderLost {
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("XREAD got no reply within {0:?}")]
    ReadTimeout(Duration),
    #[error("the Redis topology changed")]
    Topology,
    #[error("the slot moved to another node: {0}")]
    SlotMoved(RedisError),
    #[error(
        "the node refuses an XREAD across hash slots (a cluster node: set redis.mode = \"cluster\" \
         or events.per_slot_readers): {0}"
    )]
    CrossSlot(RedisError),
    #[error(transparent)]
    Redis(RedisError),
}

impl From<RedisError> for ReaderLost {
    fn from(error: RedisError) -> Self {
        match error.kind() {
            redis::ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask) => {
                Self::SlotMoved(error)
            }
            redis::ErrorKind::Server(ServerErrorKind::CrossSlot) => Self::CrossSlot(error),
            _ => Self::Redis(error),
        }
    }
}

/// One `XREAD` round: each followed key and the id it is read after.
struct Plan {
    keys: Vec<String>,
    from: Vec<EntryId>,
}

impl Inner {
    /// The reader task of a group: one dedicated connection at a time, until the group
    /// ends or the readers stop.
    pub(super) async fn read_group(self: std::sync::Arc<Self>, start: Start) {
        let Start {
            group,
            instance,
            wake_key,
            stop,
        } = start;
        let task = match group {
            GroupId::All => "event stream reader".to_owned(),
            GroupId::Slot(slot) => format!("event stream reader of slot {slot}"),
        };
        let mut backoff = Backoff::new(self.settings.min_backoff, self.settings.max_backoff);
        loop {
            let outcome = self
                .read_on_one_connection(group, instance, &wake_key, &stop, &mut backoff)
                .await;
            if outcome.is_err() {
                self.set_health(group, instance, Health::Failing);
            }
            if !backoff
                .reconnect_after(outcome, &task, &self.replica_id, &stop)
                .await
            {
                break;
            }
        }
        tracing::debug!(replica = %self.replica_id, task, "stream reader stopped");
    }

    /// Reads on one connection: `Ok` once the group ended or the readers stop, `Err`
    /// when the connection has to be replaced.
    async fn read_on_one_connection(
        &self,
        group: GroupId,
        instance: u64,
        wake_key: &str,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), ReaderLost> {
        let connect_timeout = self.pool.connect_timeout();
        let mut topology = self.pool.topology();
        topology.borrow_and_update();
        // Any key of the group names its slot's node; on one node, the node.
        let mut conn: MultiplexedConnection = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            conn = tokio::time::timeout(connect_timeout, self.pool.dedicated_for(wake_key)) => {
                conn.map_err(|_| ReaderLost::ConnectTimeout(connect_timeout))??
            }
        };
        self.set_health(group, instance, Health::Connected);
        backoff.reset();
        tracing::debug!(replica = %self.replica_id, ?group, "event stream reader connected");

        // Starting below every wake entry costs one extra round on connect, but a wake
        // sent between planning a round and issuing its XREAD is never missed (`$`
        // would miss it and leave the new follower waiting for a whole block).
        let mut wake_cursor = EntryId::ZERO;
        // The connection has no response timeout (it blocks by design), so a dead peer is
        // detected by the reply not arriving well after the block ends.
        let reply_bound = self.settings.block + self.pool.command_timeout() * 2;
        loop {
            let Some(plan) = self.plan(group, instance) else {
                return Ok(());
            };
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(duration_ms(self.settings.block))
                .arg("STREAMS")
                .arg(wake_key)
                .arg(&plan.keys)
                .arg(wake_cursor.to_string())
                .arg(
                    plan.from
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                );
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = topology.changed() => return Err(ReaderLost::Topology),
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
                if stream.key == wake_key {
                    if let Some(last) = stream.ids.last().and_then(|e| EntryId::parse(&e.id)) {
                        wake_cursor = last;
                    }
                    continue;
                }
                if let Some(&from) = read_from.get(stream.key.as_str()) {
                    self.dispatch(group, instance, &stream.key, from, &stream.ids);
                }
            }
        }
    }

    /// The group's next `XREAD`: every followed key, read after its slowest follower.
    /// Followers whose consumer left are dropped here; `None` once the group ended.
    fn plan(&self, group: GroupId, instance: u64) -> Option<Plan> {
        let mut registry = self.registry();
        let followed = registry.group_mut(group, instance)?;
        let mut plan = Plan {
            keys: Vec::new(),
            from: Vec::new(),
        };
        followed.streams.retain(|key, stream| {
            stream.followers.retain(|_, f| !f.tx.is_closed());
            let Some(from) = stream.followers.values().map(|f| f.cursor).min() else {
                return false;
            };
            plan.keys.push(key.clone());
            plan.from.push(from);
            true
        });
        (!registry.end_if_idle(group)).then_some(plan)
    }

    /// Hands the entries of `key` read after `read_from` to its followers.
    fn dispatch(
        &self,
        group: GroupId,
        instance: u64,
        key: &str,
        read_from: EntryId,
        entries: &[StreamId],
    ) {
        let Some(stream_id) = self
            .registry()
            .group_mut(group, instance)
            .and_then(|g| g.streams.get(key))
            .map(|s| s.stream_id.clone())
        else {
            return;
        };
        // Parse outside the lock: registrations and drops must not wait on JSON.
        let decoded: Vec<DecodedEntry> = entries
            .iter()
            .filter_map(|entry| decode_entry(&stream_id, entry))
            .collect();
        let mut registry = self.registry();
        let Some(followed) = registry.group_mut(group, instance) else {
            return;
        };
        let Some(stream) = followed.streams.get_mut(key) else {
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
                match follower.tx.try_send(entry.event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Ending the stream is safe: the client resumes from the last
                        // event it got, while blocking here would stall every stream.
                        tracing::warn!(
                            replica = %self.replica_id,
                            stream = %crate::ids::fingerprint(&stream_id),
                            "follower fell behind; ending its stream"
                        );
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
                follower.cursor = entry.id;
                if entry.is_final && follower.ends_on_final {
                    return false;
                }
            }
            true
        });
        if stream.followers.is_empty() {
            followed.streams.remove(key);
        }
        registry.end_if_idle(group);
    }
}
