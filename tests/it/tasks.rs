//! Background tasks: one behavioural suite for the task records over memory and Redis,
//! then the tasks extension on real replicas: a task started on one replica is read,
//! answered and cancelled on another, a dead replica's task fails once its lease ran
//! out, a draining replica hands back what it runs, and a full queue is refused.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use reqwest::Client;
use serde_json::{Value, json};
use stateful_mcp::{
    keys::{Keys, TASK_BUCKETS},
    tasks::{
        Answers, Held, MemoryTasks, NewTask, RedisTasks, Settled, TaskStatus, TaskStore, TaskTimes,
    },
};

use crate::{
    auth::{KeyDir, api_key_env, api_keys_file, as_refs},
    support::{
        http::{bearer_client, meta_2026, post_json, read_reply, tools_call_2026_with_meta},
        redis_server::{RedisServer, RedisServerExt, skipped_on_shared_cluster, unique_prefix},
        replica::{CONFORMANCE_BINARY, Process, Replica},
        wait::{retry, wait_until},
    },
};
use testkit::redis_cluster::key_slot;

const TIMES: TaskTimes = TaskTimes {
    ttl_ms: 60_000,
    poll_ms: 100,
    lease_ms: 60_000,
};

/// A sieve that runs for minutes: a task that is still working whenever a test looks.
pub(crate) const ENDLESS: u64 = 2_000_000_000;

fn new_task(owner: &str) -> NewTask {
    NewTask {
        id: stateful_mcp::ids::mint(),
        owner: owner.to_owned(),
        replica: "r1".to_owned(),
        tool: "prime_count".to_owned(),
        trace: None,
    }
}

fn answers(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[tokio::test]
async fn task_records_behave_the_same_on_memory_and_redis() {
    let redis = RedisServer::shared_or_start().await;
    let keys = Keys::new(&unique_prefix("tasks"));
    for (name, store) in [
        ("memory", TaskStore::Memory(MemoryTasks::new())),
        (
            "redis",
            TaskStore::Redis(RedisTasks::new(redis.pool(), keys)),
        ),
    ] {
        // Created working, seen by its owner only.
        let task = store.create(&new_task("alice"), TIMES).await.unwrap();
        let id = task.id.as_str();
        assert_eq!(task.status, TaskStatus::Working, "{name}");
        let read = store.get("alice", id).await.unwrap().unwrap();
        assert_eq!(
            (read.status, read.ttl_ms, read.poll_ms),
            (TaskStatus::Working, 60_000, 100)
        );
        assert_eq!(store.get("mallory", id).await.unwrap(), None, "{name}");
        assert_eq!(store.cancel("mallory", id).await.unwrap(), None, "{name}");

        // Progress only from the replica that runs it.
        assert_eq!(
            store.renew(id, "r2", Some("x"), TIMES).await.unwrap(),
            Held::Lost
        );
        let held = store
            .renew(id, "r1", Some("half way"), TIMES)
            .await
            .unwrap();
        assert_eq!(held, Held::Running(TaskStatus::Working), "{name}");
        let read = store.get("alice", id).await.unwrap().unwrap();
        assert_eq!(read.message.as_deref(), Some("half way"), "{name}");

        // Two questions; answered one at a time, unknown keys ignored.
        let asked = answers(&[("a", json!({"method": "m"})), ("b", json!({"method": "m"}))]);
        store.ask(id, "r1", &asked).await.unwrap();
        let read = store.get("alice", id).await.unwrap().unwrap();
        assert_eq!(read.status, TaskStatus::InputRequired, "{name}");
        assert_eq!(read.input_requests, asked, "{name}");
        let partial = answers(&[("a", json!({"ok": 1})), ("zzz", json!(0))]);
        let changed = store.update("alice", id, &partial).await.unwrap().unwrap();
        assert_eq!(
            (changed.status, changed.replica.as_str()),
            (TaskStatus::InputRequired, "r1")
        );
        let read = store.get("alice", id).await.unwrap().unwrap();
        assert_eq!(
            read.input_requests.keys().collect::<Vec<_>>(),
            ["b"],
            "{name}"
        );
        assert_eq!(
            store.take(id, "r1").await.unwrap(),
            Answers::Waiting,
            "{name}"
        );
        let rest = answers(&[("b", json!({"ok": 2}))]);
        let changed = store.update("alice", id, &rest).await.unwrap().unwrap();
        assert_eq!(changed.status, TaskStatus::Working, "{name}");
        let expected = answers(&[("a", json!({"ok": 1})), ("b", json!({"ok": 2}))]);
        assert_eq!(
            store.take(id, "r1").await.unwrap(),
            Answers::Ready(expected)
        );

        // Cancelled at once; the running replica's late end changes nothing.
        let changed = store.cancel("alice", id).await.unwrap().unwrap();
        assert_eq!(changed.status, TaskStatus::Cancelled, "{name}");
        let late = Settled::Completed(json!({"content": []}));
        assert!(!store.finish(id, "r1", &late).await.unwrap(), "{name}");
        assert_eq!(store.take(id, "r1").await.unwrap(), Answers::Lost, "{name}");
        let again = store.cancel("alice", id).await.unwrap().unwrap();
        assert_eq!(again.status, TaskStatus::Cancelled, "{name}");

        // Completed with its result, once.
        let done = store.create(&new_task("alice"), TIMES).await.unwrap();
        let result = json!({"content": [{"type": "text", "text": "42"}]});
        assert!(
            store
                .finish(&done.id, "r1", &Settled::Completed(result.clone()))
                .await
                .unwrap()
        );
        let read = store.get("alice", &done.id).await.unwrap().unwrap();
        assert_eq!(
            (read.status, read.result),
            (TaskStatus::Completed, Some(result))
        );
        let cancelled = store.cancel("alice", &done.id).await.unwrap().unwrap();
        assert_eq!(
            cancelled.status,
            TaskStatus::Completed,
            "{name}: cancel is a no-op"
        );

        // A lease that runs out fails the task at the next sweep.
        let short = TaskTimes {
            lease_ms: 1,
            ..TIMES
        };
        let lost = store.create(&new_task("alice"), short).await.unwrap();
        wait_until("the sweep fails the task whose lease ran out", async || {
            store.sweep().await.unwrap() > 0
        })
        .await;
        let read = store.get("alice", &lost.id).await.unwrap().unwrap();
        assert_eq!(read.status, TaskStatus::Failed, "{name}");
        assert_eq!(read.error.unwrap()["code"], -32603, "{name}");
        assert_eq!(
            store.renew(&lost.id, "r1", None, TIMES).await.unwrap(),
            Held::Lost
        );
    }
}

/// The lease index is one sorted set per bucket, in the hash slot of its tasks' records
/// (so on Redis Cluster no task script spans slots), every key has a TTL, and a sweep asks
/// each bucket once, whatever the number of tasks: one command per bucket plus one script
/// per task whose lease ran out.
#[tokio::test]
async fn the_sweep_asks_each_lease_bucket_once_and_fails_the_expired_tasks_of_all() {
    if skipped_on_shared_cluster(
        "the_sweep_asks_each_lease_bucket_once_and_fails_the_expired_tasks_of_all",
    ) {
        return;
    }
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("task-buckets");
    let keys = Keys::new(&prefix);
    let store = TaskStore::Redis(RedisTasks::new(redis.pool(), keys.clone()));
    let short = TaskTimes {
        lease_ms: 1,
        ..TIMES
    };
    let mut ids = Vec::new();
    let mut buckets = HashSet::new();
    while buckets.len() < TASK_BUCKETS {
        let task = store.create(&new_task("alice"), short).await.unwrap();
        buckets.insert(keys.task_leases_of(&task.id));
        ids.push(task.id);
    }
    for id in &ids {
        assert_eq!(
            key_slot(keys.task(id).as_bytes()),
            key_slot(keys.task_leases_of(id).as_bytes()),
            "a task and its lease bucket share a slot"
        );
    }
    let stored = redis.keys(&format!("{prefix}:*")).await;
    assert_eq!(stored.len(), ids.len() + TASK_BUCKETS, "{stored:?}");
    for key in &stored {
        assert!(redis.pttl(key).await > 0, "{key} has a TTL");
    }

    // Every lease (1 ms) has run out.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (failed, commands) = redis.client_commands(store.sweep()).await;
    assert_eq!(failed.unwrap(), ids.len() as u64);
    let count = |name: &str| commands.iter().filter(|l| l.contains(name)).count();
    assert_eq!(count("\"ZRANGEBYSCORE\""), TASK_BUCKETS, "{commands:#?}");
    // The expiry script's first run is refused (NOSCRIPT), loaded and sent again.
    let scripts = count("\"EVALSHA\"") - count("\"SCRIPT\" \"LOAD\"");
    assert_eq!(scripts, ids.len(), "{commands:#?}");
    for id in &ids {
        let read = store.get("alice", id).await.unwrap().unwrap();
        assert_eq!(read.status, TaskStatus::Failed);
    }

    // The failed tasks left their buckets: the next sweep asks the buckets only.
    let (failed, commands) = redis.client_commands(store.sweep()).await;
    assert_eq!(failed.unwrap(), 0);
    assert_eq!(commands.len(), TASK_BUCKETS, "{commands:#?}");
}

/// The tasks extension's identifier, as clients declare it.
pub(crate) const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// The `_meta` of a 2026-07-28 request from a client of the tasks extension.
fn tasks_meta() -> Value {
    let mut meta = meta_2026();
    meta["io.modelcontextprotocol/clientCapabilities"] =
        json!({"extensions": {TASKS_EXTENSION: {}}});
    meta
}

/// Calls `tool` as a client of the tasks extension; the JSON-RPC reply.
async fn call_tool(http: &Client, url: &str, tool: &str, args: Value) -> Value {
    let response = tools_call_2026_with_meta(http, url, tool, args, tasks_meta())
        .send()
        .await
        .unwrap();
    read_reply(response).await.1
}

/// Starts `tool` as a task; its id.
pub(crate) async fn start(http: &Client, url: &str, tool: &str, args: Value) -> String {
    let reply = call_tool(http, url, tool, args).await;
    assert_eq!(reply["result"]["resultType"], "task", "{reply}");
    reply["result"]["taskId"].as_str().unwrap().to_owned()
}

/// A `tasks/*` request for task `id` with `params`; the JSON-RPC reply.
pub(crate) async fn task_call(
    http: &Client,
    url: &str,
    method: &str,
    id: &str,
    params: Value,
) -> Value {
    let mut params = params;
    params["taskId"] = json!(id);
    params["_meta"] = tasks_meta();
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let response = post_json(http, url, &body)
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", method)
        .header("Mcp-Name", id)
        .send()
        .await
        .unwrap();
    read_reply(response).await.1
}

/// `tasks/get`: the task as `url` sees it.
async fn get(http: &Client, url: &str, id: &str) -> Value {
    let reply = task_call(http, url, "tasks/get", id, json!({})).await;
    assert!(reply["result"].is_object(), "{reply}");
    reply["result"].clone()
}

/// Waits until `url` reports task `id` in `status`; the task then.
async fn wait_for_status(http: &Client, url: &str, id: &str, status: &str) -> Value {
    retry(&format!("the task is {status}"), async || {
        let task = get(http, url, id).await;
        if task["status"] == status {
            Ok(task)
        } else {
            Err(format!("status {}", task["status"]))
        }
    })
    .await
}

/// The replica's count of running CPU jobs.
async fn cpu_running(replica: &Replica) -> Option<f64> {
    replica.metric(&["stateful_mcp_cpu_jobs_running{"]).await
}

/// The replica's count of tasks running or queued.
async fn tasks_admitted(replica: &Replica) -> Option<f64> {
    replica.metric(&["stateful_mcp_tasks_admitted{"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_on_one_replica_is_read_on_another() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("tasks-read");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let http = Client::new();

    let id = start(&http, &a.url(), "prime_count", json!({"limit": 10_000_000})).await;
    // Durable before the answer: the other replica knows it at once.
    let seen = get(&http, &b.url(), &id).await;
    assert_eq!(seen["taskId"], id.as_str());
    let done = wait_for_status(&http, &b.url(), &id, "completed").await;
    assert_eq!(
        done["result"]["structuredContent"]["count"], 664_579,
        "{done}"
    );
    assert!(done["error"].is_null(), "{done}");

    let unknown = task_call(&http, &b.url(), "tasks/get", &"0".repeat(40), json!({})).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_replica_stops_the_work_on_the_other() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("tasks-cancel");
    let a = Replica::start(redis.url(), &prefix, &[]).await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let http = Client::new();

    let id = start(&http, &a.url(), "prime_count", json!({"limit": ENDLESS})).await;
    retry("B shows A's progress", async || {
        let task = get(&http, &b.url(), &id).await;
        match task["statusMessage"].as_str() {
            Some(m) if m.starts_with("sieved") => Ok(()),
            _ => Err(task.to_string()),
        }
    })
    .await;
    assert_eq!(cpu_running(&a).await, Some(1.0));

    let ack = task_call(&http, &b.url(), "tasks/cancel", &id, json!({})).await;
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
    assert_eq!(get(&http, &a.url(), &id).await["status"], "cancelled");
    wait_until("A's sieve stops", async || {
        cpu_running(&a).await == Some(0.0)
    })
    .await;
    assert_eq!(get(&http, &b.url(), &id).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_answered_on_one_replica_resumes_the_task_on_the_other() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("tasks-input");
    let a = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    let b = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    let http = Client::new();

    let id = start(
        &http,
        &a.url(),
        "confirm_delete",
        json!({"filename": "x.txt"}),
    )
    .await;
    let waiting = wait_for_status(&http, &b.url(), &id, "input_required").await;
    let key = waiting["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        waiting["inputRequests"][&key]["method"],
        "elicitation/create"
    );
    let answer = json!({key: {"action": "accept", "content": {"confirm": true}}});
    let ack = task_call(
        &http,
        &b.url(),
        "tasks/update",
        &id,
        json!({"inputResponses": answer}),
    )
    .await;
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
    let done = wait_for_status(&http, &b.url(), &id, "completed").await;
    assert_eq!(
        done["result"]["content"][0]["text"], "Deleted x.txt",
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_input_gives_up_after_the_input_timeout() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("tasks-input-timeout");
    let a = Process::start(
        CONFORMANCE_BINARY,
        redis.url(),
        &prefix,
        &[("STATEFUL_MCP__TASKS__INPUT_TIMEOUT_SECS", "1")],
    )
    .await;
    let http = Client::new();

    let id = start(
        &http,
        &a.url(),
        "confirm_delete",
        json!({"filename": "x.txt"}),
    )
    .await;
    wait_for_status(&http, &a.url(), &id, "input_required").await;
    // Nobody answers: the task fails and says why, and its place is free again.
    let failed = wait_for_status(&http, &a.url(), &id, "failed").await;
    assert!(
        failed.to_string().contains("tasks.input_timeout_secs"),
        "{failed}"
    );
}

/// A replica run as the binary (so a test can kill it) whose tasks' leases last 1 s,
/// and an in-process one that sweeps for expired leases every 100 ms, on `redis_url`
/// under `prefix`.
pub(crate) async fn runner_and_sweeper(redis_url: &str, prefix: &str) -> (Process, Replica) {
    let runner = Process::start(
        env!("CARGO_BIN_EXE_stateful-mcp"),
        redis_url,
        prefix,
        &[
            ("STATEFUL_MCP__TASKS__LEASE_MS", "1000"),
            ("STATEFUL_MCP__TASKS__RENEW_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let sweeper = Replica::start(
        redis_url,
        prefix,
        &[("STATEFUL_MCP__TASKS__SWEEP_INTERVAL_MS", "100")],
    )
    .await;
    (runner, sweeper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_task_fails_once_its_lease_ran_out() {
    let redis = RedisServer::shared_or_start().await;
    let (mut a, b) = runner_and_sweeper(redis.url(), &unique_prefix("tasks-dead")).await;
    let http = Client::new();
    let a_url = a.url();
    retry("A starts", async || {
        http.get(a.endpoint("/readyz"))
            .send()
            .await?
            .error_for_status()
    })
    .await;

    let id = start(&http, &a_url, "prime_count", json!({"limit": ENDLESS})).await;
    wait_for_status(&http, &b.url(), &id, "working").await;
    a.kill();

    let failed = wait_for_status(&http, &b.url(), &id, "failed").await;
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("stopped"), "{failed}");
    assert!(failed["result"].is_null(), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_replica_hands_back_the_tasks_it_could_not_finish() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("tasks-drain");
    let mut a = Replica::start(
        redis.url(),
        &prefix,
        &[("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", "1")],
    )
    .await;
    let b = Replica::start(redis.url(), &prefix, &[]).await;
    let http = Client::new();

    let id = start(&http, &a.url(), "prime_count", json!({"limit": ENDLESS})).await;
    wait_for_status(&http, &b.url(), &id, "working").await;
    a.stop().await;

    let failed = get(&http, &b.url(), &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("shut down"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_with_an_explicit_error_until_a_place_frees() {
    let replica = Replica::memory(&[
        ("STATEFUL_MCP__TASKS__WORKERS", "1"),
        ("STATEFUL_MCP__TASKS__QUEUE", "1"),
    ])
    .await;
    let (http, url) = (Client::new(), replica.url());
    let running = start(&http, &url, "prime_count", json!({"limit": ENDLESS})).await;
    let queued = start(&http, &url, "prime_count", json!({"limit": ENDLESS})).await;
    assert_eq!(get(&http, &url, &queued).await["status"], "working");
    assert_eq!(tasks_admitted(&replica).await, Some(2.0));

    let refused = call_tool(&http, &url, "prime_count", json!({"limit": ENDLESS})).await;
    assert_eq!(refused["error"]["code"], -32603, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("queue is full"), "{refused}");

    task_call(&http, &url, "tasks/cancel", &queued, json!({})).await;
    let admitted = retry("a freed place takes a new task", async || {
        let reply = call_tool(&http, &url, "prime_count", json!({"limit": ENDLESS})).await;
        match reply["result"]["taskId"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => Err(reply.to_string()),
        }
    })
    .await;
    for id in [running, admitted] {
        task_call(&http, &url, "tasks/cancel", &id, json!({})).await;
    }
    wait_until("the sieves stop and their places free", async || {
        cpu_running(&replica).await == Some(0.0) && tasks_admitted(&replica).await == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn a_required_task_tool_without_the_extension_is_refused_with_32021() {
    let replica = Process::memory(CONFORMANCE_BINARY, &[]).await;
    let http = Client::new();
    let response =
        tools_call_2026_with_meta(&http, &replica.url(), "failing_job", json!({}), meta_2026())
            .send()
            .await
            .unwrap();
    let (_, reply) = read_reply(response).await;
    assert_eq!(reply["error"]["code"], -32021, "{reply}");
    let required = &reply["error"]["data"]["requiredCapabilities"]["extensions"];
    assert!(
        required["io.modelcontextprotocol/tasks"].is_object(),
        "{reply}"
    );
    // An optional one runs in the request instead.
    let response = tools_call_2026_with_meta(
        &http,
        &replica.url(),
        "slow_compute",
        json!({"seconds": 0, "label": "inline"}),
        meta_2026(),
    )
    .send()
    .await
    .unwrap();
    let (_, reply) = read_reply(response).await;
    assert_eq!(reply["result"]["resultType"], "complete", "{reply}");
    assert!(reply["result"]["taskId"].is_null(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_gets_the_answer_an_unknown_task_gets() {
    let dir = KeyDir::new("tasks-auth");
    let env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("tasks-auth");
    let a = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let b = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));

    let id = start(&alice, &a.url(), "prime_count", json!({"limit": ENDLESS})).await;
    for (method, params) in [
        ("tasks/get", json!({})),
        ("tasks/update", json!({"inputResponses": {}})),
        ("tasks/cancel", json!({})),
    ] {
        let reply = task_call(&bob, &b.url(), method, &id, params).await;
        assert_eq!(reply["error"]["code"], -32602, "{method}: {reply}");
    }
    assert_eq!(get(&alice, &b.url(), &id).await["status"], "working");
    task_call(&alice, &b.url(), "tasks/cancel", &id, json!({})).await;
    assert_eq!(get(&alice, &a.url(), &id).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_fail_with_a_clear_error_while_redis_is_down() {
    if skipped_on_shared_cluster("tasks_fail_with_a_clear_error_while_redis_is_down") {
        return;
    }
    let mut redis = RedisServer::start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("tasks-outage"), &[]).await;
    let http = Client::new();
    let id = start(&http, &replica.url(), "prime_count", json!({"limit": 1000})).await;
    wait_for_status(&http, &replica.url(), &id, "completed").await;

    redis.kill();
    let reply = task_call(&http, &replica.url(), "tasks/get", &id, json!({})).await;
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("task store unavailable"), "{reply}");
    let reply = call_tool(&http, &replica.url(), "prime_count", json!({"limit": 1000})).await;
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("task store unavailable"), "{reply}");
    // Nothing was stored, so nothing runs or holds a place.
    assert_eq!(tasks_admitted(&replica).await, Some(0.0));
}
