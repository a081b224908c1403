//! The Redis connection pool every Redis-backed component shares.
//!
//! A deadpool pool of redis-rs multiplexed connections, built with our own manager for
//! two reasons: deadpool-redis's manager sends a `PING` on every checkout (one more
//! round trip per request), and it cannot set redis-rs's command and connect timeouts.
//! Here a checkout costs nothing on a connection that worked, and a connection whose
//! command failed at the transport level is dropped instead of going back to the pool.
//!
//! deadpool bounds the wait for a free slot and the opening of a connection separately,
//! so a checkout that got its slot just before the wait ran out could then spend the
//! whole connect timeout too; [`RedisPool::get`] bounds the checkout as a whole.

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
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};

use crate::{
    config::RedisSettings,
    metrics::{encode_counter, encode_gauge},
};

/// Failure to get a connection or to run a command.
#[derive(Debug, thiserror::Error)]
pub enum RedisPoolError {
    /// No connection became free, or none could be made, in time.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A command failed.
    #[error("redis command failed: {0}")]
    Command(#[from] RedisError),
}

/// Cheap-clone handle on the shared pool (clones share the same connections).
#[derive(Clone)]
pub struct RedisPool {
    pool: managed::Pool<Manager>,
    client: Client,
    connection_config: AsyncConnectionConfig,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// The most a checkout may take, waiting and connecting together.
    checkout_timeout: Duration,
    counters: Arc<Counters>,
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

/// The client of `settings.url`: TLS for `rediss://`, trusting `tls_ca_file` when set.
fn client(settings: &RedisSettings) -> Result<Client, RedisPoolError> {
    if !settings.url.starts_with("rediss://") {
        return Ok(Client::open(settings.url.as_str())?);
    }
    // rustls needs one process-wide crypto provider; keep one already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if settings.tls_ca_file.as_os_str().is_empty() {
        return Ok(Client::open(settings.url.as_str())?);
    }
    let root_cert = std::fs::read(&settings.tls_ca_file).map_err(|e| {
        RedisPoolError::Unavailable(format!(
            "redis.tls_ca_file {}: {e}",
            settings.tls_ca_file.display()
        ))
    })?;
    Ok(Client::build_with_tls(
        settings.url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )?)
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
    /// When the URL is not a valid Redis URL, or `redis.tls_ca_file` cannot be read.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisPoolError> {
        let client = client(settings)?;
        let command_timeout = Duration::from_millis(settings.command_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let connection_config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(command_timeout))
            .set_connection_timeout(Some(connect_timeout));
        let counters = Arc::new(Counters::default());
        let manager = Manager {
            client: client.clone(),
            config: connection_config.clone(),
            counters: counters.clone(),
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
            client,
            connection_config,
            command_timeout,
            connect_timeout,
            checkout_timeout: wait.max(connect_timeout),
            counters,
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
                self.counters.borrowed.fetch_add(1, Ordering::Relaxed);
                return Ok(PooledConnection {
                    inner,
                    counters: self.counters.clone(),
                });
            }
            Ok(Err(e)) => RedisPoolError::Unavailable(e.to_string()),
            Err(_) => RedisPoolError::Unavailable(format!(
                "no connection within {:?}",
                self.checkout_timeout
            )),
        };
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        Err(checkout)
    }

    /// Opens a connection outside the pool with no response timeout, for blocking
    /// reads and subscriptions that must not share a multiplexed pooled connection.
    ///
    /// # Errors
    /// When the connection cannot be established.
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = self.connection_config.clone().set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// The client, for components that open their own special connections (pub/sub).
    pub fn client(&self) -> &Client {
        &self.client
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
        let c = &self.counters;
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

/// Capped exponential backoff with jitter, for background loops that keep a dedicated
/// connection and must retry forever without hammering a Redis that is down.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max` (`max` below `min` is raised to `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    ///
    /// The delay is spread over ±20% so replicas that lost Redis at the same moment do
    /// not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // A failed entropy read only costs the spread, never the retry.
        let spread = getrandom::u32().unwrap_or(u32::MAX / 2);
        let factor = 0.8 + 0.4 * (f64::from(spread) / f64::from(u32::MAX));
        base.mul_f64(factor)
    }

    /// Back to the minimum delay, after a connection worked again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// After one connection of a background loop (the bus subscriber, the event stream
    /// reader) ended with `outcome` (`Ok` once `shutdown` fired, `Err` when it was
    /// lost): whether to connect again. A lost connection is logged as `task` of
    /// `replica` and the next delay waited out first; `false` when the loop ended on
    /// shutdown or `shutdown` fired meanwhile.
    pub async fn reconnect_after<E: std::fmt::Display>(
        &mut self,
        outcome: Result<(), E>,
        task: &str,
        replica: &str,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let Err(error) = outcome else { return false };
        let delay = self.next_delay();
        tracing::warn!(
            task,
            replica,
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "lost Redis; reconnecting"
        );
        shutdown
            .run_until_cancelled(tokio::time::sleep(delay))
            .await
            .is_some()
    }
}

/// A pooled connection; use it wherever redis-rs takes a `ConnectionLike`.
pub struct PooledConnection {
    inner: managed::Object<Manager>,
    counters: Arc<Counters>,
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        self.counters.returned.fetch_add(1, Ordering::Relaxed);
    }
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.inner.conn.req_packed_command(cmd).await;
            self.inner.note(&result, &self.counters);
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
            self.inner.note(&result, &self.counters);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.conn.get_db()
    }
}

/// One pooled connection and whether a transport error has condemned it.
struct Conn {
    conn: MultiplexedConnection,
    broken: AtomicBool,
}

impl Conn {
    fn note<T>(&self, result: &Result<T, RedisError>, counters: &Counters) {
        if let Err(e) = result
            && (e.is_unrecoverable_error() || e.is_timeout() || e.is_io_error())
            && !self.broken.swap(true, Ordering::Relaxed)
        {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Manager {
    client: Client,
    config: AsyncConnectionConfig,
    counters: Arc<Counters>,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            conn,
            broken: AtomicBool::new(false),
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        // A connection that timed out may still deliver the late reply; one that saw an
        // I/O error is gone. Either way a fresh one is cheaper than guessing.
        if conn.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message("connection saw a transport error"));
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
            tls_ca_file: Default::default(),
            key_prefix: "t".into(),
            pool_size: 3,
            pool_wait_timeout_ms: 500,
            command_timeout_ms: 500,
            connect_timeout_ms: 1000,
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

    /// A checkout that gets its slot late in its wait still ends within the longer of
    /// the wait and the connect timeout, on a server that accepts connections and never
    /// answers (as a frozen Redis does).
    #[tokio::test(start_paused = true)]
    async fn a_checkout_ends_within_the_longer_of_its_wait_and_connect_timeouts() {
        // Bound and never accepted: connects complete in the kernel, nothing answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = RedisSettings {
            url: format!("redis://{}", silent.local_addr().unwrap()),
            tls_ca_file: Default::default(),
            key_prefix: "t".into(),
            pool_size: 1,
            pool_wait_timeout_ms: 500,
            command_timeout_ms: 500,
            connect_timeout_ms: 1000,
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

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        let bases = [100, 200, 400, 800, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            assert!(
                *delay >= ms(base * 8 / 10) && *delay <= ms(base * 12 / 10),
                "{delay:?} vs {base}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(120));
    }
}
