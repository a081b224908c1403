//! `/metrics`: Prometheus text with the replica label, request and tool figures, sessions,
//! pool and cache.

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
