//! The CPU pool on a real replica: a large count runs off the async workers, so cheap
//! calls on the same replica answer while it runs, and cancelling it frees its permit for
//! the next count.

use serde_json::json;

use crate::support::{
    client::{call, create_handle, stateless_client, structured, text},
    http::prime_count_2026_with_progress,
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::{wait_until, within},
};

/// The replica's CPU pool figure `name` (`limit`, `running` or `waiting`).
async fn cpu_jobs(replica: &Replica, name: &str) -> Option<f64> {
    replica
        .metric(&[&format!("stateful_mcp_cpu_jobs_{name}{{")])
        .await
}

#[tokio::test]
async fn a_large_count_leaves_cheap_calls_answering_and_its_cancellation_frees_its_permit() {
    let redis = RedisServer::shared_or_start().await;
    let replica = Replica::start(
        redis.url(),
        &unique_prefix("cpu"),
        &[("STATEFUL_MCP__TOOLS__CPU_CONCURRENCY", "1")],
    )
    .await;
    assert_eq!(cpu_jobs(&replica, "limit").await, Some(1.0));

    // Minutes of sieve, over raw HTTP: dropping the response cancels the call.
    let large = prime_count_2026_with_progress(
        &reqwest::Client::new(),
        &replica.url(),
        2_000_000_000,
        "large",
    )
    .send()
    .await
    .unwrap();
    assert!(large.status().is_success());
    wait_until("the large count holds the one CPU permit", async || {
        cpu_jobs(&replica, "running").await == Some(1.0)
    })
    .await;

    let client = stateless_client(&replica.url()).await;
    let id = create_handle(&client).await;
    let counted = call(
        &client,
        "counter",
        json!({"operation": "increment", "session_id": id}),
    )
    .await;
    assert_eq!(structured(&counted)["value"], 1, "{}", text(&counted));
    assert_eq!(
        cpu_jobs(&replica, "running").await,
        Some(1.0),
        "the cheap calls answered while the large count was still running"
    );

    // Another count waits for the permit, and gets it when the large one is cancelled.
    let small =
        tokio::spawn(async move { call(&client, "prime_count", json!({"limit": 1000})).await });
    wait_until("the small count waits for the permit", async || {
        cpu_jobs(&replica, "waiting").await == Some(1.0)
    })
    .await;
    assert!(!small.is_finished());
    drop(large);
    let small = within(
        "the small count runs once the cancelled one has freed the permit",
        small,
    )
    .await
    .unwrap();
    assert_eq!(structured(&small)["count"], 168, "{}", text(&small));
    wait_until("no count is left running", async || {
        cpu_jobs(&replica, "running").await == Some(0.0)
    })
    .await;
}
