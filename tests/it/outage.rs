//! Redis down: requests fail fast with a clear error, readiness goes red, and everything
//! recovers by itself when Redis is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    cluster::{Replica, call, create_handle, legacy_client, stateless_client, structured, text},
    support::{RedisServer, unique_prefix},
};

async fn readyz(replica: &Replica) -> StatusCode {
    reqwest::get(format!("http://{}/readyz", replica.addr))
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
    let err = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("counter")
                .with_arguments(args.as_object().cloned().unwrap()),
        )
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
    let health = reqwest::get(format!("http://{}/healthz", replica.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    redis.restart().await;
    // Data did not survive (the test server has no persistence), but service does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&replica).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = call(&client, "session_create", json!({})).await;
    assert_ne!(created.is_error, Some(true), "{}", text(&created));
    let id = structured(&created)["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let resp = reqwest::Client::new()
        .post(replica.url())
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"}}})
            .to_string(),
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
