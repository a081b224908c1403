//! The Redis deployments the scenarios store in, on free loopback ports, each started on
//! first use and kept for the whole run: one node (the run's private Redis), a primary
//! with one replica of its own (so `WAIT 1` can be met), and a Redis Cluster of three
//! masters with one replica each (`testkit`'s `RedisCluster`). Before each scenario the
//! deployment it uses is emptied, and [`Store`] says how to reach it: the replicas'
//! settings, and the masters the [`Meter`](crate::measure::Meter) reads.

use testkit::{
    redis_cluster::{CLUSTER_WAIT, RedisCluster},
    redis_server::RedisServer,
    wait::retry_every,
};

/// Every node is tuned as deployed (docker-compose.yml, k8s/redis.yaml).
const TUNING: [&str; 4] = [
    "--hash-max-listpack-value",
    "1024",
    "--stream-node-max-bytes",
    "1024",
];

/// The cluster's node timeout in milliseconds: far above the tests' 2 s, so a node
/// starved of CPU by the load on a small machine is never failed over mid-scenario (a
/// benchmark needs no fast failover).
const CLUSTER_NODE_TIMEOUT_MS: &str = "15000";

/// Which Redis deployment a scenario stores in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// The run's one node, without replicas.
    Node,
    /// A primary with one replica.
    Pair,
    /// Three masters with one replica each.
    Cluster,
}

/// How one scenario reaches its deployment, and what of it is measured.
pub struct Store {
    /// `redis.mode`: `standalone` or `cluster`.
    mode: &'static str,
    /// `redis.url` (standalone) or `redis.cluster_urls` (comma-separated seeds).
    urls: String,
    /// The masters' URLs, in index order: the one node or primary, or every master of
    /// the cluster.
    pub masters: Vec<String>,
    /// The masters' processes.
    pub master_pids: Vec<u32>,
    /// The processes of the replicas of Redis (none for the one node).
    pub replica_pids: Vec<u32>,
}

impl Store {
    /// The one node at `redis`.
    pub fn node(redis: &RedisServer) -> Self {
        Self {
            mode: "standalone",
            urls: redis.url().to_owned(),
            masters: vec![redis.url().to_owned()],
            master_pids: redis.pid().into_iter().collect(),
            replica_pids: Vec::new(),
        }
    }

    /// The replicas' `STATEFUL_MCP__REDIS__*` settings that point them at it (only the
    /// URL for a standalone node, as before cluster mode existed, so older builds run
    /// the same).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.mode {
            "cluster" => vec![
                ("STATEFUL_MCP__REDIS__MODE", "cluster".to_owned()),
                ("STATEFUL_MCP__REDIS__CLUSTER_URLS", self.urls.clone()),
            ],
            _ => vec![("STATEFUL_MCP__REDIS__URL", self.urls.clone())],
        }
    }
}

/// The run's deployments, started on first use; every process stops on drop.
#[derive(Default)]
pub struct Stores {
    node: Option<RedisServer>,
    /// The primary, then its replica.
    pair: Option<(RedisServer, RedisServer)>,
    cluster: Option<RedisCluster>,
}

impl Stores {
    /// Starts `deployment` unless it runs, empties it (`FLUSHALL` on every master, so no
    /// scenario pays for another's keys expiring), and says how to reach it.
    ///
    /// # Panics
    /// When a server does not start, a replica does not sync, or the cluster is not
    /// healthy within its bound.
    pub async fn prepare(&mut self, deployment: Deployment) -> Store {
        let store = match deployment {
            Deployment::Node => {
                if self.node.is_none() {
                    self.node = Some(RedisServer::start_with_args(&TUNING).await);
                }
                Store::node(self.node.as_ref().expect("started above"))
            }
            Deployment::Pair => {
                if self.pair.is_none() {
                    self.pair = Some(start_pair().await);
                }
                let (primary, replica) = self.pair.as_ref().expect("started above");
                Store {
                    replica_pids: replica.pid().into_iter().collect(),
                    ..Store::node(primary)
                }
            }
            Deployment::Cluster => {
                if self.cluster.is_none() {
                    let mut args = TUNING.to_vec();
                    args.extend(["--cluster-node-timeout", CLUSTER_NODE_TIMEOUT_MS]);
                    self.cluster = Some(RedisCluster::start_with_args(&args).await);
                }
                let cluster = self.cluster.as_ref().expect("started above");
                // Asked of the nodes every time: which node is a master is never
                // remembered.
                cluster.wait_until_healthy().await;
                let masters = cluster.masters().await;
                let pid = |i: usize| cluster.node(i).pid().expect("a running node");
                Store {
                    mode: "cluster",
                    urls: cluster.seed_urls(),
                    masters: masters
                        .iter()
                        .map(|&i| cluster.node(i).url().to_owned())
                        .collect(),
                    master_pids: masters.iter().map(|&i| pid(i)).collect(),
                    replica_pids: (0..cluster.len())
                        .filter(|i| !masters.contains(i))
                        .map(pid)
                        .collect(),
                }
            }
        };
        for url in &store.masters {
            flush_all(url).await;
        }
        store
    }
}

/// A primary and a replica of it, returned once the replica is in sync.
async fn start_pair() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start_with_args(&TUNING).await;
    let port = primary.addr().port().to_string();
    let mut args = TUNING.to_vec();
    args.extend(["--replicaof", "127.0.0.1", &port]);
    let replica = RedisServer::start_with_args(&args).await;
    let client = primary.client();
    retry_every(
        "the primary's replica is online",
        CLUSTER_WAIT,
        std::time::Duration::from_millis(50),
        async || {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if info.lines().any(|l| l.contains("state=online")) {
                Ok(())
            } else {
                Err("no replica online yet".to_owned())
            }
        },
    )
    .await;
    (primary, replica)
}

/// `FLUSHALL` on the node at `url` (its replicas follow).
async fn flush_all(url: &str) {
    let mut conn = redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("FLUSHALL on {url}: {e}"));
}
