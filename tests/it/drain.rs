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
    temp_dir::TempDir,
};

use crate::support::{
    client::{call, legacy_client, text, try_call},
    http::{call_2026, create_handle},
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::{retry, wait_until},
};

/// An nginx master process with its own prefix directory, stopped on drop with SIGTERM:
/// the master stops its workers and exits (a SIGKILLed master would leave its workers
/// running); SIGKILL only if it has not gone within 5 s.
struct Nginx {
    _child: Child,
    /// Removed once the process has stopped (declared after it).
    dir: TempDir,
    port: u16,
}

impl Nginx {
    fn start(upstreams: &[u16]) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is required for this test: scripts/test.sh installs it");
        let port = free_port();
        let dir = TempDir::new("nginx", &port.to_string());
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        // The same proxy settings as deploy/nginx.conf, on loopback ports.
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream mcp {{
{servers}        keepalive 16;
        # Shorter than the replicas' keepalive_drain_secs: nginx closes idle
        # connections to a draining replica before the replica would.
        keepalive_timeout 1s;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        client_body_buffer_size 1m;
        location / {{
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"#,
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(binary);
        command.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
        let child = Child::spawn("nginx", command, None, Stop::Terminate);
        Self {
            _child: child,
            dir,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// What nginx logged (upstream errors it met, retried or not).
    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let healthz = format!("http://127.0.0.1:{}/healthz", self.port);
        wait_until("nginx comes up", async || {
            reqwest::get(&healthz)
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
}

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
