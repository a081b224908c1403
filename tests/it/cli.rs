//! The binary's command line: `check-config` validates the layered settings and exits,
//! serving nothing and contacting no Redis.

use std::process::{Command, Output};

use crate::support::replica::SERVER_BINARY;

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
