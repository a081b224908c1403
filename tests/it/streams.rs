//! Response streams: a 2025-era stream interrupted on one replica resumes on another with
//! `Last-Event-ID` and gets its final response, but only for its own session, also
//! long after a delivered one would be gone, and a delivered one is kept for seconds; a 2026-07-28 stream that the client drops cancels
//! its handler.

use serde_json::json;

use crate::support::{
    http::{legacy_get, legacy_post, legacy_session, prime_count_2026_with_progress},
    redis_server::{RedisServer, skipped_on_shared_cluster, unique_prefix},
    replica::Replica,
    sse::{Event, EventReader},
    wait::wait_until,
};

/// A 2025-11-25 GET that resumes `session`'s stream after `last_event_id`.
async fn resume(url: &str, session: &str, last_event_id: &str) -> reqwest::Response {
    legacy_get(&reqwest::Client::new(), url, session)
        .header("Last-Event-ID", last_event_id)
        .send()
        .await
        .unwrap()
}

/// Posts `call` in `session` and reads its stream's priming event: the stream, and the
/// priming event's id (what a client resumes after).
async fn start_call(url: &str, session: &str, call: &serde_json::Value) -> (EventReader, String) {
    let response = legacy_post(&reqwest::Client::new(), url, session, call)
        .send()
        .await
        .unwrap();
    let mut events = EventReader::new(response);
    let primed = events
        .next()
        .await
        .and_then(|e| e.id)
        .expect("the priming event has an id");
    (events, primed)
}

fn is_progress(event: &Event) -> bool {
    event
        .data
        .as_ref()
        .is_some_and(|d| d["method"] == "notifications/progress")
}

#[tokio::test]
async fn a_stream_interrupted_on_one_replica_resumes_on_another() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("resume");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let session = legacy_session(&a.url()).await;

    let limit = 60_000_000u64;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "prime_count", "arguments": {"limit": limit},
        "_meta": {"progressToken": "p1"}}});
    let response = legacy_post(&reqwest::Client::new(), &a.url(), &session, &call)
        .send()
        .await
        .unwrap();
    let mut events = EventReader::new(response);
    let mut last_id = None;
    // Read up to the first progress notification, then drop the connection.
    while let Some(event) = events.next().await {
        if event.id.is_some() {
            last_id = event.id.clone();
        }
        if is_progress(&event) {
            break;
        }
        assert!(
            event
                .data
                .as_ref()
                .is_none_or(|d| d.get("result").is_none()),
            "{event:?}"
        );
    }
    drop(events);
    let last_id = last_id.expect("events carry ids");

    let response = resume(&b.url(), &session, &last_id).await;
    assert!(response.status().is_success(), "{}", response.status());
    let mut events = EventReader::new(response);
    let mut progress_after_resume = 0;
    let result = loop {
        let event = events
            .next()
            .await
            .expect("the resumed stream carries the response");
        if is_progress(&event) {
            progress_after_resume += 1;
        }
        if let Some(result) = event.data.as_ref().and_then(|d| d.get("result")) {
            assert_eq!(event.data.as_ref().unwrap()["id"], 7);
            break result.clone();
        }
    };
    assert_eq!(result["structuredContent"]["count"], 3_562_115, "{result}");
    assert!(
        progress_after_resume >= 1,
        "the resumed stream kept following the handler"
    );
}

#[tokio::test]
async fn another_sessions_event_id_replays_nothing() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("resume-owner");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let session_a = legacy_session(&a.url()).await;
    let session_b = legacy_session(&a.url()).await;
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "counter", "arguments": {"operation": "increment"}}});
    let (mut events, primed) = start_call(&a.url(), &session_a, &call).await;
    while events.next().await.is_some() {}

    // Session A resumes after its priming event on any replica and gets its response.
    let mut own = EventReader::new(resume(&b.url(), &session_a, &primed).await);
    let replayed = own.next().await.and_then(|e| e.data).expect("the response");
    assert_eq!(replayed["id"], 3, "{replayed}");
    assert!(own.next().await.is_none());

    // Session B, with the same id, gets what an unknown id gets: an empty 200 stream.
    for replica in [&a, &b] {
        let response = resume(&replica.url(), &session_b, &primed).await;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let mut foreign = EventReader::new(response);
        let event = foreign.next().await;
        assert!(event.is_none(), "session B replayed {event:?}");
    }
}

#[tokio::test]
async fn delivered_calls_leave_their_streams_for_seconds_only() {
    if skipped_on_shared_cluster("delivered_calls_leave_their_streams_for_seconds_only") {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("retention");
    let replica = Replica::start(
        redis.url(),
        &prefix,
        &[
            ("STATEFUL_MCP__EVENTS__COMPLETED_TTL_SECS", "30"),
            ("STATEFUL_MCP__EVENTS__DELIVERED_TTL_SECS", "2"),
        ],
    )
    .await;
    let session = legacy_session(&replica.url()).await;
    let http = reqwest::Client::new();
    for i in 0..10 {
        let call = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
            "name": "counter", "arguments": {"operation": "increment"}}});
        let body = legacy_post(&http, &replica.url(), &session, &call)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("Counter increment"), "{body}");
    }
    let streams = redis.keys(&format!("{prefix}:*events*")).await;
    assert!(streams.len() >= 10, "{streams:?}");
    for key in streams {
        let ttl = redis.pttl(&key).await;
        assert!(0 < ttl && ttl <= 2_000, "{key}: {ttl}");
    }
    // What the calls left is gone within the window, however many there were.
    wait_until("the delivered streams expire", || async {
        redis.keys(&format!("{prefix}:*events*")).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_stream_whose_client_left_is_kept_for_resumption_past_the_delivered_window() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("resume-late");
    let env = [
        ("STATEFUL_MCP__EVENTS__COMPLETED_TTL_SECS", "30"),
        ("STATEFUL_MCP__EVENTS__DELIVERED_TTL_SECS", "1"),
    ];
    let a = Replica::start(redis.url(), &prefix, &env).await;
    let b = Replica::start(redis.url(), &prefix, &env).await;
    let session = legacy_session(&a.url()).await;
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "prime_count", "arguments": {"limit": 5_000_000u64},
        "_meta": {"progressToken": "p9"}}});
    let (events, primed) = start_call(&a.url(), &session, &call).await;
    drop(events);
    // Long past the delivered window, the response (stored while or after the client
    // was away) is still there to resume, on another replica.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let mut resumed = EventReader::new(resume(&b.url(), &session, &primed).await);
    let result = loop {
        let event = resumed
            .next()
            .await
            .expect("the resumed stream carries the response");
        if let Some(result) = event.data.as_ref().and_then(|d| d.get("result")) {
            break result.clone();
        }
    };
    assert_eq!(result["structuredContent"]["count"], 348_513, "{result}");
}

async fn cancelled_calls(replica: &Replica, tool: &str) -> u64 {
    let text = reqwest::get(replica.endpoint("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("stateful_mcp_tool_calls_total{")
                && l.contains(&format!("tool=\"{tool}\""))
                && l.contains("outcome=\"cancelled\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_dropped_2026_stream_cancels_its_handler() {
    let redis = RedisServer::shared_or_start().await;
    // The Redis backend attaches the event store to 2025-era sessions; the 2026-07-28
    // path must not use it.
    let replica = Replica::start(redis.url(), &unique_prefix("cancel"), &[]).await;
    let response = prime_count_2026_with_progress(
        &reqwest::Client::new(),
        &replica.url(),
        2_000_000_000,
        "c1",
    )
    .send()
    .await
    .unwrap();
    assert!(response.status().is_success());
    let mut events = EventReader::new(response);
    loop {
        let event = events.next().await.expect("progress before the end");
        if is_progress(&event) {
            break;
        }
    }
    assert_eq!(cancelled_calls(&replica, "prime_count").await, 0);
    drop(events);
    wait_until(
        "the handler is cancelled with its dropped stream",
        async || cancelled_calls(&replica, "prime_count").await > 0,
    )
    .await;
}
