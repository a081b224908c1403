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
//! | `<p>:replica:<r>:alive` | string | 2.5 s, renewed every 0.8 s | replica `r` is alive: without it, a holder that cannot be connected to is dead |
//! | `<p>:cache:gen` | string | 2 × `cache.max_ttl_secs`, refreshed | cache generation |
//! | `<p>:cache:{<gen>:<key>}` | string | the entry's TTL | one cache entry |
//! | `<p>:cache:lock:{<gen>:<key>}` | string | `cache.load_lock_ttl_ms` | one replica loads a missing entry |
//! | `<p>:{task:<id>}` | hash | `tasks.ttl_secs`, slid on every change | one background task |
//! | `<p>:tasks:leases` | sorted set | task TTL + lease, refreshed on add | running tasks by lease expiry |
//! | channel `<p>:bus:<topic>` | pub/sub | — | cross-replica messages |
//!
//! Everything one script touches shares a `{hash tag}`, with one exception: the task
//! scripts keep the lease index in step with a task's record. The session layer writes
//! its three slots (the session `{<id>}`, its owner `{p:<principal>}`, its bucket
//! `{sessions:<b>}`) in separate steps, each one slot (`src/sessions/redis/create.rs`).

use std::sync::Arc;

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

    /// The hash holding one background task's record.
    pub fn task(&self, id: &str) -> String {
        format!("{}:{{task:{id}}}", self.prefix)
    }

    /// The sorted set of unfinished tasks scored by the end of their owner's lease.
    pub fn task_leases(&self) -> String {
        format!("{}:tasks:leases", self.prefix)
    }

    /// The pub/sub channel of one bus topic.
    pub fn bus_channel(&self, topic: &str) -> String {
        format!("{}:bus:{topic}", self.prefix)
    }
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
    use super::Keys;

    #[test]
    fn keys_carry_prefix_and_hash_tag() {
        let k = Keys::new("app");
        assert_eq!(k.session("abc"), "app:{abc}:session");
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
        assert_eq!(k.task("abc"), "app:{task:abc}");
        assert_eq!(k.cache_entry(3, "user:1"), "app:cache:{3:user:1}");
        assert_eq!(k.cache_lock(3, "user:1"), "app:cache:lock:{3:user:1}");
        assert_eq!(k.cache_entry(0, "a}b{"), "app:cache:{0:a%7Db%7B}");
    }
}
