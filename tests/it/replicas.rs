//! Several replicas on one Redis behind a round-robin hop: state follows the client,
//! whichever replica serves it.

use serde_json::json;

use crate::support::{
    client::{call, create_handle, legacy_client, stateless_client, structured, text},
    http::{legacy_delete, legacy_post, legacy_session},
    redis_server::{RedisServer, unique_prefix},
    replica::{Replica, RoundRobin},
};

async fn three_replicas(redis: &RedisServer, prefix: &str) -> (Vec<Replica>, RoundRobin) {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(redis.url(), prefix, &[]).await);
    }
    let lb = RoundRobin::start(replicas.iter().map(|r| r.addr).collect()).await;
    (replicas, lb)
}

#[tokio::test]
async fn a_handle_created_on_one_replica_works_on_the_others() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("handles");
    let (_replicas, lb) = three_replicas(&redis, &prefix).await;
    let client = stateless_client(&lb.url()).await;

    let created = call(&client, "session_create", json!({})).await;
    assert_ne!(created.is_error, Some(true), "{}", text(&created));
    let id = structured(&created)["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text(&created).contains(&id));

    for expected in 1..=6 {
        let r = call(
            &client,
            "counter",
            json!({"operation": "increment", "session_id": id}),
        )
        .await;
        assert_eq!(text(&r), format!("Counter increment: {expected}"));
        assert_eq!(structured(&r)["value"], expected);
    }
    call(
        &client,
        "history",
        json!({"operation": "add", "command": "ls -la", "session_id": id}),
    )
    .await;
    let listed = call(
        &client,
        "history",
        json!({"operation": "list", "session_id": id}),
    )
    .await;
    assert_eq!(text(&listed), "1. ls -la");
    let info = call(&client, "session_info", json!({"session_id": id})).await;
    assert_eq!(
        structured(&info)["data_keys"],
        json!(["counter", "history"])
    );

    assert!(
        lb.served().iter().all(|&n| n >= 2),
        "every replica served calls: {:?}",
        lb.served()
    );

    // Without a handle, a 2026-07-28 call is told what to do.
    let missing = call(&client, "counter", json!({"operation": "get"})).await;
    assert_eq!(missing.is_error, Some(true));
    assert!(
        text(&missing).contains("session_create"),
        "{}",
        text(&missing)
    );

    let deleted = call(&client, "session_delete", json!({"session_id": id})).await;
    assert_eq!(structured(&deleted)["deleted"], true);
    let gone = call(
        &client,
        "counter",
        json!({"operation": "get", "session_id": id}),
    )
    .await;
    assert_eq!(gone.is_error, Some(true));
    assert!(
        text(&gone).contains("unknown or has expired"),
        "{}",
        text(&gone)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_legacy_session_continues_on_another_replica_after_its_replica_stops() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy");
    let (mut replicas, lb) = three_replicas(&redis, &prefix).await;
    let client = legacy_client(&lb.url()).await;
    assert_eq!(lb.served()[0], 1, "initialize went to the first replica");

    let r = call(&client, "counter", json!({"operation": "increment"})).await;
    assert_eq!(text(&r), "Counter increment: 1");
    replicas[0].stop().await;
    for expected in 2..=7 {
        let r = call(&client, "counter", json!({"operation": "increment"})).await;
        assert_eq!(text(&r), format!("Counter increment: {expected}"));
    }
    let info = call(&client, "session_info", json!({})).await;
    assert_eq!(structured(&info)["client_info"]["name"], "rmcp");
    let served = lb.served();
    assert!(served[1] >= 2 && served[2] >= 2, "{served:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn four_clients_times_250_increments_end_at_exactly_1000() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("count");
    let (_replicas, lb) = three_replicas(&redis, &prefix).await;
    let owner = stateless_client(&lb.url()).await;
    let id = create_handle(&owner).await;

    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, id) = (lb.url(), id.clone());
        tasks.push(tokio::spawn(async move {
            let client = stateless_client(&url).await;
            for _ in 0..250 {
                let r = call(
                    &client,
                    "counter",
                    json!({"operation": "increment", "session_id": id}),
                )
                .await;
                assert_ne!(r.is_error, Some(true), "{}", text(&r));
            }
            client.cancel().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = call(
        &owner,
        "counter",
        json!({"operation": "get", "session_id": id}),
    )
    .await;
    assert_eq!(structured(&r)["value"], 1000);
    let served = lb.served();
    assert!(served.iter().all(|&n| n > 200), "{served:?}");
}

#[tokio::test]
async fn a_legacy_session_deleted_on_one_replica_or_expired_is_gone_everywhere() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-end");
    let a = Replica::start(
        redis.url(),
        &prefix,
        &[("STATEFUL_MCP__SESSION__TIMEOUT_SECS", "1")],
    )
    .await;
    let b = Replica::start(
        redis.url(),
        &prefix,
        &[("STATEFUL_MCP__SESSION__TIMEOUT_SECS", "1")],
    )
    .await;
    let http = reqwest::Client::new();
    let ping = json!({"jsonrpc": "2.0", "id": 5, "method": "ping"});

    // DELETE on B ends the session A created (and still holds in memory).
    let session = legacy_session(&a.url()).await;
    let ok = legacy_post(&http, &a.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let deleted = legacy_delete(&http, &b.url(), &session)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    for url in [a.url(), b.url()] {
        let gone = legacy_post(&http, &url, &session, &ping)
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404, "{url}");
    }

    // Without traffic for longer than the timeout, the session expires on every replica.
    let session = legacy_session(&a.url()).await;
    let ok = legacy_post(&http, &b.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "restored on B");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for url in [a.url(), b.url()] {
        let gone = legacy_post(&http, &url, &session, &ping)
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404, "{url}");
    }
}
