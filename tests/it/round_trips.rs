//! What a tool call costs in Redis round trips, read off `MONITOR` on a private server.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    client::{call, create_handle, stateless_client},
    http::{legacy_post, legacy_session},
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
};

/// A replica on `redis` whose long maintenance interval keeps upkeep out of the measured
/// window.
async fn replica_without_upkeep(redis: &RedisServer) -> Replica {
    Replica::start(
        redis.url(),
        &unique_prefix("rtt"),
        &[("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "3600")],
    )
    .await
}

/// The commands of `seen` that calls sent: without the replicas' liveness beats, which
/// run on their own clock whatever the calls do.
fn of_calls(seen: Vec<String>) -> Vec<String> {
    seen.into_iter()
        .filter(|l| !(l.contains(":replica:") && l.contains(":alive\"")))
        .collect()
}

#[tokio::test]
async fn a_2026_tool_call_costs_one_round_trip() {
    let redis = RedisServer::start().await;
    let replica = replica_without_upkeep(&redis).await;
    let client = stateless_client(&replica.url()).await;
    let id = create_handle(&client).await;
    let calls = [
        (
            "counter",
            json!({"operation": "increment", "session_id": id}),
        ),
        (
            "history",
            json!({"operation": "add", "command": "x", "session_id": id}),
        ),
        ("session_info", json!({"session_id": id})),
    ];
    // The first use of each script on a server also loads it (NOSCRIPT, SCRIPT LOAD).
    for (tool, args) in &calls {
        call(&client, tool, args.clone()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    for (tool, args) in calls {
        let ((), seen) = redis
            .client_commands(async {
                call(&client, tool, args.clone()).await;
            })
            .await;
        let seen = of_calls(seen);
        assert_eq!(seen.len(), 1, "{tool}: {seen:#?}");
        assert!(seen[0].contains("EVAL"), "{tool}: {seen:#?}");
    }
}

#[tokio::test]
async fn a_session_create_costs_one_round_trip() {
    let redis = RedisServer::start().await;
    let replica = replica_without_upkeep(&redis).await;
    let client = stateless_client(&replica.url()).await;
    // The first create on a server also loads its script.
    create_handle(&client).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ((), seen) = redis
        .client_commands(async {
            create_handle(&client).await;
        })
        .await;
    let seen = of_calls(seen);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].contains("EVAL"), "{seen:#?}");
}

/// The commands one 2025-era `counter` call sends, with the event store on or off
/// (`events`), sent to the replica holding its session or, `forwarded`, to another one.
async fn legacy_round_trips(events: &str, forwarded: bool) -> Vec<String> {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("rtt-legacy");
    // Long upkeep and lease intervals keep the maintenance and the lease sweep out of
    // the measured window.
    let settings = [
        ("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "3600"),
        ("STATEFUL_MCP__SESSION__LEASE_SECS", "3600"),
        ("STATEFUL_MCP__EVENTS__ENABLED", events),
    ];
    let holder = Replica::start(redis.url(), &prefix, &settings).await;
    let other = Replica::start(redis.url(), &prefix, &settings).await;
    let session = legacy_session(&holder.url()).await;
    let url = if forwarded { other.url() } else { holder.url() };
    let http = reqwest::Client::new();
    let increment = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"operation": "increment"}}});
    let increment = || async {
        legacy_post(&http, &url, &session, &increment)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Warm up: the first call of each script loads it.
    let body = increment().await;
    assert!(body.contains("Counter increment: 1"), "{body}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ((), seen) = redis
        .client_commands(async {
            let body = increment().await;
            assert!(body.contains("Counter increment: 2"), "{body}");
        })
        .await;
    of_calls(seen)
}

#[tokio::test]
async fn a_legacy_tool_call_on_the_holder_costs_one_round_trip_or_three_with_the_event_store() {
    // Without the event store: the tool's script alone. The holder knows its lease is
    // fresh and the caller owns the session, so the edge does not touch it; the lease
    // keeper's next renewal slides its expiry, batched with every other session's.
    let seen = legacy_round_trips("false", false).await;
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].contains("EVALSHA"), "{seen:#?}");
    // With it the edge touches the session again (the Redis step before rmcp answers
    // 200, and outside the session's worker), and the response is stored; the stream's
    // priming event never is.
    let seen = legacy_round_trips("true", false).await;
    assert_eq!(seen.len(), 3, "{seen:#?}");
}

#[tokio::test]
async fn a_forwarded_legacy_call_costs_two_more_round_trips() {
    // The touch on the replica that forwards (which finds the holder), then the
    // holder's own touch (a forwarded request always touches) and the tool's script.
    let seen = legacy_round_trips("false", true).await;
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(seen.iter().all(|l| l.contains("EVALSHA")), "{seen:#?}");
    let seen = legacy_round_trips("true", true).await;
    assert_eq!(seen.len(), 4, "{seen:#?}");
}
