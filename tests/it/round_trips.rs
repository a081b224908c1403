//! What a tool call costs in Redis round trips, read off `MONITOR` on a private server,
//! and what a touch sends back (`INFO stats`).
//!
//! The contract: a stateful 2026-07-28 call is one script in its session's hash slot; a
//! `session_create` one script on a single node, and on a cluster three round trips,
//! each of commands of one slot (two more per round of checks when the owner is at its
//! cap, one for a retried keyed create whose first call completed); a 2025-era call one
//! on its holder, two with the event store (its response event, written behind it), one
//! more when forwarded. A touch sends back the session's `initialize` parameters only
//! to a replica that will restore the session's worker.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    client::{call, create_handle, stateless_client},
    http::{legacy_delete, legacy_post, legacy_session, legacy_session_as},
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

/// The command name of each `MONITOR` line of `seen`, and the key it names first.
fn names(seen: &[String]) -> Vec<(String, String)> {
    seen.iter()
        .map(|line| {
            let mut quoted = line.split('"').skip(1).step_by(2);
            let name = quoted.next().unwrap_or_default().to_owned();
            // A script's first key follows its digest and key count.
            let key = if name.starts_with("EVAL") {
                quoted.nth(2)
            } else {
                quoted.next()
            };
            (name, key.unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_session_create_costs_one_round_trip_on_a_node_three_of_one_slot_each_on_a_cluster() {
    let redis = RedisServer::start().await;
    let replica = replica_without_upkeep(&redis).await;
    let client = stateless_client(&replica.url()).await;
    // The first create on a server also loads its scripts (and on a one-node cluster,
    // reached as one node, finds the script across slots refused: creates go in steps).
    create_handle(&client).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (id, seen) = redis
        .client_commands(async { create_handle(&client).await })
        .await;
    let mut seen = names(&of_calls(seen));
    // 1: the reservation, a script in the owner's slot (on a node, the whole create).
    let owner = seen.remove(0);
    assert_eq!(owner.0, "EVALSHA", "{seen:#?}");
    assert!(owner.1.ends_with(":{p:anonymous}:sessions"), "{owner:?}");
    if !RedisServer::one_node_cluster() {
        assert!(seen.is_empty(), "one script on a node: {seen:#?}");
        return;
    }
    // 2: the record, a script in the session's slot, and beside it (same round trip)
    // the session's bucket entry; 3: the confirmation, plain commands in the owner's
    // and the bucket's slots. Steps 2's two halves may reach Redis in either order.
    let bucket = format!(":{{sessions:{}}}", &id[..1]);
    let session = format!(":{{{id}}}:session");
    let mut expected = vec![
        ("EVALSHA".to_owned(), session),
        ("ZADD".to_owned(), bucket.clone()),
        ("PEXPIRE".to_owned(), bucket.clone()),
        ("ZADD".to_owned(), ":{p:anonymous}:sessions".to_owned()),
        ("ZADD".to_owned(), bucket.clone()),
        ("PEXPIRE".to_owned(), bucket),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:#?}");
    for (name, key) in &seen {
        let at = expected
            .iter()
            .position(|(n, k)| n == name && key.ends_with(k.as_str()))
            .unwrap_or_else(|| panic!("unexpected {name} {key}: {seen:#?}"));
        expected.remove(at);
    }
}

#[tokio::test]
async fn touches_send_back_no_initialize_parameters_to_a_replica_that_restores_nothing() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("rtt-touch");
    let settings = [("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "3600")];
    let holder = Replica::start(redis.url(), &prefix, &settings).await;
    let other = Replica::start(redis.url(), &prefix, &settings).await;
    let http = reqwest::Client::new();
    // Parameters this large would show in the bytes of any one touch that sent them.
    let name = "c".repeat(6000);
    let session = legacy_session_as(&http, &holder.url(), &name).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let ping = || async {
        let response = legacy_post(&http, &other.url(), &session, &ping)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.text().await.unwrap()
    };
    // Warm up: the first touch on a server also loads its script.
    ping().await;
    let sent = || redis.info_number("stats", "total_net_output_bytes");
    let before = sent().await;
    // Each ping is touched by the replica that forwards it to the holder; the DELETE
    // by the holder, which runs the session's worker.
    for _ in 0..10 {
        ping().await;
    }
    let deleted = legacy_delete(&http, &holder.url(), &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let during = sent().await - before;
    // Eleven touches, ten pings' events, a delete and two `INFO` replies, in fewer bytes
    // than the parameters once.
    assert!(
        during < 6000,
        "{during} bytes sent for ten pings and a delete"
    );
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
            // The response event is written behind the response.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
    of_calls(seen)
}

#[tokio::test]
async fn a_legacy_tool_call_on_the_holder_costs_one_round_trip_or_two_with_the_event_store() {
    // Without the event store: the tool's script alone. The holder knows its lease is
    // fresh and the caller owns the session, so the edge does not touch it; the lease
    // keeper's next renewal slides its expiry, batched with every other session's.
    let seen = legacy_round_trips("false", false).await;
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].contains("EVALSHA"), "{seen:#?}");
    // With it, the response event too, written behind the response; the stream's
    // priming event never is.
    let seen = legacy_round_trips("true", false).await;
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen.iter().all(|l| l.contains("EVALSHA")), "{seen:#?}");
    assert!(seen[1].contains(":events:"), "{seen:#?}");
}

#[tokio::test]
async fn a_forwarded_legacy_call_costs_one_more_round_trip() {
    // The touch on the replica that forwards (which finds the holder), then what the
    // holder's own call costs: the holder serves a forwarded request without a touch
    // as it does its own.
    let seen = legacy_round_trips("false", true).await;
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen.iter().all(|l| l.contains("EVALSHA")), "{seen:#?}");
    let seen = legacy_round_trips("true", true).await;
    assert_eq!(seen.len(), 3, "{seen:#?}");
}
