//! 2025-era sessions across replicas: whichever replica a request of a session reaches,
//! it is served by the replica holding the session, so a response to a server request,
//! a cancellation and the GET stream all meet the session's one worker; DELETE ends it
//! everywhere; a dead holder's sessions move within seconds while a live or frozen one
//! keeps them; a draining one hands them over.
//!
//! Requests are raw HTTP, sent to the replica each test names, so every hop is the one
//! the test means.

// Sampling and logging are deprecated for 2026-07-28 (SEP-2577); they are exactly what
// 2025-era sessions still use.
#![allow(deprecated)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        CreateMessageRequestParams, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
        PaginatedRequestParams, SamplingMessage, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value, json};
use testkit::free_port;

use crate::support::{
    http::{legacy_delete, legacy_get, legacy_post, legacy_session},
    redis_server::{RedisServer, skipped_on_shared_cluster, unique_prefix},
    replica::{Process, Replica},
    sse::EventReader,
    wait::{retry, wait_until, within},
};

/// A handler whose tools use what only the session's own worker can do: ask the client
/// (`ask`), wait for a cancellation (`wait`) and notify outside any request (`log`).
#[derive(Clone, Default)]
struct Probe {
    /// `wait` calls started here.
    started: Arc<AtomicUsize>,
    /// `wait` calls that saw their cancellation here.
    cancelled: Arc<AtomicUsize>,
}

impl ServerHandler for Probe {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let text = match request.name.as_ref() {
            "ask" => {
                let question = CreateMessageRequestParams::new(
                    vec![SamplingMessage::user_text("What is six times seven?")],
                    16,
                );
                let answer = context
                    .peer
                    .create_message(question)
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                let answer = serde_json::to_value(&answer.message.content).unwrap_or_default();
                format!("the client answered {answer}")
            }
            "wait" => {
                self.started.fetch_add(1, Ordering::SeqCst);
                context.ct.cancelled().await;
                self.cancelled.fetch_add(1, Ordering::SeqCst);
                return Err(McpError::internal_error("cancelled", None));
            }
            "log" => {
                let note = LoggingMessageNotificationParam::new(
                    LoggingLevel::Info,
                    json!("hello from the call"),
                );
                context
                    .peer
                    .notify_logging_message(note)
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                "logged".to_owned()
            }
            other => return Err(McpError::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let schema = Arc::new(serde_json::Map::from_iter([(
            "type".to_owned(),
            json!("object"),
        )]));
        let tools = ["ask", "wait", "log"]
            .into_iter()
            .map(|name| Tool::new(name, name, schema.clone()))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
    }
}

/// Two replicas serving `probes[0]` and `probes[1]` on one Redis under `prefix`.
async fn probe_replicas(
    redis: &RedisServer,
    prefix: &str,
    probes: &[Probe; 2],
) -> (Replica, Replica) {
    let start =
        |probe: Probe| Replica::with_handler(redis.url(), prefix, &[], move || probe.clone());
    (
        start(probes[0].clone()).await,
        start(probes[1].clone()).await,
    )
}

fn tool_call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {}}})
}

fn ping(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

/// Reads `events` until a message matching `wanted` arrives; panics if the stream ends
/// or the message does not come within the tests' wait.
async fn message(events: &mut EventReader, wanted: impl Fn(&Value) -> bool) -> Value {
    within("the message arrives", async {
        loop {
            let event = events
                .next()
                .await
                .expect("the stream ends with the message");
            if let Some(data) = event.data
                && wanted(&data)
            {
                return data;
            }
        }
    })
    .await
}

/// Requests forwarded by `replica` with `outcome`.
async fn forwards(replica: &Replica, outcome: &str) -> f64 {
    let label = format!("outcome=\"{outcome}\"");
    replica
        .metric(&["session_forwards", &label])
        .await
        .unwrap_or(0.0)
}

async fn local_sessions(replica: &Replica) -> f64 {
    replica
        .metric(&["local_sessions"])
        .await
        .expect("the local_sessions gauge")
}

#[tokio::test]
async fn a_sampling_response_posted_to_another_replica_reaches_the_tool() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-sampling");
    let (a, b) = probe_replicas(&redis, &prefix, &Default::default()).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;

    let call = legacy_post(&http, &a.url(), &session, &tool_call(7, "ask"))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), StatusCode::OK);
    let mut events = EventReader::new(call);
    let question = message(&mut events, |m| m["method"] == "sampling/createMessage").await;
    let answer = json!({"jsonrpc": "2.0", "id": question["id"], "result": {
        "model": "test", "role": "assistant",
        "content": {"type": "text", "text": "forty-two"}}});
    let accepted = legacy_post(&http, &b.url(), &session, &answer)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let result = message(&mut events, |m| m["id"] == 7).await;
    let text = result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("forty-two"), "{result}");
    assert_eq!(forwards(&b, "forwarded").await, 1.0);
}

#[tokio::test]
async fn a_cancellation_sent_to_another_replica_stops_the_call_where_it_runs() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-cancel");
    let probes = [Probe::default(), Probe::default()];
    let (a, b) = probe_replicas(&redis, &prefix, &probes).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;

    let call = legacy_post(&http, &a.url(), &session, &tool_call(8, "wait"))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), StatusCode::OK);
    wait_until("the call runs on A", async || {
        probes[0].started.load(Ordering::SeqCst) == 1
    })
    .await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 8, "reason": "changed my mind"}});
    let accepted = legacy_post(&http, &b.url(), &session, &cancel)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    wait_until("the call on A sees its cancellation", async || {
        probes[0].cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(probes[1].started.load(Ordering::SeqCst), 0);
    drop(call);
}

#[tokio::test]
async fn a_notification_of_a_call_on_one_replica_reaches_the_get_stream_opened_on_another() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-notify");
    let (a, b) = probe_replicas(&redis, &prefix, &Default::default()).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;

    let stream = legacy_get(&http, &b.url(), &session).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let call = legacy_post(&http, &a.url(), &session, &tool_call(9, "log"))
        .send()
        .await
        .unwrap();
    let mut reply = EventReader::new(call);
    let result = message(&mut reply, |m| m["id"] == 9).await;
    assert_eq!(result["result"]["content"][0]["text"], "logged", "{result}");

    let mut events = EventReader::new(stream);
    let note = message(&mut events, |m| m["method"] == "notifications/message").await;
    assert_eq!(note["params"]["data"], "hello from the call");
}

#[tokio::test]
async fn a_delete_on_another_replica_ends_the_session_everywhere() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-delete");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;
    assert_eq!(local_sessions(&a).await, 1.0);

    let deleted = legacy_delete(&http, &b.url(), &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    for url in [a.url(), b.url()] {
        let gone = legacy_post(&http, &url, &session, &ping(1))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "{url}");
        let again = legacy_delete(&http, &url, &session).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_FOUND, "{url}");
    }
    assert_eq!(local_sessions(&a).await, 0.0);
    assert_eq!(local_sessions(&b).await, 0.0);
}

#[tokio::test]
async fn a_delete_evicts_a_stale_copy_on_another_replica_through_the_bus() {
    if skipped_on_shared_cluster("a_delete_evicts_a_stale_copy_on_another_replica_through_the_bus")
    {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-evict");
    // Leases long enough that no sweep runs within the test's wait.
    let long = [("STATEFUL_MCP__SESSION__LEASE_SECS", "60")];
    let a = Replica::start(redis.url(), &prefix, &long).await;
    let b = Replica::start(redis.url(), &prefix, &long).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;

    // A's lease lapses (as after a long pause), so B takes the session over while A
    // still runs its copy.
    let key = format!("{prefix}:{{{session}}}:session");
    let _: () = redis::cmd("HDEL")
        .arg(&key)
        .arg("node")
        .arg("node_url")
        .arg("lease")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let served = legacy_post(&http, &b.url(), &session, &ping(2))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(local_sessions(&a).await, 1.0);
    assert_eq!(local_sessions(&b).await, 1.0);

    let deleted = legacy_delete(&http, &b.url(), &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    wait_until("A closes its copy", async || {
        local_sessions(&a).await == 0.0
    })
    .await;
    assert_eq!(local_sessions(&b).await, 0.0);
}

#[tokio::test]
async fn the_worker_of_a_session_gone_from_redis_is_closed_within_a_sweep() {
    if skipped_on_shared_cluster("the_worker_of_a_session_gone_from_redis_is_closed_within_a_sweep")
    {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-sweep");
    let short = [("STATEFUL_MCP__SESSION__LEASE_SECS", "1")];
    let a = Replica::start(redis.url(), &prefix, &short).await;
    let session = legacy_session(&a.url()).await;
    assert_eq!(local_sessions(&a).await, 1.0);

    // As if it expired: the record is gone, no request comes.
    let key = format!("{prefix}:{{{session}}}:session");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    wait_until("the worker is closed", async || {
        local_sessions(&a).await == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_delete_while_redis_is_down_is_503_and_the_session_lives_on() {
    if skipped_on_shared_cluster("a_delete_while_redis_is_down_is_503_and_the_session_lives_on") {
        return;
    }
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("legacy-delete-outage");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;

    redis.pause();
    let refused = legacy_delete(&http, &a.url(), &session)
        .send()
        .await
        .unwrap();
    redis.resume();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let alive = legacy_post(&http, &a.url(), &session, &ping(3))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), StatusCode::OK);
}

/// Calls `counter` increment in `session` at `url`; the reply's text.
async fn increment(http: &reqwest::Client, url: &str, session: &str) -> Result<String, String> {
    let body = json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"operation": "increment"}}});
    let response = legacy_post(http, url, session, &body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let mut events = EventReader::new(response);
    let result = message(&mut events, |m| m["id"] == 10).await;
    Ok(result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// A new session at `url` whose counter is at 1.
async fn counted_session(http: &reqwest::Client, url: &str) -> String {
    let session = legacy_session(url).await;
    let text = increment(http, url, &session).await.unwrap();
    assert_eq!(text, "Counter increment: 1");
    session
}

#[tokio::test]
async fn when_the_holder_dies_the_next_request_on_another_replica_continues_the_session() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-killed");
    let short = [("STATEFUL_MCP__SESSION__LEASE_SECS", "1")];
    let binary = env!("CARGO_BIN_EXE_stateful-mcp");
    let mut a = Process::start(binary, redis.url(), &prefix, &short).await;
    let b = Replica::start(redis.url(), &prefix, &short).await;
    let http = reqwest::Client::new();
    let session = counted_session(&http, &a.url()).await;

    a.kill();
    // Until A's lease runs out B answers 503; then it takes the session over.
    let text = retry("B serves the session", async || {
        increment(&http, &b.url(), &session).await
    })
    .await;
    assert_eq!(text, "Counter increment: 2");
    assert_eq!(local_sessions(&b).await, 1.0, "B serves the session now");
}

/// A lease far longer than any wait of a test: a session that moves sooner moved because
/// its holder was found dead, not because the lease ran out.
const LONG_LEASE: (&str, &str) = ("STATEFUL_MCP__SESSION__LEASE_SECS", "60");

#[tokio::test]
async fn a_dead_holders_sessions_move_within_seconds_not_when_its_lease_runs_out() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-dead-holder");
    let binary = env!("CARGO_BIN_EXE_stateful-mcp");
    let mut a = Process::start(binary, redis.url(), &prefix, &[LONG_LEASE]).await;
    let b = Replica::start(redis.url(), &prefix, &[LONG_LEASE]).await;
    let http = reqwest::Client::new();
    let session = counted_session(&http, &a.url()).await;

    a.kill();
    let killed = Instant::now();
    // B answers 503 while A's liveness mark lasts, then takes the session from A.
    let mut attempts = 0;
    let text = retry("B takes the dead holder's session over", async || {
        attempts += 1;
        increment(&http, &b.url(), &session).await
    })
    .await;
    let window = killed.elapsed();
    println!("dead holder: first call served {window:?} after the kill, at attempt {attempts}");
    assert_eq!(
        text, "Counter increment: 2",
        "the session's state is intact"
    );
    assert!(
        window < Duration::from_secs(30),
        "moved only as its lease ran out"
    );
    assert_eq!(local_sessions(&b).await, 1.0, "B serves the session now");
    assert_eq!(forwards(&b, "taken_over").await, 1.0);
}

#[tokio::test]
async fn a_live_holder_that_cannot_be_connected_to_keeps_its_sessions() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-unreachable-holder");
    // A advertises an address nobody listens on: forwards to it are refused, yet it
    // lives and renews its liveness mark.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let advertise = ("STATEFUL_MCP__SERVER__ADVERTISE_URL", nowhere.as_str());
    let a = Replica::start(redis.url(), &prefix, &[LONG_LEASE, advertise]).await;
    let b = Replica::start(redis.url(), &prefix, &[LONG_LEASE]).await;
    let http = reqwest::Client::new();
    let session = counted_session(&http, &a.url()).await;

    // For longer than a liveness mark lasts unless renewed.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let refused = increment(&http, &b.url(), &session).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("503")),
            "{refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(forwards(&b, "taken_over").await, 0.0);
    assert_eq!(local_sessions(&b).await, 0.0);
    assert_eq!(
        increment(&http, &a.url(), &session).await.unwrap(),
        "Counter increment: 2",
        "A still serves the session"
    );
}

#[tokio::test]
async fn a_frozen_holder_keeps_its_sessions_and_answers_once_it_resumes() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-frozen-holder");
    let binary = env!("CARGO_BIN_EXE_stateful-mcp");
    let a = Process::start(binary, redis.url(), &prefix, &[LONG_LEASE]).await;
    // B waits for A's answer longer than A stays frozen (the forward's own bound and
    // the request's deadline, which bounds the forward too).
    let patient = [
        ("STATEFUL_MCP__SERVER__FORWARD_TIMEOUT_MS", "30000"),
        ("STATEFUL_MCP__SERVER__REQUEST_DEADLINE_MS", "30000"),
    ];
    let b = Replica::start(redis.url(), &prefix, &[LONG_LEASE, patient[0], patient[1]]).await;
    let http = reqwest::Client::new();
    let session = counted_session(&http, &a.url()).await;

    a.signal(libc::SIGSTOP);
    let call = tokio::spawn({
        let (http, url, session) = (http.clone(), b.url(), session.clone());
        async move { increment(&http, &url, &session).await }
    });
    // Frozen for longer than its liveness mark lasts: the mark lapses, but the forward
    // connected (the kernel accepts for a frozen process), so B waits for A's answer.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!call.is_finished(), "answered while the holder was frozen");
    a.signal(libc::SIGCONT);
    let text = within("the resumed holder answers", call).await.unwrap();
    assert_eq!(text.unwrap(), "Counter increment: 2");
    assert_eq!(forwards(&b, "taken_over").await, 0.0);
    assert_eq!(local_sessions(&b).await, 0.0, "A still serves the session");
}

#[tokio::test]
async fn a_draining_replica_hands_its_sessions_over_at_once() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-handover");
    // A lease that did not end with the drain would stall the session for a minute.
    let long = [("STATEFUL_MCP__SESSION__LEASE_SECS", "60")];
    let mut a = Replica::start(redis.url(), &prefix, &long).await;
    let b = Replica::start(redis.url(), &prefix, &long).await;
    let http = reqwest::Client::new();
    let session = counted_session(&http, &a.url()).await;

    a.stop().await;
    assert_eq!(
        increment(&http, &b.url(), &session).await.unwrap(),
        "Counter increment: 2"
    );
    assert_eq!(forwards(&b, "unreachable").await, 0.0);
}

#[tokio::test]
async fn concurrent_first_requests_on_the_new_holder_share_one_restore() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-restore-race");
    let mut a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..24 {
        sessions.push(counted_session(&http, &a.url()).await);
    }
    // A hands its sessions over; B restores each at its first requests: a GET stream,
    // and a tool call a little later (the restore takes a few milliseconds).
    a.stop().await;
    let url = b.url();
    for (n, session) in sessions.iter().enumerate() {
        let later = std::time::Duration::from_micros(250 * (n as u64 % 12));
        let (stream, call) = tokio::join!(legacy_get(&http, &url, session).send(), async {
            tokio::time::sleep(later).await;
            increment(&http, &url, session).await
        },);
        assert_eq!(stream.unwrap().status(), StatusCode::OK, "the GET stream");
        assert_eq!(call.unwrap(), "Counter increment: 2", "the call");
    }
}

#[tokio::test]
async fn a_draining_replica_ends_the_streams_it_relays() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-relay-drain");
    // Only the drain's own end may stop B within the test's wait.
    let patient = [("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", "300")];
    let a = Replica::start(redis.url(), &prefix, &patient).await;
    let mut b = Replica::start(redis.url(), &prefix, &patient).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;
    // A's GET stream, relayed by B: A would keep it open as long as the session lives.
    let stream = legacy_get(&http, &b.url(), &session).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);

    b.stop().await;
    let mut events = EventReader::new(stream);
    within("B's drain ended the relayed stream", async {
        while events.next().await.is_some() {}
    })
    .await;
    let alive = legacy_post(&http, &a.url(), &session, &ping(4))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), StatusCode::OK, "the session lives on at A");
}

#[tokio::test]
async fn a_drain_does_not_wait_for_a_call_whose_client_has_gone() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("legacy-orphan");
    // Only the drain's own end may stop this replica within the test's wait.
    let patient = [("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", "300")];
    let mut a = Replica::start(redis.url(), &prefix, &patient).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;
    // The client keeps its GET stream open, as clients do: it ends with the drain.
    let stream = legacy_get(&http, &a.url(), &session).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);

    // A sieve that takes far longer than the test's wait, its client gone mid-call: a
    // 2025-era call keeps running for a resumption that never comes.
    let body = json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
        "params": {"name": "prime_count", "arguments": {"limit": 2_000_000_000u64}}});
    let call = legacy_post(&http, &a.url(), &session, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), StatusCode::OK);
    wait_until("the sieve runs", async || {
        a.metric(&["cpu_jobs_running"]).await == Some(1.0)
    })
    .await;
    drop(call);
    a.stop().await;
    let mut events = EventReader::new(stream);
    within("the drain ended the GET stream", async {
        while events.next().await.is_some() {}
    })
    .await;
}
