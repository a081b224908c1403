//! Property tests of the request path: arbitrary bodies, tool arguments and ids never
//! panic the server, always get an answer of the documented kinds, and never reach
//! another principal's state. Driven through the router itself (no sockets), on the
//! memory backend.

use axum::{Router, body::Body};
use http::{Request, StatusCode};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};
use stateful_mcp::{config::Settings, mcp::McpState, state::AppState};
use tower::ServiceExt;

use crate::support::http::meta_2026;

/// A memory-backend router with `extra` settings, on a runtime of its own.
fn router(extra: &[(&str, &str)]) -> (tokio::runtime::Runtime, Router, AppState) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = Settings::load_with_env(None, env).unwrap();
    // Building the router starts background tasks: inside the runtime.
    let (state, router) = rt.block_on(async {
        let state = AppState::build(settings).unwrap();
        let router = stateful_mcp::http::router(&McpState::build(&state).unwrap());
        (state, router)
    });
    (rt, router, state)
}

/// POSTs `body` to `/mcp` with `headers`; the status and the body's text.
async fn post(router: &Router, body: Vec<u8>, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::post("/mcp")
        .header("Host", "127.0.0.1")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The JSON-RPC message of a reply body (JSON, or the last `data:` line of SSE).
fn message(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str(d.trim()).ok())
    })
}

/// JSON values of bounded size and depth, with strings that look like what MCP carries.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z_/]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn arbitrary_bodies_get_an_answer_and_never_a_server_error() {
    let (rt, router, _state) = router(&[]);
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), "[a-z/]{0,20}", json_value()).prop_map(|(id, method, params)| {
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
                .to_string()
                .into_bytes()
        }),
    ];
    runner(256)
        .run(&(bodies, any::<bool>()), |(body, stateless)| {
            let headers: &[(&str, &str)] = if stateless {
                &[("MCP-Protocol-Version", "2026-07-28")]
            } else {
                &[]
            };
            // The decoder's own invariants (the fuzz target's oracle), then the whole path.
            stateful_mcp::mcp::check_decoder(&body, stateless.then_some("2026-07-28"));
            let (status, text) = rt.block_on(post(&router, body, headers));
            prop_assert!(!status.is_server_error(), "{status}: {text}");
            if status.is_client_error() {
                // A JSON-RPC error from the edge, or rmcp's own one-line explanation.
                let explained = match message(&text) {
                    Some(m) => m["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    None => text.len() > 10,
                };
                prop_assert!(explained, "{status} says why: {text}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_tool_arguments_get_a_result_or_an_error_that_says_why() {
    let (rt, router, _state) = router(&[]);
    let tools = prop_oneof![
        Just("counter"),
        Just("history"),
        Just("session_info"),
        Just("session_delete"),
        Just("session_create"),
        Just("prime_count"),
        Just("cache_stats"),
    ];
    let args = prop::collection::btree_map(
        prop_oneof![
            Just("operation".to_owned()),
            Just("step".to_owned()),
            Just("session_id".to_owned()),
            Just("command".to_owned()),
            Just("limit".to_owned()),
            "[a-z]{1,8}",
        ],
        json_value(),
        0..5,
    );
    runner(256)
        .run(&(tools, args), |(tool, args)| {
            let mut args: serde_json::Map<String, Value> = args.into_iter().collect();
            // Keep the sieve small: this is about decoding, not about counting primes.
            if let Some(limit) = args.get_mut("limit")
                && limit.as_u64().is_some_and(|l| l > 100_000)
            {
                *limit = json!(100_000);
            }
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": tool, "arguments": args, "_meta": meta_2026()}});
            let (status, text) = rt.block_on(post(
                &router,
                body.to_string().into_bytes(),
                &[
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                    ("Mcp-Name", tool),
                ],
            ));
            prop_assert!(!status.is_server_error(), "{status}: {text}");
            let msg = message(&text);
            prop_assert!(msg.is_some(), "{status}: {text}");
            let msg = msg.unwrap();
            let ok = msg["result"].is_object()
                || msg["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty());
            prop_assert!(ok, "{msg}");
            if msg["result"]["isError"] == true {
                prop_assert!(
                    msg["result"]["content"][0]["text"]
                        .as_str()
                        .is_some_and(|t| t.len() > 10),
                    "an isError result says what was wrong: {msg}"
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn no_id_a_caller_sends_reaches_another_principals_session() {
    let (rt, _router, state) = router(&[]);
    let alice = rt.block_on(async {
        state
            .sessions
            .create(stateful_mcp::sessions::NewSession {
                principal: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap()
    });
    let ids = prop_oneof![
        Just(alice.id.clone()),
        "[0-9a-f]{40}",
        any::<String>(),
        Just(format!("{}}}", &alice.id[..39])),
        Just(alice.id.to_uppercase()),
        Just(format!(" {}", alice.id)),
    ];
    let principals = prop_oneof![Just("bob".to_owned()), "[a-z{}:*]{1,12}"];
    runner(256)
        .run(&(principals, ids), |(principal, id)| {
            prop_assume!(principal != "alice");
            let got = rt.block_on(state.sessions.get(&principal, &id));
            prop_assert!(got.is_err(), "{principal} read {id}");
            let counted = rt.block_on(state.sessions.counter(
                &principal,
                &id,
                stateful_mcp::sessions::CounterOp::Add(1),
            ));
            prop_assert!(counted.is_err(), "{principal} changed {id}");
            Ok(())
        })
        .unwrap();
    let after = rt.block_on(state.sessions.get("alice", &alice.id)).unwrap();
    assert!(after.data.is_empty(), "alice's session is untouched");
}
