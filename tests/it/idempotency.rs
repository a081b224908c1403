//! Exactly-once retries: a `tools/call` with an `idempotencyKey` is applied once, on any
//! replica, and a call whose outcome is unknown (the store did not answer in time) says
//! so and can be retried safely.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    http::{
        create_handle, initialize_2025, meta_2026, post_json, read_reply, tools_call_2026_params,
    },
    redis_server::{RedisServer, skipped_on_shared_cluster, unique_prefix},
    replica::Replica,
};

/// A 2026-07-28 `tools/call` of `tool` with `args` and the `idempotencyKey` `key`.
async fn call_with_key(url: &str, tool: &str, args: Value, key: Value) -> (StatusCode, Value) {
    let params =
        json!({"name": tool, "arguments": args, "_meta": meta_2026(), "idempotencyKey": key});
    let response = tools_call_2026_params(&reqwest::Client::new(), url, params)
        .send()
        .await
        .unwrap();
    read_reply(response).await
}

fn value(msg: &Value) -> Value {
    msg["result"]["structuredContent"]["value"].clone()
}

#[tokio::test]
async fn a_retried_call_is_applied_once_on_any_replica() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("idempotency");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let handle = create_handle(&reqwest::Client::new(), &a.url()).await;
    let increment = json!({"operation": "increment", "step": 3, "session_id": handle});

    for replica in [&a, &b, &a] {
        let (_, msg) =
            call_with_key(&replica.url(), "counter", increment.clone(), json!("k1")).await;
        assert_eq!(value(&msg), 3, "{msg}");
    }
    let (_, msg) = call_with_key(
        &b.url(),
        "counter",
        json!({"operation": "increment", "step": 4, "session_id": handle}),
        json!("k1"),
    )
    .await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    assert!(
        msg["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("already used for a call with other arguments"),
        "{msg}"
    );
    let (_, msg) = call_with_key(&b.url(), "counter", increment.clone(), json!("k2")).await;
    assert_eq!(value(&msg), 6, "a new key is a new call: {msg}");

    // A retried create gets the first call's handle, on any replica.
    let mut created = Vec::new();
    for replica in [&a, &b] {
        let (_, msg) =
            call_with_key(&replica.url(), "session_create", json!({}), json!("c1")).await;
        created.push(msg["result"]["structuredContent"]["session_id"].clone());
    }
    assert!(created[0].is_string(), "{created:?}");
    assert_eq!(created[0], created[1], "one session for one key");

    for bad in [json!(""), json!("x".repeat(256)), json!(7)] {
        let (status, msg) = call_with_key(&a.url(), "counter", increment.clone(), bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
        assert_eq!(msg["error"]["code"], -32602, "{msg}");
    }

    // The server announces it.
    let response = post_json(&reqwest::Client::new(), &a.url(), &initialize_2025("probe"))
        .send()
        .await
        .unwrap();
    let (_, init) = read_reply(response).await;
    assert_eq!(
        init["result"]["capabilities"]["experimental"]["tools.idempotency"]["retentionSecs"], 600,
        "{init}"
    );
}

#[tokio::test]
async fn an_unanswered_call_reports_an_unknown_outcome_and_its_retry_applies_once() {
    if skipped_on_shared_cluster(
        "an_unanswered_call_reports_an_unknown_outcome_and_its_retry_applies_once",
    ) {
        return;
    }
    let redis = RedisServer::start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("unknown-outcome"), &[]).await;
    let handle = create_handle(&reqwest::Client::new(), &replica.url()).await;
    let increment = json!({"operation": "increment", "session_id": handle});

    redis.pause();
    let (_, msg) = call_with_key(&replica.url(), "counter", increment.clone(), json!("u1")).await;
    redis.resume();
    let message = msg["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("outcome unknown"), "{msg}");
    assert!(message.contains("idempotencyKey"), "{msg}");

    // Redis ran the queued increment once it resumed; the retry must not add another.
    let retried = crate::support::wait::retry("the retry is answered", async || {
        let (_, msg) =
            call_with_key(&replica.url(), "counter", increment.clone(), json!("u1")).await;
        if msg["result"].is_object() {
            Ok(msg)
        } else {
            Err(msg.to_string())
        }
    })
    .await;
    assert_eq!(value(&retried), 1, "{retried}");
    let (_, msg) = call_with_key(
        &replica.url(),
        "counter",
        json!({"operation": "get", "session_id": handle}),
        json!("g1"),
    )
    .await;
    assert_eq!(value(&msg), 1, "{msg}");
}

/// What keyed calls leave in Redis is bounded per session: reads keep no record, and a
/// session keeps at most `session.max_retry_records` records of at most
/// `session.max_retry_bytes` in all, the oldest going first; the newest still replays.
#[tokio::test]
async fn a_sessions_retry_records_are_bounded_and_reads_keep_none() {
    if skipped_on_shared_cluster("a_sessions_retry_records_are_bounded_and_reads_keep_none") {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("retry-records");
    let replica = Replica::start(
        redis.url(),
        &prefix,
        &[
            ("STATEFUL_MCP__SESSION__MAX_RETRY_RECORDS", "8"),
            ("STATEFUL_MCP__SESSION__MAX_RETRY_BYTES", "4096"),
        ],
    )
    .await;
    let url = replica.url();
    let handle = create_handle(&reqwest::Client::new(), &url).await;
    let records = async || {
        redis
            .keys(&format!("{prefix}:{{{handle}}}:idem:*"))
            .await
            .len()
    };

    // Reads: nothing kept, whatever their number.
    for k in 0..20 {
        let get = json!({"operation": "get", "session_id": handle});
        call_with_key(&url, "counter", get, json!(format!("read-{k}"))).await;
        let list = json!({"operation": "list", "session_id": handle});
        call_with_key(&url, "history", list, json!(format!("list-{k}"))).await;
    }
    assert_eq!(records().await, 0, "reads keep no retry record");

    // Changes: at most 8 records, the newest replayed.
    let increment = json!({"operation": "increment", "session_id": handle});
    for k in 0..30 {
        call_with_key(
            &url,
            "counter",
            increment.clone(),
            json!(format!("inc-{k}")),
        )
        .await;
    }
    assert_eq!(records().await, 8, "at most session.max_retry_records");
    let (_, msg) = call_with_key(&url, "counter", increment.clone(), json!("inc-29")).await;
    assert_eq!(value(&msg), 30, "the newest key still replays: {msg}");
    let (_, msg) = call_with_key(&url, "counter", increment.clone(), json!("inc-0")).await;
    assert_eq!(
        value(&msg),
        31,
        "the oldest key was evicted and applies again: {msg}"
    );

    // Large replies: the bytes bound evicts before the count does (each history reply
    // carries every entry, about 600 bytes and growing).
    let entry = "x".repeat(600);
    for k in 0..8 {
        let add = json!({"operation": "add", "command": entry, "session_id": handle});
        let (_, msg) = call_with_key(&url, "history", add, json!(format!("add-{k}"))).await;
        assert_ne!(msg["result"]["isError"], true, "{msg}");
    }
    let mut conn = redis.conn().await;
    let mut total = 0;
    for key in redis.keys(&format!("{prefix}:{{{handle}}}:idem:*")).await {
        let len: usize = redis::cmd("STRLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        total += len;
    }
    assert!(records().await < 8, "the bytes bound evicted first");
    // One record may exceed the bound alone; together they stay within it plus that one.
    assert!(total <= 4096 + 8 * 700, "{total} bytes kept");
    let index: usize = redis::cmd("ZCARD")
        .arg(format!("{prefix}:{{{handle}}}:idem"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        index,
        records().await,
        "the index lists exactly the records kept"
    );
}

/// A replica counts the retry records it writes and drops at `/metrics`: keyed changes
/// and creates write one each, replays and reads none, and past
/// `session.max_retry_records` each new one drops the oldest.
#[tokio::test]
async fn the_retry_records_written_and_dropped_are_counted_at_metrics() {
    let redis = RedisServer::shared_or_start().await;
    let replica = Replica::start(
        redis.url(),
        &unique_prefix("retry-metrics"),
        &[("STATEFUL_MCP__SESSION__MAX_RETRY_RECORDS", "2")],
    )
    .await;
    let url = replica.url();
    let handle = create_handle(&reqwest::Client::new(), &url).await;
    let increment = json!({"operation": "increment", "session_id": handle});
    for key in ["k1", "k2", "k3", "k3"] {
        call_with_key(&url, "counter", increment.clone(), json!(key)).await;
    }
    let get = json!({"operation": "get", "session_id": handle});
    call_with_key(&url, "counter", get, json!("k4")).await;
    call_with_key(&url, "session_create", json!({}), json!("c1")).await;
    let counted = async |name: &str| {
        replica
            .metric(&[&format!("stateful_mcp_retry_records_{name}_total{{")])
            .await
    };
    assert_eq!(counted("written").await, Some(4.0));
    assert_eq!(counted("dropped").await, Some(1.0));
}
