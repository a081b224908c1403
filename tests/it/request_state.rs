//! MRTR `requestState` across replicas: sealed with the `[mrtr]` key ring, a state one
//! replica sealed opens on another; a tampered state, or one sealed with a key the
//! replica does not hold, is refused; a Redis replica without keys does not start.

use serde_json::{Value, json};
use stateful_mcp::{
    config::{Backend, Settings},
    state::AppState,
};

use crate::support::{
    http::mrtr_call,
    redis_server::{RedisServer, unique_prefix},
    replica::{CONFORMANCE_BINARY, Process},
};

const TOOL: &str = "test_input_required_result_request_state";

fn confirmed(state: &str) -> Value {
    json!({
        "inputResponses": {"confirm": {"action": "accept", "content": {"ok": true}}},
        "requestState": state,
    })
}

#[tokio::test]
async fn a_state_sealed_on_one_replica_opens_on_another_and_only_there() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("mrtr-replicas");
    let a = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    let b = Process::start(CONFORMANCE_BINARY, redis.url(), &prefix, &[]).await;
    // Same store, another key ring: what a replica missed in a rotation looks like.
    let stranger = Process::start(
        CONFORMANCE_BINARY,
        redis.url(),
        &prefix,
        &[(
            "STATEFUL_MCP__MRTR__KEYS",
            "other:b3RoZXIta2V5LW9mLWFub3RoZXItZGVwbG95bWVudC0wMTIzNDU=",
        )],
    )
    .await;

    let first = mrtr_call(&a.url(), TOOL, json!({})).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].as_str().unwrap().to_owned();

    let unknown_key = mrtr_call(&stranger.url(), TOOL, confirmed(&state)).await;
    assert_eq!(unknown_key["error"]["code"], -32602, "{unknown_key}");
    let message = unknown_key["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("key"), "{message}");

    // One character changed in the middle (the payload), then at the end (the tag).
    for position in [state.len() / 2, state.len() - 1] {
        let mut tampered = state.clone().into_bytes();
        tampered[position] = if tampered[position] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let tampered = String::from_utf8(tampered).unwrap();
        let refused = mrtr_call(&b.url(), TOOL, confirmed(&tampered)).await;
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
    }

    let done = mrtr_call(&b.url(), TOOL, confirmed(&state)).await;
    assert_eq!(
        done["result"]["content"][0]["text"], "Confirmed: state-ok",
        "{done}"
    );
}

#[tokio::test]
async fn a_redis_replica_without_request_state_keys_does_not_start() {
    let redis = RedisServer::shared_or_start().await;
    let env = [
        ("STATEFUL_MCP__STORE__BACKEND", "redis"),
        ("STATEFUL_MCP__REDIS__URL", redis.url()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let err = Settings::load_with_env(None, env).unwrap_err().to_string();
    assert!(
        err.contains("mrtr.keys") && err.contains("store.backend = redis"),
        "{err}"
    );
    // Settings changed after loading (a program embedding the library) are held to the
    // same rule when the replica is built.
    let mut settings = Settings::load_with_env(None, Vec::new()).unwrap();
    settings.store.backend = Backend::Redis;
    settings.redis.url = redis.url().to_owned();
    let err = AppState::build(settings).err().unwrap().to_string();
    assert!(err.contains("mrtr.keys"), "{err}");
}
