//! Per-principal rate limits shared by the replicas: a burst, then 429 with
//! `Retry-After`; other principals unaffected; requests still served while the
//! limiter's Redis is down (`on_redis_error = "open"`); leases renewed ahead, so a
//! steady stream waits on Redis for its first request only.

use reqwest::StatusCode;
use serde_json::json;
use stateful_mcp::{
    config::{FailMode, RateLimitSettings},
    keys::Keys,
    rate_limit::RateLimiter,
};

use crate::{
    auth::{KeyDir, api_key_env, api_keys_file, as_refs},
    support::{
        http::{bearer_client, meta_2026, post_json},
        redis_server::{RedisServer, RedisServerExt, skipped_on_shared_cluster, unique_prefix},
        replica::Replica,
        wait::wait_until,
    },
};

/// A 2026-07-28 `tools/list` (no Redis needed to answer it) with `client`.
async fn list(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": meta_2026()}});
    post_json(client, url, &body)
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/list")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_principal_gets_its_burst_across_replicas_then_429() {
    let dir = KeyDir::new("rate");
    let mut env = api_key_env(&api_keys_file(
        &dir,
        &[("alice", "key-a"), ("bob", "key-b")],
    ));
    env.push(("STATEFUL_MCP__RATE_LIMIT__REQUESTS_PER_SEC", "1".into()));
    env.push(("STATEFUL_MCP__RATE_LIMIT__BURST", "5".into()));
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("rate");
    let a = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let b = Replica::start(redis.url(), &prefix, &as_refs(&env)).await;
    let (alice, bob) = (bearer_client("key-a"), bearer_client("key-b"));

    let mut served = 0;
    let mut limited = Vec::new();
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let response = list(&alice, &replica.url()).await;
        match response.status() {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => limited.push(response),
            other => panic!("unexpected {other}"),
        }
    }
    // The burst of 5, plus at most one token refilled while the requests ran.
    assert!((5..=6).contains(&served), "served {served}");
    let refused = &limited[0];
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Another principal has a budget of its own.
    assert_eq!(list(&bob, &a.url()).await.status(), StatusCode::OK);

    // Redis down: the limiter fails open (configurable), so what needs no Redis is served.
    redis.kill();
    assert_eq!(list(&bob, &b.url()).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_requests_share_one_lease_renewal_and_spend_the_whole_burst() {
    // A replica leases a fifth of the burst (4 tokens) at a time. Twenty requests at
    // once used to take a lease each, emptying the shared bucket after five of them and
    // refusing the other fifteen while their leased tokens sat unspent.
    let dir = KeyDir::new("rate-herd");
    let mut env = api_key_env(&api_keys_file(&dir, &[("alice", "key-a")]));
    env.push(("STATEFUL_MCP__RATE_LIMIT__REQUESTS_PER_SEC", "1".into()));
    env.push(("STATEFUL_MCP__RATE_LIMIT__BURST", "20".into()));
    let redis = RedisServer::start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("rate-herd"), &as_refs(&env)).await;
    let alice = bearer_client("key-a");
    let url = replica.url();
    let statuses = futures::future::join_all((0..20).map(|_| list(&alice, &url))).await;
    let served = statuses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(
        served,
        20,
        "{:?}",
        statuses.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_steady_stream_waits_on_redis_for_its_first_request_only() {
    // Blocks of 10 tokens of a burst of 50, renewed ahead in the background once a
    // spend leaves 2: each renewal lands before the lease runs out (the stream lets it),
    // so only the first request waits for a lease. Without the renewal ahead, each
    // block's first request waited: 3 of these 30.
    let redis = RedisServer::shared_or_start().await;
    let settings = RateLimitSettings {
        requests_per_sec: 1,
        burst: 50,
        on_redis_error: FailMode::Closed,
    };
    let keys = Keys::new(&unique_prefix("rate-ahead"));
    let limiter = RateLimiter::new(&settings, Some((redis.pool(), keys)));
    for _ in 0..30 {
        limiter.check("alice").await.unwrap();
        wait_until("the renewal ahead landed", async || {
            limiter.figures().renewals_ahead_running == 0
        })
        .await;
    }
    let figures = limiter.figures();
    assert_eq!(figures.misses, 1, "{figures:?}");
    assert_eq!(figures.renewals_ahead, 3, "{figures:?}");
}

#[tokio::test]
async fn requests_waiting_for_a_lease_renewal_fail_together_when_redis_is_frozen() {
    if skipped_on_shared_cluster(
        "requests_waiting_for_a_lease_renewal_fail_together_when_redis_is_frozen",
    ) {
        return;
    }
    // A renewal that times out marks the bucket unreachable for a moment: the requests
    // that waited for it fail (closed) at once, rather than each waiting a command
    // timeout of its own in turn.
    let dir = KeyDir::new("rate-frozen");
    let mut env = api_key_env(&api_keys_file(&dir, &[("alice", "key-a")]));
    env.push(("STATEFUL_MCP__RATE_LIMIT__REQUESTS_PER_SEC", "100".into()));
    env.push(("STATEFUL_MCP__RATE_LIMIT__ON_REDIS_ERROR", "closed".into()));
    env.push(("STATEFUL_MCP__REDIS__COMMAND_TIMEOUT_MS", "500".into()));
    let redis = RedisServer::start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("rate-frozen"), &as_refs(&env)).await;
    let alice = bearer_client("key-a");
    let url = replica.url();
    redis.pause();
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..8).map(|_| list(&alice, &url))).await;
    let took = started.elapsed();
    redis.resume();
    assert!(
        answers
            .iter()
            .all(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE),
        "{:?}",
        answers.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    // One command timeout (plus a checkout), not eight in a row.
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
}

/// A request with a forbidden Host or Origin is refused (403) before its caller is
/// authenticated or charged: it spends no token, and a missing token is not what it
/// hears about.
#[tokio::test]
async fn a_forbidden_host_or_origin_is_refused_before_authentication_and_costs_nothing() {
    let dir = KeyDir::new("rate-origin");
    let mut env = api_key_env(&api_keys_file(&dir, &[("alice", "key-a")]));
    env.push(("STATEFUL_MCP__RATE_LIMIT__REQUESTS_PER_SEC", "1".into()));
    env.push(("STATEFUL_MCP__RATE_LIMIT__BURST", "2".into()));
    let redis = RedisServer::shared_or_start().await;
    let replica = Replica::start(redis.url(), &unique_prefix("rate-origin"), &as_refs(&env)).await;
    let alice = bearer_client("key-a");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": meta_2026()}});
    let forbidden = |client: &reqwest::Client, header: &'static str, value: &'static str| {
        post_json(client, &replica.url(), &body)
            .header("MCP-Protocol-Version", "2026-07-28")
            .header("Mcp-Method", "tools/list")
            .header(header, value)
    };
    for client in [&alice, &reqwest::Client::new(), &bearer_client("not-a-key")] {
        for (header, value) in [("Origin", "http://evil.example"), ("Host", "evil.example")] {
            for _ in 0..3 {
                let response = forbidden(client, header, value).send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{header}: {value}"
                );
            }
        }
    }
    // Alice's burst is whole.
    for _ in 0..2 {
        assert_eq!(list(&alice, &replica.url()).await.status(), StatusCode::OK);
    }
}
