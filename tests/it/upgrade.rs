//! Upgrades without downtime: three replicas of the previous release (the binary that
//! `scripts/previous-release.sh` builds from the commit `CHANGELOG.md` names, its path in
//! [`PREVIOUS_RELEASE_ENV`]) behind nginx are replaced one by one by this build, then
//! rolled back the same way, while clients increment counters under idempotency keys on
//! a 2026-07-28 handle and in a 2025-era session made by the previous release (and,
//! through the rollback, on a handle and in a session made by this build). Each replica
//! is drained (SIGTERM, exit 0) and the next release started on its port. No call may
//! fail, and each counter must end equal to the increments acknowledged: nothing lost,
//! nothing applied twice, whichever release wrote a record and whichever reads it.

use std::{path::PathBuf, time::Duration};

use reqwest::Client;
use serde_json::Value;
use testkit::free_port;

use crate::support::{
    http::{create_handle, initialize_2025, legacy_session, post_json, read_reply},
    keyed_load::{KeyedLoad, Seen},
    nginx::Nginx,
    redis_server::{RedisServer, unique_prefix},
    replica::{Process, Replica, SERVER_BINARY},
};

/// The variable that holds the path of the previous release's binary.
pub const PREVIOUS_RELEASE_ENV: &str = "STATEFUL_MCP_PREVIOUS_RELEASE_BIN";

/// How long a drained replica may take to exit: its keep-alive drain (2 s) and
/// in-flight calls, well inside.
const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// The settings of every replica these tests start: a short keep-alive drain, so a
/// restart takes a few seconds.
const ENV: [(&str, &str); 2] = [
    ("STATEFUL_MCP__SERVER__KEEPALIVE_DRAIN_SECS", "2"),
    ("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", "10"),
];

/// Three replicas of `binary` on free ports, sharing `redis_url` under `prefix`.
async fn three_replicas(
    binary: impl AsRef<std::path::Path>,
    redis_url: &str,
    prefix: &str,
) -> (Vec<u16>, Vec<Process>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut replicas = Vec::new();
    for &port in &ports {
        replicas.push(Process::start_on(binary.as_ref(), port, redis_url, prefix, &ENV).await);
    }
    (ports, replicas)
}

/// The previous release's binary.
///
/// # Panics
/// When [`PREVIOUS_RELEASE_ENV`] is unset or names no file: this test does not pass
/// without running.
fn previous_release() -> PathBuf {
    let path = std::env::var_os(PREVIOUS_RELEASE_ENV).unwrap_or_else(|| {
        panic!(
            "{PREVIOUS_RELEASE_ENV} is not set. Build the previous release's binary with \
             `scripts/previous-release.sh` (it prints the path) and run \
             `{PREVIOUS_RELEASE_ENV}=<path> cargo test`, or run `scripts/test.sh`, which \
             does both"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{PREVIOUS_RELEASE_ENV}={} is not a file: run scripts/previous-release.sh",
        path.display()
    );
    path
}

/// The release a replica reports at `/healthz` (a release before 0.2.0 answers `ok`
/// without one).
async fn healthz_version(http: &Client, port: u16) -> Option<String> {
    let body = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let body: Value = serde_json::from_str(&body).ok()?;
    body["version"].as_str().map(str::to_owned)
}

/// The `serverInfo.version` of an `initialize` answered at `mcp`.
async fn server_info_version(mcp: &str) -> String {
    let response = post_json(&Client::new(), mcp, &initialize_2025("version-probe"))
        .send()
        .await
        .unwrap();
    let (_, init) = read_reply(response).await;
    init["result"]["serverInfo"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no serverInfo.version: {init}"))
        .to_owned()
}

/// Fails with what the clients of one era saw unless every call succeeded and the
/// counter equals the increments acknowledged.
fn assert_exactly_once(era: &str, (value, seen): &(u64, Seen)) {
    println!(
        "{era}: {} keyed increments acknowledged in {} attempts (slowest {:?}), counter {value}",
        seen.keys, seen.attempts, seen.worst
    );
    assert!(
        seen.first_failure.is_none(),
        "{era}: failed calls across the upgrade ({} attempts for {} keys): {:#?}",
        seen.attempts,
        seen.keys,
        seen.failures
    );
    assert!(seen.keys > 20, "{era}: the load ran: {} keys", seen.keys);
    assert_eq!(
        *value, seen.keys,
        "{era}: the counter against the acknowledged keyed increments (fewer: lost, more: \
         applied twice)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_from_the_previous_release_and_back_loses_and_repeats_nothing() {
    let previous = previous_release();
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("upgrade");
    let (ports, mut replicas) = three_replicas(&previous, redis.url(), &prefix).await;
    let old_version = server_info_version(&replicas[0].url()).await;
    assert_ne!(
        old_version,
        stateful_mcp::VERSION,
        "{} is not a previous release",
        previous.display()
    );
    let nginx = Nginx::start(&ports);
    nginx.wait_ready().await;
    let mcp = nginx.url();

    // Sessions of both eras made by the previous release, loaded through the upgrade
    // and the rollback; then sessions made by this build, loaded through the rollback.
    let mut loads = vec![(
        "2026-07-28 handle of the previous release",
        KeyedLoad::start(&mcp, &create_handle(&Client::new(), &mcp).await),
    )];
    loads.push((
        "2025-era session of the previous release",
        KeyedLoad::start_2025(&mcp, &legacy_session(&mcp).await),
    ));

    let http = Client::new();
    for (binary, version) in [
        (SERVER_BINARY.into(), Some(stateful_mcp::VERSION)),
        (previous, None),
    ] {
        for (replica, &port) in replicas.iter_mut().zip(&ports) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let status = replica.terminate(EXIT_LIMIT).await;
            assert!(status.success(), "a drained replica exits 0: {status}");
            *replica = Process::start_on(&binary, port, redis.url(), &prefix, &ENV).await;
            assert_eq!(
                healthz_version(&http, port).await.as_deref(),
                version,
                "the release on port {port}"
            );
        }
        if version.is_some() {
            assert_eq!(
                server_info_version(&replicas[0].url()).await,
                stateful_mcp::VERSION
            );
            loads.push((
                "2026-07-28 handle of this build",
                KeyedLoad::start(&mcp, &create_handle(&Client::new(), &mcp).await),
            ));
            loads.push((
                "2025-era session of this build",
                KeyedLoad::start_2025(&mcp, &legacy_session(&mcp).await),
            ));
        }
    }

    let readyz: Vec<String> = replicas.iter().map(|r| r.endpoint("/readyz")).collect();
    let mut seen = Vec::new();
    for (what, load) in loads {
        seen.push((what, load.finish_when_ready(&readyz).await));
    }
    assert!(
        !nginx.errors().contains("no live upstreams"),
        "nginx ran out of replicas:\n{}",
        nginx.errors()
    );
    for (what, seen) in &seen {
        assert_exactly_once(what, seen);
    }
}

/// Concurrent calls of one 2025-era session meet its hand-over when its holder drains:
/// a replica that forwarded a call to the holder a moment before it gave the session up
/// is answered "moved", and routes the call again (to the new holder) rather than
/// passing that 503 on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_fails_no_concurrent_call_of_a_2025_era_session() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("restart-concurrent");
    let (ports, mut replicas) = three_replicas(SERVER_BINARY, redis.url(), &prefix).await;
    let nginx = Nginx::start(&ports);
    nginx.wait_ready().await;
    let mcp = nginx.url();
    let load = KeyedLoad::start_2025_concurrent(&mcp, &legacy_session(&mcp).await, 4);
    for round in 0..2 {
        for (replica, &port) in replicas.iter_mut().zip(&ports) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let status = replica.terminate(EXIT_LIMIT).await;
            assert!(
                status.success(),
                "round {round}: a drained replica exits 0: {status}"
            );
            *replica = Process::start_on(SERVER_BINARY, port, redis.url(), &prefix, &ENV).await;
        }
    }
    let readyz: Vec<String> = replicas.iter().map(|r| r.endpoint("/readyz")).collect();
    let seen = load.finish_when_ready(&readyz).await;
    assert_exactly_once("4 concurrent clients of a 2025-era session", &seen);
}

#[tokio::test]
async fn this_build_reports_its_release_at_healthz_and_in_server_info() {
    let replica = Replica::memory(&[]).await;
    let health: Value = reqwest::get(replica.endpoint("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        server_info_version(&replica.url()).await,
        env!("CARGO_PKG_VERSION")
    );
}
