//! Redis made sick in every way a real deployment sees — killed and restarted (with and
//! without persistence), frozen with `SIGSTOP`, and behind a proxy that delays, blackholes
//! or resets its connections — while a replica keeps answering: every request within a
//! bound, a clear "retry shortly" for what needs Redis, `/readyz` red until Redis is back
//! and green soon after, no connection or task left behind. Then the same faults under
//! concurrent increments across three replicas: no acknowledged increment is lost, and
//! increments retried under idempotency keys apply once each.
//!
//! The timed assertions only catch hangs ([`HANG`]); each scenario prints its worst
//! latencies and its recovery time (run with `--nocapture` to see them).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    http::{
        call_2026, call_2026_keyed, create_handle, initialize_2025, legacy_post, legacy_session,
        post_json,
    },
    proxy::{Mode, Proxy},
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::{retry, wait_until},
};

/// Longer than any request may take while Redis is sick: only a hang exceeds it.
const HANG: Duration = Duration::from_secs(5);

/// How long each scenario keeps Redis sick while it probes the replica.
const SICK: Duration = Duration::from_millis(2500);

/// Loops of each kind of request while Redis is sick: enough that more requests than
/// the pool has connections contend for them.
const LOOPS_PER_PROBE: usize = 3;

/// Largest number of open connections one replica may hold to Redis: its pool
/// (`redis.pool_size`, 16 by default) and a few dedicated ones (bus, blocking reads).
const MAX_CONNECTIONS_PER_REPLICA: usize = 16 + 4;

/// One way of making Redis sick.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The process is killed, and started again to heal.
    Crash,
    /// The process is frozen (`SIGSTOP`), and resumed (`SIGCONT`) to heal.
    Pause,
    /// The proxy in front of Redis switches to this mode, and back to pass-through.
    Network(Mode),
}

/// A Redis, maybe behind a proxy, that a fault can be injected into and healed.
struct SickRedis {
    redis: RedisServer,
    proxy: Option<Proxy>,
}

impl SickRedis {
    /// A Redis (persistent or not) with a proxy in front of it when `fault` needs one.
    async fn start(fault: Fault, persistent: bool) -> Self {
        let redis = if persistent {
            RedisServer::start_persistent().await
        } else {
            RedisServer::start().await
        };
        let proxy = match fault {
            Fault::Network(_) => Some(Proxy::start(redis.addr()).await),
            Fault::Crash | Fault::Pause => None,
        };
        Self { redis, proxy }
    }

    /// Always through a proxy, for a run that injects every kind of fault.
    async fn start_proxied_persistent() -> Self {
        let redis = RedisServer::start_persistent().await;
        let proxy = Some(Proxy::start(redis.addr()).await);
        Self { redis, proxy }
    }

    /// The URL replicas use: the proxy's when there is one.
    fn url(&self) -> String {
        match &self.proxy {
            Some(proxy) => proxy.redis_url(),
            None => self.redis.url().to_owned(),
        }
    }

    fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Crash => self.redis.kill(),
            Fault::Pause => self.redis.pause(),
            Fault::Network(mode) => self.proxy.as_ref().expect("a proxy").set(mode),
        }
    }

    async fn heal(&mut self, fault: Fault) {
        match fault {
            Fault::Crash => self.redis.restart().await,
            Fault::Pause => self.redis.resume(),
            Fault::Network(_) => self.proxy.as_ref().expect("a proxy").set(Mode::Pass),
        }
    }
}

/// Sends `request`, failing the test if no answer comes within [`HANG`]; returns the
/// answer and how long it took.
async fn timed<T>(what: &str, request: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let answer = tokio::time::timeout(HANG, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {HANG:?} (a hang)"));
    (answer, started.elapsed())
}

async fn status(http: &Client, url: String) -> StatusCode {
    match http.get(url).send().await {
        Ok(response) => response.status(),
        Err(e) => panic!("no HTTP answer: {e}"),
    }
}

/// What a replica answered while Redis was sick, per kind of request.
#[derive(Default)]
struct SickReport {
    worst: BTreeMap<&'static str, Duration>,
    answers: usize,
}

impl SickReport {
    fn note(&mut self, probe: &'static str, took: Duration) {
        let worst = self.worst.entry(probe).or_default();
        *worst = (*worst).max(took);
        self.answers += 1;
    }

    fn worst(&self) -> Duration {
        self.worst.values().copied().max().unwrap_or_default()
    }
}

/// Every kind of request a replica serves, each in [`LOOPS_PER_PROBE`] loops until `until`, each
/// answer checked: red readiness, a "retry shortly" for stateful calls (2026-07-28 tool
/// calls, 2025-11-25 requests and initializations), metrics and liveness still served.
async fn probe_while_sick(
    replica: &Replica,
    handle: &str,
    legacy: &str,
    until: Instant,
) -> SickReport {
    let http = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mcp = replica.url();
    let probes: [&'static str; 7] = [
        "2026 counter increment",
        "2026 session_create",
        "2025 call in a session",
        "2025 initialize",
        "/readyz",
        "/metrics",
        "/healthz",
    ];
    let loops = probes.repeat(LOOPS_PER_PROBE).into_iter().map(|probe| {
        let (http, mcp) = (http.clone(), mcp.clone());
        async move {
            let mut report = SickReport::default();
            while Instant::now() < until {
                let took = probe_once(&http, replica, &mcp, probe, handle, legacy).await;
                report.note(probe, took);
            }
            report
        }
    });
    let mut total = SickReport::default();
    for report in futures::future::join_all(loops).await {
        for (probe, took) in report.worst {
            total.note(probe, took);
        }
        total.answers += report.answers;
    }
    total
}

/// One request of kind `probe`, its answer checked; how long it took.
async fn probe_once(
    http: &Client,
    replica: &Replica,
    mcp: &str,
    probe: &str,
    handle: &str,
    legacy: &str,
) -> Duration {
    match probe {
        "2026 counter increment" | "2026 session_create" => {
            let (tool, args) = if probe == "2026 session_create" {
                ("session_create", json!({}))
            } else {
                (
                    "counter",
                    json!({"operation": "increment", "session_id": handle}),
                )
            };
            let (answer, took) = timed(probe, call_2026(http, mcp, tool, args)).await;
            let error = answer.expect_err("a stateful call fails while Redis is sick");
            // Refused before sending ("retry shortly"), or sent and unanswered ("outcome
            // unknown", retry with the same idempotency key).
            assert!(
                error.contains("retry shortly") || error.contains("outcome unknown"),
                "{probe}: {error}"
            );
            took
        }
        "2025 initialize" => {
            let request = post_json(http, mcp, &initialize_2025("sick"));
            let (answer, took) = timed(probe, request.send()).await;
            let response = answer.expect("an HTTP answer");
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{probe}"
            );
            took
        }
        "2025 call in a session" => {
            // Calls in flight together in one session need ids of their own: the
            // session routes each response to its request by id.
            static NEXT_ID: AtomicU64 = AtomicU64::new(1);
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "counter", "arguments": {"operation": "increment"}}});
            let (answer, took) = timed(probe, async {
                let response = legacy_post(http, mcp, legacy, &call).send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.text().await?))
            })
            .await;
            let (status, body) = answer.expect("an HTTP answer");
            // A 503 from the edge's touch, or, from the holder serving on its lease
            // without one, the tool's own "retry shortly" or "outcome unknown".
            assert!(
                status == StatusCode::SERVICE_UNAVAILABLE
                    || (status == StatusCode::OK
                        && (body.contains("retry shortly") || body.contains("outcome unknown"))),
                "{probe}: {status} {body}"
            );
            took
        }
        "/readyz" | "/metrics" | "/healthz" => {
            let url = replica.endpoint(probe);
            let (got, took) = timed(probe, status(http, url)).await;
            let expected = if probe == "/readyz" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            assert_eq!(got, expected, "{probe} while Redis is sick");
            took
        }
        other => unreachable!("no probe {other}"),
    }
}

/// The counter of `handle` after one more increment.
async fn increment(http: &Client, mcp: &str, handle: &str) -> Result<i64, String> {
    let args = json!({"operation": "increment", "session_id": handle});
    let out = call_2026(http, mcp, "counter", args).await?;
    out["value"]
        .as_i64()
        .ok_or_else(|| format!("no value in {out}"))
}

/// Makes Redis sick with `fault` for [`SICK`] while probing one replica, heals it, and
/// checks recovery: readiness, state (kept unless a crash lost it), pool gauges,
/// connections and tasks.
async fn survive(name: &str, fault: Fault, persistent: bool) {
    let mut sick = SickRedis::start(fault, persistent).await;
    let mut replica = Replica::start(&sick.url(), &unique_prefix("faults"), &[]).await;
    let http = Client::new();
    let mcp = replica.url();
    let handle = create_handle(&http, &mcp).await;
    assert_eq!(increment(&http, &mcp, &handle).await, Ok(1));
    let legacy = legacy_session(&mcp).await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    sick.inject(fault);
    let report = probe_while_sick(&replica, &handle, &legacy, Instant::now() + SICK).await;
    sick.heal(fault).await;
    let healed = Instant::now();

    wait_until("readiness recovers", async || {
        status(&http, replica.endpoint("/readyz")).await == StatusCode::OK
    })
    .await;
    let ready_after = healed.elapsed();
    let kept_state = persistent || !matches!(fault, Fault::Crash);
    let value = retry("a stateful call succeeds again", async || {
        if kept_state {
            increment(&http, &mcp, &handle).await
        } else {
            let fresh = call_2026(&http, &mcp, "session_create", json!({})).await?;
            increment(
                &http,
                &mcp,
                fresh["session_id"].as_str().unwrap_or_default(),
            )
            .await
        }
    })
    .await;
    let call_after = healed.elapsed();
    if kept_state {
        // Calls that timed out may have run before their reply was lost.
        assert!(value >= 2, "the counter survived: {value}");
    } else {
        assert_eq!(value, 1);
    }
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let legacy_status = legacy_post(&http, &mcp, &legacy, &ping)
        .send()
        .await
        .unwrap()
        .status();
    let expected = if kept_state {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    assert_eq!(legacy_status, expected, "the 2025 session after recovery");

    let gauge = async |name: &str| replica.metric(&[name]).await.expect(name);
    let (max, size) = (
        gauge("redis_pool_max_size").await,
        gauge("redis_pool_size").await,
    );
    assert!(size <= max, "pool size {size} over its max {max}");
    // Background jobs (liveness, upkeep) may be between a checkout and its connection
    // right now; what must not happen is a waiter left behind.
    wait_until("no checkout is left waiting", async || {
        gauge("redis_pool_waiting").await == 0.0
    })
    .await;
    wait_until(
        "connections to Redis settle within the pool's bound",
        async || sick.redis.connected_clients().await <= MAX_CONNECTIONS_PER_REPLICA,
    )
    .await;
    if let Some(proxy) = &sick.proxy {
        wait_until("connections through the proxy settle", async || {
            proxy.open_connections() <= MAX_CONNECTIONS_PER_REPLICA
        })
        .await;
    }
    wait_until("no task is left behind", async || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            <= tasks_before + 8
    })
    .await;

    // Its server task ends without an error or a panic.
    replica.stop().await;
    eprintln!(
        "fault {name}: {} answers while sick, worst {:?} ({:?}); ready {:?} and first \
         stateful call {:?} after Redis returned",
        report.answers,
        report.worst(),
        report.worst,
        ready_after,
        call_after,
    );
}

#[tokio::test]
async fn a_redis_crash_without_persistence() {
    survive("crash", Fault::Crash, false).await;
}

#[tokio::test]
async fn a_redis_crash_with_persistence_keeps_state() {
    survive("crash+aof", Fault::Crash, true).await;
}

#[tokio::test]
async fn a_frozen_redis() {
    survive("pause", Fault::Pause, false).await;
}

#[tokio::test]
async fn a_network_to_redis_slower_than_the_connect_timeout() {
    let delay = Duration::from_millis(1000);
    survive("delay 1000ms", Fault::Network(Mode::Delay(delay)), false).await;
}

/// Connections open in time, and then every command times out: the slowest case, a
/// checkout's wait and connect followed by a command's timeout.
#[tokio::test]
async fn a_network_to_redis_slower_than_the_command_timeout() {
    let delay = Duration::from_millis(300);
    survive("delay 300ms", Fault::Network(Mode::Delay(delay)), false).await;
}

#[tokio::test]
async fn a_blackholed_network_to_redis() {
    survive("blackhole", Fault::Network(Mode::Blackhole), false).await;
}

#[tokio::test]
async fn a_network_that_resets_connections_to_redis() {
    survive("reset", Fault::Network(Mode::Reset), false).await;
}

/// What the clients of the concurrent run saw.
#[derive(Default, Debug)]
struct Tally {
    acknowledged: u64,
    /// Failed with "retry shortly" or "outcome unknown": the increment may or may not
    /// have run (a refusal says "retry shortly" but a timeout is an unknown outcome).
    unknown: u64,
    /// Failed in any other way (also counted as of unknown outcome).
    other: u64,
}

/// Three replicas behind a round-robin hop over a persistent Redis behind a proxy, and
/// a handle; runs `CLIENTS` copies of `client` while Redis is crashed and restarted,
/// frozen, and blackholed in turn (calm spells between), then sets the stop flag and
/// waits for them. The clients' results, the final counter and the replicas' shares.
async fn increments_through_faults<T, F, Fut>(client: F) -> (Vec<T>, u64, Vec<usize>)
where
    T: Send + 'static,
    F: Fn(usize, Client, String, String, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    const CLIENTS: usize = 6;
    let mut sick = SickRedis::start_proxied_persistent().await;
    let prefix = unique_prefix("faults-concurrent");
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&sick.url(), &prefix, &[]).await);
    }
    let hop =
        crate::support::replica::RoundRobin::start(replicas.iter().map(|r| r.addr).collect()).await;
    let mcp = hop.url();
    let handle = create_handle(&Client::new(), &mcp).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            // A new connection per call, so the hop spreads calls over the replicas.
            let http = Client::builder().pool_max_idle_per_host(0).build().unwrap();
            tokio::spawn(client(n, http, mcp.clone(), handle.clone(), stop.clone()))
        })
        .collect();

    let calm = Duration::from_millis(600);
    let faulty = Duration::from_millis(1200);
    for fault in [Fault::Crash, Fault::Pause, Fault::Network(Mode::Blackhole)] {
        tokio::time::sleep(calm).await;
        sick.inject(fault);
        tokio::time::sleep(faulty).await;
        sick.heal(fault).await;
    }
    tokio::time::sleep(calm).await;
    stop.store(true, Ordering::Relaxed);

    let mut results = Vec::new();
    for client in clients {
        results.push(client.await.expect("no client panicked"));
    }
    let value: Value = retry("the final counter can be read", async || {
        call_2026(
            &Client::new(),
            &mcp,
            "counter",
            json!({"operation": "get", "session_id": handle}),
        )
        .await
    })
    .await;
    let value = value["value"].as_i64().expect("a counter value") as u64;
    (results, value, hop.served())
}

#[tokio::test]
async fn concurrent_increments_lose_nothing_acknowledged_through_faults() {
    const MAX_CALLS_PER_CLIENT: usize = 400;
    let (tallies, value, served) =
        increments_through_faults(|_, http, mcp, handle, stop| async move {
            let mut tally = Tally::default();
            for _ in 0..MAX_CALLS_PER_CLIENT {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (answer, _) = timed("an increment", increment(&http, &mcp, &handle)).await;
                match answer {
                    Ok(_) => tally.acknowledged += 1,
                    Err(e) if e.contains("retry shortly") || e.contains("outcome unknown") => {
                        tally.unknown += 1
                    }
                    Err(e) => {
                        eprintln!("increment failed otherwise: {e}");
                        tally.other += 1;
                    }
                }
            }
            tally
        })
        .await;
    let mut total = Tally::default();
    for tally in tallies {
        total.acknowledged += tally.acknowledged;
        total.unknown += tally.unknown;
        total.other += tally.other;
    }
    eprintln!(
        "concurrent increments through faults: {total:?}, final value {value}, served per \
         replica {served:?}"
    );
    assert!(
        total.acknowledged > 0,
        "some increments succeeded: {total:?}"
    );
    assert!(
        value >= total.acknowledged,
        "an acknowledged increment was lost: value {value}, {total:?}"
    );
    assert!(
        value <= total.acknowledged + total.unknown + total.other,
        "more increments than calls: value {value}, {total:?}"
    );
}

#[tokio::test]
async fn keyed_increments_retried_through_faults_apply_once_each() {
    const MAX_KEYS_PER_CLIENT: usize = 200;
    // (distinct keys, attempts) per client. Every key is retried until it is
    // acknowledged, also after the stop flag, so each key ends applied exactly once.
    let (counts, value, served) =
        increments_through_faults(|n, http, mcp, handle, stop| async move {
            let args = json!({"operation": "increment", "session_id": handle});
            let (mut keys, mut attempts) = (0u64, 0u64);
            for k in 0..MAX_KEYS_PER_CLIENT {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("client-{n}-increment-{k}");
                keys += 1;
                let started = Instant::now();
                loop {
                    attempts += 1;
                    let call = call_2026_keyed(&http, &mcp, "counter", args.clone(), Some(&key));
                    match timed("a keyed increment", call).await {
                        (Ok(_), _) => break,
                        (Err(e), _) => {
                            assert!(
                                started.elapsed() < 4 * HANG,
                                "{key} still fails long after Redis healed: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
            (keys, attempts)
        })
        .await;
    let keys: u64 = counts.iter().map(|(k, _)| k).sum();
    let attempts: u64 = counts.iter().map(|(_, a)| a).sum();
    eprintln!(
        "keyed increments through faults: {keys} keys, {attempts} attempts, final value \
         {value}, served per replica {served:?}"
    );
    assert!(attempts > keys, "some attempts failed and were retried");
    assert_eq!(value, keys, "each key applied exactly once");
}
