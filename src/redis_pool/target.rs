//! Where the pool's connections go: one node (`redis.mode = "standalone"`), the
//! primary the sentinels name (`"sentinel"`), found again whenever it may have changed,
//! or a Redis Cluster (`"cluster"`, `redis_pool/cluster.rs`).
//!
//! A Sentinel deployment's primary is cached with an *epoch*. Whatever suggests the
//! primary moved (a connection to it failed, it answered `READONLY` because it was
//! demoted, or the watcher saw the sentinels name another address) forgets it and bumps
//! the epoch: the pool then drops every connection of an older epoch instead of reusing
//! it, and the next connection asks the sentinels again. So after a failover no write
//! goes to a demoted primary for longer than one watcher period, and while the sentinels
//! name no reachable primary, opening a connection fails (readiness goes red).

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError,
    ServerErrorKind, Value, aio::MultiplexedConnection,
};
use tokio::sync::watch;

use super::{
    RedisPoolError,
    cluster::ClusterTarget,
    node::{addr_like, client, root_cert},
};
use crate::config::{RedisMode, RedisSettings};

/// How the pool reaches the deployment.
// One per pool, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Target {
    /// One node; the sender only keeps [`Target::subscribe`]'s receivers waiting (a
    /// node never moves).
    Node(Client, watch::Sender<u64>),
    /// The primary of a Sentinel-monitored set.
    Sentinel(Sentinel),
    /// A Redis Cluster: no one node; connections are cluster connections.
    Cluster(ClusterTarget),
}

impl Target {
    /// The target `settings` describe.
    ///
    /// # Errors
    /// A malformed URL, or a `redis.tls_ca_file` that cannot be read.
    pub(super) fn new(settings: &RedisSettings) -> Result<Self, RedisPoolError> {
        let ca = root_cert(settings)?;
        match settings.mode {
            RedisMode::Standalone => Ok(Self::Node(
                client(settings.url.as_str().into_connection_info()?, ca.as_deref())?,
                watch::channel(0).0,
            )),
            RedisMode::Sentinel => Ok(Self::Sentinel(Sentinel::new(settings, ca)?)),
            RedisMode::Cluster => Ok(Self::Cluster(ClusterTarget::new(settings, ca)?)),
        }
    }

    /// The client of the node to connect to now, and the epoch it belongs to.
    ///
    /// # Errors
    /// When the sentinels name no primary that answers as one within the bounds; always
    /// for a cluster, which has no one node (its callers ask it for a slot's master).
    pub(super) async fn node(&self) -> Result<(Client, u64), RedisError> {
        match self {
            Self::Node(client, _) => Ok((client.clone(), 0)),
            // Boxed: the discovery's future is deep, and it runs only when the primary
            // is not cached; every pooled checkout's future would carry it otherwise.
            Self::Sentinel(sentinel) => Box::pin(sentinel.primary()).await,
            Self::Cluster(_) => Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "a Redis Cluster has no one node to connect to",
            ))),
        }
    }

    /// The current epoch: connections of an older one are not reused. A cluster
    /// connection follows the cluster by itself: its epoch never changes.
    pub(super) fn epoch(&self) -> u64 {
        match self {
            Self::Node(..) | Self::Cluster(_) => 0,
            Self::Sentinel(sentinel) => sentinel.epoch.load(Ordering::Acquire),
        }
    }

    /// A connection of `epoch` saw `error`: if it suggests the primary moved, forget it.
    pub(super) fn saw_error(&self, epoch: u64, error: &RedisError) {
        if let Self::Sentinel(sentinel) = self
            && (is_transport_error(error) || is_read_only(error))
        {
            sentinel.forget(epoch);
        }
    }

    /// A receiver that changes whenever the epoch does (never for one node), or a
    /// cluster's slot map, so the owners of dedicated connections can reconnect to the
    /// new primary or the slot's new master.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        match self {
            Self::Node(_, never) => never.subscribe(),
            Self::Sentinel(sentinel) => sentinel.changed.subscribe(),
            Self::Cluster(cluster) => cluster.subscribe(),
        }
    }

    /// The Sentinel side of the target, when it has one.
    pub(super) fn sentinel(&self) -> Option<&Sentinel> {
        match self {
            Self::Sentinel(sentinel) => Some(sentinel),
            Self::Node(..) | Self::Cluster(_) => None,
        }
    }

    /// The cluster, when the target is one.
    pub(super) fn cluster(&self) -> Option<&ClusterTarget> {
        match self {
            Self::Cluster(cluster) => Some(cluster),
            Self::Node(..) | Self::Sentinel(_) => None,
        }
    }
}

/// Whether `error` means the connection itself is unusable.
pub(super) fn is_transport_error(error: &RedisError) -> bool {
    error.is_unrecoverable_error() || error.is_timeout() || error.is_io_error()
}

/// Whether `error` is a node refusing a write because it is (now) a replica.
pub(super) fn is_read_only(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || error.to_string().contains("READONLY")
}

/// A primary found through the sentinels, cached until something suggests it moved.
pub(super) struct Sentinel {
    /// One client per sentinel, in the configured order.
    sentinels: Vec<Client>,
    /// The name the sentinels monitor the primary under.
    master: String,
    /// The first sentinel URL's credentials, TLS and database, for the primary.
    template: ConnectionInfo,
    root_cert: Option<Vec<u8>>,
    /// Bounds each step of a discovery: connecting and one command.
    connect_timeout: Duration,
    command_timeout: Duration,
    /// The primary last found, with the epoch it was found in.
    primary: Mutex<Option<Primary>>,
    epoch: AtomicU64,
    changed: watch::Sender<u64>,
}

#[derive(Clone)]
struct Primary {
    addr: (String, u16),
    client: Client,
    epoch: u64,
}

impl Sentinel {
    fn new(settings: &RedisSettings, root_cert: Option<Vec<u8>>) -> Result<Self, RedisPoolError> {
        let infos = settings
            .sentinel_urls
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        let sentinels = infos
            .iter()
            .map(|info| client(info.clone(), root_cert.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let template = infos.into_iter().next().ok_or_else(|| {
            RedisPoolError::Unavailable("redis.sentinel_urls names no sentinel".into())
        })?;
        Ok(Self {
            sentinels,
            master: settings.sentinel_master.clone(),
            template,
            root_cert,
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            command_timeout: Duration::from_millis(settings.command_timeout_ms),
            primary: Mutex::new(None),
            epoch: AtomicU64::new(0),
            changed: watch::channel(0).0,
        })
    }

    fn cached(&self) -> Option<Primary> {
        self.primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cached primary, or the one the sentinels name now (checked with `ROLE`).
    async fn primary(&self) -> Result<(Client, u64), RedisError> {
        if let Some(primary) = self.cached()
            && primary.epoch == self.epoch.load(Ordering::Acquire)
        {
            return Ok((primary.client, primary.epoch));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let addr = self.ask().await?;
        let client = self.client_for(&addr)?;
        self.check_role(&client, &addr).await?;
        let mut cached = self.primary.lock().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) == epoch {
            *cached = Some(Primary {
                addr,
                client: client.clone(),
                epoch,
            });
        }
        Ok((client, epoch))
    }

    /// Forgets the primary of `epoch` (a newer one is kept) and moves to the next epoch.
    fn forget(&self, epoch: u64) {
        let mut cached = self.primary.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .epoch
            .compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            *cached = None;
            drop(cached);
            self.changed.send_replace(epoch + 1);
            tracing::info!(master = %self.master, epoch = epoch + 1, "Redis primary forgotten; asking the sentinels again");
        }
    }

    /// One watcher step: asks the sentinels where the primary is and forgets the cached
    /// one when they name another. `Ok(true)` when it forgot.
    ///
    /// # Errors
    /// When no sentinel answers (the cached primary is kept: the sentinels being
    /// unreachable says nothing about it).
    pub(super) async fn check(&self) -> Result<bool, RedisError> {
        let Some(primary) = self.cached() else {
            return Ok(false);
        };
        let addr = self.ask().await?;
        if addr == primary.addr {
            return Ok(false);
        }
        tracing::warn!(
            master = %self.master,
            from = %format!("{}:{}", primary.addr.0, primary.addr.1),
            to = %format!("{}:{}", addr.0, addr.1),
            "the sentinels name another Redis primary"
        );
        self.forget(primary.epoch);
        Ok(true)
    }

    /// The primary's address from the first sentinel that knows it.
    async fn ask(&self) -> Result<(String, u16), RedisError> {
        let mut last = None;
        for sentinel in &self.sentinels {
            let asked = async {
                let mut conn = self.connect(sentinel).await?;
                let reply: Option<(String, u16)> = self
                    .bounded(
                        redis::cmd("SENTINEL")
                            .arg("get-master-addr-by-name")
                            .arg(&self.master)
                            .query_async(&mut conn),
                    )
                    .await?;
                reply.ok_or_else(|| {
                    RedisError::from((
                        ErrorKind::Server(ServerErrorKind::MasterDown),
                        "the sentinel monitors no primary of that name",
                        self.master.clone(),
                    ))
                })
            };
            match asked.await {
                Ok(addr) => return Ok(addr),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no sentinel configured"))
        }))
    }

    /// Refuses a node that does not answer `ROLE` as a primary (a sentinel may still name
    /// a demoted node for a moment during a failover).
    async fn check_role(&self, client: &Client, addr: &(String, u16)) -> Result<(), RedisError> {
        let mut conn = self.connect(client).await?;
        let role: Vec<Value> = match self
            .bounded(redis::cmd("ROLE").query_async(&mut conn))
            .await
        {
            Ok(role) => role,
            // An ACL user without `ROLE` (it is an admin command): a demoted node still
            // refuses writes as READONLY, which forgets it.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) => return Ok(()),
            Err(e) => return Err(e),
        };
        match role.first() {
            Some(Value::BulkString(role)) if role == b"master" => Ok(()),
            Some(Value::SimpleString(role)) if role == "master" => Ok(()),
            _ => Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the node the sentinels name is not a primary (yet)",
                format!("{}:{}", addr.0, addr.1),
            ))),
        }
    }

    fn client_for(&self, (host, port): &(String, u16)) -> Result<Client, RedisError> {
        let addr = addr_like(&self.template, host, *port);
        client(
            self.template.clone().set_addr(addr),
            self.root_cert.as_deref(),
        )
        .map_err(|e| match e {
            RedisPoolError::Command(e) => e,
            other => RedisError::from((ErrorKind::InvalidClientConfig, "tls", other.to_string())),
        })
    }

    async fn connect(&self, client: &Client) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn bounded<T>(
        &self,
        query: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        tokio::time::timeout(self.command_timeout, query)
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
    }
}
