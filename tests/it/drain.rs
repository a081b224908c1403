//! The deployment topology with local processes: Redis, three replicas and a Debian nginx
//! balancer (round robin, `proxy_next_upstream error`). Replicas restart one after
//! another under load; no 2026-07-28 call may fail or be applied twice, and a 2025-era
//! session continues on the other replicas.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use testkit::{
    free_port,
    process::{Child, Stop},
};

use crate::support::{
    client::{call, legacy_client, text, try_call},
    http::{call_2026, create_handle},
    nginx::Nginx,
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::retry,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restart_under_load_without_failed_or_repeated_calls() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("drain");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |port: u16| {
        let (url, prefix) = (redis.url().to_owned(), prefix.clone());
        async move {
            let bind = format!("127.0.0.1:{port}");
            let env = [
                ("STATEFUL_MCP__SERVER__BIND", bind.as_str()),
                ("STATEFUL_MCP__SERVER__KEEPALIVE_DRAIN_SECS", "2"),
                ("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", "10"),
            ];
            Replica::start(&url, &prefix, &env).await
        }
    };
    let mut replicas = Vec::new();
    for &port in &ports {
        replicas.push(start(port).await);
    }
    let nginx = Nginx::start(&ports);
    nginx.wait_ready().await;
    let url = nginx.url();

    let http = reqwest::Client::new();
    let handle = create_handle(&http, &url).await;
    let legacy = legacy_client(&url).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (url, handle, stop, ok) = (url.clone(), handle.clone(), stop.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let args = json!({"operation": "increment", "session_id": handle});
                match call_2026(&http, &url, "counter", args).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(format!(
                        "{}: {e}",
                        chrono::Utc::now().format("%H:%M:%S%.3f")
                    )),
                }
            }
            failures
        }));
    }
    let legacy_stop = stop.clone();
    let legacy_worker = tokio::spawn(async move {
        let mut done = 0u64;
        let mut failures = Vec::new();
        while !legacy_stop.load(Ordering::Relaxed) {
            match try_call(&legacy, "counter", json!({"operation": "increment"})).await {
                Ok(r) if r.is_error != Some(true) => done += 1,
                Ok(r) => failures.push(text(&r)),
                Err(e) => failures.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = call(&legacy, "counter", json!({"operation": "get"})).await;
        (done, failures, text(&last))
    });

    // Restart every replica in turn, twice, under load.
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let i = round % 3;
        replicas[i].stop().await;
        replicas[i] = start(ports[i]).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let (legacy_done, legacy_failures, legacy_last) = legacy_worker.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed 2026-07-28 calls: {failures:#?}\nnginx:\n{}",
        failures.len(),
        nginx.errors()
    );
    let succeeded = ok.load(Ordering::Relaxed);
    assert!(succeeded > 200, "load ran: {succeeded} calls");
    let total = call_2026(
        &http,
        &url,
        "counter",
        json!({"operation": "get", "session_id": handle}),
    )
    .await
    .unwrap();
    assert_eq!(total["value"], succeeded, "every call applied exactly once");
    assert!(
        legacy_failures.is_empty(),
        "2025-era failures: {legacy_failures:#?}"
    );
    assert!(legacy_done > 20, "{legacy_done}");
    assert_eq!(legacy_last, format!("Counter get: {legacy_done}"));
}

#[tokio::test]
async fn the_binary_drains_on_sigterm_and_exits_zero() {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_stateful-mcp"));
    command
        .env("STATEFUL_MCP__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("STATEFUL_MCP__SERVER__PRESTOP_DELAY_SECS", "1")
        .env("STATEFUL_MCP__SERVER__KEEPALIVE_DRAIN_SECS", "1")
        .env("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
        .env("RUST_LOG", "warn");
    let mut child = Child::spawn("replica", command, None, Stop::Kill);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    retry("the binary starts", async || {
        http.get(format!("{base}/readyz")).send().await
    })
    .await;
    let started = Instant::now();
    let pid = child.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // During the pre-stop delay the replica still answers (on a new connection, too), with
    // readiness red and a request to close the connection.
    let readyz = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(readyz.headers()["connection"], "close");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "kept serving through the pre-stop delay"
    );
    let refused = reqwest::get(format!("{base}/healthz")).await;
    assert!(refused.is_err(), "the listener is closed");
}
