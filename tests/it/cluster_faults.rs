//! Replicas on a Redis Cluster (`redis.mode = "cluster"`, three masters with a replica
//! each) under keyed increments from three replicas behind a round-robin hop, while the
//! cluster changes under the busy session: its master SIGKILLed (the replica promoted,
//! the killed node started again as a replica) and its slot migrated to another master.
//! Every attempt answers within a bound, calls recover by themselves, nothing is applied
//! twice, and with `redis.replica_acks = 1` no acknowledged increment is lost.
//!
//! Each scenario prints its worst attempt and its recovery (run with `--nocapture`).

use std::time::{Duration, Instant};

use reqwest::Client;
use testkit::redis_cluster::{RedisCluster, key_slot};

use crate::support::{
    http::create_handle,
    keyed_load::{KeyedLoad, Seen, ready},
    redis_server::unique_prefix,
    replica::{Replica, RoundRobin},
    wait::wait_until,
};

/// `count` replicas on `cluster` under `prefix`, acknowledging state changes once
/// `acks` replicas of the key's master have them.
async fn replicas_on(
    cluster: &RedisCluster,
    prefix: &str,
    acks: u32,
    count: usize,
) -> Vec<Replica> {
    let seeds = cluster.seed_urls();
    let acks = acks.to_string();
    let extra = [
        ("STATEFUL_MCP__REDIS__MODE", "cluster"),
        ("STATEFUL_MCP__REDIS__CLUSTER_URLS", seeds.as_str()),
        ("STATEFUL_MCP__REDIS__REPLICA_ACKS", acks.as_str()),
    ];
    let mut replicas = Vec::new();
    for _ in 0..count {
        // The standalone URL is unused in this mode: nothing listens there.
        replicas.push(Replica::start("redis://127.0.0.1:1", prefix, &extra).await);
    }
    replicas
}

/// How the cluster changes under the busy session.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// The master of the session's slot SIGKILLed; its replica is promoted, and the
    /// killed node is started again and rejoins as a replica.
    KillMaster,
    /// The session's slot and its keys moved to another master while calls run.
    MigrateSlot,
}

/// Keyed increments on one 2026-07-28 session from three replicas while `change`
/// happens to its slot, with `redis.replica_acks = acks`; prints the figures and
/// returns the final counter and what the clients saw.
async fn increments_while_the_cluster_changes(change: Change, acks: u32) -> (u64, Seen) {
    let mut cluster = RedisCluster::start().await;
    let prefix = unique_prefix("cluster-change");
    let replicas = replicas_on(&cluster, &prefix, acks, 3).await;
    let http = Client::new();
    for replica in &replicas {
        wait_until("a replica on the cluster is ready", async || {
            ready(&http, replica).await
        })
        .await;
    }
    let hop = RoundRobin::start(replicas.iter().map(|r| r.addr).collect()).await;
    let mcp = hop.url();
    let handle = create_handle(&http, &mcp).await;
    // The session record is `<prefix>:{<id>}:session`: its slot is its id's.
    let slot = key_slot(format!("{prefix}:{{{handle}}}:session").as_bytes());
    let owner = cluster.slot_owner(slot).await;
    let load = KeyedLoad::start(&mcp, &handle);

    tokio::time::sleep(Duration::from_millis(600)).await;
    let changed = Instant::now();
    match change {
        Change::KillMaster => {
            cluster.kill(owner);
            wait_until(
                "readiness goes red while a shard has no master",
                async || !ready(&http, &replicas[0]).await,
            )
            .await;
            cluster.wait_until_healthy().await;
            eprintln!("replica promoted after {:?}", changed.elapsed());
            cluster.restart(owner).await;
            cluster.wait_until_healthy().await;
        }
        Change::MigrateSlot => {
            let to = cluster
                .masters()
                .await
                .into_iter()
                .find(|&m| m != owner)
                .expect("another master");
            cluster.migrate_slot(slot, to).await;
            assert_eq!(cluster.slot_owner(slot).await, to, "the slot moved");
        }
    }
    let settled = changed.elapsed();
    let (value, seen) = load.finish(&replicas).await;
    eprintln!(
        "{change:?} with replica_acks = {acks}: {} keys, {} attempts, counter {value} ({} \
         lost), worst attempt {:?}; the cluster settled after {settled:?}; calls failed \
         from the first failure for {:?}; served per replica {:?}",
        seen.keys,
        seen.attempts,
        seen.keys.saturating_sub(value),
        seen.worst,
        seen.failing_for(),
        hop.served(),
    );
    (value, seen)
}

#[tokio::test]
async fn a_killed_master_with_replica_acks_loses_no_acknowledged_increment() {
    let (value, seen) = increments_while_the_cluster_changes(Change::KillMaster, 1).await;
    assert_eq!(value, seen.keys, "each key applied exactly once, none lost");
}

/// Without acknowledgements an increment the killed master acknowledged but never
/// replicated may be lost (counted and printed); still nothing is applied twice.
#[tokio::test]
async fn a_killed_master_without_replica_acks_applies_nothing_twice() {
    let (value, seen) = increments_while_the_cluster_changes(Change::KillMaster, 0).await;
    assert!(
        value <= seen.keys,
        "a key applied twice: {value} > {}",
        seen.keys
    );
}

/// A migration loses nothing, even unacknowledged: the keys move with `MIGRATE`, and
/// calls that meet the move are redirected (`ASK`, then `MOVED`) and retried.
#[tokio::test]
async fn a_slot_migrated_under_load_applies_each_key_once() {
    let (value, seen) = increments_while_the_cluster_changes(Change::MigrateSlot, 0).await;
    assert_eq!(value, seen.keys, "each key applied exactly once, none lost");
}
