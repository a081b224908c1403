//! Tool-result caching across replicas, and the 2026-07-28 cache hints.

use rmcp::model::ReadResourceRequestParams;
use serde_json::json;

use crate::support::{
    client::{call, stateless_client, structured, text},
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
};

#[tokio::test]
async fn a_cacheable_result_computed_on_one_replica_is_served_by_another() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("toolcache");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let (ca, cb) = (
        stateless_client(&a.url()).await,
        stateless_client(&b.url()).await,
    );

    let first = call(&ca, "prime_count", json!({"limit": 1_000_000})).await;
    assert_eq!(structured(&first)["count"], 78_498, "{}", text(&first));
    assert_eq!(structured(&first)["largest"], 999_983);
    let stats_a = structured(&call(&ca, "cache_stats", json!({})).await);
    assert_eq!(stats_a["loader_calls"], 1, "{stats_a}");
    assert_eq!(stats_a["sets"], 1, "{stats_a}");

    let second = call(&cb, "prime_count", json!({"limit": 1_000_000})).await;
    assert_eq!(text(&second), text(&first));
    let stats_b = structured(&call(&cb, "cache_stats", json!({})).await);
    assert_eq!(stats_b["replica_id"].as_str().unwrap().len(), 12);
    assert_ne!(stats_b["replica_id"], stats_a["replica_id"]);
    assert_eq!(stats_b["loader_calls"], 0, "{stats_b}");
    assert_eq!(stats_b["hits_l2"], 1, "{stats_b}");

    // A refused limit never reaches the cache: no lookup, no load, nothing written.
    let misses = stats_a["misses"].as_u64().unwrap();
    for _ in 0..2 {
        let err = call(&ca, "prime_count", json!({"limit": 9_000_000_000u64})).await;
        assert_eq!(err.is_error, Some(true));
        assert!(text(&err).contains("at most"), "{}", text(&err));
    }
    let stats_a = structured(&call(&ca, "cache_stats", json!({})).await);
    assert_eq!(stats_a["loader_calls"], 1, "{stats_a}");
    assert_eq!(stats_a["sets"], 1, "{stats_a}");
    assert_eq!(stats_a["misses"].as_u64(), Some(misses), "{stats_a}");

    // The tool and the resource share one entry per limit.
    let read = ca
        .read_resource(ReadResourceRequestParams::new("primes://below/1000000"))
        .await
        .unwrap();
    let rmcp::model::ResourceContents::TextResourceContents { text: body, .. } = &read.contents[0]
    else {
        panic!("text contents expected");
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap(),
        structured(&first)
    );
    let stats_a = structured(&call(&ca, "cache_stats", json!({})).await);
    assert_eq!(stats_a["loader_calls"], 1, "{stats_a}");
}

#[tokio::test]
async fn the_tool_list_carries_cache_hints_for_2026_clients() {
    let redis = RedisServer::shared_or_start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("hints"), &[]).await;
    let client = stateless_client(&replica.url()).await;
    let list = client.list_tools(None).await.unwrap();
    assert_eq!(list.ttl_ms, Some(300_000));
    assert_eq!(list.cache_scope, Some(rmcp::model::CacheScope::Public));
    let mut names: Vec<_> = list.tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cache_stats",
            "counter",
            "file_read",
            "history",
            "prime_count",
            "resource_stats",
            "session_create",
            "session_delete",
            "session_info"
        ]
    );
    let counter = list.tools.iter().find(|t| t.name == "counter").unwrap();
    let schema = serde_json::to_value(&counter.input_schema).unwrap();
    assert_eq!(
        schema["properties"]["operation"]["enum"],
        json!(["get", "increment", "decrement", "reset"]),
        "{schema}"
    );
    assert!(counter.output_schema.is_some());
}

#[tokio::test]
async fn resource_reads_are_cached_and_carry_the_same_hints() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("resource");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let (ca, cb) = (
        stateless_client(&a.url()).await,
        stateless_client(&b.url()).await,
    );

    let templates = ca.list_resource_templates(None).await.unwrap();
    assert_eq!(
        templates.resource_templates[0].uri_template,
        "primes://below/{limit}"
    );
    assert_eq!(templates.ttl_ms, Some(300_000));
    let listed = ca.list_resources(None).await.unwrap();
    assert_eq!(listed.resources[0].uri, "primes://below/1000000");
    assert_eq!(listed.cache_scope, Some(rmcp::model::CacheScope::Public));

    let first = ca
        .read_resource(ReadResourceRequestParams::new("primes://below/100"))
        .await
        .unwrap();
    assert_eq!(first.ttl_ms, Some(3_600_000), "the prime_count cache TTL");
    assert_eq!(first.cache_scope, Some(rmcp::model::CacheScope::Public));
    let rmcp::model::ResourceContents::TextResourceContents {
        text, mime_type, ..
    } = &first.contents[0]
    else {
        panic!("text contents expected");
    };
    assert_eq!(mime_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        (body["count"].as_u64(), body["largest"].as_u64()),
        (Some(25), Some(97))
    );

    let again = cb
        .read_resource(ReadResourceRequestParams::new("primes://below/100"))
        .await
        .unwrap();
    assert_eq!(again.contents, first.contents);
    let stats_b = structured(&call(&cb, "cache_stats", json!({})).await);
    assert_eq!(
        (
            stats_b["hits_l2"].as_u64(),
            stats_b["loader_calls"].as_u64()
        ),
        (Some(1), Some(0))
    );

    let unknown = ca
        .read_resource(ReadResourceRequestParams::new("primes://above/3"))
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown resource"), "{unknown}");
}
