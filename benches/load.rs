//! Load benchmark: three replicas on one Redis (in this process), clients spread over
//! them round-robin, a fixed number of calls per scenario; prints throughput and
//! latency percentiles, Redis memory per session, and the Redis memory finished 2025-era
//! calls leave behind.
//!
//! `cargo bench --bench load` (starts its own redis-server with `testkit`, or uses
//! `REDIS_URL`);
//! `cargo bench --bench load -- at-the-cap` runs only the session cap scenario,
//! `cargo bench --bench load -- legacy` only the 2025-era call scenarios;
//! `cargo bench --bench load -- idle-memory` only the memory of a replica (the binary, in
//! a process of its own) holding many 2025-era sessions, then idle
//! (`LOAD_LOCAL_IDLE_SECS`, default 30: its `session.local_idle_secs`;
//! `LOAD_IDLE_WAIT_SECS`, default that + 15: how long it idles);
//! `cargo bench --bench load -- creates` only session creates at the store on a private
//! Redis, in one script against in steps.
//! Loopback only; every scenario is bounded by its call count.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stateful_mcp::{
    config::Settings,
    keys::Keys,
    redis_pool::RedisPool,
    sessions::{NewSession, RedisSessions, Sessions},
    startup::Application,
};
use testkit::{
    http::{call_2026, create_handle, legacy_post, legacy_session, legacy_session_with},
    redis_server::RedisServer,
    replica::{Process, in_process_env, metric_value, redis_env},
};
use tokio_util::sync::DropGuard;

const CLIENTS: usize = 16;
const CALLS_PER_CLIENT: usize = 250;

/// Replicas serving the benchmark in this process, asked to stop when it is dropped, and
/// their MCP endpoints.
struct Cluster {
    _stop: Vec<DropGuard>,
    urls: Vec<String>,
}

/// Three replicas on `redis_url` under `prefix`, with the event store on or off, at most
/// `cap` live sessions per principal, and the `extra` settings (environment overrides).
async fn cluster(
    redis_url: &str,
    prefix: &str,
    events: bool,
    cap: usize,
    extra: &[(&str, &str)],
) -> Cluster {
    let events = events.to_string();
    let cap = cap.to_string();
    let mut env = vec![
        ("STATEFUL_MCP__EVENTS__ENABLED", events.as_str()),
        ("STATEFUL_MCP__TELEMETRY__FILTER", "warn"),
        ("STATEFUL_MCP__SESSION__MAX_SESSIONS_PER_PRINCIPAL", &cap),
    ];
    env.extend_from_slice(extra);
    let env = in_process_env(&redis_env(redis_url, prefix, &env));
    let (mut urls, mut stop) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let settings = Settings::load_with_env(None, env.clone()).unwrap();
        let app = Application::build(settings).await.unwrap();
        urls.push(format!("http://{}/mcp", app.local_addr()));
        stop.push(app.shutdown_token().drop_guard());
        tokio::spawn(app.run_until_stopped());
    }
    Cluster { _stop: stop, urls }
}

/// One 2026-07-28 `tools/call` that must succeed; returns its structured content.
async fn call_ok(client: &reqwest::Client, url: &str, tool: &str, args: Value) -> Value {
    call_2026(client, url, tool, args)
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn report(name: &str, mut latencies: Vec<Duration>, wall: Duration) {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "{name:<44} {:>7.0} calls/s   p50 {:>6.2} ms   p95 {:>6.2} ms   p99 {:>6.2} ms",
        latencies.len() as f64 / wall.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

/// Runs `CLIENTS` tasks of `CALLS_PER_CLIENT` calls made by `call(client, url, i)`.
async fn run<F, Fut>(name: &str, urls: &[String], call: F)
where
    F: Fn(reqwest::Client, String, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    run_n(name, urls, CALLS_PER_CLIENT, call).await;
}

/// Runs `CLIENTS` tasks of `calls` calls made by `call(client, url, i)`.
async fn run_n<F, Fut>(name: &str, urls: &[String], calls: usize, call: F)
where
    F: Fn(reqwest::Client, String, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (urls, call) = (urls.to_vec(), call.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(calls);
            for i in 0..calls {
                let url = urls[(c + i) % urls.len()].clone();
                let t = Instant::now();
                call(client.clone(), url, c).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    report(name, all, started.elapsed());
}

async fn stateless_scenarios(urls: &[String]) {
    let id = create_handle(&reqwest::Client::new(), &urls[0]).await;
    run(
        "2026-07-28 counter increment",
        urls,
        move |client, url, _| {
            let id = id.clone();
            async move {
                let args = json!({"operation": "increment", "session_id": id});
                call_ok(&client, &url, "counter", args).await;
            }
        },
    )
    .await;
    run(
        "2026-07-28 prime_count (cached result)",
        urls,
        |client, url, _| async move {
            let args = json!({"limit": 10_000_000});
            let result = call_ok(&client, &url, "prime_count", args).await;
            assert_eq!(result["count"], 664_579, "{result}");
        },
    )
    .await;
}

/// 2025-11-25 `counter` calls sent round-robin to `urls`, in sessions that the first
/// replica holds (so calls reaching the others are forwarded to it).
async fn legacy_scenario(name: &str, urls: &[String]) {
    // One 2025-11-25 session per client, initialized on the first replica.
    let mut sessions = Vec::new();
    for _ in 0..CLIENTS {
        sessions.push(legacy_session(&urls[0]).await);
    }
    run(name, urls, move |client, url, c| {
        let session = sessions[c].clone();
        async move {
            let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "counter", "arguments": {"operation": "increment"}}});
            let response = legacy_post(&client, &url, &session, &body)
                .send()
                .await
                .unwrap();
            let text = response.text().await.unwrap();
            assert!(text.contains("Counter increment"), "{text}");
        }
    })
    .await;
}

/// Bytes Redis uses (`used_memory` of `INFO memory`).
async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn memory_per_session(redis: &RedisServer, urls: &[String]) {
    const SESSIONS: usize = 5_000;
    let mut conn = redis.conn().await;
    let before = used_memory(&mut conn).await;
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url) = (http.clone(), urls[c % urls.len()].clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..SESSIONS / CLIENTS {
                let id = create_handle(&http, &url).await;
                let args = json!({"operation": "increment", "session_id": id});
                call_ok(&http, &url, "counter", args).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = used_memory(&mut conn).await;
    let created = (SESSIONS / CLIENTS) * CLIENTS;
    println!(
        "Redis memory per session (with a counter, indexes included): {} bytes ({created} sessions)",
        (after - before) / created as i64
    );
}

/// Redis memory that finished 2025-11-25 calls leave behind, per 1,000 calls: right after
/// the calls and once `wait` has passed, with request streams kept `completed_ttl_secs`
/// after their response, delivered or not (on a private Redis, so no other scenario's
/// keys expire meanwhile).
async fn memory_per_legacy_calls(completed_ttl_secs: u64, wait: Duration) {
    let redis = RedisServer::start().await;
    let ttl = completed_ttl_secs.to_string();
    let cluster = cluster(
        redis.url(),
        "load-retention",
        true,
        100_000,
        &[
            ("STATEFUL_MCP__EVENTS__COMPLETED_TTL_SECS", ttl.as_str()),
            ("STATEFUL_MCP__EVENTS__DELIVERED_TTL_SECS", ttl.as_str()),
        ],
    )
    .await;
    let mut conn = redis.conn().await;
    let before = used_memory(&mut conn).await;
    let name = format!("2025-11-25 counter (completed_ttl_secs = {completed_ttl_secs})");
    legacy_scenario(&name, &cluster.urls).await;
    let after_calls = used_memory(&mut conn).await;
    tokio::time::sleep(wait).await;
    let after_wait = used_memory(&mut conn).await;
    let per_thousand = |bytes: i64| bytes * 1000 / (CLIENTS * CALLS_PER_CLIENT) as i64;
    println!(
        "  Redis growth per 1,000 calls: {} bytes right after, {} bytes {} s later",
        per_thousand(after_calls - before),
        per_thousand(after_wait - before),
        wait.as_secs()
    );
}

/// Resident memory of this process (the benchmark and its replicas), in MiB.
fn rss_mib() -> f64 {
    rss_mib_of("self")
}

/// Resident memory of process `pid` (`self` for this one), in MiB.
fn rss_mib_of(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A setting of the idle-memory scenario from the environment, else `default`.
fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One release replica as a process of its own on a private Redis: 10,000 2025-11-25
/// sessions (`initialize`, `initialized`, one `counter` call each, 16 at a time), then
/// idle. Prints the replica's resident memory and local workers before, right after and
/// once idle past its `session.local_idle_secs`, and Redis memory per session.
async fn idle_memory() {
    const SESSIONS: usize = 10_000;
    const _: () = assert!(SESSIONS.is_multiple_of(CLIENTS));
    let idle_secs = env_secs("LOAD_LOCAL_IDLE_SECS", 30);
    let wait = Duration::from_secs(env_secs("LOAD_IDLE_WAIT_SECS", idle_secs + 15));
    let redis = RedisServer::start().await;
    let idle = idle_secs.to_string();
    // Finished calls' streams are kept 2 s, so Redis memory after the wait is the
    // sessions' own.
    let replica = Process::start(
        env!("CARGO_BIN_EXE_stateful-mcp"),
        redis.url(),
        "load-idle",
        &[
            ("STATEFUL_MCP__SESSION__LOCAL_IDLE_SECS", idle.as_str()),
            (
                "STATEFUL_MCP__SESSION__MAX_SESSIONS_PER_PRINCIPAL",
                "100000",
            ),
            ("STATEFUL_MCP__EVENTS__COMPLETED_TTL_SECS", "2"),
            ("STATEFUL_MCP__EVENTS__DELIVERED_TTL_SECS", "2"),
        ],
    )
    .await;
    let pid = replica.pid().to_string();
    let metrics = replica.endpoint("/metrics");
    let local_sessions = async || {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        metric_value(&text, &["local_sessions"]).unwrap_or(-1.0)
    };
    let mut conn = redis.conn().await;
    let redis_before = used_memory(&mut conn).await;
    let rss_start = rss_mib_of(&pid);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = replica.url();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "counter", "arguments": {"operation": "increment"}}});
            for _ in 0..SESSIONS / CLIENTS {
                let session = legacy_session_with(&http, &url).await;
                let text = legacy_post(&http, &url, &session, &body)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                assert!(text.contains("Counter increment: 1"), "{text}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let rss_after = rss_mib_of(&pid);
    let locals_after = local_sessions().await;
    let redis_after = used_memory(&mut conn).await;

    tokio::time::sleep(wait).await;
    let rss_idle = rss_mib_of(&pid);
    let locals_idle = local_sessions().await;
    let redis_idle = used_memory(&mut conn).await;
    let per_session = |bytes: i64| bytes / SESSIONS as i64;
    println!(
        "{SESSIONS} 2025-11-25 sessions in {:.1} s; local_idle_secs = {idle_secs}, idled {} s",
        took.as_secs_f64(),
        wait.as_secs()
    );
    println!(
        "  replica RSS: {rss_start:.0} MiB at start, {rss_after:.0} MiB right after \
         ({locals_after} local workers), {rss_idle:.0} MiB once idle ({locals_idle} local workers)"
    );
    println!(
        "  Redis memory per session: {} bytes right after, {} bytes once idle",
        per_session(redis_after - redis_before),
        per_session(redis_idle - redis_before)
    );
}

/// `session_create` from a principal that already holds `session.max_sessions_per_principal`
/// live sessions: every call is refused, so it measures what counting the cap costs.
async fn creates_at_the_cap(redis_url: &str) {
    const CAP: usize = 10_000;
    const CALLS: usize = 25;
    const _: () = assert!(
        CAP.is_multiple_of(CLIENTS),
        "the clients fill the cap exactly"
    );
    let at_cap = cluster(redis_url, "load-c", false, CAP, &[]).await;
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url) = (http.clone(), at_cap.urls[c % at_cap.urls.len()].clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..CAP / CLIENTS {
                create_handle(&http, &url).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = rss_mib();
    // A refusal the replica could not decide in time (its Redis command timed out) is
    // counted, not fatal, so a slow count shows up in the figures instead of a panic.
    let unavailable = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = unavailable.clone();
    run_n(
        "2026-07-28 session_create at the cap (refused)",
        &at_cap.urls,
        CALLS,
        move |client, url, _| {
            let unavailable = counted.clone();
            async move {
                let refused = call_2026(&client, &url, "session_create", json!({})).await;
                let error = refused.expect_err("the principal is at the cap");
                if error.contains("session store unavailable") {
                    unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    assert!(error.contains("maximum of"), "{error}");
                }
            }
        },
    )
    .await;
    println!(
        "{} of {} answered \"store unavailable\" instead of the refusal; RSS of benchmark \
         and replicas: {before:.0} MiB before, {:.0} MiB after",
        unavailable.load(std::sync::atomic::Ordering::Relaxed),
        CLIENTS * CALLS,
        rss_mib(),
    );
}

/// Sessions one round of [`creates`] makes, 16 clients at a time.
const CREATES: usize = 16_000;

/// `CREATES` creates at the store by `CLIENTS` concurrent tasks under one principal (as
/// anonymous `session_create` calls are), on a private Redis: alternately in one script
/// (what a single node runs) and in steps of one hash slot (what a cluster runs, and
/// every deployment did before), three rounds of each, each round under a fresh prefix.
async fn creates() {
    const _: () = assert!(CREATES.is_multiple_of(CLIENTS));
    let redis = RedisServer::start().await;
    let mut settings = Settings::load_with_env(None, Vec::new()).unwrap();
    settings.redis.url = redis.url().to_owned();
    settings.session.max_sessions_per_principal = CREATES;
    let pool = RedisPool::new(&settings.redis).unwrap();
    let limits = settings.session;
    println!("{CLIENTS} concurrent session creates at the store, {CREATES} per round");
    for round in 0..3 {
        for steps in [false, true] {
            let keys = Keys::new(&format!("load-creates-{round}-{steps}"));
            let store = RedisSessions::new(pool.clone(), keys, limits.timeout());
            let store = if steps {
                store.with_creates_in_steps()
            } else {
                store
            };
            let sessions = Sessions::redis(store, limits.clone());
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..CLIENTS {
                let sessions = sessions.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..CREATES / CLIENTS {
                        let new = NewSession {
                            principal: "anonymous".into(),
                            ..Default::default()
                        };
                        sessions.create(new).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let rate = CREATES as f64 / started.elapsed().as_secs_f64();
            let how = if steps { "in steps" } else { "one script" };
            println!("  round {round}, {how:<10} {rate:>7.0} creates/s");
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `at-the-cap`, `legacy`, `idle-memory` and `creates`
    // run those scenarios alone, and any other argument (a filter) is ignored.
    let only_cap = std::env::args().any(|a| a == "at-the-cap");
    let only_legacy = std::env::args().any(|a| a == "legacy");
    let only_idle_memory = std::env::args().any(|a| a == "idle-memory");
    let only_creates = std::env::args().any(|a| a == "creates");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if only_idle_memory {
            idle_memory().await;
            return;
        }
        if only_creates {
            creates().await;
            return;
        }
        let redis = RedisServer::shared_or_start().await;
        if only_cap {
            creates_at_the_cap(redis.url()).await;
            return;
        }
        println!(
            "{CLIENTS} clients x {CALLS_PER_CLIENT} calls per scenario, 3 replicas, round-robin"
        );
        let with_events = cluster(redis.url(), "load-a", true, 100_000, &[]).await;
        if !only_legacy {
            stateless_scenarios(&with_events.urls).await;
        }
        // Round-robin, two calls in three are forwarded to the holder; sent to the
        // holder alone, none is.
        legacy_scenario(
            "2025-11-25 counter increment (event store on)",
            &with_events.urls,
        )
        .await;
        legacy_scenario(
            "2025-11-25 counter, holder only (events on)",
            &with_events.urls[..1],
        )
        .await;
        let without_events = cluster(redis.url(), "load-b", false, 100_000, &[]).await;
        legacy_scenario(
            "2025-11-25 counter increment (event store off)",
            &without_events.urls,
        )
        .await;
        legacy_scenario(
            "2025-11-25 counter, holder only (events off)",
            &without_events.urls[..1],
        )
        .await;
        if only_legacy {
            return;
        }
        memory_per_session(&redis, &with_events.urls).await;
        // Every request stream kept `events.ttl_secs` (the store before the completed-stream
        // window), then a 2 s window, each measured 5 s after its calls.
        memory_per_legacy_calls(900, Duration::from_secs(5)).await;
        memory_per_legacy_calls(2, Duration::from_secs(5)).await;
        creates_at_the_cap(redis.url()).await;
        creates().await;
    });
}
