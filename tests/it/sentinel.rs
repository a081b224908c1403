//! Replicas on a Sentinel-monitored primary (`redis.mode = "sentinel"`): they find the
//! primary through the sentinels, follow it through a `SENTINEL FAILOVER` and through a
//! killed primary whose replica is promoted, answer every attempt within a bound while it
//! moves, and recover by themselves. Under keyed increments from three replicas nothing
//! is applied twice, and with `redis.replica_acks = 1` no acknowledged increment is lost.
//!
//! Each scenario prints its worst attempt and its recovery (run with `--nocapture`).

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::json;
use testkit::redis_sentinel::RedisSentinels;

use crate::support::{
    http::{call_2026, create_handle},
    keyed_load::{KeyedLoad, Seen, counter, ready},
    redis_server::unique_prefix,
    replica::{Replica, RoundRobin},
    wait::wait_until,
};

/// `count` replicas on `sentinels`' primary under `prefix`, acknowledging state changes
/// once `acks` replicas of Redis have them.
async fn replicas_on(
    sentinels: &RedisSentinels,
    prefix: &str,
    acks: u32,
    count: usize,
) -> Vec<Replica> {
    let urls = sentinels.sentinel_urls().join(",");
    let acks = acks.to_string();
    let extra = [
        ("STATEFUL_MCP__REDIS__MODE", "sentinel"),
        ("STATEFUL_MCP__REDIS__SENTINEL_URLS", urls.as_str()),
        (
            "STATEFUL_MCP__REDIS__SENTINEL_MASTER",
            sentinels.master_name(),
        ),
        ("STATEFUL_MCP__REDIS__REPLICA_ACKS", acks.as_str()),
    ];
    let mut replicas = Vec::new();
    for _ in 0..count {
        // The standalone URL is unused in this mode: nothing listens there.
        replicas.push(Replica::start("redis://127.0.0.1:1", prefix, &extra).await);
    }
    replicas
}

#[tokio::test]
async fn replicas_find_the_primary_through_the_sentinels() {
    let sentinels = RedisSentinels::start().await;
    let replicas = replicas_on(&sentinels, &unique_prefix("sentinel-find"), 1, 2).await;
    let http = Client::new();
    for replica in &replicas {
        wait_until("a replica on the sentinels' primary is ready", async || {
            ready(&http, replica).await
        })
        .await;
    }
    // State written through one replica is read through the other, acknowledged by
    // the primary's replica.
    let handle = create_handle(&http, &replicas[0].url()).await;
    let args = json!({"operation": "increment", "session_id": handle});
    call_2026(&http, &replicas[0].url(), "counter", args)
        .await
        .unwrap();
    assert_eq!(counter(&replicas[1].url(), &handle).await, 1);
}

/// How the primary is made to move.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// `SENTINEL FAILOVER`: the replica is promoted, the old primary demoted later.
    Failover,
    /// The primary SIGKILLed: the sentinels promote its replica; the killed node is
    /// started again and follows the new primary.
    Kill,
}

/// Keyed increments from three replicas behind a round-robin hop while the primary
/// moves by `how`, with `redis.replica_acks = acks`. Checks readiness goes red while a
/// killed primary is not replaced, and every replica is ready again afterwards; prints
/// the figures; returns the final counter and what the clients saw.
async fn increments_while_the_primary_moves(how: Move, acks: u32) -> (u64, Seen) {
    let mut sentinels = RedisSentinels::start().await;
    let prefix = unique_prefix("sentinel-move");
    let replicas = replicas_on(&sentinels, &prefix, acks, 3).await;
    let hop = RoundRobin::start(replicas.iter().map(|r| r.addr).collect()).await;
    let mcp = hop.url();
    let handle = create_handle(&Client::new(), &mcp).await;
    let load = KeyedLoad::start(&mcp, &handle);
    let http = Client::new();

    tokio::time::sleep(Duration::from_millis(600)).await;
    let old = sentinels.primary().await;
    let moved = Instant::now();
    match how {
        Move::Failover => {
            sentinels.failover().await;
        }
        Move::Kill => {
            sentinels.kill(old);
            wait_until("readiness goes red without a primary", async || {
                !ready(&http, &replicas[0]).await
            })
            .await;
            sentinels.wait_until_failed_over(old).await;
        }
    }
    let promoted = moved.elapsed();
    match how {
        // The old primary keeps taking writes until a sentinel demotes it.
        Move::Failover => {
            sentinels.wait_until_settled().await;
        }
        Move::Kill => sentinels.restart(old).await,
    }
    let rejoined = moved.elapsed();
    let (value, seen) = load.finish(&replicas).await;
    eprintln!(
        "{how:?} with replica_acks = {acks}: {} keys, {} attempts, counter {value} ({} lost), \
         worst attempt {:?}; new primary named after {promoted:?}, old one following it \
         after {rejoined:?}; calls failed from the first failure for {:?}; served per \
         replica {:?}",
        seen.keys,
        seen.attempts,
        seen.keys.saturating_sub(value),
        seen.worst,
        seen.failing_for(),
        hop.served(),
    );
    (value, seen)
}

/// With `replica_acks = 1` nothing acknowledged is lost and nothing applied twice:
/// every key ends applied exactly once. (Writes are refused as "outcome unknown"
/// while the new primary has no replica: until the old primary follows it.)
#[tokio::test]
async fn a_sentinel_failover_with_replica_acks_applies_each_key_once() {
    let (value, seen) = increments_while_the_primary_moves(Move::Failover, 1).await;
    assert_eq!(value, seen.keys, "each key applied exactly once, none lost");
}

#[tokio::test]
async fn a_killed_primary_with_replica_acks_loses_no_acknowledged_increment() {
    let (value, seen) = increments_while_the_primary_moves(Move::Kill, 1).await;
    assert_eq!(value, seen.keys, "each key applied exactly once, none lost");
}

/// Without acknowledgements the replicas keep writing through the move, and an
/// increment the old primary acknowledged but never replicated may be lost (counted
/// and printed); still nothing is applied twice.
#[tokio::test]
async fn a_killed_primary_without_replica_acks_applies_nothing_twice() {
    let (value, seen) = increments_while_the_primary_moves(Move::Kill, 0).await;
    assert!(
        value <= seen.keys,
        "a key applied twice: {value} > {}",
        seen.keys
    );
}

#[tokio::test]
async fn a_sentinel_failover_without_replica_acks_applies_nothing_twice() {
    let (value, seen) = increments_while_the_primary_moves(Move::Failover, 0).await;
    assert!(
        value <= seen.keys,
        "a key applied twice: {value} > {}",
        seen.keys
    );
}
