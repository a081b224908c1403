//! Cache benchmarks: an L1 hit, an L2 hit, a miss that runs the loader, and a raw `GET`
//! on the same pool for comparison with the L2 hit.
//!
//! `cargo bench --bench cache` (starts its own redis-server, or uses `REDIS_URL`).

use std::{
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use stateful_mcp::{
    cache::{
        CacheManager,
        l1::{L1, L1Limits},
    },
    config::Settings,
    keys::Keys,
    redis_pool::RedisPool,
};
use testkit::redis_server::RedisServer;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let redis = rt.block_on(RedisServer::shared_or_start());
    let settings = Settings::load_with_env(None, Vec::new()).unwrap();
    let mut redis_settings = settings.redis.clone();
    redis_settings.url = redis.url().to_owned();
    let pool = rt.block_on(async { RedisPool::new(&redis_settings).unwrap() });
    let keys = Keys::new("bench");
    let value = Bytes::from(vec![b'x'; 256]);

    // L1 alone, and the full API answering from L1.
    let l1 = L1::new(L1Limits {
        max_entries: 10_000,
        max_bytes: 64 << 20,
        max_ttl: Duration::from_secs(60),
        grace: Duration::from_secs(60),
    });
    rt.block_on(async { l1.put("hot", value.clone(), Duration::from_secs(60)) });
    c.bench_function("l1_get_hit", |b| {
        b.iter(|| black_box(l1.get(black_box("hot"))));
    });
    let mut cfg = settings.cache.clone();
    cfg.l1_max_ttl_ms = 60_000;
    let cache = CacheManager::new(&cfg, "bench", Some((pool.clone(), keys.clone())), None);
    rt.block_on(cache.set("hot", value.clone(), None)).unwrap();
    c.bench_function("cache_get_l1_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache.get(black_box("hot")).await.unwrap()) });
    });

    // L1 emptied before each read (untimed): every timed get is answered by Redis.
    rt.block_on(cache.set("warm", value.clone(), None)).unwrap();
    c.bench_function("cache_get_l2_hit", |b| {
        b.to_async(&rt).iter_batched(
            || cache.evict_local("warm"),
            |()| async { black_box(cache.get(black_box("warm")).await.unwrap()) },
            BatchSize::PerIteration,
        );
    });
    c.bench_function("raw_redis_get_same_pool", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = pool.get().await.unwrap();
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg("bench:cache:{0:warm}")
                .query_async(&mut conn)
                .await
                .unwrap();
            black_box(v)
        });
    });

    // A miss on a fresh key each time: L2 miss, lock, loader, write, unlock.
    let n = AtomicU64::new(0);
    c.bench_function("cache_get_or_load_miss", |b| {
        b.to_async(&rt).iter(|| async {
            let key = format!("miss-{}", n.fetch_add(1, Ordering::Relaxed));
            let v = cache
                .get_or_load(&key, Some(Duration::from_secs(30)), || async {
                    Ok::<_, std::convert::Infallible>(Bytes::from_static(b"loaded"))
                })
                .await
                .unwrap();
            black_box(v)
        });
    });
}

criterion_group! {
    name = cache;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(cache);
