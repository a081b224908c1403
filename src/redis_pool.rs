//! The Redis connection pool every Redis-backed component shares.
//!
//! A deadpool pool of redis-rs multiplexed connections to the deployment's one writable
//! node (`redis_pool/target.rs`: one node, or the primary the sentinels name), built with our
//! own manager for
//! two reasons: deadpool-redis's manager sends a `PING` on every checkout (one more
//! round trip per request), and it cannot set redis-rs's command and connect timeouts.
//! Here a checkout costs nothing on a connection that worked, and a connection whose
//! command failed at the transport level is dropped instead of going back to the pool.
//!
//! deadpool bounds the wait for a free slot and the opening of a connection separately,
//! so a checkout that got its slot just before the wait ran out could then spend the
//! whole connect timeout too; [`RedisPool::get`] bounds the checkout as a whole.

mod backoff;
mod target;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture,
    ScriptInvocation, Value,
    aio::{ConnectionLike, MultiplexedConnection, PubSub},
};
use tokio::sync::watch;

pub use self::backoff::Backoff;
use self::target::Target;
use crate::{
    config::RedisSettings,
    jobs::Jobs,
    metrics::{encode_counter, encode_gauge},
};

/// How often a Sentinel deployment's watcher asks where the primary is.
const SENTINEL_WATCH_PERIOD: Duration = Duration::from_secs(1);

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
    connection_config: AsyncConnectionConfig,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// The most a checkout may take, waiting and connecting together.
    checkout_timeout: Duration,
}

/// What the pool, its manager and its connections share.
struct Shared {
    target: Target,
    counters: Counters,
    /// `redis.replica_acks` and `redis.replica_ack_timeout_ms`; `None` when 0.
    acks: Option<(u32, u64)>,
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
        let shared = Arc::new(Shared {
            target: Target::new(settings)?,
            counters: Counters::default(),
            acks: (settings.replica_acks > 0)
                .then_some((settings.replica_acks, settings.replica_ack_timeout_ms)),
        });
        let command_timeout = Duration::from_millis(settings.command_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let connection_config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(command_timeout))
            .set_connection_timeout(Some(connect_timeout));
        let manager = Manager {
            shared: shared.clone(),
            config: connection_config.clone(),
        };
        let wait = Duration::from_millis(settings.pool_wait_timeout_ms);
        let pool = managed::Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(wait))
            .create_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
            .recycle_timeout(Some(wait))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| RedisPoolError::Unavailable(e.to_string()))?;
        Ok(Self {
            pool,
            shared,
            connection_config,
            command_timeout,
            connect_timeout,
            checkout_timeout: wait.max(connect_timeout),
        })
    }

    /// Checks out a connection, within the longer of `redis.pool_wait_timeout_ms` and
    /// `redis.connect_timeout_ms` in all, so a request that needs Redis answers within
    /// that plus `redis.command_timeout_ms` per command.
    ///
    /// # Errors
    /// [`RedisPoolError::Unavailable`] when none is free or can be opened in time.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection being opened for a cancelled checkout is dropped and
    /// its slot freed.
    pub async fn get(&self) -> Result<PooledConnection, RedisPoolError> {
        let checkout = match tokio::time::timeout(self.checkout_timeout, self.pool.get()).await {
            Ok(Ok(inner)) => {
                self.shared
                    .counters
                    .borrowed
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(PooledConnection {
                    inner,
                    shared: self.shared.clone(),
                });
            }
            Ok(Err(e)) => RedisPoolError::Unavailable(e.to_string()),
            Err(_) => RedisPoolError::Unavailable(format!(
                "no connection within {:?}",
                self.checkout_timeout
            )),
        };
        self.shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        Err(checkout)
    }

    /// Opens a connection outside the pool with no response timeout, for blocking
    /// reads that must not share a multiplexed pooled connection. Its owner should
    /// replace it when [`RedisPool::topology`] changes.
    ///
    /// # Errors
    /// When the connection cannot be established (or, with Sentinel, no primary found).
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = self.connection_config.clone().set_response_timeout(None);
        let (client, epoch) = self.shared.target.node().await?;
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .inspect_err(|e| self.shared.target.saw_error(epoch, e))
    }

    /// Opens a connection like [`RedisPool::dedicated`] to the node serving `key`'s hash
    /// slot, for a blocking read of keys in that slot. Outside Redis Cluster every key is
    /// on the one writable node.
    ///
    /// # Errors
    /// When the connection cannot be established (or no node is known for the slot).
    pub async fn dedicated_for(&self, key: &str) -> Result<MultiplexedConnection, RedisError> {
        let _ = key;
        self.dedicated().await
    }

    /// Whether the deployment is a Redis Cluster: keys of different hash slots may live
    /// on different nodes, so no script, pipeline or multi-key command may span slots.
    pub fn is_cluster(&self) -> bool {
        false
    }

    /// Opens a pub/sub connection (redis-rs puts no timeout on it: bound it with
    /// [`RedisPool::connect_timeout`]). Its owner should replace it when
    /// [`RedisPool::topology`] changes.
    ///
    /// # Errors
    /// When the connection cannot be established (or, with Sentinel, no primary found).
    pub async fn pubsub(&self) -> Result<PubSub, RedisError> {
        let (client, epoch) = self.shared.target.node().await?;
        client
            .get_async_pubsub()
            .await
            .inspect_err(|e| self.shared.target.saw_error(epoch, e))
    }

    /// Changes whenever the deployment's writable node may have changed (a Sentinel
    /// failover); never for a standalone node. Background loops holding a dedicated or
    /// pub/sub connection select on it and reconnect.
    pub fn topology(&self) -> watch::Receiver<u64> {
        self.shared.target.subscribe()
    }

    /// Adds the pool's own background work to `jobs`: with Sentinel, the watcher that
    /// asks the sentinels where the primary is every second, so pooled connections to a
    /// demoted primary are dropped even when nothing failed on them.
    pub fn add_jobs(&self, jobs: &Jobs) {
        if self.shared.target.sentinel().is_none() {
            return;
        }
        let shared = self.shared.clone();
        jobs.add("redis primary watcher", move |stop| async move {
            let Some(sentinel) = shared.target.sentinel() else {
                return;
            };
            let mut tick = tokio::time::interval(SENTINEL_WATCH_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                if let Err(e) = sentinel.check().await {
                    tracing::debug!(error = %e, "no sentinel answered");
                }
            }
        });
    }

    /// How long one command may take on a pooled connection (`redis.command_timeout_ms`).
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// How long establishing a connection may take (`redis.connect_timeout_ms`); also the
    /// bound for connections redis-rs opens without a timeout of its own (pub/sub).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// `PING` through the pool: what readiness checks.
    ///
    /// # Errors
    /// When no connection can be had or the command fails.
    pub async fn ping(&self) -> Result<(), RedisPoolError> {
        let mut conn = self.get().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
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

/// A pooled connection; use it wherever redis-rs takes a `ConnectionLike`.
pub struct PooledConnection {
    inner: managed::Object<Manager>,
    shared: Arc<Shared>,
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        self.shared
            .counters
            .returned
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.inner.conn.req_packed_command(cmd).await;
            self.inner.note(&result, &self.shared);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self
                .inner
                .conn
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.inner.note(&result, &self.shared);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.conn.get_db()
    }
}

impl PooledConnection {
    /// Runs a state-changing script and, with `redis.replica_acks` = N > 0, a `WAIT N`
    /// pipelined behind it (one round trip): the reply counts only once N replicas
    /// have its writes. A script that wrote nothing waits for nothing.
    ///
    /// # Errors
    /// [`RedisPoolError::Command`] when the script fails (or its reply does not parse),
    /// [`RedisPoolError::Unacknowledged`] when it ran but the wait fell short: the
    /// caller answers "outcome unknown", and a retry with the same idempotency key
    /// replays the first outcome (the script keeps its record with its writes).
    pub async fn invoke<T: FromRedisValue>(
        &mut self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisPoolError> {
        let Some((wanted, timeout_ms)) = self.shared.acks else {
            return Ok(invocation.invoke_async(self).await?);
        };
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation)
            .cmd("WAIT")
            .arg(wanted)
            .arg(timeout_ms);
        let (reply, acked): (Value, u32) = match pipe.query_async(self).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // The script cache was emptied (a restart, a failover to a replica that
                // never ran it): nothing ran, so load it and send the pair again.
                invocation.load_async(self).await?;
                pipe.query_async(self).await?
            }
            other => other?,
        };
        if acked < wanted {
            return Err(RedisPoolError::Unacknowledged { acked, wanted });
        }
        Ok(T::from_redis_value(reply).map_err(RedisError::from)?)
    }
}

impl PooledConnection {
    /// Runs `commands`, each touching keys of one hash slot but not all of the same one,
    /// and returns their replies in order: one pipeline on a single node; on Redis
    /// Cluster, each command routed to its slot's node, all in flight at once.
    ///
    /// # Errors
    /// The first command that fails.
    pub async fn each(&mut self, commands: &[Cmd]) -> Result<Vec<Value>, RedisError> {
        let mut pipe = redis::pipe();
        for command in commands {
            pipe.add_command(command.clone());
        }
        pipe.query_async(self).await
    }
}

/// One pooled connection, the target epoch it was opened in, and whether an error has
/// condemned it.
struct Conn {
    conn: MultiplexedConnection,
    epoch: u64,
    broken: AtomicBool,
}

impl Conn {
    /// Condemns the connection after a transport error, or a `READONLY` refusal (its
    /// node was demoted); tells the target, which may forget the node.
    fn note<T>(&self, result: &Result<T, RedisError>, shared: &Shared) {
        let Err(e) = result else { return };
        if !(target::is_transport_error(e) || target::is_read_only(e)) {
            return;
        }
        shared.target.saw_error(self.epoch, e);
        if !self.broken.swap(true, Ordering::Relaxed) {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Manager {
    shared: Arc<Shared>,
    config: AsyncConnectionConfig,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let target = &self.shared.target;
        let (client, epoch) = target.node().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .inspect_err(|e| target.saw_error(epoch, e))?;
        self.shared.counters.created.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            conn,
            epoch,
            broken: AtomicBool::new(false),
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        // A connection that timed out may still deliver the late reply; one that saw an
        // I/O error is gone. Either way a fresh one is cheaper than guessing.
        if conn.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message("connection saw a transport error"));
        }
        if conn.epoch != self.shared.target.epoch() {
            return Err(RecycleError::message("the primary may have moved"));
        }
        Ok(())
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
