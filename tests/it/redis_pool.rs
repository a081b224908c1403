//! The shared pool: concurrent requests pipeline their commands on the connections they
//! share instead of each holding one, and nothing is lost or applied twice doing so.

use stateful_mcp::{config::RedisSettings, redis_pool::RedisPool};

use crate::support::redis_server::{
    RedisServer, RedisServerExt, skipped_on_shared_cluster, unique_prefix,
};

/// 64 tasks × 50 increments, each increment a checkout of its own: every one counted
/// once, and the pool opened a connection or two for them, not one per task in flight
/// (held alone, as before, they took all 16 and waited for each other). With
/// `replica_acks` they are still held alone: a `WAIT` would hold up every command
/// queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_share_the_pools_connections() {
    if skipped_on_shared_cluster("concurrent_checkouts_share_the_pools_connections") {
        return;
    }
    let server = RedisServer::start().await;
    let settings = server.settings();
    assert_eq!(settings.replica_acks, 0);
    let opened = increment_concurrently(&settings).await;
    assert!(
        opened <= 4,
        "{opened} connections opened for 64 concurrent tasks"
    );
    // Redis agrees: it sees no more clients than the pool opened, besides the one asking.
    let mut own = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut own)
        .await
        .unwrap();
    assert!(list.lines().count() as u64 <= opened + 1, "{list}");

    let held_alone = RedisSettings {
        replica_acks: 1,
        ..settings
    };
    let opened = increment_concurrently(&held_alone).await;
    assert_eq!(opened, held_alone.pool_size as u64);
}

/// Runs the 64 × 50 increments through a pool of `settings`, checks the count, and says
/// how many connections the pool opened.
async fn increment_concurrently(settings: &RedisSettings) -> u64 {
    let pool = RedisPool::new(settings).unwrap();
    let key = format!("{}:count", unique_prefix("pool-shared"));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let pool = pool.clone();
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    let mut conn = pool.get().await.unwrap();
                    // Yields while the command is in flight, so checkouts overlap.
                    let _: i64 = redis::cmd("INCR")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut conn = pool.get().await.unwrap();
    let total: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total, 64 * 50);
    let status = pool.status();
    assert_eq!(status.waiting, 0);
    assert!(status.borrowed_total > 64 * 50, "{status:?}");
    status.created_total
}
