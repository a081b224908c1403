//! Load benchmark: three replicas on one Redis (in this process), clients spread over
//! them round-robin, a fixed number of calls per scenario; prints throughput and
//! latency percentiles, and Redis memory per session.
//!
//! `cargo bench --bench load` (starts its own redis-server, or uses `REDIS_URL`).
//! Loopback only; every scenario is bounded by its call count.

#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stateful_mcp::{config::Settings, startup::Application};

const CLIENTS: usize = 16;
const CALLS_PER_CLIENT: usize = 250;

struct Cluster {
    urls: Vec<String>,
}

async fn cluster(redis_url: &str, prefix: &str, events: bool) -> Cluster {
    let mut urls = Vec::new();
    for _ in 0..3 {
        let settings = Settings::load_with_env(
            None,
            vec![
                ("STATEFUL_MCP__SERVER__BIND".into(), "127.0.0.1:0".into()),
                ("STATEFUL_MCP__STORE__BACKEND".into(), "redis".into()),
                ("STATEFUL_MCP__REDIS__URL".into(), redis_url.into()),
                ("STATEFUL_MCP__REDIS__KEY_PREFIX".into(), prefix.into()),
                ("STATEFUL_MCP__EVENTS__ENABLED".into(), events.to_string()),
                ("STATEFUL_MCP__TELEMETRY__FILTER".into(), "warn".into()),
                (
                    "STATEFUL_MCP__SESSION__MAX_SESSIONS_PER_PRINCIPAL".into(),
                    "100000".into(),
                ),
            ],
        )
        .unwrap();
        let app = Application::build(settings).await.unwrap();
        urls.push(format!("http://{}/mcp", app.local_addr()));
        tokio::spawn(app.run_until_stopped());
    }
    Cluster { urls }
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "load", "version": "1"}
    })
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (Option<String>, String) {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (session, resp.text().await.unwrap())
}

/// One 2026-07-28 `tools/call`; returns the reply body.
async fn call_2026(client: &reqwest::Client, url: &str, tool: &str, args: Value) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_meta": meta()}});
    let headers = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", tool),
    ];
    post(client, url, &headers, &body).await.1
}

/// Creates a session handle with `session_create`.
async fn create_handle(client: &reqwest::Client, url: &str) -> String {
    let body = call_2026(client, url, "session_create", json!({})).await;
    body.split("\"session_id\":\"")
        .nth(1)
        .expect("a session_id")[..40]
        .to_owned()
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
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (urls, call) = (urls.to_vec(), call.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(CALLS_PER_CLIENT);
            for i in 0..CALLS_PER_CLIENT {
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
                let text = call_2026(&client, &url, "counter", args).await;
                assert!(text.contains("Counter increment"), "{text}");
            }
        },
    )
    .await;
    run(
        "2026-07-28 prime_count (cached result)",
        urls,
        |client, url, _| async move {
            let args = json!({"limit": 10_000_000});
            let text = call_2026(&client, &url, "prime_count", args).await;
            assert!(text.contains("664579"), "{text}");
        },
    )
    .await;
}

async fn legacy_scenario(name: &str, urls: &[String]) {
    // One 2025-11-25 session per client, initialized on the first replica.
    let client = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..CLIENTS {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "load", "version": "1"}}});
        let (session, _) = post(&client, &urls[0], &[], &init).await;
        let session = session.unwrap();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        post(
            &client,
            &urls[0],
            &[
                ("Mcp-Session-Id", &session),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            &note,
        )
        .await;
        sessions.push(session);
    }
    run(name, urls, move |client, url, c| {
        let session = sessions[c].clone();
        async move {
            let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "counter", "arguments": {"operation": "increment"}}});
            let (_, text) = post(
                &client,
                &url,
                &[
                    ("Mcp-Session-Id", &session),
                    ("MCP-Protocol-Version", "2025-11-25"),
                ],
                &body,
            )
            .await;
            assert!(text.contains("Counter increment"), "{text}");
        }
    })
    .await;
}

async fn memory_per_session(redis_url: &str, urls: &[String]) {
    const SESSIONS: usize = 5_000;
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let used = |info: String| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url) = (http.clone(), urls[c % urls.len()].clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..SESSIONS / CLIENTS {
                let id = create_handle(&http, &url).await;
                let args = json!({"operation": "increment", "session_id": id});
                call_2026(&http, &url, "counter", args).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    let created = (SESSIONS / CLIENTS) * CLIENTS;
    println!(
        "Redis memory per session (with a counter, indexes included): {} bytes ({created} sessions)",
        (after - before) / created as i64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (a filter) is ignored.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let redis = support::Redis::start();
        println!(
            "{CLIENTS} clients x {CALLS_PER_CLIENT} calls per scenario, 3 replicas, round-robin"
        );
        let with_events = cluster(&redis.url, "load-a", true).await;
        stateless_scenarios(&with_events.urls).await;
        legacy_scenario(
            "2025-11-25 counter increment (event store on)",
            &with_events.urls,
        )
        .await;
        let without_events = cluster(&redis.url, "load-b", false).await;
        legacy_scenario(
            "2025-11-25 counter increment (event store off)",
            &without_events.urls,
        )
        .await;
        memory_per_session(&redis.url, &with_events.urls).await;
    });
}
