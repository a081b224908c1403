//! `/metrics`: Prometheus text with the replica label, request and tool figures, sessions,
//! pool and cache, and on the memory backend the figures every component registers.

use serde_json::json;

use crate::support::{
    client::{call, create_handle, stateless_client},
    redis_server::{RedisServer, unique_prefix},
    replica::{Replica, metric_value as value},
};

#[tokio::test]
async fn metrics_report_requests_tools_sessions_pool_and_cache() {
    let redis = RedisServer::shared_or_start().await;
    let replica = Replica::start(
        redis.url(),
        &unique_prefix("metrics"),
        &[("STATEFUL_MCP__SERVER__REPLICA_ID", "replica-m")],
    )
    .await;
    let client = stateless_client(&replica.url()).await;
    let id = create_handle(&client).await;
    for _ in 0..3 {
        call(
            &client,
            "counter",
            json!({"operation": "increment", "session_id": id}),
        )
        .await;
    }
    call(
        &client,
        "counter",
        json!({"operation": "bogus", "session_id": id}),
    )
    .await;
    call(&client, "prime_count", json!({"limit": 1000})).await;

    let response = reqwest::get(replica.endpoint("/metrics")).await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = response.text().await.unwrap();
    let replica_label = "replica=\"replica-m\"";
    assert_eq!(
        value(
            &text,
            &[
                "stateful_mcp_tool_calls_total{",
                replica_label,
                "tool=\"counter\"",
                "outcome=\"ok\""
            ]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &[
                "stateful_mcp_tool_calls_total{",
                "tool=\"counter\"",
                "outcome=\"tool_error\""
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            &["stateful_mcp_mcp_requests_total{", "method=\"tools/call\""]
        )
        .unwrap()
            >= 6.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            &[
                "stateful_mcp_tool_call_duration_seconds_count{",
                "tool=\"counter\""
            ]
        )
        .unwrap()
            >= 4.0
    );
    assert_eq!(
        value(&text, &["stateful_mcp_sessions_active{"]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &["stateful_mcp_sessions_created_total{"]),
        Some(1.0),
        "{text}"
    );
    assert!(value(&text, &["stateful_mcp_redis_pool_max_size{"]).unwrap() >= 1.0);
    assert_eq!(
        value(&text, &["stateful_mcp_cache_sets_total{"]),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("stateful_mcp_build_info{"), "{text}");
    assert!(text.contains("backend=\"redis\""), "{text}");
}

/// Every component registers its own figures when the replica is built: a memory replica
/// reports the CPU pool, the task runner, the cache and its resource kinds, and has no
/// Redis pool to report.
#[tokio::test]
async fn metrics_of_a_memory_replica_come_from_every_component_but_the_redis_pool() {
    let root = std::env::temp_dir();
    let replica = Replica::memory(&[
        ("STATEFUL_MCP__SERVER__REPLICA_ID", "replica-mem"),
        ("STATEFUL_MCP__RESOURCES__FILE_ROOT", root.to_str().unwrap()),
    ])
    .await;
    let text = reqwest::get(replica.endpoint("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "stateful_mcp_cpu_jobs_limit{",
        "stateful_mcp_tasks_capacity{",
        "stateful_mcp_cache_l1_max_entries{",
        "stateful_mcp_resources_active{",
    ] {
        assert!(
            value(&text, &[series, "replica=\"replica-mem\""]).is_some(),
            "{series} in {text}"
        );
    }
    assert_eq!(
        value(
            &text,
            &["stateful_mcp_resources_created_total{", "kind=\"file\""]
        ),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("redis_pool"), "{text}");
    assert!(text.contains("backend=\"memory\""), "{text}");
}
