//! The binary's command line: `check-config` validates the layered settings and exits,
//! serving nothing and contacting no Redis; `sessions count|show|end` reads and ends the
//! sessions replicas stored, naming sessions and principals by fingerprint only.

use std::process::{Command, Output};

use serde_json::json;
use stateful_mcp::ids::fingerprint;

use crate::{
    auth::{KeyDir, api_key_env, api_keys_file, as_refs},
    support::{
        http::{bearer_client, create_handle, legacy_post, legacy_session_with},
        redis_server::{RedisServer, unique_prefix},
        replica::{Replica, SERVER_BINARY},
    },
};

/// `stateful-mcp check-config` with only `env` (and no other `STATEFUL_MCP__*` variable)
/// and `args` after it.
fn check_config(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(SERVER_BINARY);
    for (key, _) in std::env::vars() {
        if key.starts_with("STATEFUL_MCP__") {
            command.env_remove(key);
        }
    }
    command
        .arg("check-config")
        .args(args)
        .envs(env.iter().copied());
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_config_accepts_the_defaults_and_a_redis_deployment_without_reaching_redis() {
    let output = check_config(&[], &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("configuration ok"),
        "{output:?}"
    );

    // Nothing listens on port 1: the check never connects.
    let output = check_config(
        &[
            ("STATEFUL_MCP__STORE__BACKEND", "redis"),
            ("STATEFUL_MCP__REDIS__URL", "redis://127.0.0.1:1"),
            ("STATEFUL_MCP__MRTR__KEYS", testkit::replica::TEST_MRTR_KEYS),
            testkit::replica::ALLOW_PUBLIC_KEYS,
            // A port already taken would not matter either: nothing is bound.
            ("STATEFUL_MCP__SERVER__BIND", "127.0.0.1:1"),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("store.backend = redis"),
        "{output:?}"
    );

    // The key ring from a file, as docker-compose.yml gives it to its replicas.
    let dir = testkit::temp_dir::TempDir::new("check-config", "keys-file");
    let file = dir.path().join("mrtr-keys");
    std::fs::write(
        &file,
        "stack:ZHJhd24tcGVyLXN0YWNrLWluLWEtcmVhbC1vbmUtMDEyMw==\n",
    )
    .unwrap();
    let output = check_config(
        &[
            ("STATEFUL_MCP__STORE__BACKEND", "redis"),
            ("STATEFUL_MCP__MRTR__KEYS_FILE", file.to_str().unwrap()),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn check_config_names_what_is_wrong_and_exits_2() {
    // Out of range: caught while loading.
    let output = check_config(&[("STATEFUL_MCP__REDIS__POOL_SIZE", "0")], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("redis.pool_size"), "{output:?}");

    // Across sections: the Redis backend needs the shared requestState keys.
    let output = check_config(&[("STATEFUL_MCP__STORE__BACKEND", "redis")], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("mrtr.keys"), "{output:?}");

    // A published example key: anyone could forge requestState with it.
    let compose_example = "compose-local:Y29tcG9zZS1sb2NhbC1leGFtcGxlLWtleS1jaGFuZ2UtbWU=";
    let redis = [
        ("STATEFUL_MCP__STORE__BACKEND", "redis"),
        ("STATEFUL_MCP__MRTR__KEYS", compose_example),
    ];
    let output = check_config(&redis, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let refusal = stderr(&output);
    assert!(
        refusal.contains("mrtr.keys")
            && refusal.contains("published")
            && refusal.contains("mrtr.allow_public_keys"),
        "{output:?}"
    );
    assert!(
        !refusal.contains("Y29tcG9z"),
        "the secret is not echoed: {output:?}"
    );
    let allowed = [redis[0], redis[1], testkit::replica::ALLOW_PUBLIC_KEYS];
    assert_eq!(check_config(&allowed, &[]).status.code(), Some(0));

    // Only wiring finds it: a file root that does not exist.
    let output = check_config(
        &[(
            "STATEFUL_MCP__RESOURCES__FILE_ROOT",
            "/nonexistent/stateful-mcp-check-config",
        )],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("resources.file_root"),
        "{output:?}"
    );

    // A `--config` file that is missing, and one that does not parse.
    let output = check_config(&[], &["--config", "/nonexistent/stateful-mcp.toml"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let dir = testkit::temp_dir::TempDir::new("check-config", "bad-file");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nbind = \"not an address\"\n").unwrap();
    let output = check_config(&[], &["--config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("bind"), "{output:?}");

    // A second command is a usage error, not a check.
    let output = check_config(&[], &["check-config"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("usage"), "{output:?}");
}

/// `stateful-mcp sessions <args>` over the Redis at `redis_url` under `prefix`, with `env`.
fn sessions(redis_url: &str, prefix: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(SERVER_BINARY);
    for (key, _) in std::env::vars() {
        if key.starts_with("STATEFUL_MCP__") {
            command.env_remove(key);
        }
    }
    command
        .arg("sessions")
        .args(args)
        .envs(testkit::replica::redis_env(redis_url, prefix, env));
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The count `count`'s output gives `label`.
fn counted(output: &str, label: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(label)).then(|| words.next()?.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_counts_shows_and_ends_sessions_by_fingerprint() {
    let dir = KeyDir::new("cli-sessions");
    let env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    let env = as_refs(&env);
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("cli-sessions");
    let replica = Replica::start(redis.url(), &prefix, &env).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));
    let ended = legacy_session_with(&alice, &replica.url()).await;
    legacy_session_with(&alice, &replica.url()).await;
    let handle = create_handle(&bob, &replica.url()).await;

    let output = sessions(redis.url(), &prefix, &env, &["count"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    let (a, b) = (
        format!("p:{}", fingerprint("alice")),
        format!("p:{}", fingerprint("bob")),
    );
    assert_eq!(counted(&text, &a), Some(2), "{text}");
    assert_eq!(counted(&text, &b), Some(1), "{text}");
    assert_eq!(counted(&text, "total"), Some(3), "{text}");
    assert!(!text.contains("alice") && !text.contains(&ended), "{text}");

    let fp = fingerprint(&ended);
    let output = sessions(redis.url(), &prefix, &env, &["show", &fp]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    for part in [fp.as_str(), a.as_str(), "2025", "holder", "lease until"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    assert!(!text.contains(&ended) && !text.contains("alice"), "{text}");
    let output = sessions(redis.url(), &prefix, &env, &["show", &fingerprint(&handle)]);
    assert!(stdout(&output).contains("2026-07-28"), "{output:?}");

    let output = sessions(redis.url(), &prefix, &env, &["end", &fp]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stdout(&output).contains(&format!("session {fp} ended")));
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let response = legacy_post(&alice, &replica.url(), &ended, &call)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let output = sessions(redis.url(), &prefix, &env, &["count"]);
    assert_eq!(counted(&stdout(&output), "total"), Some(2), "{output:?}");

    // Gone now, and never an id nor a malformed fingerprint.
    let output = sessions(redis.url(), &prefix, &env, &["show", &fp]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let output = sessions(redis.url(), &prefix, &env, &["show", &ended]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let output = Command::new(SERVER_BINARY)
        .args(["sessions", "count"])
        .env("STATEFUL_MCP__STORE__BACKEND", "memory")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "the memory backend: {output:?}"
    );
    assert!(stderr(&output).contains("store.backend"), "{output:?}");
}
