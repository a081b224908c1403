//! HTTP load benchmark of the real binaries over loopback, side by side with an anchor:
//! an rmcp server with the same tools and its state in memory (rmcp's counter example
//! pattern), so the replicas' figures read against what rmcp alone costs.
//!
//! ```sh
//! cargo bench --bench mcp_load                               # every scenario, 2 rounds
//! cargo bench --bench mcp_load -- --secs 2 --rounds 1 redis-2026 anchor-2026
//! cargo bench --bench mcp_load -- --replica-bin old=/tmp/old --replica-bin new=target/release/stateful-mcp
//! cargo bench --bench mcp_load -- --url http://127.0.0.1:8080/mcp --era 2026 --pid replica=1234
//! cargo bench --bench mcp_load -- --sessions 32 redis-2026 cluster-2026 cluster-2026-acks1
//! cargo bench --bench mcp_load -- cluster-round-trips
//! ```
//!
//! Three modes:
//! - by default it starts everything itself on free loopback ports (the Redis
//!   deployments its scenarios use: one node, a primary with a replica, a three-shard
//!   cluster; per scenario the anchor, one replica, or three replicas behind nginx
//!   configured from `deploy/nginx.conf`) and stops it all on exit; the children also die
//!   with the benchmark (`PR_SET_PDEATHSIG`);
//! - with `--url` it loads servers someone else started (`scripts/topology`), reading the
//!   CPU of the `--pid`s given and Redis's figures from every `--redis-url`;
//! - `anchor --port P` serves the anchor (the first mode starts it so, as its own
//!   process, so its CPU can be read from `/proc`).
//!
//! Two scenarios run alone instead of a load: `session-memory` (Redis memory per idle
//! session) and `cluster-round-trips` ([`round_trips`]: the commands each kind of call
//! sends each shard of a cluster, read off `MONITOR` on every master).
//!
//! The load: `--sessions` × `--workers` for `--secs` after a 1 s warm-up; each worker a
//! task with its own keep-alive connection, looping `counter` `increment` and checking
//! every reply. Reported per scenario: calls/s, latency quantiles, errors, CPU µs per call
//! of every measured process, and Redis's commands, script time, CPU and bytes per call.
//!
//! Layout: [`load`] runs the load and [`wire`] speaks it; [`measure`] reads `/proc` (the
//! processes' [`cpu`]) and Redis; [`stores`] keeps the Redis deployments and [`servers`]
//! starts and stops the rest (on `testkit`'s process wrapper, `redis-server` launcher and
//! cluster); [`anchor`] is the anchor; [`report`] prints and writes the results.

#[path = "mcp_load/anchor.rs"]
mod anchor;
#[path = "mcp_load/cpu.rs"]
mod cpu;
#[path = "mcp_load/load.rs"]
mod load;
#[path = "mcp_load/measure.rs"]
mod measure;
#[path = "mcp_load/report.rs"]
mod report;
#[path = "mcp_load/round_trips.rs"]
mod round_trips;
#[path = "mcp_load/servers.rs"]
mod servers;
#[path = "mcp_load/stores.rs"]
mod stores;
#[path = "mcp_load/wire.rs"]
mod wire;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use cpu::Measured;
use load::LoadSpec;
use measure::Meter;
use report::{Report, Row};
use servers::{Backend, Fleet, Replicas, Server};
use stores::{Deployment, Store, Stores};
use wire::{Endpoint, Era};

const USAGE: &str = "\
usage: cargo bench --bench mcp_load -- [OPTIONS] [SCENARIO...]
       cargo bench --bench mcp_load -- --url URL [--url URL...] --era 2026|2025 [--pid NAME=PID...] [--redis-url URL...] [OPTIONS]
       cargo bench --bench mcp_load -- anchor --port PORT

scenarios (default: all, in this order): anchor-2026 anchor-2025 redis-2026 redis-2025
  redis-2025-noevents memory-2026 memory-2025 nginx-2026 forwarded-2025
  redis-2026-replica redis-2026-acks1 cluster-2026 cluster-2026-acks1 cluster-2025
  (redis-*: one Redis node; forwarded-2025: two replicas, sessions on the first, every
  call sent to the second; -replica: a primary with one replica; cluster-*: three
  masters with one replica each; -acks1: redis.replica_acks = 1)
  session-memory (alone): Redis memory per idle 2026-07-28 session, over --sessions
  (default 100000) sessions opened by --workers clients
  cluster-round-trips (alone): the commands a session_create, a 2026-07-28 call and a
  2025-era call send each master of the cluster (MONITOR), over --calls calls each,
  with replica_acks 0 and 1

options:
  --sessions S          sessions (handles, or 2025-era transport sessions); default 1
  --workers C           concurrent workers, one connection each; default 32
  --secs D              measured seconds per scenario, after a 1 s warm-up; default 8
  --rounds N            times the whole scenario list runs, interleaved; default 2
  --driver-threads T    threads of the load driver's runtime; default 1
  --json FILE           also write every row (and the ratios) as JSON lines
  --replica-bin [NAME=]PATH  the replica binary to measure (default: this build's
                        release binary); twice to compare two builds, interleaved
  --calls N             calls of each kind cluster-round-trips counts; default 300
  --redis-url URL       with --url: a Redis master to read (once per shard of a cluster)";

/// The warm-up before each measured window, whose calls are not counted.
const WARMUP: Duration = Duration::from_secs(1);

/// One Redis node, acknowledged without waiting for replicas.
const NODE: Backend = redis(Deployment::Node, 0);

/// Every scenario: its name, era and server.
const SCENARIOS: [(&str, Era, Server); 14] = [
    ("anchor-2026", Era::V2026, Server::Anchor),
    ("anchor-2025", Era::V2025, Server::Anchor),
    ("redis-2026", Era::V2026, replicas(1, NODE, true)),
    ("redis-2025", Era::V2025, replicas(1, NODE, true)),
    ("redis-2025-noevents", Era::V2025, replicas(1, NODE, false)),
    (
        "memory-2026",
        Era::V2026,
        replicas(1, Backend::Memory, true),
    ),
    (
        "memory-2025",
        Era::V2025,
        replicas(1, Backend::Memory, true),
    ),
    ("nginx-2026", Era::V2026, replicas(3, NODE, true)),
    (
        "forwarded-2025",
        Era::V2025,
        Server::Replicas(Replicas {
            count: 2,
            backend: NODE,
            events: true,
            forwarded: true,
        }),
    ),
    // Against the one node: what a replica of Redis costs its primary, then what
    // waiting for it costs the call.
    (
        "redis-2026-replica",
        Era::V2026,
        replicas(1, redis(Deployment::Pair, 0), true),
    ),
    (
        "redis-2026-acks1",
        Era::V2026,
        replicas(1, redis(Deployment::Pair, 1), true),
    ),
    (
        "cluster-2026",
        Era::V2026,
        replicas(1, redis(Deployment::Cluster, 0), true),
    ),
    (
        "cluster-2026-acks1",
        Era::V2026,
        replicas(1, redis(Deployment::Cluster, 1), true),
    ),
    (
        "cluster-2025",
        Era::V2025,
        replicas(1, redis(Deployment::Cluster, 0), true),
    ),
];

const fn redis(deployment: Deployment, acks: u32) -> Backend {
    Backend::Redis { deployment, acks }
}

const fn replicas(count: usize, backend: Backend, events: bool) -> Server {
    Server::Replicas(Replicas {
        count,
        backend,
        events,
        forwarded: false,
    })
}

/// The command line.
struct Options {
    scenarios: Vec<String>,
    sessions: usize,
    workers: usize,
    secs: f64,
    rounds: usize,
    driver_threads: usize,
    json: Option<PathBuf>,
    replica_bins: Vec<(String, PathBuf)>,
    urls: Vec<String>,
    era: Option<Era>,
    pids: Vec<(String, u32)>,
    redis_urls: Vec<String>,
    anchor_port: Option<u16>,
    calls: usize,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut o = Options {
            scenarios: Vec::new(),
            sessions: 1,
            workers: 32,
            secs: 8.0,
            rounds: 2,
            driver_threads: 1,
            json: None,
            replica_bins: Vec::new(),
            urls: Vec::new(),
            era: None,
            pids: Vec::new(),
            redis_urls: Vec::new(),
            anchor_port: None,
            calls: 300,
        };
        let mut args = args.into_iter();
        let mut anchor = false;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
                v.parse().map_err(|_| format!("{name}: not a number: {v}"))
            }
            match arg.as_str() {
                // cargo passes it to every benchmark.
                "--bench" => {}
                "--sessions" => o.sessions = number("--sessions", value("--sessions")?)?,
                "--workers" => o.workers = number("--workers", value("--workers")?)?,
                "--secs" => o.secs = number("--secs", value("--secs")?)?,
                "--rounds" => o.rounds = number("--rounds", value("--rounds")?)?,
                "--driver-threads" => {
                    o.driver_threads = number("--driver-threads", value("--driver-threads")?)?;
                }
                "--json" => o.json = Some(value("--json")?.into()),
                "--replica-bin" => {
                    let v = value("--replica-bin")?;
                    let (name, path) = match v.split_once('=') {
                        Some((name, path)) => (name.to_owned(), path),
                        None => (format!("bin{}", o.replica_bins.len() + 1), v.as_str()),
                    };
                    o.replica_bins.push((name, PathBuf::from(path)));
                }
                "--url" => o.urls.push(value("--url")?),
                "--era" => {
                    o.era = Some(match value("--era")?.as_str() {
                        "2026" => Era::V2026,
                        "2025" => Era::V2025,
                        other => return Err(format!("--era: 2026 or 2025, not {other}")),
                    });
                }
                "--pid" => {
                    let v = value("--pid")?;
                    let (name, pid) = v.split_once('=').ok_or("--pid expects NAME=PID")?;
                    o.pids
                        .push((name.to_owned(), number("--pid", pid.to_owned())?));
                }
                "--redis-url" => o.redis_urls.push(value("--redis-url")?),
                "--calls" => o.calls = number("--calls", value("--calls")?)?,
                "--port" if anchor => o.anchor_port = Some(number("--port", value("--port")?)?),
                "anchor" if o.scenarios.is_empty() => anchor = true,
                "-h" | "--help" => return Err(String::new()),
                other if other.starts_with('-') => return Err(format!("unknown option {other}")),
                name => {
                    if !ALONE.contains(&name) && !SCENARIOS.iter().any(|(n, _, _)| *n == name) {
                        return Err(format!("unknown scenario {name}"));
                    }
                    o.scenarios.push(name.to_owned());
                }
            }
        }
        if anchor && o.anchor_port.is_none() {
            return Err("anchor needs --port".into());
        }
        if !o.urls.is_empty() && o.era.is_none() {
            return Err("--url needs --era 2026|2025".into());
        }
        if o.workers == 0 || o.rounds == 0 || o.driver_threads == 0 || o.secs <= 0.0 || o.calls == 0
        {
            return Err(
                "--workers, --rounds, --driver-threads, --secs and --calls must be positive".into(),
            );
        }
        if o.scenarios.len() > 1 && o.scenarios.iter().any(|s| ALONE.contains(&s.as_str())) {
            return Err(format!("{} run alone", ALONE.join(" and ")));
        }
        Ok(o)
    }

    fn spec(&self, urls: &[String], era: Era, forwarded: bool) -> LoadSpec {
        LoadSpec {
            forwarded,
            endpoints: urls
                .iter()
                .map(|u| Endpoint::parse(u).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            era,
            sessions: self.sessions,
            workers: self.workers,
            warmup: WARMUP,
            window: Duration::from_secs_f64(self.secs),
        }
    }

    fn row(
        &self,
        round: usize,
        scenario: &str,
        build: Option<&str>,
        era: Era,
        outcome: load::Outcome,
    ) -> Row {
        Row {
            round,
            scenario: scenario.to_owned(),
            build: build.map(str::to_owned),
            era,
            sessions: self.sessions,
            workers: self.workers,
            driver_threads: self.driver_threads,
            loadavg: report::loadavg(),
            outcome,
        }
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mcp_load: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    if let Some(port) = options.anchor_port {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        return match runtime.block_on(anchor::serve(port)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("anchor: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // One thread: the driver and its connections on the main thread; more: a
    // multi-threaded runtime whose `block_on` still runs on the main thread, which
    // therefore starts every child process (see `testkit::process::Child`).
    let runtime = if options.driver_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(options.driver_threads);
        builder
    }
    .enable_all()
    .build()
    .expect("a tokio runtime");
    runtime.block_on(async {
        let run = async {
            if options.urls.is_empty() {
                orchestrate(&options).await;
            } else {
                external(&options).await;
            }
        };
        // SIGINT, SIGTERM, SIGHUP: drop the run, so its servers stop and its files go.
        tokio::select! {
            () = run => {}
            signal = stop_signal() => eprintln!("mcp_load: {signal}; stopping"),
        }
    });
    ExitCode::SUCCESS
}

/// The first of SIGINT, SIGTERM and SIGHUP to arrive.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("a SIGHUP handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// The scenarios that run alone, instead of a load.
const ALONE: [&str; 2] = ["session-memory", "cluster-round-trips"];

/// Sessions the `session-memory` scenario opens (`--sessions` overrides).
const MEMORY_SESSIONS: usize = 100_000;

/// `session-memory`: one replica on a fresh private Redis; opens `--sessions` (default
/// [`MEMORY_SESSIONS`]) sessions of `--era` (2026-07-28 unless `--era 2025`) with
/// `--workers` concurrent clients and reports what Redis holds per idle session
/// (`used_memory` and keys, before and after).
async fn session_memory(options: &Options) {
    let sessions = if options.sessions > 1 {
        options.sessions
    } else {
        MEMORY_SESSIONS
    };
    let era = options.era.unwrap_or(Era::V2026);
    let mut stores = Stores::default();
    let store = stores.prepare(Deployment::Node).await;
    let mut fleet = Fleet::new();
    wire::set_bearer(&fleet.api_key);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_stateful-mcp"));
    let replicas = Replicas {
        count: 1,
        backend: NODE,
        events: true,
        forwarded: false,
    };
    let running = fleet.replicas(replicas, &binary, Some(&store)).await;
    let endpoint = Endpoint::parse(&running.urls[0]).expect("the replica's URL");
    let client = redis::Client::open(store.masters[0].as_str()).expect("the Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let used = async |conn: &mut redis::aio::MultiplexedConnection| {
        let memory = measure::info(conn, "memory").await;
        let used: f64 = memory
            .iter()
            .find(|(k, _)| k == "used_memory")
            .and_then(|(_, v)| v.parse().ok())
            .expect("used_memory");
        let keys: u64 = redis::cmd("DBSIZE")
            .query_async(conn)
            .await
            .expect("DBSIZE");
        (used, keys)
    };
    let (used_before, keys_before) = used(&mut conn).await;
    let started = std::time::Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..options.workers {
        let (endpoint, next, era) = (endpoint.clone(), next.clone(), era);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < sessions {
                load::open_session(&endpoint, era)
                    .await
                    .expect("a session opens");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a session opener");
    }
    let took = started.elapsed();
    let (used_after, keys_after) = used(&mut conn).await;
    let per_session = (used_after - used_before) / sessions as f64;
    println!(
        "session-memory: {sessions} idle {} sessions opened in {:.1} s; Redis \
         used_memory {:.1} MiB -> {:.1} MiB: {per_session:.0} bytes per session; keys {keys_before} \
         -> {keys_after} ({:.2} per session)",
        era.label(),
        took.as_secs_f64(),
        used_before / 1048576.0,
        used_after / 1048576.0,
        (keys_after - keys_before) as f64 / sessions as f64,
    );
    drop(running);
}

/// The first mode: starts every server itself and runs the scenarios, interleaved.
async fn orchestrate(options: &Options) {
    if options.scenarios.iter().any(|s| s == "session-memory") {
        session_memory(options).await;
        return;
    }
    if options.scenarios.iter().any(|s| s == "cluster-round-trips") {
        round_trips::run(options.calls, options.json.as_deref()).await;
        return;
    }
    let scenarios: Vec<_> = SCENARIOS
        .iter()
        .filter(|(name, _, _)| {
            options.scenarios.is_empty() || options.scenarios.iter().any(|s| s == name)
        })
        .collect();
    let builds = if options.replica_bins.is_empty() {
        vec![(
            "current".to_owned(),
            PathBuf::from(env!("CARGO_BIN_EXE_stateful-mcp")),
        )]
    } else {
        options.replica_bins.clone()
    };
    for (name, path) in &builds {
        assert!(
            path.is_file(),
            "replica build {name}: no file at {}",
            path.display()
        );
    }
    let mut stores = Stores::default();
    let mut fleet = Fleet::new();
    wire::set_bearer(&fleet.api_key);
    let roles = [
        "replicas",
        "anchor",
        "redis",
        "redis-rep",
        "nginx",
        "driver",
    ]
    .map(str::to_owned);
    let mut report = Report::new(roles.to_vec(), options.json.as_deref());
    for round in 1..=options.rounds {
        for &&(scenario, era, server) in &scenarios {
            let runs: Vec<Option<&(String, PathBuf)>> = match server {
                Server::Anchor => vec![None],
                Server::Replicas(_) => builds.iter().map(Some).collect(),
            };
            for build in runs {
                let (running, store) = match (server, build) {
                    (Server::Replicas(replicas), Some((_, binary))) => {
                        let store: Option<Store> = match replicas.backend.deployment() {
                            Some(deployment) => Some(stores.prepare(deployment).await),
                            None => None,
                        };
                        (
                            fleet.replicas(replicas, binary, store.as_ref()).await,
                            store,
                        )
                    }
                    _ => (fleet.anchor().await, None),
                };
                let mut measured = running.measured.clone();
                measured.add("driver", std::process::id());
                let masters = store.map(|s| s.masters).unwrap_or_default();
                let mut meter = Meter::new(measured, &masters).await;
                let forwarded = matches!(server, Server::Replicas(r) if r.forwarded);
                let spec = options.spec(&running.urls, era, forwarded);
                let outcome = load::run(&spec, &mut meter).await;
                drop(running);
                match outcome {
                    Ok(outcome) => report.add(options.row(
                        round,
                        scenario,
                        build.map(|(n, _)| n.as_str()),
                        era,
                        outcome,
                    )),
                    Err(e) => eprintln!("{scenario}: {e}"),
                }
            }
        }
    }
    report.ratios();
}

/// The second mode: loads servers someone else started.
async fn external(options: &Options) {
    let era = options.era.expect("checked by Options::parse");
    let mut pids = options.pids.clone();
    // The Redis masters named by --redis-url run here (loopback): measure them too.
    if !pids.iter().any(|(name, _)| name == "redis") {
        for url in &options.redis_urls {
            pids.push(("redis".to_owned(), measure::redis_pid(url).await));
        }
    }
    let mut measured = Measured::default();
    for (name, pid) in &pids {
        measured.add_with_children(name, *pid);
    }
    measured.add("driver", std::process::id());
    let mut roles: Vec<String> = Vec::new();
    for (name, _) in &pids {
        if !roles.contains(name) {
            roles.push(name.clone());
        }
    }
    roles.push("driver".to_owned());
    let mut report = Report::new(roles, options.json.as_deref());
    let scenario = format!("external-{}", era.label());
    for round in 1..=options.rounds {
        let mut meter = Meter::new(measured.clone(), &options.redis_urls).await;
        match load::run(&options.spec(&options.urls, era, false), &mut meter).await {
            Ok(outcome) => report.add(options.row(round, &scenario, None, era, outcome)),
            Err(e) => eprintln!("{scenario}: {e}"),
        }
    }
}
