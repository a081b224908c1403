//! One behavioural suite for the session layer, run against memory and Redis.

use std::time::Duration;

use serde_json::json;
use stateful_mcp::{
    config::{SessionSettings, Settings},
    keys::Keys,
    redis_pool::RedisPool,
    sessions::{
        CounterOp, HistoryOp, Holder, Lease, NewSession, RedisSessions, SessionError, Sessions,
        Transport,
    },
};

use crate::support::redis_server::{
    RedisServer, RedisServerExt, skipped_on_shared_cluster, unique_prefix,
};

fn limits(timeout_secs: u64) -> SessionSettings {
    let mut s = Settings::load_with_env(None, Vec::new()).unwrap().session;
    s.timeout_secs = timeout_secs;
    s.max_data_bytes = 512;
    s.max_client_metadata_bytes = 256;
    s.max_sessions_per_principal = 3;
    s.history_limit = 3;
    s
}

/// The Redis backend on `pool` under `keys`.
fn on_redis(pool: RedisPool, keys: Keys, timeout_secs: u64) -> Sessions {
    let l = limits(timeout_secs);
    Sessions::redis(RedisSessions::new(pool, keys, l.timeout()), l)
}

/// The Redis backend on `pool` under `keys`, creating sessions in steps of one hash
/// slot each on a single node too, as every store does on Redis Cluster.
fn in_steps(pool: RedisPool, keys: Keys, timeout_secs: u64) -> Sessions {
    let l = limits(timeout_secs);
    Sessions::redis(
        RedisSessions::new(pool, keys, l.timeout()).with_creates_in_steps(),
        l,
    )
}

/// Builds both backends, the Redis one creating in one script (on a single node) and in
/// steps, each on `redis` with a fresh prefix.
async fn backends(redis: &RedisServer, timeout_secs: u64) -> Vec<(&'static str, Sessions)> {
    let keys = || Keys::new(&unique_prefix("sessions"));
    vec![
        ("memory", Sessions::memory(limits(timeout_secs))),
        ("redis", on_redis(redis.pool(), keys(), timeout_secs)),
        (
            "redis in steps",
            in_steps(redis.pool(), keys(), timeout_secs),
        ),
    ]
}

fn new(principal: &str) -> NewSession {
    NewSession {
        principal: principal.into(),
        client_info: Some(json!({"name": "test-client", "version": "1.0"})),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_get_update_delete() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let created = s.create(new("alice")).await.unwrap();
        assert!(stateful_mcp::ids::is_well_formed(&created.id), "{name}");
        let got = s.get("alice", &created.id).await.unwrap();
        assert_eq!(got.owner, "alice", "{name}");
        assert_eq!(got.client_info, created.client_info, "{name}");
        assert!(got.last_accessed_ms >= got.created_at_ms, "{name}");

        s.update("alice", &created.id, "colour", Some(&json!({"r": 1})))
            .await
            .unwrap();
        let got = s.get("alice", &created.id).await.unwrap();
        assert_eq!(got.data["colour"], json!({"r": 1}), "{name}");
        s.update("alice", &created.id, "colour", None)
            .await
            .unwrap();
        assert!(
            s.get("alice", &created.id).await.unwrap().data.is_empty(),
            "{name}"
        );

        // Another principal sees nothing, and cannot delete it.
        assert!(matches!(
            s.get("mallory", &created.id).await,
            Err(SessionError::NotFound(_))
        ));
        assert!(!s.delete("mallory", &created.id).await.unwrap(), "{name}");

        assert!(s.delete("alice", &created.id).await.unwrap(), "{name}");
        assert!(!s.delete("alice", &created.id).await.unwrap(), "{name}");
        assert!(
            matches!(
                s.get("alice", &created.id).await,
                Err(SessionError::NotFound(_))
            ),
            "{name}"
        );
        assert!(matches!(
            s.get("alice", "not-an-id").await,
            Err(SessionError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn counter_and_history() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let id = s.create(new("alice")).await.unwrap().id;
        assert_eq!(s.counter("alice", &id, CounterOp::Get).await.unwrap(), 0);
        assert_eq!(s.counter("alice", &id, CounterOp::Add(5)).await.unwrap(), 5);
        assert_eq!(
            s.counter("alice", &id, CounterOp::Add(-7)).await.unwrap(),
            -2
        );
        assert_eq!(s.counter("alice", &id, CounterOp::Reset).await.unwrap(), 0);
        s.counter("alice", &id, CounterOp::Add(i64::MAX))
            .await
            .unwrap();
        assert!(
            matches!(
                s.counter("alice", &id, CounterOp::Add(1)).await,
                Err(SessionError::CounterOverflow)
            ),
            "{name}"
        );
        assert_eq!(
            s.counter("alice", &id, CounterOp::Get).await.unwrap(),
            i64::MAX,
            "{name}: a failed increment changes nothing"
        );

        // A counter overwritten with a non-integer is reported, not coerced.
        s.update("alice", &id, "counter", Some(&json!("seven")))
            .await
            .unwrap();
        assert!(
            matches!(
                s.counter("alice", &id, CounterOp::Add(1)).await,
                Err(SessionError::Invalid(m)) if m.contains("not an integer")
            ),
            "{name}"
        );
        s.counter("alice", &id, CounterOp::Reset).await.unwrap();

        assert!(
            s.history("alice", &id, HistoryOp::List)
                .await
                .unwrap()
                .is_empty()
        );
        for cmd in ["a", "b", "c", "d/é"] {
            s.history("alice", &id, HistoryOp::Add(cmd.into()))
                .await
                .unwrap();
        }
        assert_eq!(
            s.history("alice", &id, HistoryOp::List).await.unwrap(),
            ["b", "c", "d/é"],
            "{name}: keeps the newest `history_limit`"
        );
        assert!(
            s.history("alice", &id, HistoryOp::Clear)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            s.history("alice", &id, HistoryOp::List)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_counter_that_would_outgrow_the_data_budget_keeps_its_value() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let id = s.create(new("erin")).await.unwrap().id;
        // 508 of the 512 bytes taken: the counter may grow to four digits.
        s.update("erin", &id, "pad", Some(&json!("x".repeat(506))))
            .await
            .unwrap();
        for (step, value) in [(5, 5), (5, 10), (90, 100), (900, 1000)] {
            assert_eq!(
                s.counter("erin", &id, CounterOp::Add(step)).await.unwrap(),
                value,
                "{name}"
            );
        }
        for step in [9000, -2000, i64::MIN] {
            assert!(
                matches!(
                    s.counter("erin", &id, CounterOp::Add(step)).await,
                    Err(SessionError::DataTooLarge { limit: 512 })
                ),
                "{name}: {step}"
            );
            assert_eq!(
                s.counter("erin", &id, CounterOp::Get).await.unwrap(),
                1000,
                "{name}: a refused {step} changes nothing"
            );
        }
        // Shrinking is always allowed.
        assert_eq!(
            s.counter("erin", &id, CounterOp::Add(-999)).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            s.counter("erin", &id, CounterOp::Add(8)).await.unwrap(),
            9,
            "{name}"
        );
    }
}

#[tokio::test]
async fn limits_are_enforced() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let id = s.create(new("bob")).await.unwrap().id;
        let big = json!("x".repeat(600));
        assert!(
            matches!(
                s.update("bob", &id, "big", Some(&big)).await,
                Err(SessionError::DataTooLarge { limit: 512 })
            ),
            "{name}"
        );
        let half = json!("y".repeat(300));
        s.update("bob", &id, "one", Some(&half)).await.unwrap();
        assert!(
            matches!(
                s.update("bob", &id, "two", Some(&half)).await,
                Err(SessionError::DataTooLarge { .. })
            ),
            "{name}: the limit counts every value"
        );
        // Shrinking a value is always allowed, and frees room.
        s.update("bob", &id, "one", Some(&json!(1))).await.unwrap();
        s.update("bob", &id, "two", Some(&half)).await.unwrap();

        s.create(new("bob")).await.unwrap();
        s.create(new("bob")).await.unwrap();
        assert!(
            matches!(
                s.create(new("bob")).await,
                Err(SessionError::TooManySessions { limit: 3 })
            ),
            "{name}"
        );
        // Other principals are not affected, and deleting frees a slot.
        s.create(new("carol")).await.unwrap();
        assert!(s.delete("bob", &id).await.unwrap());
        s.create(new("bob")).await.unwrap();
        assert_eq!(s.list("bob").await.unwrap().len(), 3, "{name}");
        assert_eq!(s.list("carol").await.unwrap().len(), 1, "{name}");
    }
}

/// Keys under `prefix` on `redis`.
async fn keys_under(redis: &RedisServer, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn oversized_client_metadata_is_refused_and_nothing_is_stored() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("metadata");
    let backends = [
        ("memory", Sessions::memory(limits(60))),
        ("redis", on_redis(redis.pool(), Keys::new(&prefix), 60)),
    ];
    for (name, s) in backends {
        let refused = [
            // The clientInfo alone is too large,
            NewSession {
                client_info: Some(json!({"name": "x".repeat(300)})),
                ..new("ivy")
            },
            // and so is the sum of two parts that each fit (`{"n":"…"}` is 8 + 150 bytes).
            NewSession {
                client_info: Some(json!({"n": "c".repeat(150)})),
                transport: Some(json!({"n": "t".repeat(150)})),
                ..new("ivy")
            },
        ];
        for offered in refused {
            assert!(
                matches!(
                    s.create(offered).await,
                    Err(SessionError::ClientMetadataTooLarge { size, limit: 256 }) if size > 256
                ),
                "{name}"
            );
        }
        assert!(s.list("ivy").await.unwrap().is_empty(), "{name}");
        assert_eq!(s.stats().await.unwrap().total, 0, "{name}");
        if name == "redis" {
            assert_eq!(keys_under(&redis, &prefix).await, Vec::<String>::new());
        }
        // Exactly at the limit is accepted (`{"n":"…"}` is 8 bytes around the string).
        let fits = NewSession {
            client_info: Some(json!({"n": "c".repeat(120)})),
            transport: Some(json!({"n": "t".repeat(120)})),
            ..new("ivy")
        };
        let created = s.create(fits).await.unwrap();
        let got = s.get("ivy", &created.id).await.unwrap();
        assert_eq!(
            got.client_info,
            Some(json!({"n": "c".repeat(120)})),
            "{name}"
        );
    }
}

/// Idle sessions expire after the one-second timeout and access slides it, on the backend
/// `s` called `name`; `pass` lets time go by.
async fn expiry_and_sliding(name: &str, s: Sessions, pass: impl AsyncFn(Duration)) {
    let idle = s.create(new("dave")).await.unwrap().id;
    let busy = s.create(new("dave")).await.unwrap().id;
    for _ in 0..3 {
        pass(Duration::from_millis(400)).await;
        s.counter("dave", &busy, CounterOp::Add(1)).await.unwrap();
    }
    assert!(
        matches!(s.get("dave", &idle).await, Err(SessionError::NotFound(_))),
        "{name}: idle session expired"
    );
    assert_eq!(
        s.counter("dave", &busy, CounterOp::Get).await.unwrap(),
        3,
        "{name}: busy session kept its state past the timeout"
    );
    let listed: Vec<_> = s
        .list("dave")
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&busy), "{name}");
    // At the cap of 3 the idle session's slot is free again, while the busy one, created
    // more than a timeout ago but used since, still counts.
    s.create(new("dave")).await.unwrap();
    s.create(new("dave")).await.unwrap();
    assert!(
        matches!(
            s.create(new("dave")).await,
            Err(SessionError::TooManySessions { limit: 3 })
        ),
        "{name}: a session kept alive counts against the cap"
    );
    pass(Duration::from_millis(1300)).await;
    assert!(s.list("dave").await.unwrap().is_empty(), "{name}");
    // Upkeep finds the ended sessions (on Redis: their bucket entries).
    s.maintain().await.unwrap();
    assert_eq!(s.stats().await.unwrap().total, 0, "{name}");
}

// The memory backend keeps tokio time, so it expires on paused time (and does no I/O that
// auto-advance could race); Redis expires keys on its own clock.
#[tokio::test(start_paused = true)]
async fn sessions_expire_after_inactivity_and_access_slides_it_in_memory() {
    expiry_and_sliding("memory", Sessions::memory(limits(1)), tokio::time::advance).await;
}

#[tokio::test]
async fn sessions_expire_after_inactivity_and_access_slides_it_on_redis() {
    let redis = RedisServer::shared_or_start().await;
    let keys = Keys::new(&unique_prefix("sessions"));
    expiry_and_sliding("redis", on_redis(redis.pool(), keys, 1), tokio::time::sleep).await;
}

#[tokio::test]
async fn stats_report_total_and_latest_access() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let empty = s.stats().await.unwrap();
        assert_eq!(empty.total, 0, "{name}");
        assert!(empty.most_recent_access_ms.is_none());

        let first = s.create(new("erin")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = s.create(new("frank")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let touched = s.get("erin", &first.id).await.unwrap();
        s.maintain().await.unwrap();

        let stats = s.stats().await.unwrap();
        assert_eq!(stats.total, 2, "{name}");
        let latest = stats.most_recent_access_ms.unwrap();
        assert!(latest >= second.created_at_ms, "{name}");
        assert!(latest >= touched.last_accessed_ms - 1000, "{name}");

        s.delete("erin", &first.id).await.unwrap();
        let stats = s.stats().await.unwrap();
        assert_eq!(stats.total, 1, "{name}: a delete leaves the count at once");
    }
}

#[tokio::test]
async fn redis_keys_carry_prefix_and_ttl() {
    if skipped_on_shared_cluster("redis_keys_carry_prefix_and_ttl") {
        return;
    }
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("ttl");
    let s = on_redis(redis.pool(), Keys::new(&prefix), 60);
    let steps = in_steps(redis.pool(), Keys::new(&prefix), 60);
    let id = s.create(new("gina")).await.unwrap().id;
    s.counter("gina", &id, CounterOp::Add(1)).await.unwrap();
    s.history("gina", &id, HistoryOp::Add("x".into()))
        .await
        .unwrap();
    // Keyed creates (their records and the owner's index of records) on both paths, and
    // a delete within the reservation's grace of one made in steps (a tombstone).
    let keyed = |key: &str| NewSession {
        retry: Some(stateful_mcp::sessions::Retry {
            key: key.into(),
            fingerprint: "a".into(),
        }),
        ..new("gina")
    };
    s.create(keyed("c0")).await.unwrap();
    let gone = steps.create(keyed("c1")).await.unwrap().id;
    assert!(steps.delete("gina", &gone).await.unwrap());
    s.maintain().await.unwrap();
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for part in [
        ":gone",
        ":creates",
        ":create:",
        ":{sessions:",
        ":last_access",
    ] {
        assert!(keys.iter().any(|k| k.contains(part)), "{part} in {keys:?}");
    }
    for key in keys {
        assert!(key.starts_with(&format!("{prefix}:")), "{key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL");
    }
}

#[tokio::test]
async fn concurrent_increments_from_two_stores_lose_nothing() {
    let redis = RedisServer::shared_or_start().await;
    let keys = Keys::new(&unique_prefix("race"));
    let a = on_redis(redis.pool(), keys.clone(), 60);
    let b = on_redis(redis.pool(), keys, 60);
    let id = a.create(new("hal")).await.unwrap().id;
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone()] {
        for _ in 0..4 {
            let (store, id) = (store.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    store.counter("hal", &id, CounterOp::Add(1)).await.unwrap();
                    store
                        .history("hal", &id, HistoryOp::Add("inc".into()))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.counter("hal", &id, CounterOp::Get).await.unwrap(), 400);
}

/// Creates sessions for `principal` from 2 × 12 tasks spread over `stores`, and checks
/// that exactly `expected` succeed and all of them are listed.
async fn race_to_the_cap(stores: &[Sessions], principal: &str, expected: usize) {
    let mut tasks = Vec::new();
    for store in stores {
        for _ in 0..12 {
            let (store, principal) = (store.clone(), principal.to_owned());
            tasks.push(tokio::spawn(
                async move { store.create(new(&principal)).await },
            ));
        }
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(SessionError::TooManySessions { limit: 3 }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, expected, "{principal}");
    assert_eq!(
        stores[0].list(principal).await.unwrap().len(),
        3,
        "{principal}"
    );
    assert!(matches!(
        stores[1].create(new(principal)).await,
        Err(SessionError::TooManySessions { limit: 3 })
    ));
}

#[tokio::test]
async fn the_cap_holds_exactly_under_concurrent_creates_from_two_stores() {
    let redis = RedisServer::shared_or_start().await;
    let keys = Keys::new(&unique_prefix("cap"));
    // One store creates in one script on a single node, the other in steps.
    let a = on_redis(redis.pool(), keys.clone(), 1);
    let b = in_steps(redis.pool(), keys, 1);
    let stores = [a.clone(), b.clone()];
    for round in 0..10 {
        race_to_the_cap(&stores, &format!("ivan{round}"), 3).await;
    }
    // A principal whose index lists three sessions that have expired since gets exactly
    // their three slots back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    race_to_the_cap(&stores, "ivan0", 3).await;
    a.maintain().await.unwrap();
    assert_eq!(
        a.stats().await.unwrap().total,
        3,
        "every live session is indexed, and upkeep found the ended ones"
    );
}

/// Adds to `principal`'s index on `redis` the reservation of a replica that died before
/// writing its session, good until `deadline` (ms; 1 = long past).
async fn abandoned_reservation(redis: &RedisServer, keys: &Keys, principal: &str, deadline: i64) {
    let _: i64 = redis::cmd("ZADD")
        .arg(keys.principal_sessions(principal))
        .arg(deadline)
        .arg(stateful_mcp::ids::mint())
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn creates_racing_from_three_stores_never_pass_the_cap_whatever_the_index_holds() {
    let redis = RedisServer::shared_or_start().await;
    let keys = Keys::new(&unique_prefix("cap3"));
    // On a single node, the last store creates in steps and the others in one script.
    let stores: Vec<Sessions> = vec![
        on_redis(redis.pool(), keys.clone(), 3),
        on_redis(redis.pool(), keys.clone(), 3),
        in_steps(redis.pool(), keys.clone(), 3),
    ];
    // Each principal's index holds a session kept alive, one that ends and the aged-out
    // reservation of a replica that died before writing its session: the race gets
    // exactly the two places of the last two.
    let principals: Vec<String> = (0..4).map(|n| format!("judy{n}")).collect();
    let mut kept = Vec::new();
    for principal in &principals {
        kept.push(stores[0].create(new(principal)).await.unwrap().id);
        stores[1].create(new(principal)).await.unwrap();
        abandoned_reservation(&redis, &keys, principal, 1).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (principal, id) in principals.iter().zip(&kept) {
        stores[2].get(principal, id).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for (principal, id) in principals.iter().zip(&kept) {
        // Kept alive through the earlier races too, however long they took.
        stores[2].get(principal, id).await.unwrap();
        race_to_the_cap(&stores, principal, 2).await;
    }
}

#[tokio::test]
async fn a_reservation_that_aged_out_never_becomes_a_session() {
    let redis = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("late");
    let keys = Keys::new(&prefix);
    let l = limits(60);
    // Every reservation of this store ages out before its record is written.
    let late = Sessions::redis(
        RedisSessions::new(redis.pool(), keys.clone(), l.timeout())
            .with_reservation_grace(Duration::ZERO)
            .with_creates_in_steps(),
        l,
    );
    let on_time = on_redis(redis.pool(), keys.clone(), 60);
    for _ in 0..4 {
        assert!(matches!(
            late.create(new("kim")).await,
            Err(SessionError::Unavailable(_))
        ));
    }
    assert!(on_time.list("kim").await.unwrap().is_empty());
    assert_eq!(redis.keys(&format!("{prefix}:*:session")).await.len(), 0);
    // Their places were given back: the cap is whole.
    for _ in 0..3 {
        on_time.create(new("kim")).await.unwrap();
    }
    assert!(matches!(
        on_time.create(new("kim")).await,
        Err(SessionError::TooManySessions { limit: 3 })
    ));

    // A keyed create whose records came too late: its retry on time makes one session
    // (on a single node, the retry's one script hands the pending reservation to the
    // steps, which replace it).
    let keyed = NewSession {
        retry: Some(stateful_mcp::sessions::Retry {
            key: "c1".into(),
            fingerprint: "a".into(),
        }),
        ..new("lee")
    };
    assert!(matches!(
        late.create(keyed.clone()).await,
        Err(SessionError::Unavailable(_))
    ));
    let first = on_time.create(keyed.clone()).await.unwrap();
    assert_eq!(on_time.create(keyed).await.unwrap().id, first.id);
    assert_eq!(on_time.list("lee").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_reservation_left_by_a_dead_replica_holds_its_place_until_its_deadline() {
    if skipped_on_shared_cluster(
        "a_reservation_left_by_a_dead_replica_holds_its_place_until_its_deadline",
    ) {
        return;
    }
    let redis = RedisServer::shared_or_start().await;
    for steps in [false, true] {
        let keys = Keys::new(&unique_prefix("abandoned"));
        let s = if steps {
            in_steps(redis.pool(), keys.clone(), 60)
        } else {
            on_redis(redis.pool(), keys.clone(), 60)
        };
        s.create(new("max")).await.unwrap();
        s.create(new("max")).await.unwrap();
        let in_an_hour = chrono::Utc::now().timestamp_millis() + 3_600_000;
        abandoned_reservation(&redis, &keys, "max", in_an_hour).await;
        assert!(
            matches!(
                s.create(new("max")).await,
                Err(SessionError::TooManySessions { limit: 3 })
            ),
            "in steps: {steps}: a reservation within its grace may still become a session: \
             it counts"
        );
        let mut conn = redis.conn().await;
        let index = keys.principal_sessions("max");
        let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg(in_an_hour)
            .arg(in_an_hour)
            .query_async(&mut conn)
            .await
            .unwrap();
        abandoned_reservation(&redis, &keys, "max", 1).await;
        s.create(new("max")).await.unwrap();
        assert_eq!(s.list("max").await.unwrap().len(), 3, "in steps: {steps}");
        let entries: u64 = redis::cmd("ZCARD")
            .arg(&index)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            entries, 3,
            "in steps: {steps}: the aged-out reservation was dropped"
        );
    }
}

#[tokio::test]
async fn a_keyed_create_cut_off_before_its_confirmation_replays_its_session() {
    if skipped_on_shared_cluster(
        "a_keyed_create_cut_off_before_its_confirmation_replays_its_session",
    ) {
        return;
    }
    use stateful_mcp::sessions::Retry;

    let redis = RedisServer::shared_or_start().await;
    let keys = Keys::new(&unique_prefix("unconfirmed"));
    // The first create in steps, the retries as a single node creates (in one script,
    // which hands a pending reservation to the steps).
    let steps = in_steps(redis.pool(), keys.clone(), 60);
    let s = on_redis(redis.pool(), keys.clone(), 60);
    let keyed = NewSession {
        retry: Some(Retry {
            key: "c1".into(),
            fingerprint: "a".into(),
        }),
        ..new("ned")
    };
    let mut conn = redis.conn().await;
    // As if the replica died between writing the session and confirming it: the
    // create's record still names a pending reservation (its own deadline).
    let unconfirm = async |conn: &mut redis::aio::MultiplexedConnection, id: &str| {
        let deadline: i64 = redis::cmd("HGET")
            .arg(keys.session(id))
            .arg("reserved")
            .query_async(conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(keys.create_retry("ned", "c1"))
            .arg(format!("a|{id}|p{deadline}"))
            .arg("KEEPTTL")
            .query_async(conn)
            .await
            .unwrap();
    };
    let first = steps.create(keyed.clone()).await.unwrap();
    unconfirm(&mut conn, &first.id).await;
    let again = s.create(keyed.clone()).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.created_at_ms, first.created_at_ms);
    assert_eq!(s.list("ned").await.unwrap().len(), 1);

    // Deleted in between, the session is named again and never made a second time.
    unconfirm(&mut conn, &first.id).await;
    assert!(s.delete("ned", &first.id).await.unwrap());
    let after_delete = s.create(keyed).await.unwrap();
    assert_eq!(after_delete.id, first.id);
    assert!(s.list("ned").await.unwrap().is_empty());
    assert!(matches!(
        s.get("ned", &first.id).await,
        Err(SessionError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_principal_keeps_only_its_latest_keyed_create_records() {
    use stateful_mcp::sessions::Retry;

    let redis = RedisServer::shared_or_start().await;
    let mut l = limits(60);
    l.max_retry_records = 2;
    l.max_sessions_per_principal = 10;
    let backends = [
        ("memory", Sessions::memory(l.clone())),
        (
            "redis",
            Sessions::redis(
                RedisSessions::new(
                    redis.pool(),
                    Keys::new(&unique_prefix("records")),
                    l.timeout(),
                ),
                l.clone(),
            ),
        ),
    ];
    let keyed = |key: &str| NewSession {
        retry: Some(Retry {
            key: key.into(),
            fingerprint: "a".into(),
        }),
        ..new("olga")
    };
    for (name, s) in backends {
        let mut ids = Vec::new();
        for key in ["k1", "k2", "k3"] {
            ids.push(s.create(keyed(key)).await.unwrap().id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(s.create(keyed("k3")).await.unwrap().id, ids[2], "{name}");
        assert_eq!(s.create(keyed("k2")).await.unwrap().id, ids[1], "{name}");
        let k1 = s.create(keyed("k1")).await.unwrap().id;
        assert_ne!(k1, ids[0], "{name}: k1's record made room for k3's");
        assert_eq!(s.list("olga").await.unwrap().len(), 4, "{name}");
    }
}

#[tokio::test]
async fn upkeep_moves_on_past_sessions_that_outlive_their_score() {
    let redis = RedisServer::shared_or_start().await;
    let mut l = limits(6);
    l.max_sessions_per_principal = 1000;
    let s = Sessions::redis(
        RedisSessions::new(
            redis.pool(),
            Keys::new(&unique_prefix("upkeep")),
            l.timeout(),
        ),
        l,
    );
    // 300 sessions of one bucket (their ids start with the same digit) outlive their
    // score; the last one created ends. More than one round's batch are checked before
    // it, so upkeep finds it only if the live ones it checked move out of its way.
    let mint = || format!("0{}", &stateful_mcp::ids::mint()[1..]);
    let mut kept = Vec::new();
    for _ in 0..300 {
        let id = mint();
        s.create(NewSession {
            id: Some(id.clone()),
            ..new("pat")
        })
        .await
        .unwrap();
        kept.push(id);
    }
    s.create(NewSession {
        id: Some(mint()),
        ..new("pat")
    })
    .await
    .unwrap();
    let ending_created = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &kept {
        s.get("pat", id).await.unwrap();
    }
    tokio::time::sleep_until(ending_created + Duration::from_millis(6300)).await;
    let mut removed = 0;
    for _ in 0..3 {
        removed += s.maintain().await.unwrap();
    }
    assert_eq!(removed, 1, "the ended session was found");
    assert_eq!(s.stats().await.unwrap().total, 300);
    assert_eq!(s.list("pat").await.unwrap().len(), 300);
}

#[tokio::test]
async fn a_retry_under_the_same_key_changes_nothing_and_gets_the_first_reply() {
    use stateful_mcp::sessions::{CounterOp, HistoryOp, Retry, SessionError};

    let retry = |key: &str, fingerprint: &str| Retry {
        key: key.into(),
        fingerprint: fingerprint.into(),
    };
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let id = s.create(new("alice")).await.unwrap().id;
        let add = |r: Retry| {
            let (s, id) = (s.clone(), id.clone());
            async move {
                s.counter_once("alice", &id, CounterOp::Add(5), Some(&r))
                    .await
            }
        };
        assert_eq!(add(retry("k1", "a")).await.unwrap(), 5, "{name}");
        assert_eq!(
            add(retry("k1", "a")).await.unwrap(),
            5,
            "{name}: the first reply"
        );
        assert!(
            matches!(
                add(retry("k1", "b")).await,
                Err(SessionError::RetryConflict)
            ),
            "{name}: the key with other arguments"
        );
        assert_eq!(
            add(retry("k2", "a")).await.unwrap(),
            10,
            "{name}: a new key"
        );
        assert_eq!(
            s.counter("alice", &id, CounterOp::Get).await.unwrap(),
            10,
            "{name}"
        );
        let entry = |r: Retry| {
            let (s, id) = (s.clone(), id.clone());
            async move {
                s.history_once("alice", &id, HistoryOp::Add("ls".into()), Some(&r))
                    .await
            }
        };
        entry(retry("h1", "x")).await.unwrap();
        assert_eq!(entry(retry("h1", "x")).await.unwrap(), ["ls"], "{name}");
        // Another principal's retry under the same key is no retry of alice's call.
        assert!(
            matches!(
                s.counter_once("bob", &id, CounterOp::Add(1), Some(&retry("k1", "a")))
                    .await,
                Err(SessionError::NotFound(_))
            ),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_retried_create_gets_the_first_session_and_makes_no_other() {
    use stateful_mcp::sessions::{Retry, SessionError};

    let keyed = |principal: &str, key: &str, fingerprint: &str| NewSession {
        retry: Some(Retry {
            key: key.into(),
            fingerprint: fingerprint.into(),
        }),
        ..new(principal)
    };
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let first = s.create(keyed("alice", "c1", "a")).await.unwrap();
        let retried = s.create(keyed("alice", "c1", "a")).await.unwrap();
        assert_eq!(retried.id, first.id, "{name}: the first call's session");
        assert_eq!(retried.created_at_ms, first.created_at_ms, "{name}");
        assert!(
            matches!(
                s.create(keyed("alice", "c1", "b")).await,
                Err(SessionError::RetryConflict)
            ),
            "{name}: the key with other arguments"
        );
        let other = s.create(keyed("alice", "c2", "a")).await.unwrap();
        assert_ne!(other.id, first.id, "{name}: a new key, a new session");
        let bobs = s.create(keyed("bob", "c1", "a")).await.unwrap();
        assert_ne!(bobs.id, first.id, "{name}: keys are the principal's own");
        assert_eq!(
            s.stats().await.unwrap().total,
            3,
            "{name}: three sessions, not five"
        );
    }
}

#[tokio::test]
async fn the_retry_records_written_and_dropped_are_counted() {
    use stateful_mcp::sessions::{Retry, RetryRecordFigures};

    let retry = |key: &str| Retry {
        key: key.into(),
        fingerprint: "a".into(),
    };
    let redis = RedisServer::shared_or_start().await;
    let mut l = limits(60);
    l.max_retry_records = 2;
    l.max_retry_bytes = 300;
    l.max_data_bytes = 4096;
    l.max_sessions_per_principal = 10;
    let redis_store = RedisSessions::new(
        redis.pool(),
        Keys::new(&unique_prefix("counted")),
        l.timeout(),
    );
    let backends = [
        ("memory", Sessions::memory(l.clone())),
        ("redis", Sessions::redis(redis_store, l.clone())),
    ];
    for (name, s) in backends {
        let counted = |written, dropped| RetryRecordFigures { written, dropped };
        let id = s.create(new("alice")).await.unwrap().id;
        assert_eq!(
            s.retry_records(),
            counted(0, 0),
            "{name}: no key, no record"
        );

        // Three keyed changes kept in two records; a replay and a read write none.
        for key in ["k1", "k2", "k3", "k3"] {
            s.counter_once("alice", &id, CounterOp::Add(1), Some(&retry(key)))
                .await
                .unwrap();
        }
        s.counter_once("alice", &id, CounterOp::Get, Some(&retry("k4")))
            .await
            .unwrap();
        assert_eq!(s.retry_records(), counted(3, 1), "{name}: the record count");

        // Replies of over 200 bytes: each new record leaves no room for another.
        for key in ["h1", "h2"] {
            let entry = HistoryOp::Add("x".repeat(200));
            s.history_once("alice", &id, entry, Some(&retry(key)))
                .await
                .unwrap();
        }
        assert_eq!(s.retry_records(), counted(5, 4), "{name}: the byte bound");

        // Keyed creates: a principal keeps two records; the third drops the first.
        for key in ["c1", "c2", "c3", "c3"] {
            s.create(NewSession {
                retry: Some(retry(key)),
                ..new("alice")
            })
            .await
            .unwrap();
        }
        assert_eq!(s.retry_records(), counted(8, 5), "{name}: keyed creates");
    }
}

/// A lease of `replica` for a minute: long enough that none runs out in a test.
fn lease_of(replica: &str) -> Lease {
    Lease {
        holder: Holder {
            replica: replica.into(),
            url: format!("http://{replica}:8080"),
        },
        ttl: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn a_live_lease_is_taken_only_from_the_replica_named_dead() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let (a, b, c) = (lease_of("a"), lease_of("b"), lease_of("c"));
        let id = s
            .create(NewSession {
                transport: Some(json!({"initialize": {}})),
                lease: Some(a.clone()),
                ..new("alice")
            })
            .await
            .unwrap()
            .id;
        let holder = async |claim: &Lease, dead: &Lease| {
            let touched = s.take_over("alice", &id, claim, &dead.holder, false).await;
            touched.unwrap().expect("a live session").holder
        };
        if name == "memory" {
            // One replica: nobody else holds anything.
            assert_eq!(holder(&c, &a).await, None);
            continue;
        }
        assert_eq!(holder(&c, &b).await, Some(a.holder.clone()), "a is not b");
        assert_eq!(holder(&c, &a).await, Some(c.holder.clone()), "taken from a");
        // a no longer holds it: naming a again takes nothing from c.
        assert_eq!(holder(&b, &a).await, Some(c.holder.clone()));
        // Nor does another principal's request.
        let theirs = s
            .take_over("mallory", &id, &b, &c.holder, false)
            .await
            .unwrap();
        assert_eq!(theirs, None);
        assert_eq!(holder(&c, &a).await, Some(c.holder.clone()));
    }
}

#[tokio::test]
async fn a_touch_reads_the_transport_state_only_for_a_replica_the_session_is_left_to() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let (a, b) = (lease_of("a"), lease_of("b"));
        let state = json!({"protocolVersion": "2025-11-25", "capabilities": {}});
        let id = s
            .create(NewSession {
                transport: Some(state.clone()),
                lease: Some(a.clone()),
                ..new("alice")
            })
            .await
            .unwrap()
            .id;
        let handle = s.create(new("alice")).await.unwrap().id;
        // Touches that take no lease, by `by`'s replica, asking for the state or not.
        let touch = async |id: &str, by: &Lease, read: bool| {
            let touched = s.touch("alice", id, Some(by), false, read).await.unwrap();
            touched.expect("a live session")
        };
        let holders = touch(&id, &a, true).await;
        assert_eq!(holders.transport, Transport::Read(state.clone()), "{name}");
        let unasked = touch(&id, &a, false).await;
        assert!(unasked.is_transport(), "{name}");
        let others = touch(&id, &b, true).await;
        assert!(others.is_transport(), "{name}");
        assert_eq!(
            touch(&handle, &a, true).await.transport,
            Transport::Absent,
            "{name}"
        );
        assert!(!touch(&handle, &a, false).await.is_transport(), "{name}");
        if name == "memory" {
            // Nothing crosses a network: the state comes whether asked or not.
            assert_eq!(unasked.transport, Transport::Read(state), "{name}");
            continue;
        }
        assert_eq!(unasked.transport, Transport::Unread, "{name}");
        // b forwards to a, which holds the session: b restores nothing.
        assert_eq!(others.transport, Transport::Unread, "{name}");
        for touched in [holders, unasked, others] {
            assert_eq!(touched.holder, Some(a.holder.clone()), "{name}");
        }
        assert_eq!(touch(&handle, &a, false).await.holder, None, "{name}");
        // Taken from a, presumed dead, b gets the state it restores a worker from.
        let taken = s.take_over("alice", &id, &b, &a.holder, true).await;
        let taken = taken.unwrap().expect("a live session");
        assert_eq!(taken.holder, Some(b.holder.clone()), "{name}");
        assert_eq!(taken.transport, Transport::Read(state), "{name}");
    }
}

#[tokio::test]
async fn a_liveness_mark_lasts_its_ttl_unless_renewed_or_deleted() {
    let redis = RedisServer::shared_or_start().await;
    for (name, s) in backends(&redis, 60).await {
        let a = lease_of("a").holder;
        if name == "memory" {
            // The one replica is the one asking.
            assert!(s.is_alive(&a).await.unwrap());
            continue;
        }
        assert!(!s.is_alive(&a).await.unwrap(), "never marked");
        s.mark_alive(&a, Duration::from_millis(300)).await.unwrap();
        assert!(s.is_alive(&a).await.unwrap());
        assert!(!s.is_alive(&lease_of("b").holder).await.unwrap());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!s.is_alive(&a).await.unwrap(), "ran out");
        s.mark_alive(&a, Duration::from_secs(60)).await.unwrap();
        s.mark_gone(&a).await.unwrap();
        assert!(!s.is_alive(&a).await.unwrap(), "deleted");
    }
}
