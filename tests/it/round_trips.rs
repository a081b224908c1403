//! What a tool call costs in Redis round trips, read off `MONITOR` on a private server.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    cluster::{Replica, call, stateless_client, structured},
    support::{RedisServer, unique_prefix},
};

/// Commands clients sent (not those scripts ran) while `f` ran.
async fn client_commands<F: Future<Output = ()>>(redis: &RedisServer, f: F) -> Vec<String> {
    let addr = redis.url().trim_start_matches("redis://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"MONITOR\r\n").await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    assert_eq!(lines.next_line().await.unwrap().unwrap(), "+OK");
    f.await;
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
    {
        if !line.contains("[0 lua]") {
            seen.push(line);
        }
    }
    seen
}

#[tokio::test]
async fn a_2026_tool_call_costs_one_round_trip() {
    let redis = RedisServer::start().await;
    // A long maintenance interval keeps upkeep out of the measured window.
    let replica = Replica::start(
        redis.url(),
        &unique_prefix("rtt"),
        &[("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "3600")],
    )
    .await;
    let client = stateless_client(&replica.url()).await;
    let created = call(&client, "session_create", json!({})).await;
    let id = structured(&created)["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
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
        let seen = client_commands(&redis, async {
            call(&client, tool, args.clone()).await;
        })
        .await;
        assert_eq!(seen.len(), 1, "{tool}: {seen:#?}");
        assert!(seen[0].contains("EVAL"), "{tool}: {seen:#?}");
    }
}
