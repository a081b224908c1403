//! A Redis Sentinel deployment of private processes on loopback: a primary, one replica
//! and three sentinels watching them under one master name, and the faults the tests
//! inject (a failover asked of the sentinels, the primary killed and started again).
//! Which server is the primary is always asked of the sentinels, never remembered.
//!
//! `REDIS_SERVER_BIN` chooses the engine (Valkey's `valkey-server --sentinel` runs the
//! sentinels as Redis's does).

use std::{collections::HashMap, process::Command, time::Duration};

use crate::{
    port::free_port,
    process::{Child, Stop},
    redis_server::{RedisServer, query_within, redis_server_binary},
    temp_dir::TempDir,
    wait::retry_every,
};

/// The master name the sentinels watch (`redis.sentinel_master`).
pub const MASTER_NAME: &str = "mymaster";
/// How long the primary may stay unreachable before a sentinel thinks it down
/// (`down-after-milliseconds`): short, so a failover takes seconds.
pub const DOWN_AFTER_MS: u64 = 2000;
/// Sentinels that must agree the primary is down before a failover (`quorum`).
pub const QUORUM: usize = 2;
/// The sentinels' `failover-timeout`: small, so a failover that stalls is retried soon.
pub const FAILOVER_TIMEOUT_MS: u64 = 5000;
/// The bound of every wait on the deployment (the sentinels discovering each other, a
/// failover, a restarted server following the new primary).
pub const SENTINEL_WAIT: Duration = Duration::from_secs(45);

const SENTINELS: usize = 3;
/// How often a deployment-wide condition is checked.
const POLL: Duration = Duration::from_millis(100);
/// The bound of one command sent to one process while polling.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// A primary, its replica and three sentinels (quorum [`QUORUM`]) on free loopback ports,
/// every process killed on drop.
pub struct RedisSentinels {
    /// Index 0 starts as the primary, 1 as its replica; a failover swaps them.
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

/// One `redis-server --sentinel` process and the configuration file it rewrites.
struct Sentinel {
    /// Held to be stopped on drop.
    _child: Child,
    port: u16,
    /// Its configuration and log; after `child`, so it goes once the process has.
    _dir: TempDir,
}

impl Sentinel {
    async fn start(primary_port: u16) -> Self {
        let port = free_port();
        let dir = TempDir::new("sentinel", &port.to_string());
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 dir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {QUORUM}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display(),
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let mut command = Command::new(redis_server_binary());
        command.arg(&config).arg("--sentinel");
        let mut child = Child::spawn("sentinel", command, Some(dir.path()), Stop::Kill);
        let url = format!("redis://127.0.0.1:{port}");
        child.wait_ready(async || ping(&url).await.is_ok()).await;
        Self {
            _child: child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl RedisSentinels {
    /// Starts the primary, its replica and three sentinels; returns once every sentinel
    /// names the primary, knows the replica and the two other sentinels, and the replica
    /// is in sync: a failover can start.
    ///
    /// # Panics
    /// When a process does not start, or that does not hold within [`SENTINEL_WAIT`].
    pub async fn start() -> Self {
        let primary = RedisServer::start().await;
        let primary_port = primary.addr().port().to_string();
        let replica =
            RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &primary_port]).await;
        let mut sentinels = Vec::with_capacity(SENTINELS);
        for _ in 0..SENTINELS {
            sentinels.push(Sentinel::start(primary.addr().port()).await);
        }
        let set = Self {
            servers: vec![primary, replica],
            sentinels,
        };
        set.wait_until_ready(0).await;
        set
    }

    /// The sentinels' URLs (`STATEFUL_MCP__REDIS__SENTINEL_URLS`, comma-joined).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Sentinel::url).collect()
    }

    /// The master name the sentinels watch (`STATEFUL_MCP__REDIS__SENTINEL_MASTER`).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// Server `i` (0 started as the primary, 1 as its replica).
    ///
    /// # Panics
    /// When `i` is neither.
    pub fn server(&self, i: usize) -> &RedisServer {
        &self.servers[i]
    }

    /// The server every sentinel names as the primary (`SENTINEL
    /// get-master-addr-by-name`), once they agree and it says it is one.
    ///
    /// # Panics
    /// When they do not agree within [`SENTINEL_WAIT`].
    pub async fn primary(&self) -> usize {
        retry_every(
            "every sentinel names the same running primary",
            SENTINEL_WAIT,
            POLL,
            async || self.agreed_primary().await,
        )
        .await
    }

    /// Asks a sentinel to fail over (`SENTINEL FAILOVER`, retried while it refuses, as it
    /// does until it has seen the replica in sync), and returns the new primary once
    /// every sentinel names it and it says it is the primary. The old primary goes on
    /// taking writes until a sentinel turns it into a replica, seconds later (it looks
    /// at replicas every 10 s): [`RedisSentinels::wait_until_settled`] waits for that.
    ///
    /// # Panics
    /// When that does not happen within [`SENTINEL_WAIT`].
    pub async fn failover(&self) -> usize {
        let old = self.primary().await;
        let url = self.sentinels[0].url();
        retry_every(
            "a sentinel accepts SENTINEL FAILOVER",
            SENTINEL_WAIT,
            Duration::from_millis(500),
            async || {
                query::<()>(
                    &url,
                    redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME),
                )
                .await
            },
        )
        .await;
        self.wait_until_failed_over(old).await
    }

    /// Waits until every sentinel names a server other than `old` (after
    /// [`RedisSentinels::kill`] of the primary, or a failover) and it says it is the
    /// primary; returns it.
    ///
    /// # Panics
    /// When that does not happen within [`SENTINEL_WAIT`].
    pub async fn wait_until_failed_over(&self, old: usize) -> usize {
        retry_every(
            "the sentinels promote another server",
            SENTINEL_WAIT,
            POLL,
            async || match self.agreed_primary().await? {
                primary if primary == old => Err(format!("the sentinels still name server {old}")),
                primary => Ok(primary),
            },
        )
        .await
    }

    /// Waits until the deployment is ready for the next fault: every sentinel names the
    /// same primary and knows every other running server as its replica and the two
    /// other sentinels, and those servers follow the primary in sync. Returns the
    /// primary.
    ///
    /// # Panics
    /// When that does not hold within [`SENTINEL_WAIT`].
    pub async fn wait_until_settled(&self) -> usize {
        let primary = self.primary().await;
        self.wait_until_ready(primary).await;
        primary
    }

    /// Kills server `i` with `SIGKILL`, as a crash would; when it is the primary, the
    /// sentinels fail it over after [`DOWN_AFTER_MS`].
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts a [killed](RedisSentinels::kill) server again on its port (empty: no
    /// persistence), and returns once it follows the primary the sentinels name, in sync
    /// (a sentinel turns a killed primary into a replica when it sees it back).
    ///
    /// # Panics
    /// When it does not start, or does not follow within [`SENTINEL_WAIT`].
    pub async fn restart(&mut self, i: usize) {
        self.servers[i].restart().await;
        self.wait_until_settled().await;
    }

    /// Waits until every sentinel names `primary`, knows the other running server as
    /// its replica and the two other sentinels, and the other running server follows it
    /// in sync.
    async fn wait_until_ready(&self, primary: usize) {
        retry_every(
            "every sentinel knows the primary, its replica and the other sentinels",
            SENTINEL_WAIT,
            POLL,
            async || {
                if self.agreed_primary().await? != primary {
                    return Err(format!("the sentinels do not name server {primary}"));
                }
                let replicas = self.running().filter(|&i| i != primary).count();
                for sentinel in &self.sentinels {
                    let url = sentinel.url();
                    let known: Vec<HashMap<String, String>> = query(
                        &url,
                        redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME),
                    )
                    .await?;
                    let healthy = known
                        .iter()
                        .filter(|r| r.get("flags").is_some_and(|f| f == "slave"))
                        .count();
                    if healthy < replicas {
                        return Err(format!("sentinel {url} knows {healthy} healthy replicas"));
                    }
                    let peers: Vec<HashMap<String, String>> = query(
                        &url,
                        redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER_NAME),
                    )
                    .await?;
                    if peers.len() < SENTINELS - 1 {
                        return Err(format!(
                            "sentinel {url} knows {} other sentinels",
                            peers.len()
                        ));
                    }
                }
                self.followed(primary).await
            },
        )
        .await;
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.servers.len()).filter(|&i| self.servers[i].pid().is_some())
    }

    /// The server every sentinel names, when they agree and it is running and says it
    /// is a primary.
    async fn agreed_primary(&self) -> Result<usize, String> {
        let mut named = None;
        for sentinel in &self.sentinels {
            let url = sentinel.url();
            let (_host, port): (String, u16) = query(
                &url,
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            )
            .await?;
            let server = self
                .servers
                .iter()
                .position(|s| s.addr().port() == port)
                .ok_or_else(|| format!("sentinel {url} names port {port}, no server of ours"))?;
            match named {
                None => named = Some(server),
                Some(other) if other != server => {
                    return Err(format!("sentinels name servers {other} and {server}"));
                }
                Some(_) => {}
            }
        }
        let primary = named.ok_or("no sentinel")?;
        if self.servers[primary].pid().is_none() {
            return Err(format!(
                "the sentinels name server {primary}, which is not running"
            ));
        }
        let role = replication(&self.servers[primary]).await?;
        if role.get("role").map(String::as_str) != Some("master") {
            return Err(format!("server {primary} is named but is not a primary"));
        }
        Ok(primary)
    }

    /// Whether every running server other than `primary` replicates it, link up.
    async fn followed(&self, primary: usize) -> Result<(), String> {
        let port = self.servers[primary].addr().port().to_string();
        for i in self.running().filter(|&i| i != primary) {
            let info = replication(&self.servers[i]).await?;
            let follows = info.get("role").map(String::as_str) == Some("slave")
                && info.get("master_port") == Some(&port)
                && info.get("master_link_status").map(String::as_str) == Some("up");
            if !follows {
                return Err(format!(
                    "server {i} does not follow server {primary} in sync"
                ));
            }
        }
        Ok(())
    }
}

/// `INFO replication` of `server` as fields.
async fn replication(server: &RedisServer) -> Result<HashMap<String, String>, String> {
    let info: String = query(server.url(), redis::cmd("INFO").arg("replication")).await?;
    Ok(info
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

async fn ping(url: &str) -> Result<String, String> {
    query(url, &redis::cmd("PING")).await
}

/// `cmd` on a fresh connection to `url`, bounded by [`COMMAND_TIMEOUT`]; errors as text.
async fn query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> Result<T, String> {
    let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    query_within(&client, cmd, url, COMMAND_TIMEOUT).await
}
