//! The `/mcp` edge: what it takes from a request (method labels, transport sessions)
//! and what it refuses, tested through real HTTP on a memory-backend replica.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    http::{
        expect_jsonrpc_error, legacy_get, legacy_post, legacy_session, meta_2026, post_json,
        read_reply, tool_text,
    },
    replica::{Replica, metric_value},
};

async fn memory_replica() -> Replica {
    Replica::memory(&[]).await
}

#[tokio::test]
async fn method_names_a_client_chooses_never_become_metric_labels() {
    let replica = memory_replica().await;
    let http = reqwest::Client::new();
    for i in 0..20 {
        let body = json!({"jsonrpc": "2.0", "id": i,
            "method": format!("x{i}\"}} 1\n# EOF\nevil_metric{{a=\"")});
        let _ = post_json(&http, &replica.url(), &body)
            .send()
            .await
            .unwrap();
    }
    // Refused for its Host, and still counted under a fixed label.
    let refused = post_json(
        &http,
        &replica.url(),
        &json!({"jsonrpc": "2.0", "id": 1, "method": "evil/method"}),
    )
    .header("Host", "evil.example")
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let text = reqwest::get(format!("http://{}/metrics", replica.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(!text.contains("evil"), "{text}");
    let other = metric_value(
        &text,
        &["stateful_mcp_mcp_requests_total", "method=\"other\""],
    );
    assert_eq!(other, Some(21.0), "{text}");
}

#[tokio::test]
async fn a_stateless_call_naming_a_session_not_the_callers_is_refused_and_binds_nothing() {
    let replica = memory_replica().await;
    let http = reqwest::Client::new();
    // Per-request protocol signals route the call statelessly, whatever version they
    // name; a client-chosen `Mcp-Session-Id` that names no session of the caller is
    // refused as it is on any other message, and never becomes a session.
    let forged = "a".repeat(40);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "counter", "arguments": {"operation": "increment"},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2025-11-25",
        "io.modelcontextprotocol/clientCapabilities": {}
    }}});
    for _ in 0..2 {
        let response = post_json(&http, &replica.url(), &call)
            .header("Mcp-Session-Id", &forged)
            .header("MCP-Protocol-Version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    // Without the header it is served, bound to nothing.
    let response = post_json(&http, &replica.url(), &call)
        .header("MCP-Protocol-Version", "2025-11-25")
        .send()
        .await
        .unwrap();
    let (status, msg) = read_reply(response).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    assert!(tool_text(&msg).contains("Missing `session_id`"), "{msg}");
    // Nor can the forged id be used as a handle afterwards.
    let as_handle = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "counter", "arguments": {"operation": "get", "session_id": forged},
        "_meta": meta_2026()}});
    let response = post_json(&http, &replica.url(), &as_handle)
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", "counter")
        .send()
        .await
        .unwrap();
    let (_, msg) = read_reply(response).await;
    assert!(tool_text(&msg).contains("unknown or has expired"), "{msg}");
}

#[tokio::test]
async fn messages_rmcp_cannot_read_are_invalid_requests_and_unknown_sessions_404() {
    let replica = memory_replica().await;
    let http = reqwest::Client::new();
    let session = legacy_session(&replica.url()).await;
    // JSON-RPC in shape, but an id that is neither a number nor a string.
    let body = json!({"jsonrpc": "2.0", "id": {"n": 1}, "method": "ping"});
    let response = legacy_post(&http, &replica.url(), &session, &body)
        .send()
        .await
        .unwrap();
    expect_jsonrpc_error(response, -32600).await;

    for unknown in ["not-a-session-id".to_owned(), stateful_mcp::ids::mint()] {
        let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
        let response = legacy_post(&http, &replica.url(), &unknown, &ping)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{unknown}");
    }
}

#[tokio::test]
async fn origins_are_checked_by_default_and_loopback_pages_are_accepted() {
    let replica = memory_replica().await;
    let http = reqwest::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": meta_2026()}});
    let status = |origin: Option<String>| {
        let mut request = post_json(&http, &replica.url(), &list)
            .header("MCP-Protocol-Version", "2026-07-28")
            .header("Mcp-Method", "tools/list");
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        status(Some("http://evil.example".into())).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(Some("null".into())).await, StatusCode::FORBIDDEN);
    let local = format!("http://127.0.0.1:{}", replica.addr.port());
    assert_eq!(status(Some(local)).await, StatusCode::OK);
    assert_eq!(status(None).await, StatusCode::OK);
}

/// The binary, running with JSON logs to `replica.log` in its own directory.
struct LoggedBinary {
    child: testkit::process::Child,
    url: String,
    _dir: testkit::temp_dir::TempDir,
}

impl LoggedBinary {
    /// Starts the binary with the `STATEFUL_MCP__*` overrides `env` (the memory backend
    /// unless they say otherwise), its telemetry filter `filter` (the default when
    /// `None`) and `RUST_LOG` = `rust_log` (unset when `None`); returns once it answers.
    async fn start(env: &[(&str, &str)], filter: Option<&str>, rust_log: Option<&str>) -> Self {
        use std::process::Command;

        use testkit::{
            free_port,
            process::{Child, Stop},
            temp_dir::TempDir,
        };

        let port = free_port();
        let dir = TempDir::new("logs", &port.to_string());
        let mut command = Command::new(env!("CARGO_BIN_EXE_stateful-mcp"));
        command
            .env("STATEFUL_MCP__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("STATEFUL_MCP__SERVER__KEEPALIVE_DRAIN_SECS", "0")
            .env("STATEFUL_MCP__TELEMETRY__FORMAT", "json")
            .env_remove("STATEFUL_MCP__TELEMETRY__FILTER")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied());
        if let Some(filter) = filter {
            command.env("STATEFUL_MCP__TELEMETRY__FILTER", filter);
        }
        if let Some(rust_log) = rust_log {
            command.env("RUST_LOG", rust_log);
        }
        let child = Child::spawn("replica", command, Some(dir.path()), Stop::Kill);
        let http = reqwest::Client::new();
        crate::support::wait::retry("the binary starts", async || {
            http.get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
        })
        .await;
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
            _dir: dir,
        }
    }

    /// Stops it with SIGTERM and returns everything it logged.
    async fn stop(self) -> String {
        self.child.signal(libc::SIGTERM);
        let mut child = self.child;
        let (status, logs) = tokio::task::spawn_blocking(move || {
            let status = child.wait();
            (status, child.log())
        })
        .await
        .unwrap();
        assert!(status.success(), "{status:?}");
        logs
    }
}

/// Runs the binary on the memory backend with JSON logs under `filter` (its default
/// when `None`), makes `calls` 2026-07-28 and `calls` 2025-era `counter` calls, stops it
/// with SIGTERM and returns the handle, the 2025-era session id and everything it logged.
async fn binary_logs(filter: Option<&str>, calls: usize) -> (String, String, String) {
    use crate::support::http::{call_2026, create_handle};

    let binary = LoggedBinary::start(&[], filter, None).await;
    let url = binary.url.clone();
    let http = reqwest::Client::new();
    let handle = create_handle(&http, &url).await;
    let session = legacy_session(&url).await;
    for i in 0..calls {
        call_2026(
            &http,
            &url,
            "counter",
            json!({"operation": "increment", "session_id": handle}),
        )
        .await
        .unwrap();
        let call = json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
            "params": {"name": "counter", "arguments": {"operation": "increment"}}});
        let response = legacy_post(&http, &url, &session, &call)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.text().await;
    }
    (handle, session, binary.stop().await)
}

/// An unknown `Last-Event-ID` names its session (`<session id>:common/…`): rmcp logs the
/// failed resumption at WARN, the event store its own warnings, and neither may name
/// the session, at the default filter or with `RUST_LOG=warn`.
#[tokio::test]
async fn a_resumption_that_fails_logs_no_session_id() {
    use crate::support::redis_server::{RedisServer, unique_prefix};

    let redis = RedisServer::shared_or_start().await;
    for rust_log in [None, Some("warn")] {
        let prefix = unique_prefix("resume-logs");
        let env = testkit::replica::redis_env(redis.url(), &prefix, &[]);
        let binary = LoggedBinary::start(&env, None, rust_log).await;
        let session = legacy_session(&binary.url).await;
        for last_event_id in [
            format!("{session}:common/0-1"),
            format!("{session}:common/x"),
            format!("{session}:0/1-0"),
        ] {
            let response = legacy_get(&reqwest::Client::new(), &binary.url, &session)
                .header("Last-Event-ID", last_event_id)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let _ = response.text().await;
        }
        let logs = binary.stop().await;
        assert!(logs.contains("Resume failed"), "{rust_log:?}: {logs}");
        assert!(
            !logs.contains(session.as_str()),
            "{rust_log:?}: a session id in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn logs_carry_session_fingerprints_never_the_ids() {
    // Per-call lines (the tool call's) are debug.
    let (handle, session, logs) = binary_logs(Some("info,rmcp=warn,stateful_mcp=debug"), 1).await;
    for id in [&handle, &session] {
        assert!(!logs.contains(id.as_str()), "an id in the logs:\n{logs}");
        let tag = stateful_mcp::ids::fingerprint(id);
        assert!(
            logs.contains(&tag),
            "no fingerprint {tag} in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn the_default_filter_logs_nothing_per_call() {
    let (_, _, few) = binary_logs(None, 1).await;
    let (_, _, many) = binary_logs(None, 20).await;
    assert_eq!(
        few.lines().count(),
        many.lines().count(),
        "lines that grow with the calls:\n{many}"
    );
}

#[tokio::test]
async fn a_delete_refused_for_its_host_leaves_the_session_alive() {
    let replica = memory_replica().await;
    let http = reqwest::Client::new();
    let session = legacy_session(&replica.url()).await;
    let refused = crate::support::http::legacy_delete(&http, &replica.url(), &session)
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let alive = legacy_post(&http, &replica.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off_and_streams_are_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let replica = Replica::memory(&[
        ("STATEFUL_MCP__SERVER__HEADER_READ_TIMEOUT_SECS", "1"),
        ("STATEFUL_MCP__SERVER__SSE_KEEP_ALIVE_SECS", "1"),
    ])
    .await;
    // A head sent in part and never finished.
    let mut slow = tokio::net::TcpStream::connect(replica.addr).await.unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("the server closes the connection, not the test's patience");
    assert!(
        matches!(closed, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).contains("408"),
        "{closed:?}"
    );

    // An SSE stream lives on past the head deadline: keep-alives keep arriving.
    let session = legacy_session(&replica.url()).await;
    let mut stream = legacy_get(&reqwest::Client::new(), &replica.url(), &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let mut received = 0;
    while started.elapsed() < std::time::Duration::from_millis(3_500) {
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => received += chunk.len(),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    assert!(received > 0);
}
