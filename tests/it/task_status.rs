//! Task status notifications (`notifications/tasks`) across replicas: the statuses of a
//! task one replica runs reach its owner's listen streams on another replica, and no
//! other principal's, at each change (input required, working again, ended, cancelled,
//! failed by another replica's sweep once its replica died), and the 2025-era session
//! that started a task gets them too.

use reqwest::Client;
use serde_json::{Value, json};

use crate::{
    auth::{KeyDir, api_key_env, api_keys_file, as_refs},
    support::{
        http::{
            bearer_client, legacy_get, legacy_post, listen_2026_with, post_json, read_reply,
            tools_call_2026,
        },
        redis_server::{RedisServer, unique_prefix},
        replica::{CONFORMANCE_BINARY, Process, Replica},
        sse::{Event, EventReader},
        wait::{wait_until, within},
    },
    tasks::{ENDLESS, TASKS_EXTENSION, runner_and_sweeper, start, task_call},
};

/// The JSON-RPC message of `event`.
fn data(event: Option<Event>) -> Value {
    event.and_then(|e| e.data).unwrap_or_default()
}

/// Opens a listen stream of `http`'s principal on `url` and reads its acknowledgement.
async fn listen(http: &Client, url: &str, id: u64) -> EventReader {
    let response = listen_2026_with(http, url, id, json!({"toolsListChanged": true})).await;
    assert!(response.status().is_success(), "{}", response.status());
    let mut events = EventReader::new(response);
    let ack = data(within("the acknowledgement", events.next()).await);
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    events
}

/// Publishes a tool list change from `url` as `http`'s principal.
async fn tool_change(http: &Client, url: &str) {
    let reply = tools_call_2026(http, url, "test_trigger_tool_change", json!({}))
        .send()
        .await
        .unwrap();
    assert!(read_reply(reply).await.1["result"].is_object());
}

/// The next message of `events` with a method, skipping priming events.
async fn next_message(events: &mut EventReader, what: &str) -> Value {
    loop {
        let event = within(what, events.next()).await;
        let event = event.unwrap_or_else(|| panic!("the stream ended before {what}"));
        if let Some(message) = event.data.filter(|m| m.get("method").is_some()) {
            return message;
        }
    }
}

/// Reads task statuses from `events` until a terminal one; the statuses in order.
async fn statuses_until_done(events: &mut EventReader, id: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = next_message(events, "a task status").await;
        assert_eq!(message["method"], "notifications/tasks", "{message}");
        assert_eq!(message["params"]["taskId"], id, "{message}");
        let status = message["params"]["status"].as_str().unwrap_or_default();
        let done = matches!(status, "completed" | "failed" | "cancelled");
        seen.push(message["params"].clone());
        if done {
            return seen;
        }
    }
}

/// Waits until the replica at `readyz` is ready, i.e. its bus has subscribed every topic
/// (a status published before would not reach it).
async fn ready(readyz: String) {
    let url = readyz;
    wait_until("the replica is ready", async || {
        reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

/// Two replicas of the shipped binary on `redis` sharing a new key prefix named after
/// `test`, both ready.
async fn two_replicas(redis: &RedisServer, test: &str) -> (Replica, Replica) {
    let prefix = unique_prefix(test);
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    ready(a.endpoint("/readyz")).await;
    ready(b.endpoint("/readyz")).await;
    (a, b)
}

/// Two replicas of the conformance binary (which serves the task tools) with `env`,
/// as [`two_replicas`].
async fn two_conformance_replicas(
    redis: &RedisServer,
    test: &str,
    env: &[(&str, &str)],
) -> (Process, Process) {
    let prefix = unique_prefix(test);
    let a = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, env).await;
    let b = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, env).await;
    ready(a.endpoint("/readyz")).await;
    ready(b.endpoint("/readyz")).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_one_replica_is_told_to_its_owners_streams_on_another_and_no_one_elses() {
    let dir = KeyDir::new("task-status");
    let env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    let redis = RedisServer::shared_or_start().await;
    let (a, b) = two_conformance_replicas(&redis, "task-status", &as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));

    let mut alices = listen(&alice, &b.url(), 1).await;
    let mut bobs = listen(&bob, &b.url(), 2).await;
    // Both streams are registered once they heard a change published after them.
    tool_change(&alice, &a.url()).await;
    for events in [&mut alices, &mut bobs] {
        let change = next_message(events, "the first tool change").await;
        assert_eq!(change["method"], "notifications/tools/list_changed");
    }

    let id = start(&alice, &a.url(), "prime_count", json!({"limit": 1000})).await;
    let seen = statuses_until_done(&mut alices, &id).await;
    let statuses: Vec<&str> = seen.iter().filter_map(|t| t["status"].as_str()).collect();
    assert_eq!(statuses, ["working", "completed"], "{seen:?}");
    let done = seen.last().unwrap();
    assert_eq!(done["result"]["structuredContent"]["count"], 168, "{done}");
    assert_eq!(
        done["_meta"]["io.modelcontextprotocol/subscriptionId"], 1,
        "{done}"
    );

    // Bob's stream heard none of it: its next message is the change published after.
    tool_change(&bob, &a.url()).await;
    let next = next_message(&mut bobs, "bob's next message").await;
    assert_eq!(next["method"], "notifications/tools/list_changed", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2025_session_gets_the_statuses_of_the_task_it_started() {
    let redis = RedisServer::shared_or_start().await;
    let (a, b) = two_replicas(&redis, "task-status-2025").await;
    let http = Client::new();

    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"extensions": {TASKS_EXTENSION: {}}},
        "clientInfo": {"name": "task-status", "version": "1"}}});
    let response = post_json(&http, &a.url(), &initialize)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.text().await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = legacy_post(&http, &a.url(), &session, &initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // The session's stream and its call both go through B, which does not hold it.
    let stream = legacy_get(&http, &b.url(), &session).send().await.unwrap();
    assert!(stream.status().is_success(), "{}", stream.status());
    let mut events = EventReader::new(stream);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "prime_count", "arguments": {"limit": 1000}}});
    let reply = legacy_post(&http, &b.url(), &session, &call)
        .send()
        .await
        .unwrap();
    let reply = read_reply(reply).await.1;
    assert_eq!(reply["result"]["resultType"], "task", "{reply}");
    let id = reply["result"]["taskId"].as_str().unwrap().to_owned();

    let seen = statuses_until_done(&mut events, &id).await;
    let statuses: Vec<&str> = seen.iter().filter_map(|t| t["status"].as_str()).collect();
    assert_eq!(statuses, ["working", "completed"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_told_waiting_for_input_working_again_and_cancelled() {
    let redis = RedisServer::shared_or_start().await;
    let (a, b) = two_conformance_replicas(&redis, "task-status-changes", &[]).await;
    let http = Client::new();
    let mut events = listen(&http, &b.url(), 1).await;
    tool_change(&http, &a.url()).await;
    let change = next_message(&mut events, "the first tool change").await;
    assert_eq!(change["method"], "notifications/tools/list_changed");

    // Answered on B while A runs it.
    let id = start(&http, &a.url(), "confirm_delete", json!({"filename": "x"})).await;
    let working = next_message(&mut events, "working").await;
    assert_eq!(working["params"]["status"], "working", "{working}");
    let waiting = next_message(&mut events, "input_required").await;
    assert_eq!(waiting["params"]["status"], "input_required", "{waiting}");
    let requests = waiting["params"]["inputRequests"].as_object().unwrap();
    let key = requests.keys().next().unwrap().clone();
    let answer = json!({key: {"action": "accept", "content": {"confirm": true}}});
    task_call(
        &http,
        &b.url(),
        "tasks/update",
        &id,
        json!({"inputResponses": answer}),
    )
    .await;
    let seen = statuses_until_done(&mut events, &id).await;
    let statuses: Vec<&str> = seen.iter().filter_map(|t| t["status"].as_str()).collect();
    assert_eq!(statuses, ["working", "completed"], "{seen:?}");

    // Cancelled on B while A runs it: A tells the end.
    let id = start(&http, &a.url(), "prime_count", json!({"limit": ENDLESS})).await;
    let working = next_message(&mut events, "working").await;
    assert_eq!(working["params"]["status"], "working", "{working}");
    task_call(&http, &b.url(), "tasks/cancel", &id, json!({})).await;
    let seen = statuses_until_done(&mut events, &id).await;
    let statuses: Vec<&str> = seen.iter().filter_map(|t| t["status"].as_str()).collect();
    assert_eq!(statuses, ["cancelled"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipping_handlers_listen_streams_carry_task_statuses() {
    let redis = RedisServer::shared_or_start().await;
    let (a, b) = two_replicas(&redis, "task-status-shipping").await;
    let http = Client::new();
    let response = listen_2026_with(&http, &b.url(), 5, json!({})).await;
    assert!(response.status().is_success(), "{}", response.status());
    let mut events = EventReader::new(response);
    let ack = next_message(&mut events, "the acknowledgement").await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    wait_until("the stream is registered", async || {
        b.metric(&["stateful_mcp_listen_streams{"]).await == Some(1.0)
    })
    .await;

    let id = start(&http, &a.url(), "prime_count", json!({"limit": 1000})).await;
    let seen = statuses_until_done(&mut events, &id).await;
    let statuses: Vec<&str> = seen.iter().filter_map(|t| t["status"].as_str()).collect();
    assert_eq!(statuses, ["working", "completed"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_task_is_told_failed_by_the_replica_that_sweeps_it() {
    let redis = RedisServer::shared_or_start().await;
    let (mut a, b) = runner_and_sweeper(redis.url(), &unique_prefix("task-status-dead")).await;
    ready(a.endpoint("/readyz")).await;
    ready(b.endpoint("/readyz")).await;
    let http = Client::new();
    let response = listen_2026_with(&http, &b.url(), 9, json!({})).await;
    let mut events = EventReader::new(response);
    let ack = next_message(&mut events, "the acknowledgement").await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    wait_until("the stream is registered", async || {
        b.metric(&["stateful_mcp_listen_streams{"]).await == Some(1.0)
    })
    .await;

    let id = start(&http, &a.url(), "prime_count", json!({"limit": ENDLESS})).await;
    let working = next_message(&mut events, "working").await;
    assert_eq!(working["params"]["status"], "working", "{working}");
    a.kill();
    let seen = statuses_until_done(&mut events, &id).await;
    let failed = seen.last().unwrap();
    assert_eq!(failed["status"], "failed", "{seen:?}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stopped")),
        "{failed}"
    );
}
