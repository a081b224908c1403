//! Response streams: a 2025-era stream interrupted on one replica resumes on another with
//! `Last-Event-ID` and gets its final response; a 2026-07-28 stream that the client drops
//! cancels its handler.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{
    http::{legacy_post, legacy_session, prime_count_2026_with_progress},
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::wait_until,
};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Event {
    id: Option<String>,
    data: Option<Value>,
}

/// Reads SSE events from a response as they arrive.
struct EventReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl EventReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    data: None,
                };
                for line in raw.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        event.id = Some(id.trim().to_owned());
                    } else if let Some(data) = line.strip_prefix("data:") {
                        event.data = serde_json::from_str(data.trim()).ok();
                    }
                }
                if event.id.is_some() || event.data.is_some() {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.body.next())
                .await
                .expect("an event within 60 s")?
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
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

    let response = reqwest::Client::new()
        .get(b.url())
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", &session)
        .header("MCP-Protocol-Version", "2025-11-25")
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
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
