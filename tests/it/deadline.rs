//! One deadline per request across its Redis steps (`server.request_deadline_ms`). Behind
//! a proxy that slows every chunk, Redis answers each command within its own timeout,
//! but later than a request's deadline, and a request of several commands would take one
//! such wait per step: a 2025-era `initialize` (the new session's writes, one script on
//! a single node), a 2025-era call forwarded to the replica holding its session (a touch
//! on each replica, then the tool's script and the stored response), a 2026-07-28
//! `session_create` (the tool's writes). Each is answered once its deadline has passed
//! with the store's "retry shortly" (503, or the tool's "outcome unknown" JSON-RPC
//! error), and each is served again once Redis is quick.
//!
//! The one timed assertion ([`BOUND`]) only tells an answer at the deadline from one
//! after every step.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};

use crate::support::{
    http::{call_2026, initialize_2025, legacy_post, legacy_session, post_json, read_reply},
    proxy::{Mode, Proxy},
    redis_server::{RedisServer, skipped_on_shared_cluster, unique_prefix},
    replica::Replica,
};

/// What the proxy holds each chunk for: a command's round trip takes twice this.
const DELAY: Duration = Duration::from_millis(500);

/// Each command's own timeout, above its slowed round trip: every command succeeds.
const COMMAND_TIMEOUT_MS: &str = "2500";

/// The requests' deadline: shorter than one slowed round trip, as a create on a single
/// node is one.
const DEADLINE_MS: &str = "800";

/// Later than an answer at the deadline, earlier than one after three slowed round
/// trips.
const BOUND: Duration = Duration::from_millis(2250);

/// The three requests, each sent to `url` (the holder of `session` or the other
/// replica) and answered as a Redis that keeps up or a slow one makes them.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A 2025-era `initialize` at the other replica.
    Initialize,
    /// A `counter` increment in the holder's 2025-era session, sent to the other
    /// replica.
    ForwardedCall,
    /// A 2026-07-28 `session_create` at the holder.
    SessionCreate,
}

/// The replicas and the session the steps use.
struct Stack {
    holder: Replica,
    other: Replica,
    session: String,
    http: Client,
}

impl Stack {
    /// Sends `step` and checks its answer: served (`slow` false), or refused with the
    /// store's "retry shortly" within [`BOUND`] (`slow`).
    async fn check(&self, step: Step, slow: bool) {
        let started = Instant::now();
        let outcome = self.send(step).await;
        let took = started.elapsed();
        eprintln!("{step:?} (slow Redis: {slow}): {outcome:?} after {took:?}");
        if slow {
            let refusal = outcome.expect_err(&format!("{step:?} under a slow Redis"));
            assert!(
                refusal.contains("deadline") || refusal.contains("outcome unknown"),
                "{step:?}: {refusal}"
            );
            assert!(took < BOUND, "{step:?} answered after {took:?}");
        } else if let Err(e) = outcome {
            panic!("{step:?} with Redis quick again: {e}");
        }
    }

    /// Sends `step`: what a served request answered, else why it was refused.
    async fn send(&self, step: Step) -> Result<Value, String> {
        match step {
            Step::Initialize => {
                let init = post_json(&self.http, &self.other.url(), &initialize_2025("deadline"));
                refused_or_reply(init.send().await.unwrap()).await
            }
            Step::ForwardedCall => {
                let increment = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "counter", "arguments": {"operation": "increment"}}});
                let call = legacy_post(&self.http, &self.other.url(), &self.session, &increment);
                let reply = refused_or_reply(call.send().await.unwrap()).await?;
                if reply["result"]["isError"] == true || reply.get("error").is_some() {
                    return Err(reply.to_string());
                }
                Ok(reply)
            }
            Step::SessionCreate => {
                call_2026(&self.http, &self.holder.url(), "session_create", json!({})).await
            }
        }
    }
}

/// A 503's body (with its `Retry-After` checked) as an error; any other answer's
/// JSON-RPC message.
async fn refused_or_reply(response: reqwest::Response) -> Result<Value, String> {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        return Err(response.text().await.unwrap_or_default());
    }
    let (status, reply) = read_reply(response).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    Ok(reply)
}

#[tokio::test]
async fn requests_of_several_redis_steps_answer_within_their_deadline_under_a_slow_redis() {
    if skipped_on_shared_cluster("deadline") {
        return;
    }
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.addr()).await;
    let prefix = unique_prefix("deadline");
    let settings = [
        (
            "STATEFUL_MCP__REDIS__COMMAND_TIMEOUT_MS",
            COMMAND_TIMEOUT_MS,
        ),
        ("STATEFUL_MCP__SERVER__REQUEST_DEADLINE_MS", DEADLINE_MS),
        // No upkeep or lease renewal shares the slowed connections with the steps.
        ("STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS", "3600"),
        ("STATEFUL_MCP__SESSION__LEASE_SECS", "3600"),
    ];
    let holder = Replica::start(&proxy.redis_url(), &prefix, &settings).await;
    let other = Replica::start(&proxy.redis_url(), &prefix, &settings).await;
    let session = legacy_session(&holder.url()).await;
    let stack = Stack {
        holder,
        other,
        session,
        http: Client::new(),
    };
    let steps = [Step::Initialize, Step::ForwardedCall, Step::SessionCreate];
    // Every script loaded and connections open before Redis slows down.
    for step in steps {
        stack.check(step, false).await;
    }

    proxy.set(Mode::Delay(DELAY));
    for step in steps {
        stack.check(step, true).await;
    }

    // Each refusal counted by the step that was waiting: the new session's writes and
    // the forward's route (touch, then forward) on the other replica, the tool's create
    // on the holder.
    for (replica, step) in [
        (&stack.other, "session_create"),
        (&stack.other, "route"),
        (&stack.holder, "tool"),
    ] {
        let label = format!("step=\"{step}\"");
        let expired = replica
            .metric(&["request_deadlines_expired_total", &label])
            .await;
        assert_eq!(expired, Some(1.0), "{step}");
    }

    proxy.set(Mode::Pass);
    for step in steps {
        stack.check(step, false).await;
    }
}
