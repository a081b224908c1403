//! `/metrics`: Prometheus text with the replica label, request and tool figures, sessions,
//! pool and cache, and on the memory backend the figures every component registers.

use serde_json::json;

use crate::support::{
    client::{call, create_handle, stateless_client},
    redis_server::{RedisServer, unique_prefix},
    replica::{Replica, metric_value as value},
    wait::wait_until,
};

#[tokio::test]
async fn metrics_report_requests_tools_sessions_pool_and_cache() {
    let redis = RedisServer::shared_or_start().await;
    let replica = Replica::start(
        redis.url(),
        &unique_prefix("metrics"),
        &[
            ("STATEFUL_MCP__SERVER__REPLICA_ID", "replica-m"),
            ("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "1"),
        ],
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

    // The live-session count is refreshed by the maintenance round, not by a scrape.
    wait_until("the maintenance round counted the session", async || {
        replica.metric(&["stateful_mcp_sessions_active{"]).await == Some(1.0)
    })
    .await;
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

/// `/metrics` needs no credentials, so a scrape must cost Redis nothing however many
/// sessions there are (it used to read every session older than the timeout).
#[tokio::test]
async fn a_scrape_sends_redis_no_command() {
    let redis = RedisServer::start().await;
    let replica = Replica::start(
        redis.url(),
        &unique_prefix("metrics-scrape"),
        &[("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "3600")],
    )
    .await;
    let client = stateless_client(&replica.url()).await;
    for _ in 0..20 {
        create_handle(&client).await;
    }
    let (_, commands) = redis
        .client_commands(async {
            for _ in 0..5 {
                let text = reqwest::get(replica.endpoint("/metrics"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                assert!(text.contains("stateful_mcp_sessions_active{"), "{text}");
            }
        })
        .await;
    // The replica's own background jobs may speak meanwhile: the event reader's
    // blocking XREAD, the bus subscriber's health PING, and the liveness beat (a
    // PSETEX of the replica's `alive` mark every 800 ms, which a slow machine's five
    // scrapes outlast).
    let from_scrapes: Vec<_> = commands
        .iter()
        .filter(|line| !line.contains("\"XREAD\"") && !line.contains("\"PING\""))
        .filter(|line| !(line.contains("\"PSETEX\"") && line.contains(":alive\"")))
        .collect();
    assert!(
        from_scrapes.is_empty(),
        "scrapes sent Redis {from_scrapes:?}"
    );
}
