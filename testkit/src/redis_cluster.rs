//! A Redis Cluster of private server processes on loopback: three masters with one
//! replica each, built by the CLI's `--cluster create` the way an operator builds one,
//! and the faults the cluster tests inject into it (a node killed, restarted, paused; a
//! slot migrated between masters). Which node is a master is always asked of the nodes,
//! never remembered: a failover changes it.
//!
//! `REDIS_SERVER_BIN` and `REDIS_CLI_BIN` choose the engine (Valkey's binaries from
//! `scripts/ensure-valkey.sh` run the same cluster).
//!
//! `REDIS_TEST_CLUSTER=1` runs a test binary's replicas on a Redis Cluster instead of
//! the private servers its tests start: [`shared_seed_urls`] starts one cluster for the
//! whole binary on first use (the tests keep apart by their unique key prefixes), and
//! the replicas' settings ([`crate::replica::redis_env`], the app's settings in
//! `tests/it/support`) point at it.

use std::{
    sync::{Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use crate::{
    port::free_port,
    process::{Child, Stop},
    redis_server::{RedisServer, query_within, redis_cli_binary},
    temp_dir::TempDir,
    wait::retry_every,
};

/// Masters in a cluster from [`RedisCluster::start`]; each gets one replica.
pub const MASTERS: usize = 3;
/// How long a node of a cluster may stay unreachable before the others fail it over
/// (`cluster-node-timeout`, milliseconds): short, so a failover takes seconds.
pub const NODE_TIMEOUT_MS: u64 = 2000;
/// The bound of every wait on the cluster (it forming, a failover, a node rejoining):
/// many node timeouts, so a slow machine does not fail a test a correct cluster passes.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(45);
/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How often a cluster-wide condition is checked: each check opens a connection to every
/// running node.
const POLL: Duration = Duration::from_millis(100);
/// The bound of one command sent to one node while polling.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// A 3-master / 3-replica Redis Cluster on free loopback ports, every process killed on
/// drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// The CLI's log of `--cluster create`.
    dir: TempDir,
}

struct Node {
    server: RedisServer,
    /// Stopped with `SIGSTOP`: running, but nothing answers.
    paused: bool,
}

impl Node {
    /// Running and not paused: it answers.
    fn answers(&self) -> bool {
        self.server.pid().is_some() && !self.paused
    }
}

/// One line of `CLUSTER NODES`: a node as one member of the cluster sees it.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    /// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link>
    /// <slot>...`; slots in migration (`[5461->-<id>]`) are skipped.
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags) = (fields.get(1)?, fields.get(2)?);
        let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
        let slots = fields
            .iter()
            .skip(8)
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|v| (v, v)),
            })
            .collect();
        Some(Self {
            port,
            flags: flags.split(',').map(str::to_owned).collect(),
            slots,
        })
    }

    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    fn failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
}

/// A slot on its way from one master to another, between [`RedisCluster::begin_migration`]
/// and [`SlotMigration::finish`]: the source answers `ASK` for the keys it no longer has,
/// the target takes `ASKING` requests for them.
#[derive(Debug, Clone)]
pub struct SlotMigration {
    slot: u16,
    from: usize,
    to: usize,
    from_id: String,
    to_id: String,
}

impl RedisCluster {
    /// Starts six nodes and makes them a cluster of [`MASTERS`] masters with one replica
    /// each; returns once every node reports `cluster_state:ok`, every slot is served and
    /// every replica is in sync with its master.
    ///
    /// # Panics
    /// When a node does not start, `--cluster create` fails or does not finish, or the
    /// cluster is not healthy within [`CLUSTER_WAIT`].
    pub async fn start() -> Self {
        Self::start_with_args(&[]).await
    }

    /// [`RedisCluster::start`] with `args` after every node's defaults (tuning as
    /// deployed, `--appendonly yes`, ...).
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub async fn start_with_args(args: &[&str]) -> Self {
        let node_timeout = NODE_TIMEOUT_MS.to_string();
        let mut nodes = Vec::with_capacity(MASTERS * 2);
        for _ in 0..MASTERS * 2 {
            // The cluster bus port is named rather than left at port + 10000, which may
            // be taken or past 65535.
            let bus_port = free_port().to_string();
            let mut all = vec![
                "--cluster-enabled",
                "yes",
                // Relative to the node's own data directory, so a restart finds it.
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &node_timeout,
                "--cluster-port",
                &bus_port,
            ];
            all.extend_from_slice(args);
            let server = RedisServer::start_with_args(&all).await;
            nodes.push(Node {
                server,
                paused: false,
            });
        }
        let first_port = nodes[0].server.addr().port();
        let cluster = Self {
            nodes,
            dir: TempDir::new("redis-cluster", &first_port.to_string()),
        };
        cluster.create().await;
        cluster.wait_until_healthy().await;
        cluster
    }

    /// `--cluster create` over every node, bounded by [`CLUSTER_WAIT`] (the CLI itself
    /// waits without a bound for the nodes to agree).
    async fn create(&self) {
        let mut command = std::process::Command::new(redis_cli_binary());
        command.args(["--cluster", "create"]);
        command.args(self.nodes.iter().map(|n| n.server.addr().to_string()));
        command.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let mut cli = Child::spawn("cluster-create", command, Some(self.dir.path()), Stop::Kill);
        match cli.wait_for_exit(CLUSTER_WAIT).await {
            Some(status) if status.success() => {}
            Some(status) => panic!(
                "{} --cluster create exited with {status}:\n{}",
                redis_cli_binary(),
                cli.log_tail()
            ),
            None => panic!(
                "{} --cluster create not done after {CLUSTER_WAIT:?}:\n{}",
                redis_cli_binary(),
                cli.log_tail()
            ),
        }
    }

    /// The number of nodes (masters and replicas, running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` as a server: its URL, address, raw connections, `MONITOR`.
    ///
    /// # Panics
    /// When `i` is not a node's index.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i].server
    }

    /// Every node's `redis://127.0.0.1:<port>`, in index order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.server.url().to_owned())
            .collect()
    }

    /// The seed list a replica is given (`STATEFUL_MCP__REDIS__CLUSTER_URLS`): every
    /// node's URL, comma-separated.
    pub fn seed_urls(&self) -> String {
        self.urls().join(",")
    }

    /// The nodes that answer and say they are masters (`ROLE`), in index order.
    ///
    /// # Panics
    /// When a node that should answer does not.
    pub async fn masters(&self) -> Vec<usize> {
        let mut masters = Vec::new();
        for i in self.answering() {
            if self.role(i).await.expect("ROLE").0 == "master" {
                masters.push(i);
            }
        }
        masters
    }

    /// The answering nodes that say they replicate `master` (`ROLE`).
    ///
    /// # Panics
    /// When a node that should answer does not.
    pub async fn replicas_of(&self, master: usize) -> Vec<usize> {
        let port = self.node(master).addr().port();
        let mut replicas = Vec::new();
        for i in self.answering() {
            if self.role(i).await.expect("ROLE").1 == Some(port) {
                replicas.push(i);
            }
        }
        replicas
    }

    /// The id of node `i` (`CLUSTER MYID`).
    ///
    /// # Panics
    /// When it does not answer.
    pub async fn node_id(&self, i: usize) -> String {
        self.query(i, redis::cmd("CLUSTER").arg("MYID"))
            .await
            .unwrap_or_else(|e| panic!("CLUSTER MYID on node {i}: {e}"))
    }

    /// The master that serves `slot`, as the first answering node sees the cluster.
    ///
    /// # Panics
    /// When no node answers, or none of the cluster's running nodes serves the slot.
    pub async fn slot_owner(&self, slot: u16) -> usize {
        let observer = self.answering().next().expect("an answering node");
        let view = self
            .view(observer)
            .await
            .unwrap_or_else(|e| panic!("CLUSTER NODES on node {observer}: {e}"));
        view.iter()
            .filter(|n| n.is_master() && !n.failing())
            .find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .and_then(|n| self.index_of_port(n.port))
            .unwrap_or_else(|| panic!("no node serves slot {slot} in node {observer}'s view"))
    }

    /// The master that serves the slot of `key`.
    ///
    /// # Panics
    /// As [`RedisCluster::slot_owner`].
    pub async fn master_for_key(&self, key: &str) -> usize {
        self.slot_owner(key_slot(key.as_bytes())).await
    }

    /// Kills node `i` with `SIGKILL`, as a crash would; the others fail it over (a
    /// master's replica is promoted) after [`NODE_TIMEOUT_MS`].
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].server.kill();
        self.nodes[i].paused = false;
    }

    /// Starts a [killed](RedisCluster::kill) node again on its port with its cluster
    /// configuration file (and no data: the nodes keep none), and returns once the
    /// cluster is healthy with it: a master that was failed over rejoins as a replica
    /// of the node promoted in its place, and has synchronised with it.
    ///
    /// # Panics
    /// When it does not start, or the cluster is not healthy within [`CLUSTER_WAIT`].
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].server.restart().await;
        self.nodes[i].paused = false;
        self.wait_until_healthy().await;
    }

    /// Freezes node `i` (`SIGSTOP`): its connections stay open and nothing answers; after
    /// [`NODE_TIMEOUT_MS`] the others fail it over as if it had died.
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].server.pause();
        self.nodes[i].paused = true;
    }

    /// Lets a [paused](RedisCluster::pause) node run again (`SIGCONT`). A master that was
    /// failed over meanwhile learns it and turns into a replica.
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].server.resume();
        self.nodes[i].paused = false;
    }

    /// Waits until the cluster serves every slot again: every answering node reports
    /// `cluster_state:ok`, sees every slot served by an answering master that says it is
    /// one, and every answering replica is in sync with its master. After a master was
    /// killed or paused, this is the wait for its replica's promotion.
    ///
    /// # Panics
    /// When that does not hold within [`CLUSTER_WAIT`]; the message says what did not.
    pub async fn wait_until_healthy(&self) {
        retry_every(
            "the cluster serves every slot from answering masters and every replica is in sync",
            CLUSTER_WAIT,
            POLL,
            async || self.health().await,
        )
        .await;
    }

    /// Waits until [`RedisCluster::wait_until_healthy`] holds, and returns how long that
    /// took: the measure of a failover's outage, from the moment its fault was injected.
    ///
    /// # Panics
    /// As [`RedisCluster::wait_until_healthy`].
    pub async fn time_until_healthy(&self, since: Instant) -> Duration {
        self.wait_until_healthy().await;
        since.elapsed()
    }

    /// Moves `slot` and its keys to master `to` (`SETSLOT IMPORTING/MIGRATING`,
    /// `MIGRATE` in batches, `SETSLOT NODE`), as a resharding does. Nothing when `to`
    /// already serves it.
    ///
    /// # Panics
    /// When `to` is not an answering master, or a step fails.
    pub async fn migrate_slot(&self, slot: u16, to: usize) {
        let Some(migration) = self.begin_migration(slot, to).await else {
            return;
        };
        migration.move_keys(self).await;
        migration.finish(self).await;
    }

    /// The first step of [`RedisCluster::migrate_slot`]: the slot is marked importing on
    /// `to` and migrating on its owner, and stays so (clients get `ASK` for the keys
    /// moved) until [`SlotMigration::finish`]. `None` when `to` already serves it.
    ///
    /// # Panics
    /// When `to` is not an answering master, or a step fails.
    pub async fn begin_migration(&self, slot: u16, to: usize) -> Option<SlotMigration> {
        assert!(slot < SLOTS, "slot {slot} is not below {SLOTS}");
        let from = self.slot_owner(slot).await;
        if from == to {
            return None;
        }
        let migration = SlotMigration {
            slot,
            from,
            to,
            from_id: self.node_id(from).await,
            to_id: self.node_id(to).await,
        };
        // Importing first: a key the source hands over is never refused by the target.
        migration
            .setslot(self, to, "IMPORTING", &migration.from_id)
            .await;
        migration
            .setslot(self, from, "MIGRATING", &migration.to_id)
            .await;
        Some(migration)
    }

    /// The indices of the nodes that answer.
    fn answering(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].answers())
    }

    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.server.addr().port() == port)
    }

    /// `cmd` on node `i`, bounded by [`COMMAND_TIMEOUT`]; errors as text.
    async fn query<T: redis::FromRedisValue>(
        &self,
        i: usize,
        cmd: &redis::Cmd,
    ) -> Result<T, String> {
        let client = self.nodes[i].server.client();
        query_within(&client, cmd, &format!("node {i}"), COMMAND_TIMEOUT).await
    }

    /// Node `i`'s role and, for a replica, its master's port and whether the link is
    /// up (`ROLE`; "slave" whatever the engine calls it elsewhere).
    async fn role(&self, i: usize) -> Result<(String, Option<u16>, bool), String> {
        let role: redis::Value = self.query(i, &redis::cmd("ROLE")).await?;
        let fields: Vec<redis::Value> =
            redis::from_redis_value(role).map_err(|e| format!("ROLE of node {i}: {e}"))?;
        let text = |v: Option<&redis::Value>| -> Option<String> {
            v.and_then(|v| redis::from_redis_value(v.clone()).ok())
        };
        let name = text(fields.first()).ok_or_else(|| format!("ROLE of node {i}: no role"))?;
        match name.as_str() {
            "slave" | "replica" => {
                let port = fields
                    .get(2)
                    .and_then(|v| redis::from_redis_value::<u16>(v.clone()).ok());
                let linked = text(fields.get(3)).as_deref() == Some("connected");
                Ok(("slave".to_owned(), port, linked))
            }
            "master" | "primary" => Ok(("master".to_owned(), None, true)),
            other => Err(format!("node {i} has role {other}")),
        }
    }

    /// The cluster as node `i` sees it (`CLUSTER NODES`).
    async fn view(&self, i: usize) -> Result<Vec<NodeLine>, String> {
        let text: String = self.query(i, redis::cmd("CLUSTER").arg("NODES")).await?;
        Ok(text.lines().filter_map(NodeLine::parse).collect())
    }

    /// What [`RedisCluster::wait_until_healthy`] waits for, or what is still missing.
    async fn health(&self) -> Result<(), String> {
        for i in self.answering() {
            let info: String = self.query(i, redis::cmd("CLUSTER").arg("INFO")).await?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(format!("node {i} does not report cluster_state:ok"));
            }
            let mut served = vec![false; usize::from(SLOTS)];
            for line in self.view(i).await? {
                if !line.is_master() || line.slots.is_empty() {
                    continue;
                }
                let owner = self
                    .index_of_port(line.port)
                    .filter(|&o| self.nodes[o].answers())
                    .ok_or_else(|| {
                        format!(
                            "node {i} sees slots on port {}, which does not answer",
                            line.port
                        )
                    })?;
                if self.role(owner).await?.0 != "master" {
                    return Err(format!("node {i} sees slots on node {owner}, not a master"));
                }
                for &(a, b) in &line.slots {
                    for slot in a..=b.min(SLOTS - 1) {
                        served[usize::from(slot)] = true;
                    }
                }
            }
            if let Some(slot) = served.iter().position(|s| !s) {
                return Err(format!("node {i} sees slot {slot} unserved"));
            }
            let (role, _, linked) = self.role(i).await?;
            if role == "slave" && !linked {
                return Err(format!("replica {i} is not in sync with its master"));
            }
        }
        Ok(())
    }
}

impl SlotMigration {
    /// The slot being moved.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The master it leaves.
    pub fn from(&self) -> usize {
        self.from
    }

    /// The master it goes to.
    pub fn to(&self) -> usize {
        self.to
    }

    /// Moves every key the source still holds in the slot to the target (`CLUSTER
    /// GETKEYSINSLOT`, then `MIGRATE ... KEYS`, 100 keys at a time).
    ///
    /// # Panics
    /// When a command fails.
    pub async fn move_keys(&self, cluster: &RedisCluster) {
        let target_port = cluster.node(self.to).addr().port();
        loop {
            let keys: Vec<String> = cluster
                .query(
                    self.from,
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(self.slot)
                        .arg(100),
                )
                .await
                .unwrap_or_else(|e| panic!("GETKEYSINSLOT {}: {e}", self.slot));
            if keys.is_empty() {
                return;
            }
            let () = cluster
                .query(
                    self.from,
                    redis::cmd("MIGRATE")
                        .arg("127.0.0.1")
                        .arg(target_port)
                        .arg("")
                        .arg(0)
                        .arg(5000)
                        .arg("KEYS")
                        .arg(&keys),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("MIGRATE {} keys of slot {}: {e}", keys.len(), self.slot)
                });
        }
    }

    /// Assigns the slot to the target on the target, the source, then every other
    /// answering master (`SETSLOT NODE`), so no node keeps redirecting to the source.
    /// Keys written to the source since [`SlotMigration::move_keys`] are moved first.
    ///
    /// # Panics
    /// When a command fails.
    pub async fn finish(&self, cluster: &RedisCluster) {
        self.move_keys(cluster).await;
        self.setslot(cluster, self.to, "NODE", &self.to_id).await;
        self.setslot(cluster, self.from, "NODE", &self.to_id).await;
        for master in cluster.masters().await {
            if master != self.to && master != self.from {
                self.setslot(cluster, master, "NODE", &self.to_id).await;
            }
        }
    }

    async fn setslot(&self, cluster: &RedisCluster, node: usize, state: &str, id: &str) {
        let () = cluster
            .query(
                node,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(self.slot)
                    .arg(state)
                    .arg(id),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("CLUSTER SETSLOT {} {state} on node {node}: {e}", self.slot)
            });
    }
}

/// Whether `REDIS_TEST_CLUSTER` asks for the replicas of this test binary to run on a
/// shared Redis Cluster ([`shared_seed_urls`]).
pub fn shared_enabled() -> bool {
    std::env::var("REDIS_TEST_CLUSTER").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The shared cluster of this test binary, once it runs.
static SHARED: Mutex<Option<RedisCluster>> = Mutex::new(None);

/// With `REDIS_TEST_CLUSTER` set, the seed URLs (every node, comma-separated) of the one
/// Redis Cluster this test binary shares, started by the first caller (the others wait
/// for it); `None` otherwise. Its nodes are stopped and their directories removed when
/// the binary exits (and killed by the kernel should it die first).
///
/// # Panics
/// When the cluster cannot be started (the reason is printed by the thread that tried).
pub fn shared_seed_urls() -> Option<&'static str> {
    static SEEDS: OnceLock<String> = OnceLock::new();
    if !shared_enabled() {
        return None;
    }
    Some(SEEDS.get_or_init(start_shared))
}

/// Starts the shared cluster on a thread of its own that lives as long as the binary:
/// the kernel stops a child when the thread that started it ends
/// (`PR_SET_PDEATHSIG`), and a test's thread ends with the test.
fn start_shared() -> String {
    let (started, seeds) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("shared-redis-cluster".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the shared cluster");
            let cluster = runtime.block_on(RedisCluster::start());
            let urls = cluster.seed_urls();
            *SHARED.lock().unwrap_or_else(PoisonError::into_inner) = Some(cluster);
            // SAFETY: atexit(3) only registers a function; the function it is given takes
            // nothing and only drops what the static holds.
            unsafe {
                libc::atexit(stop_shared);
            }
            let _ = started.send(urls);
            loop {
                std::thread::park();
            }
        })
        .expect("a thread for the shared cluster");
    seeds
        .recv()
        .expect("the shared Redis Cluster started (REDIS_TEST_CLUSTER)")
}

/// Stops the shared cluster's nodes and removes their directories, at exit.
extern "C" fn stop_shared() {
    let cluster = SHARED.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(cluster);
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo [`SLOTS`], as every
/// node computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tag) % SLOTS
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_the_servers() {
        // Values from CLUSTER KEYSLOT and the cluster specification's CRC16 test vector.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn node_lines_parse() {
        let line = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host \
                    slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected";
        let node = NodeLine::parse(line).unwrap();
        assert_eq!(node.port, 30004);
        assert!(!node.is_master());
        assert!(node.slots.is_empty());
        let line = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 \
                    myself,master - 0 0 1 connected 0-5460 5462 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]";
        let node = NodeLine::parse(line).unwrap();
        assert!(node.is_master() && !node.failing());
        assert_eq!(node.slots, [(0, 5460), (5462, 5462)]);
    }
}
