//! The resource lifecycle manager through a real replica: `file_read` under a root
//! (escapes refused with a clear error), `resource_stats` and `/metrics` showing the
//! open, referenced and idle resources and the Redis pool; and the `redis` kind's
//! dedicated connection, opened once and closed at shutdown.

use std::time::Duration;

use serde_json::json;
use stateful_mcp::managed::{HandleManager, redis::RedisConnection, redis::RedisConnectionFactory};

use crate::support::{
    client::{call, stateless_client, structured, text},
    redis_server::{RedisServer, RedisServerExt, unique_prefix},
    replica::Replica,
    wait::wait_until,
};

/// A temporary file root with a text file, a binary file, and a secret beside it that a
/// symlink inside the root points at.
fn file_root() -> std::path::PathBuf {
    let base = std::env::temp_dir().join(format!("lifecycle-{}", unique_prefix("files")));
    let root = base.join("root");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/readme.txt"), "line one\nline two\n").unwrap();
    std::fs::write(root.join("blob.bin"), [0u8, 159, 146, 150]).unwrap();
    std::fs::write(base.join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("link")).unwrap();
    root
}

#[tokio::test]
async fn files_are_read_under_the_root_and_resources_are_reported() {
    let redis = RedisServer::shared_or_start().await;
    let root = file_root();
    let replica = Replica::start(
        redis.url(),
        &unique_prefix("lifecycle"),
        &[("STATEFUL_MCP__RESOURCES__FILE_ROOT", root.to_str().unwrap())],
    )
    .await;
    let client = stateless_client(&replica.url()).await;

    let read = call(
        &client,
        "file_read",
        json!({"path": "docs/readme.txt", "offset": 5, "length": 3}),
    )
    .await;
    let out = structured(&read);
    assert_eq!(out["content"], "one", "{out}");
    assert_eq!(
        (out["bytes_read"].as_u64(), out["size"].as_u64()),
        (Some(3), Some(18))
    );
    assert_eq!(out["eof"], false);
    let binary = structured(&call(&client, "file_read", json!({"path": "blob.bin"})).await);
    assert_eq!(
        (binary["encoding"].as_str(), binary["content"].as_str()),
        (Some("base64"), Some("AJ+Slg=="))
    );
    assert_eq!(binary["eof"], true);

    for (path, says) in [
        ("../secret.txt", "`..` is not allowed"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("link", "symlinks are not followed"),
        ("docs/missing.txt", "no such file"),
    ] {
        let refused = call(&client, "file_read", json!({"path": path})).await;
        assert_eq!(refused.is_error, Some(true), "{path}");
        assert!(text(&refused).contains(says), "{path}: {}", text(&refused));
    }
    let too_long = call(
        &client,
        "file_read",
        json!({"path": "blob.bin", "length": 1 << 20}),
    )
    .await;
    assert!(
        text(&too_long).contains("`length` must be at most 65536"),
        "{}",
        text(&too_long)
    );

    let stats = structured(&call(&client, "resource_stats", json!({})).await);
    let files = &stats["kinds"]["file"];
    assert_eq!(files["active"], 2, "{stats}");
    assert_eq!(
        (files["references"].as_u64(), files["idle"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(files["created_total"], 2, "reused, not reopened: {stats}");
    assert_eq!(
        files["failed_total"], 2,
        "the two refusals that reached the file system (`..` and absolute paths are \
         refused before): {stats}"
    );
    assert_eq!(stats["kinds"]["redis"]["active"], 0, "{stats}");
    let pool = &stats["redis_pool"];
    assert!(pool["borrowed_total"].as_u64() > Some(0), "{stats}");
    assert!(pool["created_total"].as_u64() > Some(0), "{stats}");
    assert!(
        stats["replica_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(
        replica
            .metric(&["stateful_mcp_resources_active{", "kind=\"file\""])
            .await,
        Some(2.0)
    );
    assert!(
        replica
            .metric(&["stateful_mcp_redis_pool_checkouts_total"])
            .await
            > Some(0.0)
    );
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

#[tokio::test]
async fn one_principal_cannot_take_every_file_place() {
    use crate::auth::{KeyDir, api_key_env, api_keys_file, as_refs};
    use testkit::http::{bearer_client, call_2026};

    let root = file_root();
    for i in 0..6 {
        std::fs::write(root.join(format!("f{i}.txt")), "x").unwrap();
    }
    let dir = KeyDir::new("lifecycle-share");
    let mut env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    env.extend([
        (
            "STATEFUL_MCP__RESOURCES__FILE_ROOT",
            root.to_str().unwrap().to_owned(),
        ),
        ("STATEFUL_MCP__RESOURCES__MAX_PER_KIND", "8".to_owned()),
        ("STATEFUL_MCP__RESOURCES__MAX_PER_PRINCIPAL", "4".to_owned()),
    ]);
    let replica = Replica::memory(&as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));
    let read = async |client, path: &str| {
        call_2026(client, &replica.url(), "file_read", json!({"path": path})).await
    };

    // Twelve spellings of one file are one place.
    for depth in 0..12 {
        let path = format!("{}docs/readme.txt", "./".repeat(depth));
        read(&alice, &path).await.unwrap();
    }
    // More distinct files than her share: her own idle ones make room.
    for i in 0..6 {
        read(&alice, &format!("f{i}.txt")).await.unwrap();
    }
    read(&bob, "blob.bin").await.unwrap();
    let stats = call_2026(&bob, &replica.url(), "resource_stats", json!({}))
        .await
        .unwrap();
    assert_eq!(
        stats["kinds"]["file"]["active"], 5,
        "her four and his one: {stats}"
    );
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

#[tokio::test]
async fn file_access_is_off_without_a_root() {
    let replica = Replica::memory(&[]).await;
    let client = stateless_client(&replica.url()).await;
    let refused = call(&client, "file_read", json!({"path": "a.txt"})).await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text(&refused).contains("resources.file_root"),
        "{}",
        text(&refused)
    );
    let stats = structured(&call(&client, "resource_stats", json!({})).await);
    assert_eq!(stats["redis_pool"], serde_json::Value::Null, "{stats}");
}

#[tokio::test]
async fn a_dedicated_redis_connection_is_opened_once_and_closed_by_the_sweep() {
    let redis = RedisServer::start().await;
    let manager = HandleManager::builder(Duration::from_millis(200), 4)
        .register(RedisConnectionFactory::new(redis.pool()))
        .build();
    let before = redis.connected_clients().await;
    let (a, b) = tokio::join!(
        manager.get::<RedisConnection>("redis", "blocking-reads"),
        manager.get::<RedisConnection>("redis", "blocking-reads"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let pong: String = redis::cmd("PING")
        .query_async(&mut a.connection().unwrap())
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(
        redis.connected_clients().await,
        before + 1,
        "one connection for both"
    );
    drop((a, b));
    wait_until("the idle connection is swept", async || {
        manager.sweep().await;
        redis.connected_clients().await == before
    })
    .await;
    assert_eq!(manager.stats()["redis"].cleaned_total, 1);

    // Redis down: a clear error, nothing kept.
    let mut redis = redis;
    redis.kill();
    let err = manager
        .get::<RedisConnection>("redis", "other")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("could not be opened"), "{err}");
    assert_eq!(manager.stats()["redis"].active, 0);
}
