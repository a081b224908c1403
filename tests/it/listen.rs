//! 2026-07-28 `subscriptions/listen` across replicas: a change published on one replica
//! reaches the streams every replica holds, filtered by what each stream asked for, and
//! a replica holds at most `listen.max_streams` streams, refusing the next one before it
//! is acknowledged.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    http::{listen_2026, read_reply, tool_text, tools_call_2026},
    redis_server::{RedisServer, unique_prefix},
    replica::{CONFORMANCE_BINARY, Process},
    sse::{Event, EventReader},
    wait::{wait_until, within},
};

/// The JSON-RPC message of `event`.
fn data(event: Option<Event>) -> Value {
    event.and_then(|e| e.data).unwrap_or_default()
}

/// Opens a listen stream for `notifications` on `url` and reads its acknowledgement.
async fn listen(url: &str, id: u64, notifications: Value) -> EventReader {
    let response = listen_2026(url, id, notifications).await;
    assert!(response.status().is_success(), "{}", response.status());
    let mut events = EventReader::new(response);
    let ack = data(within("the acknowledgement", events.next()).await);
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    events
}

/// Calls the trigger fixture `tool` on `url`; its text.
async fn trigger(url: &str, tool: &str) -> String {
    let reply = tools_call_2026(&Client::new(), url, tool, json!({}))
        .send()
        .await
        .unwrap();
    tool_text(&read_reply(reply).await.1)
}

/// Waits until `replica` is ready, i.e. its bus has subscribed every topic.
async fn ready(replica: &Process) {
    let url = replica.endpoint("/readyz");
    wait_until("the replica is ready", async || {
        reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

#[tokio::test]
async fn a_change_published_on_one_replica_reaches_the_streams_of_another() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("listen");
    let a = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    let b = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    ready(&a).await;
    ready(&b).await;

    let mut tools_on_b = listen(&b.url(), 3, json!({"toolsListChanged": true})).await;
    let mut prompts_on_a = listen(&a.url(), 4, json!({"promptsListChanged": true})).await;

    // The prompt change goes to the prompt stream only: the tool stream's next event is
    // the tool change published after it.
    assert_eq!(
        trigger(&a.url(), "test_trigger_prompt_change").await,
        "Prompt list change published"
    );
    assert_eq!(
        trigger(&a.url(), "test_trigger_tool_change").await,
        "Tool list change published"
    );
    let change = data(within("the tool change on B", tools_on_b.next()).await);
    assert_eq!(
        change["method"], "notifications/tools/list_changed",
        "{change}"
    );
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 3,
        "{change}"
    );
    let change = data(within("the prompt change on A", prompts_on_a.next()).await);
    assert_eq!(
        change["method"], "notifications/prompts/list_changed",
        "{change}"
    );

    // Published on B, heard on B's own stream.
    trigger(&b.url(), "test_trigger_tool_change").await;
    let change = data(within("B's own tool change", tools_on_b.next()).await);
    assert_eq!(
        change["method"], "notifications/tools/list_changed",
        "{change}"
    );
}

#[tokio::test]
async fn a_replica_holds_at_most_max_streams_and_refuses_before_acknowledging() {
    let replica = Process::memory(
        CONFORMANCE_BINARY,
        &[("STATEFUL_MCP__LISTEN__MAX_STREAMS", "1")],
    )
    .await;
    let url = replica.url();
    let held = listen(&url, 1, json!({"toolsListChanged": true})).await;

    let refused = listen_2026(&url, 2, json!({"toolsListChanged": true})).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32603, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("subscriptions/listen")),
        "{body}"
    );

    assert_eq!(replica.metric(&["listen_refused"]).await, Some(1.0));
    assert_eq!(replica.metric(&["listen_streams"]).await, Some(1.0));

    // The held stream still works, and once it closes its place comes back.
    trigger(&url, "test_trigger_tool_change").await;
    let mut held = held;
    let change = data(within("the tool change", held.next()).await);
    assert_eq!(
        change["method"], "notifications/tools/list_changed",
        "{change}"
    );
    drop(held);
    wait_until("the closed stream's place comes back", async || {
        listen_2026(&url, 3, json!({"toolsListChanged": true}))
            .await
            .status()
            .is_success()
    })
    .await;
}
