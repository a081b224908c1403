//! Redis down: requests fail fast with a clear error, readiness goes red, and everything
//! recovers by itself when Redis is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    client::{call, create_handle, legacy_client, stateless_client, text, try_call},
    http::{initialize_2025, legacy_post, legacy_session, post_json},
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::wait_until,
};

async fn readyz(replica: &Replica) -> StatusCode {
    reqwest::get(replica.endpoint("/readyz"))
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn requests_fail_fast_while_redis_is_down_and_recover_after() {
    let mut redis = RedisServer::start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("outage"), &[]).await;
    let client = stateless_client(&replica.url()).await;
    let id = create_handle(&client).await;
    call(
        &client,
        "counter",
        json!({"operation": "increment", "session_id": id}),
    )
    .await;
    assert_eq!(readyz(&replica).await, StatusCode::OK);

    redis.kill();
    let started = Instant::now();
    let args = json!({"operation": "increment", "session_id": id});
    let err = try_call(&client, "counter", args)
        .await
        .expect_err("a call needing Redis fails while it is down");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failed fast, not after a hang: {:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().contains("session store unavailable"),
        "{err}"
    );
    assert_eq!(readyz(&replica).await, StatusCode::SERVICE_UNAVAILABLE);
    // Liveness does not depend on Redis.
    let health = reqwest::get(replica.endpoint("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    redis.restart().await;
    // Data did not survive (the test server has no persistence), but service does.
    wait_until("readiness recovers", async || {
        readyz(&replica).await == StatusCode::OK
    })
    .await;
    let id = create_handle(&client).await;
    let r = call(
        &client,
        "counter",
        json!({"operation": "increment", "session_id": id}),
    )
    .await;
    assert_eq!(text(&r), "Counter increment: 1");
}

#[tokio::test]
async fn a_legacy_initialize_is_refused_with_503_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("outage-legacy"), &[]).await;
    redis.kill();
    let resp = post_json(
        &reqwest::Client::new(),
        &replica.url(),
        &initialize_2025("raw"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    assert!(resp.headers().get("mcp-session-id").is_none());

    redis.restart().await;
    let client = legacy_client(&replica.url()).await;
    let r = call(&client, "counter", json!({"operation": "increment"})).await;
    assert_eq!(text(&r), "Counter increment: 1");
}

#[tokio::test]
async fn a_replica_that_must_restore_a_session_answers_503_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("outage-restore");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let session = legacy_session(&a.url()).await;
    redis.kill();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let resp = legacy_post(&reqwest::Client::new(), &b.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = resp.text().await.unwrap();
    assert!(body.contains("retry shortly"), "{body}");
    assert!(
        !body.to_lowercase().contains("redis"),
        "internal detail: {body}"
    );
    // The holder serves the session on its lease, which no other replica can take
    // while it lasts: what needs nothing of Redis is answered, what needs it is a
    // clear "retry shortly".
    let resp = legacy_post(&reqwest::Client::new(), &a.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"operation": "increment"}}});
    let resp = legacy_post(&reqwest::Client::new(), &a.url(), &session, &call)
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("retry shortly") || body.contains("outcome unknown"),
        "{body}"
    );
    assert!(
        !body.to_lowercase().contains("redis"),
        "internal detail: {body}"
    );
    let ready = reqwest::get(b.endpoint("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = ready.text().await.unwrap();
    assert_eq!(body, "redis unreachable", "no raw error: {body}");
}

#[tokio::test]
async fn the_holder_serves_without_redis_no_longer_than_its_lease_lasts() {
    let redis = RedisServer::start().await;
    // Without the event store a ping on the holder needs no Redis at all, so only the
    // lease's known end makes the holder ask the store again.
    let settings = [
        ("STATEFUL_MCP__SESSION__LEASE_SECS", "1"),
        ("STATEFUL_MCP__EVENTS__ENABLED", "false"),
    ];
    let a = Replica::start(redis.url(), &unique_prefix("outage-holder"), &settings).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let status = async || {
        legacy_post(&http, &a.url(), &session, &ping)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status().await, StatusCode::OK);

    redis.pause();
    wait_until("the holder refuses with 503", async || {
        status().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(
        status().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "and goes on refusing"
    );
    redis.resume();
    wait_until("the session is served again", async || {
        status().await == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn a_failed_event_write_makes_the_holder_touch_again() {
    let mut redis = RedisServer::start().await;
    // A lease renewal would also notice the outage: none runs within the test.
    let settings = [("STATEFUL_MCP__SESSION__LEASE_SECS", "3600")];
    let holder = Replica::start(redis.url(), &unique_prefix("outage-write"), &settings).await;
    let session = legacy_session(&holder.url()).await;
    let http = reqwest::Client::new();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let status = async || {
        legacy_post(&http, &holder.url(), &session, &ping)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status().await, StatusCode::OK);
    wait_until("the response event is written behind", async || {
        holder
            .metric(&["event_writes_total"])
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(
        holder.metric(&["event_writes_failed_total"]).await,
        Some(0.0)
    );
    redis.kill();
    // Served on the holder's lease; its response event cannot be written.
    assert_eq!(status().await, StatusCode::OK);
    // Once that write has failed, the holder touches the session again: a 503.
    wait_until("the holder touches again", async || {
        status().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let failed = holder.metric(&["event_writes_failed_total"]).await;
    assert!(failed.is_some_and(|n| n >= 1.0), "{failed:?}");
    // A Redis restarted without persistence lost the session, and the holder, asking
    // the store again, learns it.
    redis.restart().await;
    wait_until("the holder answers from the store again", async || {
        status().await == StatusCode::NOT_FOUND
    })
    .await;
    wait_until("the event write queue empties", async || {
        holder.metric(&["event_write_queue{"]).await == Some(0.0)
    })
    .await;
}
