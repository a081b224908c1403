//! The bus's subscription connections: one plain pub/sub connection (one node, or the
//! primary the sentinels name), or on a Redis Cluster a RESP3 connection per master
//! that serves a subscribed channel's slot, subscribed with `SSUBSCRIBE`.
//!
//! A sharded channel lives on one shard: `SPUBLISH` reaches only the subscribers of the
//! master serving its slot (and its replicas), so each channel is subscribed on that
//! master. When the slot moves (a migration, a failover) the server unsubscribes the
//! channel with a `sunsubscribe` push; that, a lost connection, or a changed slot map
//! ends the whole set, and the bus connects again, asking the cluster where each slot
//! lives now, and reports a gap.

use std::{
    collections::{HashMap, hash_map::Entry},
    time::Duration,
};

use futures::StreamExt;
use redis::{
    Msg, PushInfo, PushKind, Value,
    aio::{MultiplexedConnection, PubSubSink, PubSubStream},
};
use tokio::sync::mpsc;

use super::Lost;
use crate::redis_pool::{NodeAddr, RedisPool};

/// The live subscription connections of the bus.
pub(super) enum Subscriber {
    /// `SUBSCRIBE` on one pub/sub connection: `PUBLISH` reaches it.
    Plain {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    /// `SSUBSCRIBE` on the master of each channel's slot: `SPUBLISH` reaches it.
    Sharded(Sharded),
}

/// Per-master RESP3 connections whose pushes all arrive on one channel.
pub(super) struct Sharded {
    nodes: HashMap<NodeAddr, MultiplexedConnection>,
    pushes_tx: mpsc::UnboundedSender<PushInfo>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Subscriber {
    /// The command that publishes to this kind of subscriber on `pool`'s deployment.
    pub(super) fn publish_command(pool: &RedisPool) -> &'static str {
        if pool.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Connects: the pub/sub connection, or nothing yet on a cluster (a master's
    /// connection opens with its first channel). Unbounded on a plain deployment, as
    /// redis-rs's pub/sub connect is: the caller bounds it.
    pub(super) async fn connect(pool: &RedisPool) -> Result<Self, Lost> {
        if pool.is_cluster() {
            let (pushes_tx, pushes) = mpsc::unbounded_channel();
            return Ok(Self::Sharded(Sharded {
                nodes: HashMap::new(),
                pushes_tx,
                pushes,
            }));
        }
        let (sink, stream) = pool.pubsub().await?.split();
        Ok(Self::Plain { sink, stream })
    }

    /// Subscribes `channels`, each step bounded by the pool's timeouts.
    pub(super) async fn subscribe(
        &mut self,
        pool: &RedisPool,
        channels: &[String],
    ) -> Result<(), Lost> {
        let command_timeout = pool.command_timeout();
        match self {
            Self::Plain { sink, .. } => {
                bounded(command_timeout, "SUBSCRIBE", sink.subscribe(channels)).await?;
            }
            Self::Sharded(sharded) => {
                let masters = tokio::time::timeout(
                    pool.connect_timeout() + command_timeout,
                    pool.slot_masters(),
                )
                .await
                .map_err(|_| Lost::CommandTimeout("CLUSTER SLOTS"))?
                .map_err(|e| Lost::Unavailable(e.to_string()))?;
                for channel in channels {
                    let node = masters
                        .master_for(channel.as_bytes())
                        .ok_or(Lost::Unserved)?;
                    let conn = sharded.node(pool, node).await?;
                    // One channel per command: redis-rs matches one confirmation push
                    // to one request.
                    let mut subscribe = redis::cmd("SSUBSCRIBE");
                    subscribe.arg(channel);
                    let subscribe = subscribe.query_async::<Value>(conn);
                    bounded(command_timeout, "SSUBSCRIBE", subscribe).await?;
                }
            }
        }
        Ok(())
    }

    /// The next message on a subscribed channel.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken off the connection only when returned.
    pub(super) async fn next(&mut self) -> Result<Msg, Lost> {
        match self {
            Self::Plain { stream, .. } => stream.next().await.ok_or(Lost::Closed),
            Self::Sharded(sharded) => loop {
                let push = sharded.pushes.recv().await.ok_or(Lost::Closed)?;
                match push.kind {
                    PushKind::SMessage => {
                        if let Some(msg) = Msg::from_push_info(push) {
                            return Ok(msg);
                        }
                    }
                    // Never sent by the bus: the server dropped the channel, its slot
                    // having moved to another master.
                    PushKind::SUnsubscribe => return Err(Lost::SlotMoved),
                    PushKind::Disconnection => return Err(Lost::Closed),
                    // Confirmations, also returned to the request that asked for them.
                    _ => {}
                }
            },
        }
    }

    /// `PING` on every connection, so one that died without a reset is noticed.
    pub(super) async fn ping(&mut self, command_timeout: Duration) -> Result<(), Lost> {
        match self {
            Self::Plain { sink, .. } => {
                bounded(command_timeout, "PING", sink.ping::<Value>()).await?;
            }
            Self::Sharded(sharded) => {
                let pings = sharded.nodes.values().map(|conn| {
                    let mut conn = conn.clone();
                    async move {
                        let ping = redis::cmd("PING");
                        bounded(
                            command_timeout,
                            "PING",
                            ping.query_async::<Value>(&mut conn),
                        )
                        .await
                    }
                });
                for answer in futures::future::join_all(pings).await {
                    answer?;
                }
            }
        }
        Ok(())
    }
}

impl Sharded {
    /// The connection to `node`, opened (within the pool's connect timeout) when there
    /// is none yet.
    async fn node(
        &mut self,
        pool: &RedisPool,
        node: &NodeAddr,
    ) -> Result<&mut MultiplexedConnection, Lost> {
        let pushes = self.pushes_tx.clone();
        Ok(match self.nodes.entry(node.clone()) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(none) => {
                let connect_timeout = pool.connect_timeout();
                let conn =
                    tokio::time::timeout(connect_timeout, pool.push_connection(node, pushes))
                        .await
                        .map_err(|_| Lost::ConnectTimeout(connect_timeout))??;
                none.insert(conn)
            }
        })
    }
}

/// `command` bounded by `limit`; a timeout is [`Lost::CommandTimeout`] of `name`.
async fn bounded<T>(
    limit: Duration,
    name: &'static str,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Lost> {
    Ok(tokio::time::timeout(limit, command)
        .await
        .map_err(|_| Lost::CommandTimeout(name))??)
}
