//! The two-level cache on real Redis: seed behaviours, coherence across two replicas,
//! one loader for a cold key, a failed or cancelled load that frees its key at once for
//! every replica, and Redis dying under it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use redis::AsyncCommands;
use stateful_mcp::{
    bus::Bus,
    cache::{CacheError, CacheManager, LoadError},
    config::{CacheSettings, Settings},
};

use crate::support::{
    node::NodeBase,
    redis_server::{RedisServer, RedisServerExt, skipped_on_shared_cluster, unique_prefix},
    wait::{retry, wait_until, within},
};

fn settings() -> CacheSettings {
    let mut s = Settings::load_with_env(None, Vec::new()).unwrap().cache;
    s.l1_max_ttl_ms = 60_000;
    s
}

/// One replica's cache (with its own pool and bus) on `redis` under `prefix`.
struct CacheNode {
    cache: CacheManager,
    bus: Bus,
    base: NodeBase,
}

impl CacheNode {
    async fn start(
        redis: &RedisServer,
        prefix: &str,
        replica: &str,
        cache: &CacheSettings,
    ) -> Self {
        let mut settings = redis.settings();
        settings.command_timeout_ms = 300;
        let base = NodeBase::new(settings, prefix);
        let bus = Bus::start(base.pool.clone(), base.keys.clone(), replica, &base.jobs);
        let cache = CacheManager::new(
            cache,
            replica,
            Some((base.pool.clone(), base.keys.clone())),
            Some(bus.clone()),
        );
        wait_until("the cache's bus is subscribed", async || {
            bus.is_subscribed("cache")
        })
        .await;
        Self { cache, bus, base }
    }

    /// Whether the Redis load lock of `key` exists.
    async fn lock_exists(&self, redis: &RedisServer, key: &str) -> bool {
        let keys = &self.base.keys;
        let mut conn = redis.conn().await;
        let generation: u64 = conn.get(keys.cache_generation()).await.unwrap();
        conn.exists(keys.cache_lock(generation, key)).await.unwrap()
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The seed behaviours of one cache called `name`; `pass` lets time go by.
async fn seed_behaviours(name: &str, cache: &CacheManager, pass: impl AsyncFn(Duration)) {
    cache.set("k", b("v"), None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b("v")), "{name}");
    assert_eq!(cache.get("missing").await.unwrap(), None, "{name}");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.sets), (1, 1, 1), "{name}");
    assert!((stats.hit_rate - 0.5).abs() < 1e-9, "{name}");
    assert_eq!(stats.l1_entries, 1, "{name}");

    cache
        .set("short", b("x"), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(cache.get("short").await.unwrap().is_some(), "{name}");
    pass(Duration::from_millis(450)).await;
    assert_eq!(cache.get("short").await.unwrap(), None, "{name}: expired");

    cache.delete("k").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None, "{name}");
    cache.set("a", b("1"), None).await.unwrap();
    cache.clear().await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None, "{name}: cleared");
    assert!(matches!(
        cache.set("k", b("v"), Some(Duration::ZERO)).await,
        Err(CacheError::InvalidTtl { .. })
    ));
}

// The memory cache's L1 keeps tokio time and does no I/O, so its expiry runs on paused
// time; on Redis the L2 expires keys on the server's clock, which only real time moves.
#[tokio::test(start_paused = true)]
async fn seed_behaviours_in_memory() {
    let memory = CacheManager::new(&settings(), "solo", None, None);
    seed_behaviours("memory", &memory, tokio::time::advance).await;
}

#[tokio::test]
async fn seed_behaviours_on_redis() {
    let redis = RedisServer::shared_or_start().await;
    let shared = CacheNode::start(&redis, &unique_prefix("cache-seed"), "r1", &settings()).await;
    seed_behaviours("redis", &shared.cache, tokio::time::sleep).await;
}

#[tokio::test]
async fn writes_on_one_replica_are_never_served_stale_by_another() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("cache-coherence");
    let a = CacheNode::start(&redis, &prefix, "a", &settings()).await;
    let b_ = CacheNode::start(&redis, &prefix, "b", &settings()).await;

    a.cache.set("user:1", b("alice"), None).await.unwrap();
    // Its invalidation, arriving after B's read, would empty B's L1 again.
    wait_until("B hears of the first write", async || {
        b_.cache.stats().invalidations_received >= 1
    })
    .await;
    assert_eq!(b_.cache.get("user:1").await.unwrap(), Some(b("alice")));
    assert_eq!(b_.cache.stats().hits_l2, 1);
    // Now in B's L1: a second read does not touch Redis.
    assert_eq!(b_.cache.get("user:1").await.unwrap(), Some(b("alice")));
    assert_eq!(b_.cache.stats().hits_l1, 1);

    a.cache.set("user:1", b("alicia"), None).await.unwrap();
    wait_until("B hears of the second write", async || {
        b_.cache.stats().invalidations_received >= 2
    })
    .await;
    assert_eq!(b_.cache.get("user:1").await.unwrap(), Some(b("alicia")));

    a.cache.delete("user:1").await.unwrap();
    wait_until("B hears of the delete", async || {
        b_.cache.stats().invalidations_received >= 3
    })
    .await;
    assert_eq!(b_.cache.get("user:1").await.unwrap(), None);

    b_.cache.set("user:2", b("bob"), None).await.unwrap();
    assert_eq!(a.cache.get("user:2").await.unwrap(), Some(b("bob")));
    b_.cache.clear().await.unwrap();
    wait_until("A hears of the clear", async || {
        a.cache.stats().invalidations_received >= 2
    })
    .await;
    assert_eq!(a.cache.get("user:2").await.unwrap(), None);

    let (sa, sb) = (a.cache.stats(), b_.cache.stats());
    assert_eq!((sa.replica_id.as_str(), sb.replica_id.as_str()), ("a", "b"));
    assert_eq!((sa.sets, sa.deletes, sa.invalidations_sent), (1 + 1, 1, 3));
    assert_eq!((sb.sets, sb.invalidations_sent), (1, 2));
}

#[tokio::test]
async fn a_cold_key_is_loaded_once_across_replicas_and_callers() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("cache-stampede");
    let a = CacheNode::start(&redis, &prefix, "a", &settings()).await;
    let b_ = CacheNode::start(&redis, &prefix, "b", &settings()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for cache in [a.cache.clone(), b_.cache.clone()] {
        for _ in 0..8 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load("report", None, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::convert::Infallible>(b("expensive"))
                    })
                    .await
                    .unwrap()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), b("expensive"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader ran once in all");
    assert_eq!(
        a.cache.stats().loader_calls + b_.cache.stats().loader_calls,
        1
    );

    let failing = a
        .cache
        .get_or_load("broken", None, || async {
            Err::<Bytes, _>("backend said no")
        })
        .await;
    assert!(matches!(failing, Err(LoadError::Loader("backend said no"))));
}

/// Two replicas' caches whose load lock would outlive every wait of a test: a load that
/// had to wait for it could not finish in time.
async fn replicas_with_a_long_lock(redis: &RedisServer, test: &str) -> (CacheNode, CacheNode) {
    let mut cfg = settings();
    cfg.load_lock_ttl_ms = 600_000;
    let prefix = unique_prefix(test);
    (
        CacheNode::start(redis, &prefix, "a", &cfg).await,
        CacheNode::start(redis, &prefix, "b", &cfg).await,
    )
}

/// Loads `key` on `node` with a loader that records that it ran.
async fn load_recorded(node: &CacheNode, key: &str) -> (Bytes, bool) {
    let ran = AtomicUsize::new(0);
    let value = within(
        "a load after the lock's release",
        node.cache.get_or_load(key, None, || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(b("fresh"))
        }),
    )
    .await
    .unwrap();
    (value, ran.load(Ordering::SeqCst) == 1)
}

#[tokio::test]
async fn a_failed_load_releases_its_lock_for_every_replica() {
    if skipped_on_shared_cluster("a_failed_load_releases_its_lock_for_every_replica") {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    let (a, b_) = replicas_with_a_long_lock(&redis, "cache-failed-load").await;

    let failing = a
        .cache
        .get_or_load("report", None, || async {
            Err::<Bytes, _>("backend said no")
        })
        .await;
    assert!(matches!(failing, Err(LoadError::Loader("backend said no"))));
    assert!(!a.lock_exists(&redis, "report").await, "released at once");

    assert_eq!(load_recorded(&b_, "report").await, (b("fresh"), true));
    assert_eq!(b_.cache.stats().loader_calls, 1);
    assert!(!b_.lock_exists(&redis, "report").await);
}

#[tokio::test]
async fn a_cancelled_load_releases_its_lock_for_every_replica() {
    if skipped_on_shared_cluster("a_cancelled_load_releases_its_lock_for_every_replica") {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    let (a, b_) = replicas_with_a_long_lock(&redis, "cache-cancelled-load").await;

    let started = tokio::sync::Notify::new();
    let load = a.cache.get_or_load("report", None, || async {
        started.notify_one();
        std::future::pending::<Result<Bytes, std::convert::Infallible>>().await
    });
    // The load is dropped as soon as its loader runs, as a cancelled request drops it.
    tokio::select! {
        _ = load => panic!("the loader never finishes"),
        () = started.notified() => {}
    }
    wait_until("the dropped load's lock is released", async || {
        !a.lock_exists(&redis, "report").await
    })
    .await;

    assert_eq!(load_recorded(&b_, "report").await, (b("fresh"), true));
    assert_eq!(
        (a.cache.stats().loader_calls, b_.cache.stats().loader_calls),
        (1, 1)
    );
}

#[tokio::test]
async fn l1_answers_while_redis_is_down_and_l2_comes_back() {
    if skipped_on_shared_cluster("l1_answers_while_redis_is_down_and_l2_comes_back") {
        return;
    }
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("cache-outage");
    let mut cfg = settings();
    cfg.l1_max_ttl_ms = 200;
    cfg.fail_safe_grace_secs = 60;
    let a = CacheNode::start(&redis, &prefix, "a", &cfg).await;

    a.cache.set("fresh", b("1"), None).await.unwrap();
    a.cache.set("aging", b("2"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await; // "aging" is now stale in L1
    a.cache.set("fresh", b("1"), None).await.unwrap();
    redis.kill();

    assert_eq!(a.cache.get("fresh").await.unwrap(), Some(b("1")));
    let started = std::time::Instant::now();
    assert_eq!(
        a.cache.get("aging").await.unwrap(),
        Some(b("2")),
        "stale within grace"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        a.cache.get("never-seen").await,
        Err(CacheError::Unavailable(_))
    ));
    let stats = a.cache.stats();
    assert!(stats.errors >= 2, "{stats:?}");
    assert_eq!(stats.stale_hits, 1);

    redis.restart().await;
    wait_until("the bus reconnects", async || a.bus.is_connected()).await;
    // The reconnect may have cleared L1 (messages may have been missed); L2 works again.
    retry("L2 takes writes again", async || {
        a.cache.set("after", b("3"), None).await
    })
    .await;
    let b_ = CacheNode::start(&redis, &prefix, "b", &cfg).await;
    assert_eq!(b_.cache.get("after").await.unwrap(), Some(b("3")));
}
