//! Redis over TLS with an ACL user confined to the deployment's key prefix: everything
//! the replicas do (scripts, the bus, the event store, the cache) works with the
//! minimal ACL the README shows.

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    bus::{BusNode, Recorder, next},
    support::{
        client::{call, create_handle, legacy_client, stateless_client, structured, text},
        redis_server::{RedisServer, unique_prefix},
        replica::Replica,
        wait::wait_until,
    },
};

#[tokio::test]
async fn replicas_share_state_over_tls_as_a_prefix_confined_acl_user() {
    let prefix = unique_prefix("tls");
    let redis = RedisServer::start_tls_acl(&prefix).await;
    let ca = redis.tls_ca().unwrap().to_str().unwrap().to_owned();
    let extra = [("STATEFUL_MCP__REDIS__TLS_CA_FILE", ca.as_str())];
    let a = Replica::start(redis.url(), &prefix, &extra).await;
    let b = Replica::start(redis.url(), &prefix, &extra).await;
    for replica in [&a, &b] {
        let ready = reqwest::get(replica.endpoint("/readyz")).await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
    }

    // Session scripts, across replicas.
    let (ca_client, cb_client) = (
        stateless_client(&a.url()).await,
        stateless_client(&b.url()).await,
    );
    let id = create_handle(&ca_client).await;
    for (client, expected) in [(&ca_client, 1), (&cb_client, 2)] {
        let r = call(
            client,
            "counter",
            json!({"operation": "increment", "session_id": id}),
        )
        .await;
        assert_eq!(structured(&r)["value"], expected, "{}", text(&r));
    }
    // The cache: computed on one replica, read from Redis on the other.
    call(&ca_client, "prime_count", json!({"limit": 1000})).await;
    call(&cb_client, "prime_count", json!({"limit": 1000})).await;
    let stats = structured(&call(&cb_client, "cache_stats", json!({})).await);
    assert_eq!(stats["hits_l2"], 1, "{stats}");
    // A 2025-era session with its event store.
    let legacy = legacy_client(&a.url()).await;
    let r = call(&legacy, "counter", json!({"operation": "increment"})).await;
    assert_eq!(text(&r), "Counter increment: 1");

    // The bus: subscribe and publish on channels under the prefix.
    let (sender, receiver) = (
        BusNode::start(&redis, &prefix, "sender"),
        BusNode::start(&redis, &prefix, "receiver"),
    );
    let (recorder, mut messages) = Recorder::new();
    receiver.bus.subscribe("tls-test", recorder);
    wait_until("the receiver subscribes", async || {
        receiver.bus.is_subscribed("tls-test")
    })
    .await;
    sender.publish("tls-test", b"over tls").await;
    assert_eq!(next(&mut messages).await.payload, b"over tls");
}
