//! Traces: replicas run as the binary (each process its own subscriber) with
//! `RUST_LOG=warn`, as `Process` starts them, export their spans over OTLP/HTTP to the
//! test's collector: a quiet log keeps whole traces. A 2025-era request forwarded to
//! the replica holding its session is one trace across both; a request's `_meta` trace
//! context wins over its headers'; no session id is ever exported; a task started on
//! one replica and polled on another shows in its start's trace; the spans still
//! buffered at a graceful stop are exported before the process exits.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    collector::{Collector, Span},
    http::{
        legacy_post, legacy_session, meta_2026, post_json, read_reply, tools_call_2026_with_meta,
    },
    redis_server::{RedisServer, unique_prefix},
    replica::Process,
    wait::{retry, within},
};

const BINARY: &str = env!("CARGO_BIN_EXE_stateful-mcp");

/// A client's trace context, in the header.
const HEADER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Another, in `_meta`.
const META_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// A replica `id` exporting to `collector` every 100 ms, logging warnings only
/// (`extra` overriding).
async fn traced_replica(
    redis: &RedisServer,
    prefix: &str,
    collector: &Collector,
    id: &str,
    extra: &[(&str, &str)],
) -> Process {
    let mut env = vec![
        (
            "STATEFUL_MCP__TELEMETRY__OTLP_ENDPOINT",
            collector.endpoint(),
        ),
        ("STATEFUL_MCP__SERVER__REPLICA_ID", id),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        // A quiet log: the traces stay whole (`Process` sets it too).
        ("RUST_LOG", "warn"),
    ];
    env.extend_from_slice(extra);
    Process::start(BINARY, redis.url(), prefix, &env).await
}

fn increment(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"operation": "increment"},
            "_meta": {"traceparent": traceparent(META_TRACE), "tracestate": "k=v"}}})
}

/// The spans of `trace` once `wanted` says they are all there.
async fn spans_of(
    collector: &Collector,
    trace: &str,
    wanted: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    retry("the trace's spans at the collector", async || {
        let spans = collector.trace(trace);
        if wanted(&spans) {
            Ok(spans)
        } else {
            let seen: Vec<_> = collector
                .spans()
                .into_iter()
                .map(|s| {
                    (
                        s.resource("service.instance.id").map(str::to_owned),
                        s.name,
                        s.trace_id,
                    )
                })
                .collect();
            Err(format!("{spans:#?}; all spans: {seen:?}"))
        }
    })
    .await
}

fn named<'a>(spans: &'a [Span], name: &str, replica: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.name == name && s.resource("service.instance.id") == Some(replica))
}

#[tokio::test]
async fn a_forwarded_request_is_one_trace_across_both_replicas() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("otel-forward");
    let collector = Collector::start().await;
    let a = traced_replica(&redis, &prefix, &collector, "replica-a", &[]).await;
    let b = traced_replica(&redis, &prefix, &collector, "replica-b", &[]).await;
    let http = reqwest::Client::new();
    let session = legacy_session(&a.url()).await;

    // Sent to B, which holds nothing: forwarded to A. `_meta` names the parent, the
    // header another: `_meta` wins.
    let response = legacy_post(&http, &b.url(), &session, &increment(7))
        .header("traceparent", traceparent(HEADER_TRACE))
        .send()
        .await
        .unwrap();
    let (status, msg) = read_reply(response).await;
    assert_eq!(status, 200, "{msg}");

    let spans = spans_of(&collector, META_TRACE, |spans| {
        named(spans, "POST /mcp", "replica-a").is_some()
            && named(spans, "tools/call counter", "replica-a").is_some()
            && named(spans, "forward to holder", "replica-b").is_some()
            && named(spans, "redis session.counter", "replica-a").is_some()
    })
    .await;
    // The counter's script, under the call, in the slot of the session's keys.
    let script = named(&spans, "redis session.counter", "replica-a").unwrap();
    assert_eq!(script.kind, 3, "a client span");
    assert_eq!(script.attribute("db.system.name"), Some("redis"));
    assert_eq!(
        script.attribute("db.stored_procedure.name"),
        Some("session.counter")
    );
    let slot = stateful_mcp::redis_pool::key_slot(format!("{{{session}}}").as_bytes());
    assert_eq!(
        script.attribute("db.redis.hash_slot"),
        Some(slot.to_string().as_str())
    );
    let forward = named(&spans, "forward to holder", "replica-b").unwrap();
    assert_eq!(forward.kind, 3, "a client span");
    let holder = named(&spans, "POST /mcp", "replica-a").unwrap();
    assert_eq!(holder.kind, 2, "a server span");
    assert_eq!(
        holder.parent_span_id, forward.span_id,
        "the holder's request is a child of the hop"
    );
    let entry = named(&spans, "POST /mcp", "replica-b").expect("B's request span");
    assert_eq!(
        entry.parent_span_id, "00f067aa0ba902b7",
        "the client's span"
    );
    let call = named(&spans, "tools/call counter", "replica-a").unwrap();
    assert_eq!(call.attribute("mcp.method.name"), Some("tools/call"));
    assert_eq!(call.attribute("gen_ai.tool.name"), Some("counter"));
    assert_eq!(call.attribute("jsonrpc.request.id"), Some("7"));
    let fingerprint = stateful_mcp::ids::fingerprint(&session);
    assert_eq!(call.attribute("mcp.session.id"), Some(fingerprint.as_str()));
    assert_eq!(holder.resource("service.name"), Some("stateful-mcp"));
    assert_eq!(
        holder.resource("service.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        collector.trace(HEADER_TRACE).is_empty(),
        "the header's trace lost to _meta's"
    );

    // No exported attribute names the session (nor does any span of any trace).
    for span in collector.spans() {
        for (key, value) in span.attributes.iter().chain(&span.resource) {
            assert!(
                !value.contains(&session),
                "{key} names the session: {span:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_spans_buffered_at_a_graceful_stop_are_exported_before_exit() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("otel-flush");
    let collector = Collector::start().await;
    // A batch the exporter would send only after a minute.
    let a = traced_replica(
        &redis,
        &prefix,
        &collector,
        "replica-a",
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    )
    .await;
    let session = legacy_session(&a.url()).await;
    let response = legacy_post(&reqwest::Client::new(), &a.url(), &session, &increment(1))
        .send()
        .await
        .unwrap();
    assert_eq!(read_reply(response).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        collector.trace(META_TRACE).is_empty(),
        "exported before the stop"
    );
    a.signal(libc::SIGTERM);
    within("the stopped replica's spans", async {
        while named(
            &collector.trace(META_TRACE),
            "tools/call counter",
            "replica-a",
        )
        .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The `_meta` of a 2026-07-28 request from a client of the tasks extension.
fn tasks_meta() -> Value {
    let mut meta = meta_2026();
    meta["io.modelcontextprotocol/clientCapabilities"] =
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    meta
}

#[tokio::test]
async fn a_task_polled_on_another_replica_shows_in_its_start_s_trace() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("otel-task");
    let collector = Collector::start().await;
    let a = traced_replica(&redis, &prefix, &collector, "replica-a", &[]).await;
    let b = traced_replica(&redis, &prefix, &collector, "replica-b", &[]).await;
    let http = reqwest::Client::new();

    let mut meta = tasks_meta();
    meta["traceparent"] = json!(traceparent(META_TRACE));
    let args = json!({"limit": 1000});
    let response = tools_call_2026_with_meta(&http, &a.url(), "prime_count", args, meta)
        .send()
        .await
        .unwrap();
    let (_, reply) = read_reply(response).await;
    assert_eq!(reply["result"]["resultType"], "task", "{reply}");
    let id = reply["result"]["taskId"].as_str().unwrap().to_owned();

    // Polled on B, in a request of no trace of its own.
    let body = json!({"jsonrpc": "2.0", "id": 8, "method": "tasks/get",
        "params": {"taskId": id, "_meta": tasks_meta()}});
    let response = post_json(&http, &b.url(), &body)
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tasks/get")
        .header("Mcp-Name", &id)
        .send()
        .await
        .unwrap();
    let (_, reply) = read_reply(response).await;
    assert!(reply["result"].is_object(), "{reply}");

    let spans = spans_of(&collector, META_TRACE, |spans| {
        named(spans, "task prime_count", "replica-a").is_some()
            && named(spans, "tasks/get", "replica-b").is_some()
    })
    .await;
    let run = named(&spans, "task prime_count", "replica-a").unwrap();
    let call = named(&spans, "tools/call prime_count", "replica-a").expect("the call");
    assert_eq!(
        run.parent_span_id, call.span_id,
        "the run is under its call"
    );
    let answer = named(&spans, "tasks/get", "replica-b").unwrap();
    assert_eq!(
        answer.parent_span_id, run.span_id,
        "B's answer is under the run"
    );
    for span in collector.spans() {
        for (key, value) in &span.attributes {
            assert!(!value.contains(&id), "{key} names the task: {span:?}");
        }
    }
}
