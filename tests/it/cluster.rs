//! The pool and the bus on a real 3-master / 3-replica Redis Cluster (`redis.mode =
//! "cluster"`, testkit's [`RedisCluster`]), with raw scripts and commands only, so
//! nothing here depends on the key layouts of the features above the pool: scripts and
//! `each` reach the master of every slot; `WAIT` goes with its script to that slot's
//! master; a slot migrated under keyed writes and a master SIGKILLed cost retries within
//! the bound, never a wrong answer, and the pool and readiness recover by themselves; the
//! bus delivers across replicas through sharded pub/sub whichever master owns a channel,
//! also after the channel's slot moves.
//!
//! The scenarios print their worst attempt and their recovery (run with `--nocapture`).

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{Script, Value};
use stateful_mcp::{
    config::RedisSettings,
    keys::Keys,
    redis_pool::{RedisPool, RedisPoolError, key_slot},
};

use crate::{
    bus::{BusNode, Recorder, next},
    support::{
        node::NodeBase,
        redis_server::{RedisCluster, RedisServerExt, unique_prefix},
        wait::{retry, wait_until, within},
    },
};

/// The most one attempt (a checkout and one script) may take while the cluster moves a
/// slot or fails a master over: the shipped timeouts give a checkout at most 1 s and a
/// command 0.5 s, retries and redirections included.
const BOUND: Duration = Duration::from_millis(1500);

/// Writers at once, each on keys of its own.
const WRITERS: usize = 4;

/// Adds `ARGV[1]` to the set `KEYS[2]` and, the first time only, increments `KEYS[1]`;
/// returns the counter. Both keys share a hash tag: one slot. Retrying an id never
/// counts it twice, so after any faults the counter equals the set's size.
const ONCE_PER_ID: &str = r"
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  return redis.call('INCR', KEYS[1])
end
return tonumber(redis.call('GET', KEYS[1]))
";

/// `count` keys, `{<prefix>:<i>}:n`, whose slots cover every master of `cluster`.
async fn keys_on_every_master(cluster: &RedisCluster, prefix: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("{{{prefix}:{i}}}:n")).collect();
    let mut owners = BTreeSet::new();
    for key in &keys {
        owners.insert(cluster.master_for_key(key).await);
    }
    assert_eq!(
        owners,
        cluster.masters().await.into_iter().collect(),
        "{keys:?}"
    );
    keys
}

/// The companion set of counter `key` (same hash tag).
fn ids_of(key: &str) -> String {
    key.replace(":n", ":ids")
}

/// `ONCE_PER_ID` for `key` and `id` through `pool`.
async fn once(
    pool: &RedisPool,
    script: &Script,
    key: &str,
    id: &str,
) -> Result<i64, RedisPoolError> {
    let mut conn = pool.get().await?;
    let mut invocation = script.key(key);
    invocation.key(ids_of(key)).arg(id);
    conn.invoke(&invocation).await
}

/// `GET key` on the master that serves it, past the pool.
async fn raw_get(cluster: &RedisCluster, key: &str) -> Option<i64> {
    let owner = cluster.master_for_key(key).await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut cluster.node(owner).conn().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn scripts_and_each_reach_the_master_of_every_slot() {
    let cluster = RedisCluster::start().await;
    let pool = cluster.pool();
    assert!(pool.is_cluster());
    let prefix = unique_prefix("cluster-scripts");
    let keys = keys_on_every_master(&cluster, &prefix, 24).await;
    // A script no node has seen yet: the first call on each master answers NOSCRIPT.
    let script = Script::new(&format!("-- {prefix}\n{ONCE_PER_ID}"));

    for (i, key) in keys.iter().enumerate() {
        assert_eq!(once(&pool, &script, key, "a").await.unwrap(), 1, "{key}");
        assert_eq!(
            once(&pool, &script, key, "a").await.unwrap(),
            1,
            "{key}: once"
        );
        assert_eq!(once(&pool, &script, key, "b").await.unwrap(), 2, "{key}");
        // redis-rs's own call, as some features make it: its NOSCRIPT path loads the
        // script on every master.
        let fresh = Script::new(&format!(
            "-- {prefix} {i}\nreturn redis.call('INCR', KEYS[1])"
        ));
        let mut conn = pool.get().await.unwrap();
        let n: i64 = fresh.key(key).invoke_async(&mut conn).await.unwrap();
        assert_eq!(n, 3, "{key}");
        assert_eq!(raw_get(&cluster, key).await, Some(3), "{key} on its master");
    }

    // Commands of every slot at once, replies in order.
    let mut conn = pool.get().await.unwrap();
    let sets: Vec<redis::Cmd> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| redis::cmd("SET").arg(key).arg(i).clone())
        .collect();
    let replies = conn.each(&sets).await.unwrap();
    assert!(
        replies.iter().all(|r| matches!(r, Value::Okay)),
        "{replies:?}"
    );
    let gets: Vec<redis::Cmd> = keys
        .iter()
        .map(|key| redis::cmd("GET").arg(key).clone())
        .collect();
    let replies = conn.each(&gets).await.unwrap();
    let values: Vec<i64> = replies
        .into_iter()
        .map(|v| redis::from_redis_value(v).unwrap())
        .collect();
    assert_eq!(values, (0..keys.len() as i64).collect::<Vec<_>>());
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            raw_get(&cluster, key).await,
            Some(i as i64),
            "{key} on its master"
        );
    }
    // One failing command fails the call.
    let mut mixed = gets.clone();
    mixed.push(redis::cmd("HGET").arg(&keys[0]).arg("field").clone());
    let err = conn.each(&mixed).await.unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    // A script whose keys span slots is the server's CROSSSLOT refusal, not a panic.
    let mut spanning = script.key(&keys[0]);
    spanning.key(&keys[1]).arg("c");
    let err = conn.invoke::<i64>(&spanning).await.unwrap_err();
    assert!(err.to_string().contains("slot"), "{err}");
    // A dedicated connection to one slot's master reads that slot's keys; another
    // slot's key on it is a redirection, not a wrong answer.
    let mut dedicated = pool.dedicated_for(&keys[0]).await.unwrap();
    let value: i64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut dedicated)
        .await
        .unwrap();
    assert_eq!(value, 0);
    let owner = cluster.master_for_key(&keys[0]).await;
    let mut elsewhere = Vec::new();
    for key in &keys {
        if cluster.master_for_key(key).await != owner {
            elsewhere.push(key);
        }
    }
    let moved = redis::cmd("GET")
        .arg(elsewhere[0])
        .query_async::<Option<i64>>(&mut dedicated)
        .await
        .unwrap_err();
    assert!(
        moved.to_string().contains("MOVED") || moved.to_string().contains("Moved"),
        "{moved}"
    );
    // Readiness: every slot served, every master answers.
    pool.ping().await.unwrap();
}

#[tokio::test]
async fn replica_acks_wait_on_the_master_of_the_scripts_slot() {
    let mut cluster = RedisCluster::start().await;
    let settings = RedisSettings {
        replica_acks: 1,
        replica_ack_timeout_ms: 200,
        ..cluster.settings()
    };
    let pool = RedisPool::new(&settings).unwrap();
    let prefix = unique_prefix("cluster-acks");
    let keys = keys_on_every_master(&cluster, &prefix, 24).await;
    let script = Script::new(ONCE_PER_ID);
    for key in &keys {
        assert_eq!(once(&pool, &script, key, "a").await.unwrap(), 1, "{key}");
    }
    // One round trip to one node: the script and its WAIT, pipelined to its master.
    let master = cluster.master_for_key(&keys[1]).await;
    let (outcome, seen) = cluster
        .node(master)
        .client_commands(once(&pool, &script, &keys[1], "a"))
        .await;
    assert_eq!(outcome.unwrap(), 1, "a replay changes nothing");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].contains("\"EVALSHA\""), "{seen:#?}");
    assert!(seen[1].contains("\"WAIT\" \"1\" \"200\""), "{seen:#?}");

    // One master's replica stops acknowledging: only that master's writes fall short.
    // A WAIT sent anywhere else (another master, or every master) would not see it so.
    let master = cluster.master_for_key(&keys[0]).await;
    let replica = cluster.replicas_of(master).await[0];
    cluster.pause(replica);
    for key in &keys {
        let outcome = once(&pool, &script, key, "b").await;
        if cluster.master_for_key(key).await == master {
            assert!(
                matches!(
                    outcome,
                    Err(RedisPoolError::Unacknowledged {
                        acked: 0,
                        wanted: 1
                    })
                ),
                "{key}: {outcome:?}"
            );
        } else {
            assert_eq!(outcome.unwrap(), 2, "{key}");
        }
    }
    cluster.resume(replica);
    // The write that fell short did happen: a retry with the same id replays it.
    let replayed = retry("the resumed replica acknowledges again", async || {
        once(&pool, &script, &keys[0], "b").await
    })
    .await;
    assert_eq!(replayed, 2);
}

/// What the writers saw.
#[derive(Debug, Default)]
struct Seen {
    /// Ids acknowledged, each retried until it was.
    acknowledged: u64,
    attempts: u64,
    failures: u64,
    worst: Duration,
    /// The first failed attempt and the first success after it.
    first_failure: Option<Instant>,
    recovered: Option<Instant>,
    /// How many failed with each error.
    errors: std::collections::BTreeMap<String, u64>,
}

/// `WRITERS` writers, each on its own key of `keys` (round robin), running
/// `ONCE_PER_ID` with fresh ids until `stop`, each id retried until acknowledged.
fn writers(
    pool: &RedisPool,
    script: &Arc<Script>,
    keys: &[String],
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|n| {
            let (pool, script, stop, seen) =
                (pool.clone(), script.clone(), stop.clone(), seen.clone());
            let key = keys[n % keys.len()].clone();
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("w{n}-{i}");
                    loop {
                        let started = Instant::now();
                        let outcome =
                            tokio::time::timeout(BOUND * 4, once(&pool, &script, &key, &id))
                                .await
                                .unwrap_or_else(|_| {
                                    panic!("{key} {id}: no answer within {:?}", BOUND * 4)
                                });
                        let took = started.elapsed();
                        let done = {
                            let mut seen = seen.lock().unwrap();
                            seen.attempts += 1;
                            seen.worst = seen.worst.max(took);
                            if outcome.is_ok() {
                                seen.acknowledged += 1;
                                if seen.first_failure.is_some() && seen.recovered.is_none() {
                                    seen.recovered = Some(Instant::now());
                                }
                            } else if let Err(e) = &outcome {
                                seen.failures += 1;
                                *seen.errors.entry(e.to_string()).or_default() += 1;
                                seen.first_failure.get_or_insert_with(Instant::now);
                            }
                            outcome.is_ok()
                        };
                        if done {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect()
}

/// Every key's counter equals its set's size (no id counted twice), and the counters add
/// up to the ids acknowledged (none lost: no master died here).
async fn counted_once(cluster: &RedisCluster, keys: &[String]) -> u64 {
    let mut total = 0;
    for key in keys {
        let owner = cluster.master_for_key(key).await;
        let mut conn = cluster.node(owner).conn().await;
        let n: Option<u64> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let ids: u64 = redis::cmd("SCARD")
            .arg(ids_of(key))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n.unwrap_or(0), ids, "{key}: counted once per id");
        total += ids;
    }
    total
}

#[tokio::test]
async fn a_slot_migrated_under_keyed_writes_costs_retries_not_wrong_answers() {
    let cluster = RedisCluster::start().await;
    let pool = cluster.pool();
    let prefix = unique_prefix("cluster-migrate");
    // Every writer on the one slot that moves.
    let key = format!("{{{prefix}}}:n");
    let slot = key_slot(key.as_bytes());
    let from = cluster.master_for_key(&key).await;
    let to = *cluster
        .masters()
        .await
        .iter()
        .find(|&&m| m != from)
        .unwrap();
    let script = Arc::new(Script::new(ONCE_PER_ID));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let keys = [key.clone()];
    let running = writers(&pool, &script, &keys, &stop, &seen);

    assert!(
        !pool.watch_slots().await.unwrap(),
        "the first look is no change"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    // Importing and migrating: the source answers ASK for what it no longer has.
    let migration = cluster.begin_migration(slot, to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    migration.move_keys(&cluster).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    migration.finish(&cluster).await;
    let moved = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in running {
        writer.await.expect("no writer panicked");
    }

    assert_eq!(cluster.master_for_key(&key).await, to, "the slot moved");
    assert!(
        pool.watch_slots().await.unwrap(),
        "the slot watcher sees it moved"
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let counted = counted_once(&cluster, &keys).await;
    eprintln!(
        "slot {slot} migrated in {moved:?} under {WRITERS} writers: {} ids, {} attempts, \
         {} failed, worst attempt {:?}, errors {:?}",
        seen.acknowledged, seen.attempts, seen.failures, seen.worst, seen.errors
    );
    assert_eq!(
        counted, seen.acknowledged,
        "every acknowledged id counted once"
    );
    assert!(seen.worst < BOUND, "worst attempt {:?}", seen.worst);
    // redis-rs follows ASK and MOVED and retries TRYAGAIN within the command's bound.
    assert_eq!(
        seen.failures, 0,
        "a migration costs retries inside the pool only"
    );
}

#[tokio::test]
async fn a_killed_master_is_replaced_and_the_pool_recovers_by_itself() {
    let mut cluster = RedisCluster::start().await;
    let prefix = unique_prefix("cluster-kill");
    let node = NodeBase::new(cluster.settings(), &prefix);
    let pool = node.pool.clone();
    let keys = keys_on_every_master(&cluster, &prefix, 24).await;
    let script = Arc::new(Script::new(ONCE_PER_ID));
    let stop = Arc::new(AtomicBool::new(false));
    // A key per master; writers on the one that dies apart from the others.
    let mut per_master = Vec::new();
    let mut owners = BTreeSet::new();
    for key in &keys {
        if owners.insert(cluster.master_for_key(key).await) {
            per_master.push(key.clone());
        }
    }
    let on_victim = Arc::new(Mutex::new(Seen::default()));
    let on_others = Arc::new(Mutex::new(Seen::default()));
    let mut running = writers(&pool, &script, &per_master[..1], &stop, &on_victim);
    running.extend(writers(&pool, &script, &per_master[1..], &stop, &on_others));
    let mut topology = pool.topology();
    topology.borrow_and_update();
    within("readiness is green", pool.ping()).await.unwrap();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = cluster.master_for_key(&per_master[0]).await;
    let killed = Instant::now();
    cluster.kill(victim);
    wait_until(
        "readiness goes red while a shard has no master",
        async || pool.ping().await.is_err(),
    )
    .await;
    let red = killed.elapsed();
    let promoted = cluster.time_until_healthy(killed).await;
    retry("readiness is green again by itself", async || {
        pool.ping().await
    })
    .await;
    let green = killed.elapsed();
    within("the slot watcher saw the new master", topology.changed())
        .await
        .unwrap();
    // Every key's shard takes writes again, the killed one's included.
    for key in &per_master {
        retry("a write on every shard succeeds", async || {
            once(&pool, &script, key, "after").await
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in running {
        writer.await.expect("no writer panicked");
    }

    let victim_seen = std::mem::take(&mut *on_victim.lock().unwrap());
    let others_seen = std::mem::take(&mut *on_others.lock().unwrap());
    let acknowledged =
        victim_seen.acknowledged + others_seen.acknowledged + per_master.len() as u64;
    let counted = counted_once(&cluster, &per_master).await;
    eprintln!(
        "master {victim} killed under {} writers: readiness red after {red:?}, replica \
         promoted after {promoted:?}, readiness green after {green:?}; its slots' calls \
         failed for {:?} ({} of {} attempts failed, worst {:?}); the other masters' \
         calls: {} of {} failed, worst {:?}; {acknowledged} ids acknowledged, {counted} \
         counted ({} lost)",
        WRITERS * 2,
        victim_seen
            .recovered
            .zip(victim_seen.first_failure)
            .map(|(r, f)| r.duration_since(f)),
        victim_seen.failures,
        victim_seen.attempts,
        victim_seen.worst,
        others_seen.failures,
        others_seen.attempts,
        others_seen.worst,
        acknowledged.saturating_sub(counted),
    );
    eprintln!(
        "errors on its slots: {:?}; elsewhere: {:?}",
        victim_seen.errors, others_seen.errors
    );
    assert!(
        victim_seen.worst < BOUND,
        "worst attempt {:?}",
        victim_seen.worst
    );
    assert!(
        others_seen.worst < BOUND,
        "worst attempt {:?}",
        others_seen.worst
    );
    // The other masters' slots fail only while the cluster is down as a whole (by
    // default a cluster refuses every command while a slot has no master) or while the
    // pool's cluster connection refreshes its slot map: a short moment, within the bound.
    assert!(
        victim_seen.recovered.is_some(),
        "the killed master's slots recovered"
    );
    // Replication is asynchronous: the killed master may have acknowledged increments
    // its replica never got (`replica_acks` = 0 here), never more than were acknowledged.
    assert!(counted <= acknowledged);
    node.stop("the slot watcher stops").await;
}

#[tokio::test]
async fn the_bus_delivers_across_replicas_whichever_master_owns_the_channel() {
    let cluster = RedisCluster::start().await;
    let prefix = unique_prefix("cluster-bus");
    let keys = Keys::new(&prefix);
    // Topics whose channels live on every master.
    let masters: BTreeSet<usize> = cluster.masters().await.into_iter().collect();
    let mut topics = Vec::new();
    let mut owners = BTreeSet::new();
    for i in 0.. {
        let topic = format!("topic-{i}");
        if owners.insert(cluster.master_for_key(&keys.bus_channel(&topic)).await) {
            topics.push(topic);
        }
        if owners == masters {
            break;
        }
    }
    let a = BusNode::start(&cluster, &prefix, "replica-a");
    let b = BusNode::start(&cluster, &prefix, "replica-b");
    let (on_b, mut b_rx) = Recorder::new();
    for topic in &topics {
        b.bus.subscribe(topic, on_b.clone());
    }
    wait_until("B is subscribed to every topic", async || {
        b.bus.is_connected()
    })
    .await;
    for topic in &topics {
        a.publish(topic, topic.as_bytes()).await;
        let got = next(&mut b_rx).await;
        assert_eq!(
            (
                got.topic.as_str(),
                got.origin.as_str(),
                got.payload.as_slice()
            ),
            (topic.as_str(), "replica-a", topic.as_bytes())
        );
    }
    assert_eq!(on_b.gaps(), 0);

    // The first topic's slot moves to another master: the server drops B's subscription
    // there, and B subscribes again where the slot lives now, reporting the gap.
    let channel = keys.bus_channel(&topics[0]);
    let from = cluster.master_for_key(&channel).await;
    let to = *masters.iter().find(|&&m| m != from).unwrap();
    cluster.migrate_slot(key_slot(channel.as_bytes()), to).await;
    wait_until("B reports the gap of the moved channel", async || {
        on_b.gaps() >= 1
    })
    .await;
    wait_until("B subscribes again", async || b.bus.is_connected()).await;
    let delivered = retry("a message on the moved channel reaches B", async || {
        a.publish(&topics[0], b"after the move").await;
        match tokio::time::timeout(Duration::from_millis(200), b_rx.recv()).await {
            Ok(Some(got)) if got.payload == b"after the move" => Ok(got),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(delivered.origin, "replica-a");
    a.stop().await;
    b.stop().await;
}
