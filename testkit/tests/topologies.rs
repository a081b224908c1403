//! The cluster and Sentinel launchers against the real engine (`REDIS_SERVER_BIN`,
//! `REDIS_CLI_BIN`: Redis 7 by default, Valkey through `scripts/ensure-valkey.sh`): the
//! topology they promise comes up, and the faults they inject do what the fault tests
//! rely on. The recovery times are printed (`--nocapture`): they are the figures a
//! failover costs on this machine.

use std::time::{Duration, Instant};

use testkit::{
    redis_cluster::{MASTERS, RedisCluster, key_slot},
    redis_sentinel::RedisSentinels,
};

async fn set(conn: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(conn)
        .await
        .unwrap_or_else(|e| panic!("SET {key}: {e}"));
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e}"))
}

#[tokio::test]
async fn the_cluster_has_three_masters_each_with_a_replica() {
    let cluster = RedisCluster::start().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut cluster.node(0).conn().await)
        .await
        .unwrap();
    let engine = ["server_name:", "valkey_version:", "redis_version:"]
        .map(|field| info.lines().find(|l| l.starts_with(field)).unwrap_or(""));
    println!("engine: {}", engine.join(" "));
    let masters = cluster.masters().await;
    assert_eq!(masters.len(), MASTERS, "masters: {masters:?}");
    let mut replicas = Vec::new();
    for &master in &masters {
        let of = cluster.replicas_of(master).await;
        assert_eq!(of.len(), 1, "replicas of node {master}: {of:?}");
        replicas.extend(of);
    }
    replicas.sort_unstable();
    replicas.dedup();
    assert_eq!(replicas.len() + masters.len(), cluster.len());

    // A key lands where the launcher says it does, and the other masters redirect.
    let owner = cluster.master_for_key("greeting").await;
    set(&mut cluster.node(owner).conn().await, "greeting", "hello").await;
    let other = *masters.iter().find(|&&m| m != owner).unwrap();
    let moved = redis::cmd("GET")
        .arg("greeting")
        .query_async::<Option<String>>(&mut cluster.node(other).conn().await)
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Some("MOVED"), "{moved}");
    let slot = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{tag}greeting")
        .query_async::<u16>(&mut cluster.node(owner).conn().await)
        .await
        .unwrap();
    assert_eq!(slot, key_slot(b"{tag}greeting"));
    assert_eq!(cluster.seed_urls().split(',').count(), cluster.len());
}

#[tokio::test]
async fn a_killed_master_is_replaced_by_its_replica_and_rejoins_as_a_replica() {
    let mut cluster = RedisCluster::start().await;
    let master = cluster.master_for_key("counter").await;
    let replica = cluster.replicas_of(master).await[0];
    let mut conn = cluster.node(master).conn().await;
    set(&mut conn, "counter", "1").await;
    // Replicated before the crash, so the promoted replica must have it.
    redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();

    let killed = Instant::now();
    cluster.kill(master);
    let outage = cluster.time_until_healthy(killed).await;
    println!("master SIGKILLed: its replica promoted and every slot served after {outage:?}");
    assert_eq!(cluster.master_for_key("counter").await, replica);
    assert!(cluster.masters().await.contains(&replica));
    assert_eq!(
        get(&mut cluster.node(replica).conn().await, "counter")
            .await
            .as_deref(),
        Some("1")
    );

    let restarted = Instant::now();
    cluster.restart(master).await;
    println!(
        "killed master started again: a replica in sync after {:?}",
        restarted.elapsed()
    );
    assert_eq!(cluster.replicas_of(replica).await, [master]);
    assert!(!cluster.masters().await.contains(&master));
}

#[tokio::test]
async fn a_paused_master_is_failed_over_and_follows_once_resumed() {
    let mut cluster = RedisCluster::start().await;
    let master = cluster.masters().await[0];
    let replica = cluster.replicas_of(master).await[0];
    let paused = Instant::now();
    cluster.pause(master);
    let outage = cluster.time_until_healthy(paused).await;
    println!("master paused: its replica promoted after {outage:?}");
    assert!(cluster.masters().await.contains(&replica));

    cluster.resume(master);
    cluster.wait_until_healthy().await;
    // Back, it learns it was replaced and follows the promoted node.
    testkit::wait::retry_every(
        "the resumed master follows its replacement",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let of = cluster.replicas_of(replica).await;
            if of == [master] {
                Ok(())
            } else {
                Err(format!("replicas: {of:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_migrated_slot_takes_its_keys_to_the_new_master() {
    let cluster = RedisCluster::start().await;
    let keys: Vec<String> = (0..150).map(|i| format!("{{moving}}:{i}")).collect();
    let slot = key_slot(keys[0].as_bytes());
    let from = cluster.slot_owner(slot).await;
    let mut source = cluster.node(from).conn().await;
    for key in &keys {
        set(&mut source, key, key).await;
    }
    let to = *cluster
        .masters()
        .await
        .iter()
        .find(|&&m| m != from)
        .unwrap();

    // Midway, the source sends clients on with ASK for a key it no longer holds.
    let migration = cluster
        .begin_migration(slot, to)
        .await
        .expect("another owner");
    migration.move_keys(&cluster).await;
    let ask = redis::cmd("GET")
        .arg(&keys[0])
        .query_async::<Option<String>>(&mut source)
        .await
        .unwrap_err();
    assert_eq!(ask.code(), Some("ASK"), "{ask}");
    migration.finish(&cluster).await;

    assert_eq!(cluster.slot_owner(slot).await, to);
    let mut target = cluster.node(to).conn().await;
    for key in &keys {
        assert_eq!(get(&mut target, key).await.as_deref(), Some(key.as_str()));
    }
    for node in 0..cluster.len() {
        let owner = redis::cmd("GET")
            .arg(&keys[0])
            .query_async::<Option<String>>(&mut cluster.node(node).conn().await)
            .await;
        if node != to {
            let error = owner.unwrap_err();
            assert_eq!(error.code(), Some("MOVED"), "node {node}: {error}");
            assert!(
                error
                    .to_string()
                    .contains(&cluster.node(to).addr().to_string()),
                "{error}"
            );
        }
    }
    // Nothing to do when it is already there.
    assert!(cluster.begin_migration(slot, to).await.is_none());
}

#[tokio::test]
async fn the_sentinels_name_the_primary_and_a_failover_moves_it() {
    let sentinels = RedisSentinels::start().await;
    assert_eq!(sentinels.sentinel_urls().len(), 3);
    let (host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(sentinels.master_name())
        .query_async(
            &mut redis::Client::open(sentinels.sentinel_urls()[1].as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (host.as_str(), port),
        ("127.0.0.1", sentinels.server(0).addr().port())
    );
    assert_eq!(sentinels.primary().await, 0);

    let mut conn = sentinels.server(0).conn().await;
    set(&mut conn, "kept", "yes").await;
    redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();

    let asked = Instant::now();
    assert_eq!(sentinels.failover().await, 1);
    println!(
        "SENTINEL FAILOVER: the sentinels name the replica after {:?}",
        asked.elapsed()
    );
    assert_eq!(
        get(&mut sentinels.server(1).conn().await, "kept")
            .await
            .as_deref(),
        Some("yes")
    );
    assert_eq!(sentinels.wait_until_settled().await, 1);
    println!(
        "SENTINEL FAILOVER: the old primary follows the new one after {:?}",
        asked.elapsed()
    );
    // The demoted primary refuses writes.
    let refused = redis::cmd("SET")
        .arg("kept")
        .arg("no")
        .query_async::<()>(&mut sentinels.server(0).conn().await)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("READONLY"), "{refused}");
    // And back.
    assert_eq!(sentinels.failover().await, 0);
}

#[tokio::test]
async fn a_killed_primary_is_replaced_and_follows_once_restarted() {
    let mut sentinels = RedisSentinels::start().await;
    let killed = Instant::now();
    sentinels.kill(0);
    assert_eq!(sentinels.wait_until_failed_over(0).await, 1);
    println!(
        "primary SIGKILLed: the replica promoted after {:?}",
        killed.elapsed()
    );

    sentinels.restart(0).await;
    assert_eq!(sentinels.primary().await, 1);
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut sentinels.server(0).conn().await)
        .await
        .unwrap();
    assert!(info.contains("role:slave"), "{info}");
}
