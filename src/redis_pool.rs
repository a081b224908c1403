//! The Redis connection pool every Redis-backed component shares.
//!
//! A deadpool pool of redis-rs multiplexed connections to the deployment's one writable
//! node (`redis_pool/target.rs`: one node, or the primary the sentinels name), or of
//! redis-rs cluster connections on a Redis Cluster (`redis_pool/cluster.rs`), handed out
//! as a [`PooledConnection`] (`redis_pool/connection.rs`). Checkouts share a node's
//! connection (their commands pipelined on it) unless `redis.replica_acks` is set. It is built with our own
//! manager for two reasons: deadpool-redis's manager sends a `PING` on every checkout
//! (one more round trip per request), and it cannot set redis-rs's command and connect
//! timeouts. Here a checkout costs nothing on a connection that worked, and a node's
//! connection whose command failed at the transport level is dropped instead of going
//! back to the pool (a cluster connection repairs itself).
//!
//! deadpool bounds the wait for a free slot and the opening of a connection separately,
//! so a checkout that got its slot just before the wait ran out could then spend the
//! whole connect timeout too; [`RedisPool::get`] bounds the checkout as a whole.

mod backoff;
mod cluster;
mod connection;
mod node;
mod target;
mod trace;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use deadpool::managed;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use redis::{
    AsyncConnectionConfig, ErrorKind, PushInfo, RedisError,
    aio::{MultiplexedConnection, PubSub},
};
use tokio::sync::{mpsc, watch};

pub use self::{
    backoff::Backoff,
    cluster::{NodeAddr, SlotMasters, crc16, key_slot},
    connection::PooledConnection,
};
use self::{connection::Manager, target::Target};
use crate::{
    config::RedisSettings,
    jobs::Jobs,
    metrics::{encode_counter, encode_gauge},
};

/// How often a Sentinel deployment's watcher asks where the primary is, and a cluster's
/// watcher reads its slot map.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Failure to get a connection or to run a command.
#[derive(Debug, thiserror::Error)]
pub enum RedisPoolError {
    /// No connection became free, or none could be made, in time.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A command failed.
    #[error("redis command failed: {0}")]
    Command(#[from] RedisError),
    /// A state-changing script ran, but fewer replicas than `redis.replica_acks`
    /// confirmed its writes in time: they may be lost in a failover.
    #[error(
        "the write reached {acked} of the {wanted} Redis replicas required in time; its \
         outcome is unknown"
    )]
    Unacknowledged {
        /// Replicas that confirmed.
        acked: u32,
        /// `redis.replica_acks`.
        wanted: u32,
    },
}

/// Cheap-clone handle on the shared pool (clones share the same connections).
#[derive(Clone)]
pub struct RedisPool {
    pool: managed::Pool<Manager>,
    shared: Arc<Shared>,
}

/// What the pool, its manager and its connections share.
struct Shared {
    target: Target,
    counters: Counters,
    /// `redis.replica_acks` and `redis.replica_ack_timeout_ms`; `None` when 0.
    acks: Option<(u32, u64)>,
    /// The names of the stores' scripts, for the spans of their round trips.
    script_names: trace::ScriptNames,
    connection_config: AsyncConnectionConfig,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// The most a checkout may take, waiting and connecting together.
    checkout_timeout: Duration,
    /// Held by a shared checkout that finds no idle connection, so a burst of them on
    /// an empty pool opens one connection that they all share, not one each.
    opening: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Whether a checkout holds its connection alone: with `redis.replica_acks` (a
    /// `WAIT` blocks the connection it is sent on) and on a Redis Cluster (see
    /// `redis_pool/connection.rs`).
    fn exclusive(&self) -> bool {
        self.acks.is_some() || self.target.cluster().is_some()
    }
}

/// Lifetime totals of the pool, for `/metrics` and `resource_stats`.
#[derive(Debug, Default)]
struct Counters {
    created: AtomicU64,
    borrowed: AtomicU64,
    returned: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("status", &self.pool.status())
            .finish()
    }
}

/// Snapshot of the pool's occupancy, for metrics and readiness.
#[derive(Debug, Clone, Copy)]
pub struct PoolStatus {
    /// Largest number of connections.
    pub max_size: usize,
    /// Connections currently open.
    pub size: usize,
    /// Open connections not checked out.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// Connections opened since start.
    pub created_total: u64,
    /// Checkouts served since start.
    pub borrowed_total: u64,
    /// Checkouts given back since start.
    pub returned_total: u64,
    /// Failed checkouts and connections condemned by a transport error, since start.
    pub errors_total: u64,
}

impl RedisPool {
    /// Builds the pool; connections are opened lazily, so this succeeds while Redis is down.
    ///
    /// # Errors
    /// When a URL is not a valid Redis URL, or `redis.tls_ca_file` cannot be read.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisPoolError> {
        let target = Target::new(settings)?;
        let command_timeout = Duration::from_millis(settings.command_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let connection_config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(command_timeout))
            .set_connection_timeout(Some(connect_timeout));
        let wait = Duration::from_millis(settings.pool_wait_timeout_ms);
        let shared = Arc::new(Shared {
            target,
            counters: Counters::default(),
            acks: (settings.replica_acks > 0)
                .then_some((settings.replica_acks, settings.replica_ack_timeout_ms)),
            script_names: trace::ScriptNames::default(),
            connection_config: connection_config.clone(),
            command_timeout,
            connect_timeout,
            checkout_timeout: wait.max(connect_timeout),
            opening: tokio::sync::Mutex::new(()),
        });
        let manager = Manager {
            shared: shared.clone(),
            config: connection_config,
        };
        let pool = managed::Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(wait))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(wait))
            // The connection given back last is handed out first: shared checkouts
            // return theirs at once, so one connection carries the load while it
            // suffices and another opens only for checkouts that overlap.
            .queue_mode(managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| RedisPoolError::Unavailable(e.to_string()))?;
        Ok(Self { pool, shared })
    }

    /// Names the Lua `scripts` a store runs, for the exported spans of their round
    /// trips (`redis {name}`); a script not named is shown as its command, `EVALSHA`.
    pub fn name_scripts(&self, scripts: &[(&'static str, &redis::Script)]) {
        for (name, script) in scripts {
            self.shared.script_names.name(script, name);
        }
    }

    /// Checks out a connection, within the longer of `redis.pool_wait_timeout_ms` and
    /// `redis.connect_timeout_ms` in all (a shared checkout waits only while another
    /// opens the connection it will share), so a request that needs Redis answers within
    /// that plus `redis.command_timeout_ms` per command.
    ///
    /// # Errors
    /// [`RedisPoolError::Unavailable`] when none is free or can be opened in time.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection being opened for a cancelled checkout is dropped and
    /// its slot freed.
    pub async fn get(&self) -> Result<PooledConnection, RedisPoolError> {
        let exclusive = self.shared.exclusive();
        // Boxed: deadpool's checkout holds the opening of a connection (redis-rs's
        // connect) inline, 7 KiB that every caller's future would carry, and copy.
        let checkout: futures::future::BoxFuture<'_, _> = Box::pin(async {
            if exclusive || self.pool.status().available > 0 {
                return self.pool.get().await;
            }
            let _opening = self.shared.opening.lock().await;
            self.pool.get().await
        });
        let checkout = match tokio::time::timeout(self.shared.checkout_timeout, checkout).await {
            Ok(Ok(inner)) => {
                self.shared
                    .counters
                    .borrowed
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(PooledConnection::new(inner, self.shared.clone()));
            }
            Ok(Err(e)) => RedisPoolError::Unavailable(e.to_string()),
            Err(_) => RedisPoolError::Unavailable(format!(
                "no connection within {:?}",
                self.shared.checkout_timeout
            )),
        };
        self.shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        Err(checkout)
    }

    /// A connection without response timeout to the one writable node (standalone or
    /// Sentinel).
    async fn dedicated_on_node(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = self
            .shared
            .connection_config
            .clone()
            .set_response_timeout(None);
        let (client, epoch) = self.shared.target.node().await?;
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .inspect_err(|e| self.shared.target.saw_error(epoch, e))
    }

    /// Opens a connection outside the pool with no response timeout, for blocking reads
    /// (of keys in `key`'s hash slot) that must not share a multiplexed pooled
    /// connection, to the master serving that slot; outside Redis Cluster every key is
    /// on the one writable node. Its owner should replace it when
    /// [`RedisPool::topology`] changes. On a cluster the slot's master is asked of the
    /// cluster at each call (`CLUSTER SLOTS`): when the slot moves later, a command on the
    /// connection answers `MOVED` (and [`RedisPool::topology`] changes within a second),
    /// and its owner calls again.
    ///
    /// # Errors
    /// When the connection cannot be established (or no node is known for the slot).
    pub async fn dedicated_for(&self, key: &str) -> Result<MultiplexedConnection, RedisError> {
        match self.shared.target.cluster() {
            Some(cluster) => self.dedicated_on_cluster(cluster, key).await,
            None => self.dedicated_on_node().await,
        }
    }

    /// A connection without response timeout to the master of `key`'s slot.
    async fn dedicated_on_cluster(
        &self,
        cluster: &cluster::ClusterTarget,
        key: &str,
    ) -> Result<MultiplexedConnection, RedisError> {
        let masters = self.slot_masters().await.map_err(into_redis_error)?;
        let node = masters.master_for(key.as_bytes()).ok_or_else(|| {
            RedisError::from((
                ErrorKind::ClusterConnectionNotFound,
                "no master serves the slot",
                key_slot(key.as_bytes()).to_string(),
            ))
        })?;
        let config = self
            .shared
            .connection_config
            .clone()
            .set_response_timeout(None);
        cluster.connect_node(node, &config, false).await
    }

    /// Whether the deployment is a Redis Cluster: keys of different hash slots may live
    /// on different nodes, so no script, pipeline or multi-key command may span slots.
    pub fn is_cluster(&self) -> bool {
        self.shared.target.cluster().is_some()
    }

    /// Which master serves each hash slot, as a master of the cluster says now
    /// (`CLUSTER SLOTS` through the pool).
    ///
    /// # Errors
    /// [`RedisPoolError::Unavailable`] outside Redis Cluster or when no connection can be
    /// had; [`RedisPoolError::Command`] when the command fails or its reply is malformed.
    pub async fn slot_masters(&self) -> Result<SlotMasters, RedisPoolError> {
        if !self.is_cluster() {
            return Err(RedisPoolError::Unavailable(
                "slot masters are a Redis Cluster's".into(),
            ));
        }
        let mut conn = self.get().await?;
        let reply = conn
            .on_a_master(&redis::cmd("CLUSTER").arg("SLOTS").clone())
            .await?;
        Ok(SlotMasters::parse(reply)?)
    }

    /// Opens a RESP3 connection to the cluster node `node` whose push messages (sharded
    /// pub/sub messages, `sunsubscribe` when a channel's slot moves away, and a
    /// disconnection notice when it is lost) go to `pushes`; no response timeout (its
    /// owner bounds its commands). For the bus's sharded subscriptions.
    ///
    /// # Errors
    /// Outside Redis Cluster, or when the connection cannot be established.
    pub async fn push_connection(
        &self,
        node: &NodeAddr,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> Result<MultiplexedConnection, RedisError> {
        let cluster = self.shared.target.cluster().ok_or_else(|| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "push connections are to a Redis Cluster's nodes",
            ))
        })?;
        let config = self
            .shared
            .connection_config
            .clone()
            .set_response_timeout(None)
            .set_push_sender(pushes);
        cluster.connect_node(node, &config, true).await
    }

    /// Opens a pub/sub connection (redis-rs puts no timeout on it: bound it with
    /// [`RedisPool::connect_timeout`]). Its owner should replace it when
    /// [`RedisPool::topology`] changes. On a Redis Cluster it goes to the master of slot 0:
    /// plain pub/sub reaches every node there (the bus uses sharded pub/sub instead).
    ///
    /// # Errors
    /// When the connection cannot be established (or, with Sentinel, no primary found).
    pub async fn pubsub(&self) -> Result<PubSub, RedisError> {
        if let Some(cluster) = self.shared.target.cluster() {
            let masters = self.slot_masters().await.map_err(into_redis_error)?;
            let node = masters.master_of_slot(0).ok_or_else(|| {
                RedisError::from((
                    ErrorKind::ClusterConnectionNotFound,
                    "no master serves slot 0",
                ))
            })?;
            return cluster.client_for(node, false)?.get_async_pubsub().await;
        }
        let (client, epoch) = self.shared.target.node().await?;
        client
            .get_async_pubsub()
            .await
            .inspect_err(|e| self.shared.target.saw_error(epoch, e))
    }

    /// Changes whenever the deployment's writable node may have changed (a Sentinel
    /// failover) or a Redis Cluster's slot map did (a failover, a slot migrated); never
    /// for a standalone node. Background loops holding a dedicated or pub/sub connection
    /// select on it and reconnect.
    pub fn topology(&self) -> watch::Receiver<u64> {
        self.shared.target.subscribe()
    }

    /// Adds the pool's own background work to `jobs`: with Sentinel, the watcher that
    /// asks the sentinels where the primary is every second, so pooled connections to a
    /// demoted primary are dropped even when nothing failed on them; on a Redis Cluster,
    /// the watcher that reads the slot map every second (one `CLUSTER SLOTS`) and moves
    /// [`RedisPool::topology`] when it changed.
    pub fn add_jobs(&self, jobs: &Jobs) {
        if self.shared.target.sentinel().is_some() {
            let shared = self.shared.clone();
            jobs.add("redis primary watcher", move |stop| async move {
                let Some(sentinel) = shared.target.sentinel() else {
                    return;
                };
                let mut tick = tokio::time::interval(WATCH_PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while stop.run_until_cancelled(tick.tick()).await.is_some() {
                    if let Err(e) = sentinel.check().await {
                        tracing::debug!(error = %e, "no sentinel answered");
                    }
                }
            });
        }
        if self.is_cluster() {
            let pool = self.clone();
            jobs.add("redis cluster slot watcher", move |stop| async move {
                let mut tick = tokio::time::interval(WATCH_PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while stop.run_until_cancelled(tick.tick()).await.is_some() {
                    if let Err(e) = pool.watch_slots().await {
                        tracing::debug!(error = %e, "the cluster's slot map could not be read");
                    }
                }
            });
        }
    }

    /// One step of the cluster's slot watcher: reads the slot map and moves
    /// [`RedisPool::topology`] when it differs from the one read before. `Ok(true)` when
    /// it changed; always `Ok(false)` outside Redis Cluster.
    ///
    /// # Errors
    /// When the slot map cannot be read (what was seen before is kept).
    pub async fn watch_slots(&self) -> Result<bool, RedisPoolError> {
        let Some(cluster) = self.shared.target.cluster() else {
            return Ok(false);
        };
        Ok(cluster.observe(self.slot_masters().await?))
    }

    /// How long one command may take on a pooled connection (`redis.command_timeout_ms`).
    pub fn command_timeout(&self) -> Duration {
        self.shared.command_timeout
    }

    /// How long establishing a connection may take (`redis.connect_timeout_ms`); also the
    /// bound for connections redis-rs opens without a timeout of its own (pub/sub).
    pub fn connect_timeout(&self) -> Duration {
        self.shared.connect_timeout
    }

    /// What readiness checks: `PING` through the pool; on a Redis Cluster, that every
    /// slot has a master and every master answers `PING` (on a connection of its own, so
    /// a master that stopped answering is seen whatever the pool's connections know).
    ///
    /// # Errors
    /// When no connection can be had, a command fails, or a slot has no master.
    pub async fn ping(&self) -> Result<(), RedisPoolError> {
        let Some(cluster) = self.shared.target.cluster() else {
            let mut conn = self.get().await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            return Ok(());
        };
        let masters = self.slot_masters().await?;
        if let Some(slot) = masters.unserved() {
            return Err(RedisPoolError::Unavailable(format!(
                "no master serves slot {slot}"
            )));
        }
        let answers =
            futures::future::join_all(masters.masters().into_iter().map(|node| async move {
                let ping = async {
                    let mut conn = cluster
                        .connect_node(node, &self.shared.connection_config, false)
                        .await?;
                    redis::cmd("PING").query_async::<()>(&mut conn).await
                };
                tokio::time::timeout(
                    self.shared.connect_timeout + self.shared.command_timeout,
                    ping,
                )
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                })
                .map_err(|e| RedisPoolError::Unavailable(format!("master {node}: {e}")))
            }))
            .await;
        answers.into_iter().collect()
    }

    /// The pool's occupancy now.
    pub fn status(&self) -> PoolStatus {
        let s = self.pool.status();
        let c = &self.shared.counters;
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
            created_total: c.created.load(Ordering::Relaxed),
            borrowed_total: c.borrowed.load(Ordering::Relaxed),
            returned_total: c.returned.load(Ordering::Relaxed),
            errors_total: c.errors.load(Ordering::Relaxed),
        }
    }

    /// Registers the pool's `redis_pool_*` series with `metrics`, read from
    /// [`RedisPool::status`] at each scrape.
    pub fn register_metrics(&self, metrics: &crate::metrics::Metrics) {
        metrics.register_collector(PoolFigures(self.clone()));
    }
}

/// The `redis_pool_*` series: the pool's [`PoolStatus`] at scrape time.
#[derive(Debug)]
struct PoolFigures(RedisPool);

impl Collector for PoolFigures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.status();
        encode_gauge(
            &mut enc,
            "redis_pool_max_size",
            "Largest pool size",
            s.max_size as f64,
        )?;
        encode_gauge(
            &mut enc,
            "redis_pool_size",
            "Open pooled connections",
            s.size as f64,
        )?;
        encode_gauge(
            &mut enc,
            "redis_pool_available",
            "Idle pooled connections",
            s.available as f64,
        )?;
        encode_gauge(
            &mut enc,
            "redis_pool_waiting",
            "Requests waiting for a connection",
            s.waiting as f64,
        )?;
        encode_counter(
            &mut enc,
            "redis_pool_connections_created",
            "Pooled connections opened",
            s.created_total,
        )?;
        encode_counter(
            &mut enc,
            "redis_pool_checkouts",
            "Connections checked out of the pool",
            s.borrowed_total,
        )?;
        encode_counter(
            &mut enc,
            "redis_pool_returns",
            "Connections given back to the pool",
            s.returned_total,
        )?;
        encode_counter(
            &mut enc,
            "redis_pool_errors",
            "Failed checkouts and connections dropped after a transport error",
            s.errors_total,
        )
    }
}

/// A [`RedisPoolError`] where a redis-rs error is expected (the shared API of
/// dedicated connections).
fn into_redis_error(error: RedisPoolError) -> RedisError {
    match error {
        RedisPoolError::Command(e) => e,
        other => RedisError::from((ErrorKind::Io, "redis unavailable", other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_metrics_exposes_the_pool_status() {
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            key_prefix: "t".into(),
            pool_size: 3,
            ..Default::default()
        };
        let metrics = crate::metrics::Metrics::new("r", "redis");
        RedisPool::new(&settings)
            .unwrap()
            .register_metrics(&metrics);
        let text = metrics.render();
        for line in [
            "# TYPE stateful_mcp_redis_pool_max_size gauge\n",
            "stateful_mcp_redis_pool_max_size{replica=\"r\"} 3.0\n",
            "stateful_mcp_redis_pool_size{replica=\"r\"} 0.0\n",
            "# TYPE stateful_mcp_redis_pool_checkouts counter\n",
            "stateful_mcp_redis_pool_checkouts_total{replica=\"r\"} 0\n",
            "stateful_mcp_redis_pool_errors_total{replica=\"r\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    /// A standalone node never moves: its topology receiver never fires, or every
    /// dedicated connection would be replaced in a loop.
    #[tokio::test]
    async fn a_standalone_topology_never_changes() {
        let pool = RedisPool::new(&RedisSettings::default()).unwrap();
        let mut topology = pool.topology();
        let changed = tokio::time::timeout(Duration::from_millis(50), topology.changed()).await;
        assert!(changed.is_err(), "{changed:?}");
    }

    /// A checkout that gets its slot late in its wait still ends within the longer of
    /// the wait and the connect timeout, on a server that accepts connections and never
    /// answers (as a frozen Redis does).
    #[tokio::test(start_paused = true)]
    async fn a_checkout_ends_within_the_longer_of_its_wait_and_connect_timeouts() {
        // Bound and never accepted: connects complete in the kernel, nothing answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = RedisSettings {
            url: format!("redis://{}", silent.local_addr().unwrap()),
            key_prefix: "t".into(),
            pool_size: 1,
            ..Default::default()
        };
        let pool = RedisPool::new(&settings).unwrap();
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Gets the slot the first checkout frees at 1 s (after a 400 ms wait), then would
        // spend the whole connect timeout on a connection of its own.
        let started = tokio::time::Instant::now();
        let second = pool.get().await;
        let took = started.elapsed();
        assert!(second.is_err());
        assert!(!first.await.unwrap());
        assert!(took <= Duration::from_millis(1000), "{took:?}");
    }
}
