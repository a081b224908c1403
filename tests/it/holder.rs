//! The replica holding a 2025-era session serves its owner's requests without touching
//! the stored session while it knows its lease is fresh; its lease keeper slides the
//! session's expiry instead. A worker idle for `session.local_idle_secs` goes away, its
//! lease is no longer renewed, and the session's next request restores a worker.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{
    http::{legacy_post, legacy_session, read_reply},
    redis_server::{RedisServer, skipped_on_shared_cluster, unique_prefix},
    replica::Replica,
    wait::wait_until,
};

fn ping(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

async fn local_sessions(replica: &Replica) -> f64 {
    replica
        .metric(&["local_sessions"])
        .await
        .expect("the local_sessions gauge")
}

/// The status of a ping in `session` at `url`.
async fn ping_status(http: &reqwest::Client, url: &str, session: &str) -> StatusCode {
    legacy_post(http, url, session, &ping(1))
        .send()
        .await
        .unwrap()
        .status()
}

/// The value `counter` increment answers in `session` at `url`.
async fn increment(http: &reqwest::Client, url: &str, session: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"operation": "increment"}}});
    let (status, msg) =
        read_reply(legacy_post(http, url, session, &body).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    msg["result"]["structuredContent"]["value"].clone()
}

/// Redis's clock, in milliseconds (the clock lease ends are written in).
async fn redis_now_ms(redis: &RedisServer) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    secs * 1000 + micros / 1000
}

#[tokio::test]
async fn a_session_served_without_touches_lives_while_used_and_expires_once_idle() {
    if skipped_on_shared_cluster(
        "a_session_served_without_touches_lives_while_used_and_expires_once_idle",
    ) {
        return;
    }
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("holder-slide");
    // A lease of 2 s: the keeper renews every 2/3 s, and a request goes without a touch
    // while at least 2/3 s of the lease is known to be left.
    // Without the event store: with it every request touches.
    let settings = [
        ("STATEFUL_MCP__SESSION__TIMEOUT_SECS", "3"),
        ("STATEFUL_MCP__SESSION__LEASE_SECS", "2"),
        ("STATEFUL_MCP__EVENTS__ENABLED", "false"),
    ];
    let a = Replica::start(redis.url(), &prefix, &settings).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;
    let key = format!("{prefix}:{{{session}}}:session");

    // Pings for longer than the timeout: only the keeper's renewals can keep the
    // session alive, as long as the pings are not touches.
    let (pings, seen) = redis
        .client_commands(async {
            let started = Instant::now();
            let mut pings = 0;
            while started.elapsed() < Duration::from_secs(5) {
                assert_eq!(ping_status(&http, &a.url(), &session).await, StatusCode::OK);
                pings += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            pings
        })
        .await;
    let of_session: Vec<_> = seen.iter().filter(|l| l.contains(&key)).collect();
    // A touch names the caller right after the session; a renewal names the replica
    // there, and names the owner only when it slides the expiry.
    let touch = format!("\"{key}\" \"anonymous\"");
    let touches = of_session.iter().filter(|l| l.contains(&touch)).count();
    let slides = of_session
        .iter()
        .filter(|l| l.contains("\"anonymous\"") && !l.contains(&touch))
        .count();
    assert!(slides >= 1, "no renewal slid the expiry: {of_session:#?}");
    assert!(
        touches < pings / 2,
        "{touches} touches for {pings} pings: {of_session:#?}"
    );
    assert!(redis.pttl(&key).await > 0, "the session lives on");

    // Idle, it expires (the sweep renews the lease, no longer the expiry), and its
    // worker is closed.
    wait_until("the idle session expires", async || {
        redis.pttl(&key).await == -2
    })
    .await;
    wait_until("its worker is closed", async || {
        local_sessions(&a).await == 0.0
    })
    .await;
    assert_eq!(
        ping_status(&http, &a.url(), &session).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_idle_worker_goes_away_its_lease_runs_out_and_the_next_request_restores_it() {
    if skipped_on_shared_cluster(
        "an_idle_worker_goes_away_its_lease_runs_out_and_the_next_request_restores_it",
    ) {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("holder-idle");
    let settings = [
        ("STATEFUL_MCP__SESSION__LOCAL_IDLE_SECS", "1"),
        ("STATEFUL_MCP__SESSION__LEASE_SECS", "1"),
    ];
    let a = Replica::start(redis.url(), &prefix, &settings).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;
    assert_eq!(increment(&http, &a.url(), &session).await, 1);
    assert_eq!(local_sessions(&a).await, 1.0);

    wait_until("the idle worker is closed", async || {
        local_sessions(&a).await == 0.0
    })
    .await;
    // No renewal after that: the lease runs out, so any replica may take the session.
    let key = format!("{prefix}:{{{session}}}:session");
    let lease = async || -> i64 {
        let lease: Option<String> = redis.conn().await.hget(&key, "lease").await.unwrap();
        lease.and_then(|l| l.parse().ok()).expect("a lease end")
    };
    let last = lease().await;
    wait_until("the lease runs out", async || {
        redis_now_ms(&redis).await > last
    })
    .await;
    assert_eq!(lease().await, last, "renewed after its worker went away");
    assert!(redis.pttl(&key).await > 0, "the session itself lives on");

    // The next request restores a worker here, on the session's stored state.
    assert_eq!(increment(&http, &a.url(), &session).await, 2);
    assert_eq!(local_sessions(&a).await, 1.0);
}
