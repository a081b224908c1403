//! Authentication and principals: bearer API keys and JWTs, the 401 challenge and the
//! RFC 9728 metadata, and every stored thing bound to its principal on every replica.

use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{
    http::{
        bearer_client, call_2026, create_handle, legacy_delete, legacy_post, legacy_session_with,
        post_json, read_reply, tool_text, tools_call_2026,
    },
    redis_server::{RedisServer, unique_prefix},
    replica::Replica,
    wait::wait_until,
};

const RESOURCE: &str = "http://127.0.0.1/mcp";

/// A private directory for one test's key files, removed on drop.
pub(crate) struct KeyDir(PathBuf);

impl KeyDir {
    pub(crate) fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_prefix(test));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        // Write then rename, as a deployment would swap a file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn api_keys_file(dir: &KeyDir, keys: &[(&str, &str)]) -> PathBuf {
    let lines: String = keys
        .iter()
        .map(|(principal, key)| format!("{principal} {:x}\n", Sha256::digest(key.as_bytes())))
        .collect();
    dir.write("api-keys", &format!("# principal sha256(key)\n{lines}"))
}

pub(crate) fn api_key_env(path: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("STATEFUL_MCP__AUTH__MODE", "api_keys".into()),
        (
            "STATEFUL_MCP__AUTH__API_KEYS_FILE",
            path.to_str().unwrap().into(),
        ),
        ("STATEFUL_MCP__AUTH__RESOURCE", RESOURCE.into()),
        (
            "STATEFUL_MCP__AUTH__AUTHORIZATION_SERVERS",
            "https://auth.example".into(),
        ),
    ]
}

pub(crate) fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn without_a_valid_key_the_answer_is_401_with_the_metadata_challenge() {
    let dir = KeyDir::new("auth-401");
    let env = api_key_env(&api_keys_file(&dir, &[("alice", "key-a")]));
    let replica = Replica::memory(&as_refs(&env)).await;

    for client in [reqwest::Client::new(), bearer_client("not-a-key")] {
        let response = tools_call_2026(&client, &replica.url(), "session_create", json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/mcp\""
        );
    }
    // A key in the query or a cookie is no token.
    let response = reqwest::Client::new()
        .get(format!("{}?access_token=key-a", replica.url()))
        .header("Cookie", "token=key-a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let metadata: Value = reqwest::get(replica.endpoint(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metadata["resource"], RESOURCE);
        assert_eq!(
            metadata["authorization_servers"],
            json!(["https://auth.example"])
        );
        assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    }
    // Health endpoints need no token.
    let health = reqwest::get(replica.endpoint("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let alice = bearer_client("key-a");
    let handle = create_handle(&alice, &replica.url()).await;
    let value = call_2026(
        &alice,
        &replica.url(),
        "counter",
        json!({"operation": "increment", "session_id": handle}),
    )
    .await
    .unwrap();
    assert_eq!(value["value"], 1);
}

#[tokio::test]
async fn another_principal_gets_the_answer_an_unknown_id_gets_on_every_replica() {
    let dir = KeyDir::new("auth-bind");
    let env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("auth-bind");
    let a = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let b = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));

    // 2026-07-28 handles.
    let handle = create_handle(&alice, &a.url()).await;
    let unknown = stateful_mcp::ids::mint();
    for id in [&handle, &unknown] {
        let (_, msg) = read_reply(
            tools_call_2026(
                &bob,
                &b.url(),
                "counter",
                json!({"operation": "increment", "session_id": id}),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(msg["result"]["isError"], true, "{msg}");
        assert_eq!(
            tool_text(&msg).replace(id.as_str(), "<id>"),
            "Session `<id>` is unknown or has expired. Call `session_create` to get a new \
             `session_id`."
        );
        let deleted = call_2026(&bob, &a.url(), "session_delete", json!({"session_id": id})).await;
        assert!(deleted.unwrap_err().contains("unknown or has expired"));
    }
    let value = call_2026(
        &alice,
        &b.url(),
        "counter",
        json!({"operation": "increment", "session_id": handle}),
    )
    .await
    .unwrap();
    assert_eq!(value["value"], 1, "bob's attempts changed nothing");

    // 2025-era transport sessions: bob's requests with alice's session id are 404 on the
    // replica that holds it and on one that would restore it, and his DELETE too.
    let session = legacy_session_with(&alice, &a.url()).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for replica in [&a, &b] {
        let response = legacy_post(&bob, &replica.url(), &session, &ping)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = legacy_delete(&bob, &replica.url(), &session)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    // Alice's session is intact, and restores on the other replica for her.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"operation": "increment"}}});
    for (replica, expected) in [(&b, 1), (&a, 2)] {
        let (status, msg) = read_reply(
            legacy_post(&alice, &replica.url(), &session, &call)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{msg}");
        assert_eq!(
            msg["result"]["structuredContent"]["value"], expected,
            "{msg}"
        );
    }
    let response = legacy_delete(&alice, &b.url(), &session)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let response = legacy_post(&alice, &a.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// Messages rmcp routes into the session their `Mcp-Session-Id` names whatever their
/// `_meta` says: another principal's get 404 on the holder and on a replica that would
/// forward or restore, exactly as a plain `ping` does.
#[tokio::test]
async fn no_meta_lets_another_principal_into_a_2025_era_session() {
    let dir = KeyDir::new("auth-meta");
    let env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("auth-meta");
    let a = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let b = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));
    let session = legacy_session_with(&alice, &a.url()).await;
    let meta = |version: &str, capabilities: Value| {
        json!({"io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": capabilities})
    };
    let messages = [
        // Capabilities rmcp does not decode: rmcp serves it in the session.
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping",
                "params": {"_meta": meta("2025-06-18", json!({"roots": 5}))}}),
            "2025-06-18",
        ),
        // rmcp reads no notification's `_meta`: it could cancel alice's call.
        (
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 2, "_meta": meta("2026-07-28", json!({}))}}),
            "2025-11-25",
        ),
        // Nor a response's: it could answer her pending sampling or elicitation.
        (
            json!({"jsonrpc": "2.0", "id": 0, "result": {"action": "decline"},
                "params": {"_meta": meta("2026-07-28", json!({}))}}),
            "2025-11-25",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 0, "result": {}}),
            "2026-07-28",
        ),
    ];
    let post = |client: &reqwest::Client, url: String, message: &Value, version: &str| {
        post_json(client, &url, message)
            .header("Mcp-Session-Id", &session)
            .header("MCP-Protocol-Version", version)
    };
    for (message, version) in &messages {
        for replica in [&a, &b] {
            let response = post(&bob, replica.url(), message, version)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{message}");
        }
    }
    // The owner's are served: the first in her session, on either replica.
    for replica in [&b, &a] {
        let (status, msg) = read_reply(
            post(&alice, replica.url(), &messages[0].0, messages[0].1)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{msg}");
        assert_eq!(msg["result"], json!({}), "{msg}");
    }
}

#[tokio::test]
async fn the_holder_serves_only_the_owner_without_a_touch() {
    let dir = KeyDir::new("auth-holder");
    let mut env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    // The holder serves without a touch only without the event store.
    env.push(("STATEFUL_MCP__EVENTS__ENABLED", "false".into()));
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("auth-holder");
    let a = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));
    let session = legacy_session_with(&alice, &a.url()).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "counter", "arguments": {"operation": "increment"}}});
    // The first touch on a server also loads its script.
    let response = legacy_post(&bob, &a.url(), &session, &ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let ((), seen) = redis
        .client_commands(async {
            let response = legacy_post(&alice, &a.url(), &session, &ping)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            for body in [&ping, &call] {
                let response = legacy_post(&bob, &a.url(), &session, body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::NOT_FOUND);
            }
        })
        .await;
    // Alice's ping went without a touch, so the session's worker was there to serve
    // one; bob's requests were each touched for him, and refused.
    let touches = |principal: &str| {
        let touch = format!("{{{session}}}:session\" \"{principal}\"");
        seen.iter().filter(|l| l.contains(&touch)).count()
    };
    assert_eq!(touches("alice"), 0, "{seen:#?}");
    assert_eq!(touches("bob"), 2, "{seen:#?}");

    let (status, msg) = read_reply(
        legacy_post(&alice, &a.url(), &session, &call)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    assert_eq!(
        msg["result"]["structuredContent"]["value"], 1,
        "bob changed nothing: {msg}"
    );
}

#[tokio::test]
async fn session_caps_are_per_principal() {
    let dir = KeyDir::new("auth-cap");
    let mut env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    env.push((
        "STATEFUL_MCP__SESSION__MAX_SESSIONS_PER_PRINCIPAL",
        "2".into(),
    ));
    let replica = Replica::memory(&as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));
    for _ in 0..2 {
        create_handle(&alice, &replica.url()).await;
    }
    let refused = call_2026(&alice, &replica.url(), "session_create", json!({})).await;
    assert!(
        refused.unwrap_err().contains("maximum of 2 live sessions"),
        "alice is at her cap"
    );
    create_handle(&bob, &replica.url()).await;
    legacy_session_with(&bob, &replica.url()).await;
}

/// An Ed25519 signing key from a fixed seed, its JWK (with `kid`) and a token signer.
struct JwtIssuer {
    kid: String,
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl JwtIssuer {
    fn new(kid: &str, seed: u8) -> Self {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        // PKCS #8 v1 of an Ed25519 seed: a fixed 16-byte prefix (RFC 8410), then the seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[seed; 32]);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signing.verifying_key().as_bytes());
        Self {
            kid: kid.into(),
            key: jsonwebtoken::EncodingKey::from_ed_der(&der),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}),
        }
    }

    /// A token with `claims` over the defaults (valid for an hour, `iss`, `aud`, `sub`).
    fn token(&self, claims: Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut all = json!({"iss": "https://issuer.example", "aud": "stateful-mcp",
            "sub": "alice", "exp": now + 3600, "iat": now});
        all.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &all, &self.key).unwrap()
    }
}

fn jwks(issuers: &[&JwtIssuer]) -> String {
    json!({"keys": issuers.iter().map(|i| i.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// An address that keeps failing is refused unchecked (429 with Retry-After), even with
/// a good key, while other addresses are not; behind a trusted proxy the address is the
/// last entry the proxy appended, not the proxy's own.
#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_and_others_are_not() {
    let dir = KeyDir::new("auth-failures");
    let mut env = api_key_env(&api_keys_file(&dir, &[("alice", "key-a")]));
    env.push(("STATEFUL_MCP__AUTH__MAX_FAILURES_PER_ADDRESS", "3".into()));
    env.push((
        "STATEFUL_MCP__SERVER__TRUSTED_PROXY_HEADER",
        "x-forwarded-for".into(),
    ));
    let replica = Replica::memory(&as_refs(&env)).await;
    let from = |address: &str, token: &str| {
        tools_call_2026(
            &bearer_client(token),
            &replica.url(),
            "session_create",
            json!({}),
        )
        // The client's own claim first, the proxy's entry last: only the last counts.
        .header("X-Forwarded-For", format!("203.0.113.250, {address}"))
        .send()
    };
    for _ in 0..3 {
        let response = from("198.51.100.7", "guess").await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    for token in ["guess", "key-a"] {
        let refused = from("198.51.100.7", token).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "60");
        let body = refused.text().await.unwrap();
        assert!(body.contains("failed authentication attempts"), "{body}");
    }
    // Another address behind the same proxy (and the same first entry) is not refused.
    assert_eq!(
        from("198.51.100.8", "guess").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        from("198.51.100.8", "key-a").await.unwrap().status(),
        StatusCode::OK
    );
    let metrics = reqwest::get(replica.endpoint("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stateful_mcp_auth_failures_refused_total{replica=")
            && metrics.contains("} 2\n"),
        "{metrics}"
    );
}

async fn status_with(replica: &Replica, token: &str) -> StatusCode {
    let response = tools_call_2026(
        &bearer_client(token),
        &replica.url(),
        "session_create",
        json!({}),
    )
    .send()
    .await
    .unwrap();
    response.status()
}

#[tokio::test]
async fn jwts_are_checked_for_signature_issuer_audience_and_time_and_keys_reload() {
    let dir = KeyDir::new("auth-jwt");
    let (old, new) = (JwtIssuer::new("k1", 7), JwtIssuer::new("k2", 9));
    let jwks_path = dir.write("jwks.json", &jwks(&[&old]));
    let env = [
        ("STATEFUL_MCP__AUTH__MODE", "jwt".to_owned()),
        (
            "STATEFUL_MCP__AUTH__JWKS_FILE",
            jwks_path.to_str().unwrap().into(),
        ),
        (
            "STATEFUL_MCP__AUTH__ISSUER",
            "https://issuer.example".into(),
        ),
        ("STATEFUL_MCP__AUTH__AUDIENCE", "stateful-mcp".into()),
        ("STATEFUL_MCP__AUTH__RESOURCE", RESOURCE.into()),
        (
            "STATEFUL_MCP__SESSION__MAINTENANCE_INTERVAL_SECS",
            "1".into(),
        ),
    ];
    let replica = Replica::memory(&as_refs(&env)).await;

    assert_eq!(
        status_with(&replica, &old.token(json!({}))).await,
        StatusCode::OK
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (what, token) in [
        (
            "wrong audience",
            old.token(json!({"aud": "another-service"})),
        ),
        (
            "wrong issuer",
            old.token(json!({"iss": "https://evil.example"})),
        ),
        ("expired", old.token(json!({"exp": now - 600}))),
        ("not yet valid", old.token(json!({"nbf": now + 600}))),
        ("unusable subject", old.token(json!({"sub": "a b"}))),
        ("unknown key", new.token(json!({}))),
        ("tampered", {
            let t = old.token(json!({}));
            let (head, sig) = t.rsplit_once('.').unwrap();
            format!("{head}.{}", sig.chars().rev().collect::<String>())
        }),
    ] {
        assert_eq!(
            status_with(&replica, &token).await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }

    // The principal is `sub`: a handle of alice's is unknown to bob.
    let alice = bearer_client(&old.token(json!({})));
    let handle = create_handle(&alice, &replica.url()).await;
    let bob = bearer_client(&old.token(json!({"sub": "bob"})));
    let err = call_2026(
        &bob,
        &replica.url(),
        "session_info",
        json!({"session_id": handle}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("unknown or has expired"), "{err}");

    // Key rotation: the file is re-read when it changes.
    dir.write("jwks.json", &jwks(&[&new]));
    wait_until("the rotated key is accepted", async || {
        status_with(&replica, &new.token(json!({}))).await == StatusCode::OK
    })
    .await;
    assert_eq!(
        status_with(&replica, &old.token(json!({}))).await,
        StatusCode::UNAUTHORIZED
    );
}
