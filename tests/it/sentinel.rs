//! Replicas on a Sentinel-monitored primary (`redis.mode = "sentinel"`): they find the
//! primary through the sentinels, follow it through a `SENTINEL FAILOVER` and through a
//! killed primary whose replica is promoted, answer every attempt within a bound while it
//! moves, and recover by themselves. Under keyed increments from three replicas nothing
//! is applied twice, and with `redis.replica_acks = 1` no acknowledged increment is lost.
//!
//! Each scenario prints its worst attempt and its recovery (run with `--nocapture`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use testkit::redis_sentinel::RedisSentinels;

use crate::support::{
    http::{call_2026, call_2026_keyed, create_handle},
    redis_server::unique_prefix,
    replica::{Replica, RoundRobin},
    wait::{retry, wait_until},
};

/// Longer than any attempt may take while the primary moves: only a hang exceeds it.
const HANG: Duration = Duration::from_secs(5);

/// Clients calling at once, each on its own keys.
const CLIENTS: usize = 4;

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

/// What the clients saw while the primary moved.
#[derive(Debug, Default)]
struct Seen {
    /// Distinct keys, each retried until acknowledged.
    keys: u64,
    attempts: u64,
    worst: Duration,
    /// The first failed attempt and the first success after it.
    first_failure: Option<Instant>,
    recovered: Option<Instant>,
}

/// `CLIENTS` clients of `mcp` incrementing `handle`'s counter under keys of their own,
/// each key retried until acknowledged, until `stop` is set.
fn keyed_clients(
    mcp: &str,
    handle: &str,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|n| {
            let (mcp, handle, stop, seen) = (
                mcp.to_owned(),
                handle.to_owned(),
                stop.clone(),
                seen.clone(),
            );
            tokio::spawn(async move {
                // A new connection per call, so the hop spreads calls over the replicas.
                let http = Client::builder().pool_max_idle_per_host(0).build().unwrap();
                let args = json!({"operation": "increment", "session_id": handle});
                for k in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("client-{n}-increment-{k}");
                    seen.lock().unwrap().keys += 1;
                    loop {
                        let started = Instant::now();
                        let call =
                            call_2026_keyed(&http, &mcp, "counter", args.clone(), Some(&key));
                        let answer = tokio::time::timeout(HANG, call)
                            .await
                            .unwrap_or_else(|_| panic!("{key}: no answer within {HANG:?}"));
                        let took = started.elapsed();
                        let done = {
                            let mut seen = seen.lock().unwrap();
                            seen.attempts += 1;
                            seen.worst = seen.worst.max(took);
                            if answer.is_ok() {
                                if seen.first_failure.is_some() && seen.recovered.is_none() {
                                    seen.recovered = Some(Instant::now());
                                }
                            } else {
                                seen.first_failure.get_or_insert_with(Instant::now);
                            }
                            answer.is_ok()
                        };
                        if done {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

async fn counter(mcp: &str, handle: &str) -> u64 {
    let value: Value = retry("the final counter can be read", async || {
        call_2026(
            &Client::new(),
            mcp,
            "counter",
            json!({"operation": "get", "session_id": handle}),
        )
        .await
    })
    .await;
    value["value"].as_i64().expect("a counter value") as u64
}

async fn ready(http: &Client, replica: &Replica) -> bool {
    http.get(replica.endpoint("/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
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
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients = keyed_clients(&mcp, &handle, &stop, &seen);
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
    for replica in &replicas {
        wait_until("readiness is green again", async || {
            ready(&http, replica).await
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("no client panicked");
    }

    let value = counter(&mcp, &handle).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "{how:?} with replica_acks = {acks}: {} keys, {} attempts, counter {value} ({} lost), \
         worst attempt {:?}; new primary named after {promoted:?}, old one following it \
         after {rejoined:?}; calls failed from the first failure for {:?}; served per \
         replica {:?}",
        seen.keys,
        seen.attempts,
        seen.keys.saturating_sub(value),
        seen.worst,
        seen.recovered
            .zip(seen.first_failure)
            .map(|(r, f)| r.duration_since(f)),
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
