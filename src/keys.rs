//! Every Redis key and pub/sub channel name this crate uses, built in one place.
//!
//! Layout (`<p>` is `redis.key_prefix`):
//!
//! | key | type | TTL | what |
//! |---|---|---|---|
//! | `<p>:{<id>}:session` | hash | session timeout, slid on access | one session record |
//! | `<p>:{<id>}:gone` | string | until its reservation's deadline | a session deleted while its create could still run (never made again) |
//! | `<p>:{p:<principal>}:sessions` | sorted set | timeout + 5 min, refreshed on write | a principal's session ids (and pending reservations) by how long each is known to live |
//! | `<p>:{p:<principal>}:create:<digest>` | string | `session.idempotency_ttl_secs` | the session a keyed `session_create` made (or reserved) |
//! | `<p>:{p:<principal>}:creates` | sorted set | `session.idempotency_ttl_secs`, refreshed | a principal's keyed-create records by write time, at most `session.max_retry_records` |
//! | `<p>:{<id>}:idem:<digest>` | string | `session.idempotency_ttl_secs` | the first reply of a keyed call that changed session `id` |
//! | `<p>:{<id>}:idem` | sorted set | `session.idempotency_ttl_secs`, refreshed | session `id`'s retry records by write time, at most `session.max_retry_records` and `max_retry_bytes` |
//! | `<p>:{sessions:<b>}` | sorted set | timeout + 5 min, refreshed | bucket `b` (the id's first hex digit) of every session, `<id>:<owner>` by how long each is known to live (stats, upkeep) |
//! | `<p>:{sessions:<b>}:last_access` | string | session timeout | newest access time replicas flushed into bucket `b` |
//! | `<p>:{<session>}:events:<stream>` | stream | event TTL; short once a request's response is in | SSE events of one response stream of a session |
//! | `<p>:replica:<r>:wake` | stream | short | wakes replica `r`'s blocking stream reader |
//! | `<p>:{w<n>}:wake:<r>` | stream | short | on Redis Cluster, wakes replica `r`'s reader of the slot of tag `w<n>` |
//! | `<p>:replica:<r>:alive` | string | 2.5 s, renewed every 0.8 s | replica `r` is alive: without it, a holder that cannot be connected to is dead |
//! | `<p>:cache:gen` | string | 2 × `cache.max_ttl_secs`, refreshed | cache generation |
//! | `<p>:cache:{<gen>:<key>}` | string | the entry's TTL | one cache entry |
//! | `<p>:cache:lock:{<gen>:<key>}` | string | `cache.load_lock_ttl_ms` | one replica loads a missing entry |
//! | `<p>:{<t>}:task:<id>` | hash | `tasks.ttl_secs`, slid on every change | one background task (`<t>`: its lease bucket's tag) |
//! | `<p>:{<t>}:leases` | sorted set | task TTL + lease, refreshed on add | one bucket's running tasks by lease expiry |
//! | channel `<p>:bus:<topic>` | pub/sub | — | cross-replica messages |
//!
//! Everything one script, pipeline or multi-key command touches shares a `{hash tag}`,
//! so every one fits Redis Cluster. Where one operation needs several slots it takes
//! steps of one slot each: a session's keys are in three slots (the session `{<id>}`,
//! which every per-session script touches alone; its owner `{p:<principal>}`; its
//! bucket `{sessions:<b>}`), written in steps on a cluster
//! (`src/sessions/redis/create.rs`). The one exception: on a single node, where no
//! slot is another node's, one script creates a session in all three.
//!
//! The task lease index is split into [`TASK_BUCKETS`] buckets, each a sorted set under a
//! tag of its own; a task's record carries its bucket's tag (the bucket is a hash of the
//! task id), so a task script touches one slot, and the sweep asks each bucket once, a
//! constant number of commands however many tasks run. The bucket tags are chosen so that
//! their hash slots are evenly spaced over the 16384 slots: on a cluster whose shards own
//! contiguous, equal slot ranges (what `redis-cli --cluster create` makes) every shard
//! holds the same number of buckets, to within one.

mod slot;

use std::sync::Arc;

pub use self::slot::{SLOTS, hash_slot};

/// How many buckets the index of every session is split into (see
/// [`Keys::session_bucket`]).
pub const SESSION_BUCKETS: usize = 16;

/// Cheap-clone key builder under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    /// A builder for keys under `prefix` (validated by the configuration loader: no braces).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The first result of an idempotent call on session `id` (`digest` names the caller,
    /// the tool and its key); in the session's hash slot, so one script reads and writes
    /// both.
    pub fn idempotency(&self, id: &str, digest: &str) -> String {
        format!("{}:{{{id}}}:idem:{digest}", self.prefix)
    }

    /// The sorted set of session `id`'s retry records (`<bytes>:<key>` by the time
    /// each was written), so the session keeps a bounded number and size of them.
    pub fn retry_index(&self, id: &str) -> String {
        format!("{}:{{{id}}}:idem", self.prefix)
    }

    /// The hash holding one session record.
    pub fn session(&self, id: &str) -> String {
        format!("{}:{{{id}}}:session", self.prefix)
    }

    /// What comes before and after the id in [`Keys::session`]'s key, for a script on
    /// a single node that reads the sessions an index names (`head .. id .. tail`).
    pub fn session_around(&self) -> (String, &'static str) {
        (format!("{}:{{", self.prefix), "}:session")
    }

    /// The mark of a session deleted while its create could still run (a retried keyed
    /// create): in the session's slot, so the create script sees it and never makes the
    /// session again.
    pub fn session_tombstone(&self, id: &str) -> String {
        format!("{}:{{{id}}}:gone", self.prefix)
    }

    /// The sorted set of one principal's session ids and pending reservations, each
    /// scored by how long it is known to live (milliseconds, Redis time): what the
    /// per-principal cap counts.
    pub fn principal_sessions(&self, principal: &str) -> String {
        format!("{}:{{p:{principal}}}:sessions", self.prefix)
    }

    /// The first reply of an idempotent `session_create` (retry digest `digest`), in
    /// the slot of the principal's session index.
    pub fn create_retry(&self, principal: &str, digest: &str) -> String {
        format!("{}:{{p:{principal}}}:create:{digest}", self.prefix)
    }

    /// The sorted set of one principal's keyed-create records by write time, which
    /// bounds how many the principal keeps.
    pub fn create_retries(&self, principal: &str) -> String {
        format!("{}:{{p:{principal}}}:creates", self.prefix)
    }

    /// Which of the [`SESSION_BUCKETS`] buckets session `id` belongs to: its first hex
    /// digit (ids are random, so the buckets fill evenly).
    pub fn session_bucket_of(id: &str) -> usize {
        id.bytes()
            .next()
            .and_then(|b| char::from(b).to_digit(16))
            .map_or(0, |d| d as usize)
    }

    /// Bucket `bucket` of the index of every session: members `<id>:<owner>`, scored by
    /// how long each session is known to live. Each bucket is its own hash slot, so no
    /// key lists every session and the buckets spread over a cluster's shards.
    pub fn session_bucket(&self, bucket: usize) -> String {
        format!("{}:{{sessions:{bucket:x}}}", self.prefix)
    }

    /// The newest access time replicas flushed into bucket `bucket` (stats read all
    /// of them).
    pub fn bucket_last_access(&self, bucket: usize) -> String {
        format!("{}:{{sessions:{bucket:x}}}:last_access", self.prefix)
    }

    /// One principal's request budget (rate limiting), in the slot of its session index.
    pub fn rate_limit(&self, principal: &str) -> String {
        format!("{}:{{p:{principal}}}:rate", self.prefix)
    }

    /// The Redis stream holding the SSE events of response stream `stream_id` of session
    /// `session_id`: the session is part of the key, so a stream is only ever found from
    /// its own session. The `{hash tag}` is the session's, like its record's.
    pub fn event_stream(&self, session_id: &str, stream_id: &str) -> String {
        format!("{}:{{{session_id}}}:events:{stream_id}", self.prefix)
    }

    /// The stream whose entries wake one replica's blocking event reader.
    pub fn replica_wake(&self, replica_id: &str) -> String {
        format!("{}:replica:{replica_id}:wake", self.prefix)
    }

    /// The stream whose entries wake one replica's blocking event reader of hash slot
    /// `slot` (Redis Cluster, where a reader covers one slot): its tag puts it in that
    /// slot, so the reader's `XREAD` names it with the streams it follows there.
    pub fn slot_reader_wake(&self, slot: u16, replica_id: &str) -> String {
        format!(
            "{}:{{{}}}:wake:{replica_id}",
            self.prefix,
            slot::slot_tag(slot)
        )
    }

    /// The liveness mark of one replica: present while the replica runs (renewed well
    /// within its short TTL, deleted at the end of its drain). A replica that cannot
    /// connect to a session's holder takes the session over at once when the holder's
    /// mark is gone, rather than after the holder's lease runs out.
    pub fn replica_alive(&self, replica_id: &str) -> String {
        format!("{}:replica:{replica_id}:alive", self.prefix)
    }

    /// The cache generation counter; bumping it empties the cache in O(1).
    pub fn cache_generation(&self) -> String {
        format!("{}:cache:gen", self.prefix)
    }

    /// One cache entry of generation `generation`. The `{hash tag}` covers generation and
    /// key, so an entry and its load lock share a Cluster slot.
    pub fn cache_entry(&self, generation: u64, key: &str) -> String {
        format!("{}:cache:{{{generation}:{}}}", self.prefix, tag_safe(key))
    }

    /// The lock that lets one replica load a missing cache entry while others wait.
    pub fn cache_lock(&self, generation: u64, key: &str) -> String {
        format!(
            "{}:cache:lock:{{{generation}:{}}}",
            self.prefix,
            tag_safe(key)
        )
    }

    /// The hash holding one background task's record, in the hash slot of its lease
    /// bucket ([`Keys::task_leases_of`]).
    pub fn task(&self, id: &str) -> String {
        format!(
            "{}:{{{}}}:task:{id}",
            self.prefix,
            task_tag(task_bucket(id))
        )
    }

    /// The lease bucket of task `id`: the sorted set of its bucket's unfinished tasks
    /// scored by the end of their owner's lease, in the slot of the task's record.
    pub fn task_leases_of(&self, id: &str) -> String {
        self.task_leases(task_bucket(id))
    }

    /// Every lease bucket, the [`TASK_BUCKETS`] keys a sweep visits.
    pub fn task_lease_buckets(&self) -> impl Iterator<Item = String> + '_ {
        (0..TASK_BUCKETS).map(|bucket| self.task_leases(bucket))
    }

    fn task_leases(&self, bucket: usize) -> String {
        format!("{}:{{{}}}:leases", self.prefix, task_tag(bucket))
    }

    /// The pub/sub channel of one bus topic.
    pub fn bus_channel(&self, topic: &str) -> String {
        format!("{}:bus:{topic}", self.prefix)
    }
}

/// How many buckets the task lease index is split into: a sweep costs one command per
/// bucket, and 16 give every shard of a cluster of 2 to 16 shards (contiguous equal slot
/// ranges) the same number of buckets to within one. Part of the key layout: a task's
/// keys name its bucket, so replicas with another count would not find each other's
/// tasks.
pub const TASK_BUCKETS: usize = 16;

/// The bucket of task `id`.
fn task_bucket(id: &str) -> usize {
    usize::from(slot::crc16(id.as_bytes())) % TASK_BUCKETS
}

/// The hash tag of lease bucket `bucket`: `tasks:<bucket>:<n>` with the smallest `n`
/// whose slot lies near the middle of the bucket's share of the slots (within a
/// sixteenth of a share of it), so a shard boundary near a share's edge never decides
/// which shard a bucket is on and the buckets spread evenly over a cluster's shards.
fn task_tag(bucket: usize) -> &'static str {
    static TAGS: std::sync::LazyLock<[String; TASK_BUCKETS]> = std::sync::LazyLock::new(|| {
        std::array::from_fn(|bucket| {
            let share = usize::from(SLOTS) / TASK_BUCKETS;
            let middle = bucket * share + share / 2;
            let near = middle - share / 16..middle + share / 16;
            (0u32..)
                .map(|n| format!("tasks:{bucket}:{n}"))
                .find(|tag| near.contains(&usize::from(slot_of_tag(tag))))
                .expect("every range of slots is hit by some tag")
        })
    });
    &TAGS[bucket]
}

/// The Redis Cluster hash slot of a key whose hash tag is `tag`.
fn slot_of_tag(tag: &str) -> u16 {
    slot::crc16(tag.as_bytes()) % SLOTS
}

/// A caller-chosen key with braces replaced, so it cannot end the `{hash tag}` early.
fn tag_safe(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['{', '}']) {
        key.replace('{', "%7B").replace('}', "%7D").into()
    } else {
        key.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_prefix_and_hash_tag() {
        let k = Keys::new("app");
        assert_eq!(k.session("abc"), "app:{abc}:session");
        let (head, tail) = k.session_around();
        assert_eq!(format!("{head}abc{tail}"), k.session("abc"));
        assert_eq!(k.principal_sessions("alice"), "app:{p:alice}:sessions");
        assert_eq!(k.session_tombstone("abc"), "app:{abc}:gone");
        assert_eq!(k.create_retries("alice"), "app:{p:alice}:creates");
        assert_eq!(k.session_bucket(10), "app:{sessions:a}");
        assert_eq!(k.bucket_last_access(0), "app:{sessions:0}:last_access");
        assert_eq!(Keys::session_bucket_of("f3"), 15);
        assert_eq!(Keys::session_bucket_of("07"), 0);
        assert_eq!(k.event_stream("abc", "s1"), "app:{abc}:events:s1");
        assert_eq!(k.bus_channel("cache"), "app:bus:cache");
        assert_eq!(k.replica_alive("r1"), "app:replica:r1:alive");
        assert_eq!(
            k.task("abc"),
            format!("app:{{{}}}:task:abc", task_tag(task_bucket("abc")))
        );
        let stream = k.event_stream("abc", "s1");
        let wake = k.slot_reader_wake(super::hash_slot(&stream), "r1");
        assert!(
            wake.starts_with("app:{w") && wake.ends_with("}:wake:r1"),
            "{wake}"
        );
        assert_eq!(super::hash_slot(&wake), super::hash_slot(&stream));
        assert_eq!(k.cache_entry(3, "user:1"), "app:cache:{3:user:1}");
        assert_eq!(k.cache_lock(3, "user:1"), "app:cache:lock:{3:user:1}");
        assert_eq!(k.cache_entry(0, "a}b{"), "app:cache:{0:a%7Db%7B}");
    }

    #[test]
    fn the_checksum_is_redis_clusters() {
        // The examples of the Redis Cluster specification.
        assert_eq!(slot::crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of_tag("foo"), 12182);
    }

    #[test]
    fn a_task_and_its_lease_bucket_share_a_slot_and_the_buckets_spread_evenly() {
        let k = Keys::new("app");
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            key[open + 1..close].to_owned()
        };
        for id in ["abc", "x", "0123456789abcdef0123456789abcdef"] {
            assert_eq!(tag(&k.task(id)), tag(&k.task_leases_of(id)), "{id}");
        }
        let buckets: Vec<String> = k.task_lease_buckets().collect();
        assert_eq!(buckets.len(), TASK_BUCKETS);
        let slots: Vec<usize> = buckets
            .iter()
            .map(|key| usize::from(slot_of_tag(&tag(key))))
            .collect();
        let share = usize::from(SLOTS) / TASK_BUCKETS;
        for (bucket, slot) in slots.iter().enumerate() {
            assert_eq!(slot / share, bucket, "bucket {bucket} in slot {slot}");
        }
        // Shards owning contiguous equal ranges, as `redis-cli --cluster create` makes.
        for shards in 2..=16 {
            let mut per_shard = vec![0; shards];
            for slot in &slots {
                per_shard[slot * shards / usize::from(SLOTS)] += 1;
            }
            let (least, most) = (per_shard.iter().min(), per_shard.iter().max());
            assert!(
                most.unwrap() - least.unwrap() <= 1,
                "{shards} shards: {per_shard:?}"
            );
        }
    }

    #[test]
    fn task_ids_spread_over_every_bucket() {
        let k = Keys::new("app");
        let mut seen = std::collections::HashSet::new();
        for n in 0..1000 {
            seen.insert(k.task_leases_of(&format!("task-{n}")));
        }
        assert_eq!(seen.len(), TASK_BUCKETS);
    }
}
