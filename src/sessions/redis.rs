//! The Redis backend: one hash per session whose TTL is the sliding expiry, changed only
//! by Lua scripts that check the owner, slide the TTL and apply the operation in one
//! round trip, touching nothing but the session's own hash slot.
//!
//! A session's other entries live in other slots, written in steps of one slot each on
//! Redis Cluster (with the record, in one script, on a single node): its owner's index
//! (what the per-principal cap counts) and one of the buckets of the index of every
//! session (stats, upkeep). Both score a session by how long it is known to live, which
//! a call does not move; an entry whose score has passed is checked (`PTTL`) before it
//! is dropped or scored again, at the cap or in upkeep.
//!
//! The record operations are here; `redis/create.rs` creates and deletes sessions,
//! `redis/holding.rs` takes, renews and releases the leases of 2025-era sessions,
//! `redis/index.rs` reads and keeps the indexes (list, stats, maintain),
//! `redis/census.rs` reads every session for an operator, and
//! `redis/reply.rs` reads the scripts' replies.

mod census;
mod create;
mod holding;
mod index;
mod reply;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use redis::{Cmd, Script, Value};

use self::reply::Reply;
use super::{
    CounterOp, HistoryOp, Retry, Session, SessionError,
    retry_records::{RetryRecordCounts, RetryRecordFigures},
};
use crate::{
    config::SessionSettings,
    keys::Keys,
    redis_pool::{PooledConnection, RedisPool},
};

/// Extra lifetime of index keys beyond the longest score they can hold, so an index
/// outlives its members while upkeep finds and scores them again.
const INDEX_TTL_MARGIN_MS: i64 = 5 * 60 * 1000;

/// How long a reservation waits for its session by default (see
/// [`RedisSessions::with_reservation_grace`]).
const RESERVATION_GRACE: Duration = Duration::from_secs(5);

struct Scripts {
    get: Script,
    touch: Script,
    update: Script,
    counter: Script,
    history: Script,
    reserve: Script,
    record: Script,
    create_node: Script,
    delete: Script,
    raise: Script,
    lease: Script,
}

impl Scripts {
    /// The scripts, named on `pool` for the spans of their round trips.
    fn new(pool: &RedisPool) -> Self {
        let prelude = include_str!("lua/prelude.lua");
        // The operation runs as a function so the prelude's `finish` can keep its reply
        // for idempotent retries; `peek` names a field the prelude reads for it.
        let with_prelude = |body: &str, peek: Option<&str>| {
            let peek = peek.map_or_else(|| "nil".to_owned(), |field| format!("'{field}'"));
            Script::new(&format!(
                "local peek = {peek}\n{prelude}\nlocal function operation()\n{body}\nend\nreturn finish(operation())"
            ))
        };
        // The create scripts share their parts: the steps and the script that does them
        // all at once on a single node judge, count and write alike.
        let parts = include_str!("lua/create_parts.lua");
        let with_parts = |body: &str| Script::new(&format!("{parts}\n{body}"));
        let scripts = Self {
            get: with_prelude(include_str!("lua/get.lua"), None),
            touch: with_prelude(include_str!("lua/touch.lua"), None),
            update: with_prelude(include_str!("lua/update.lua"), None),
            counter: with_prelude(include_str!("lua/counter.lua"), Some("d:counter")),
            history: with_prelude(include_str!("lua/history.lua"), None),
            reserve: with_parts(include_str!("lua/reserve.lua")),
            record: with_parts(include_str!("lua/record.lua")),
            create_node: with_parts(include_str!("lua/create_node.lua")),
            delete: Script::new(include_str!("lua/delete.lua")),
            raise: Script::new(include_str!("lua/raise.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
        };
        pool.name_scripts(&[
            ("session.get", &scripts.get),
            ("session.touch", &scripts.touch),
            ("session.update", &scripts.update),
            ("session.counter", &scripts.counter),
            ("session.history", &scripts.history),
            ("session.reserve", &scripts.reserve),
            ("session.record", &scripts.record),
            ("session.create", &scripts.create_node),
            ("session.delete", &scripts.delete),
            ("session.raise", &scripts.raise),
            ("session.lease", &scripts.lease),
        ]);
        scripts
    }
}

/// Cheap-clone handle on the Redis session store.
#[derive(Clone)]
pub struct RedisSessions {
    shared: Arc<Shared>,
}

struct Shared {
    pool: RedisPool,
    keys: Keys,
    timeout_ms: i64,
    /// How long a reservation waits for its session record, in ms.
    grace_ms: i64,
    /// Whether creates take steps of one hash slot each: on Redis Cluster, and from
    /// the first create a node refused in one script (a cluster reached as one node).
    in_steps: AtomicBool,
    scripts: Scripts,
    /// Newest access this replica made, flushed to Redis by `maintain` so stats see it
    /// without a global write on every request.
    newest_access_ms: AtomicI64,
    /// Upkeep rounds run, which picks the bucket a round flushes the newest access to.
    rounds: AtomicUsize,
    /// The retry records this store's scripts reported writing and dropping.
    retry_records: RetryRecordCounts,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("prefix", &self.shared.keys.prefix())
            .finish()
    }
}

/// Session `id`'s member in its bucket: the id and its owner, so upkeep that finds the
/// session gone knows whose index to remove it from.
fn bucket_member(id: &str, principal: &str) -> String {
    format!("{id}:{principal}")
}

impl RedisSessions {
    /// A store on `pool` under `keys`, whose sessions expire after `timeout` without access.
    pub fn new(pool: RedisPool, keys: Keys, timeout: Duration) -> Self {
        let in_steps = pool.is_cluster();
        Self::build(pool, keys, timeout, RESERVATION_GRACE, in_steps)
    }

    /// This store with reservations that wait `grace` (5 s by default) for their
    /// session record: a create whose record is not written by then less the tolerated
    /// clock skew between Redis nodes (1 s) is refused and tried again under a new id,
    /// and a reservation whose replica died holds its place under the cap that long.
    /// Shorter than the skew, every create comes too late (what tests of that case use).
    /// Only creates in steps take reservations (see
    /// [`RedisSessions::with_creates_in_steps`]).
    pub fn with_reservation_grace(self, grace: Duration) -> Self {
        let shared = &self.shared;
        let timeout = Duration::from_millis(u64::try_from(shared.timeout_ms).unwrap_or(u64::MAX));
        let in_steps = shared.in_steps.load(Ordering::Relaxed);
        Self::build(
            shared.pool.clone(),
            shared.keys.clone(),
            timeout,
            grace,
            in_steps,
        )
    }

    /// This store creating sessions in steps of one hash slot each on a single node
    /// too, as it does on Redis Cluster (three round trips instead of one script; what
    /// tests of the steps use).
    pub fn with_creates_in_steps(self) -> Self {
        self.shared.in_steps.store(true, Ordering::Relaxed);
        self
    }

    fn build(
        pool: RedisPool,
        keys: Keys,
        timeout: Duration,
        grace: Duration,
        in_steps: bool,
    ) -> Self {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let scripts = Scripts::new(&pool);
        Self {
            shared: Arc::new(Shared {
                pool,
                keys,
                timeout_ms: millis(timeout),
                grace_ms: millis(grace),
                in_steps: AtomicBool::new(in_steps),
                scripts,
                newest_access_ms: AtomicI64::new(0),
                rounds: AtomicUsize::new(0),
                retry_records: RetryRecordCounts::default(),
            }),
        }
    }

    /// The TTL of an index key: longer than any score it holds (a session's remaining
    /// life, at most the timeout, or a reservation's grace) by a margin.
    fn index_ttl_ms(&self) -> i64 {
        self.shared
            .timeout_ms
            .max(self.shared.grace_ms)
            .saturating_add(INDEX_TTL_MARGIN_MS)
    }

    /// Runs `commands` (each of one hash slot, not all of the same one) on a pooled
    /// connection.
    async fn run_each(&self, commands: Vec<Cmd>) -> Result<Vec<Value>, SessionError> {
        let mut conn = self.shared.pool.get().await?;
        Ok(conn.each(&commands).await?)
    }

    /// The remaining life (`PTTL`, ms; -2 when gone) of each session of `ids`, in one
    /// round trip.
    async fn remaining_lives(
        &self,
        conn: &mut PooledConnection,
        ids: &[String],
    ) -> Result<Vec<i64>, SessionError> {
        let commands: Vec<Cmd> = ids
            .iter()
            .map(|id| {
                let mut pttl = redis::cmd("PTTL");
                pttl.arg(self.shared.keys.session(id));
                pttl
            })
            .collect();
        let replies = conn.each(&commands).await?;
        Ok(replies
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()?)
    }

    pub(super) fn retry_records(&self) -> RetryRecordFigures {
        self.shared.retry_records.figures()
    }

    fn note_access(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        self.shared
            .newest_access_ms
            .fetch_max(now, Ordering::Relaxed);
    }

    /// Runs a prelude script (owner check, touch) and maps the shared statuses.
    async fn run(
        &self,
        script: &Script,
        principal: &str,
        id: &str,
        args: &[&str],
    ) -> Result<Reply, SessionError> {
        self.run_once(script, principal, id, args, None).await
    }

    /// [`RedisSessions::run`] with an optional idempotent retry: `retry` = the key and
    /// how long its first reply is kept.
    async fn run_once(
        &self,
        script: &Script,
        principal: &str,
        id: &str,
        args: &[&str],
        retry: Option<(&Retry, &SessionSettings)>,
    ) -> Result<Reply, SessionError> {
        let mut conn = self.shared.pool.get().await?;
        let keys = &self.shared.keys;
        let mut invocation = script.key(keys.session(id));
        invocation.arg(principal).arg(self.shared.timeout_ms);
        for a in args {
            invocation.arg(*a);
        }
        if let Some((retry, limits)) = retry {
            invocation
                .key(keys.idempotency(id, &retry.key))
                .key(keys.retry_index(id))
                .arg(&retry.fingerprint)
                .arg(limits.idempotency_ttl_secs.saturating_mul(1000))
                .arg(limits.max_retry_records)
                .arg(limits.max_retry_bytes);
        }
        let (reply, kept) = Reply::parse(conn.invoke(&invocation).await?)?.unwrap_kept()?;
        if let Some(dropped) = kept {
            self.shared.retry_records.wrote(dropped);
        }
        match reply.status.as_str() {
            "unknown" => Err(SessionError::NotFound(id.to_owned())),
            "retry_conflict" => Err(SessionError::RetryConflict),
            "overflow" => Err(SessionError::CounterOverflow),
            "not_integer" => Err(SessionError::Invalid(
                "stored counter is not an integer".into(),
            )),
            "ok" => {
                self.note_access();
                Ok(reply)
            }
            _ => Ok(reply),
        }
    }

    pub(super) async fn get(&self, principal: &str, id: &str) -> Result<Session, SessionError> {
        let mut reply = self
            .run(&self.shared.scripts.get, principal, id, &[])
            .await?;
        let fields: HashMap<String, String> =
            redis::from_redis_value(std::mem::replace(&mut reply.values[0], Value::Nil))?;
        Session::from_fields(id, fields).ok_or_else(|| SessionError::NotFound(id.to_owned()))
    }

    pub(super) async fn update(
        &self,
        principal: &str,
        id: &str,
        key: &str,
        value: Option<String>,
        limits: &SessionSettings,
    ) -> Result<(), SessionError> {
        let field = format!("{}{key}", super::record::DATA_FIELD_PREFIX);
        let max = limits.max_data_bytes.to_string();
        let mut args = vec![field.as_str(), max.as_str()];
        if let Some(v) = &value {
            args.push(v);
        }
        let reply = self
            .run(&self.shared.scripts.update, principal, id, &args)
            .await?;
        too_large(&reply, limits)?;
        Ok(())
    }

    pub(super) async fn counter(
        &self,
        principal: &str,
        id: &str,
        op: CounterOp,
        retry: Option<&Retry>,
        limits: &SessionSettings,
    ) -> Result<i64, SessionError> {
        let (name, amount) = match op {
            CounterOp::Get => ("get", 0),
            CounterOp::Add(n) => ("add", n),
            CounterOp::Reset => ("reset", 0),
        };
        let amount = amount.to_string();
        let max = limits.max_data_bytes.to_string();
        let mut reply = self
            .run_once(
                &self.shared.scripts.counter,
                principal,
                id,
                &[name, &amount, &max],
                retry.map(|r| (r, limits)),
            )
            .await?;
        too_large(&reply, limits)?;
        reply
            .string(0)?
            .parse()
            .map_err(|_| SessionError::Invalid("stored counter is not an integer".into()))
    }

    pub(super) async fn history(
        &self,
        principal: &str,
        id: &str,
        op: HistoryOp,
        retry: Option<&Retry>,
        limits: &SessionSettings,
    ) -> Result<Vec<String>, SessionError> {
        let (name, entry) = match &op {
            HistoryOp::List => ("list", ""),
            HistoryOp::Add(e) => ("add", e.as_str()),
            HistoryOp::Clear => ("clear", ""),
        };
        let keep = limits.history_limit.to_string();
        let max = limits.max_data_bytes.to_string();
        let mut reply = self
            .run_once(
                &self.shared.scripts.history,
                principal,
                id,
                &[name, entry, &keep, &max],
                retry.map(|r| (r, limits)),
            )
            .await?;
        too_large(&reply, limits)?;
        let raw = reply.string(0)?;
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        // cjson writes an empty array as `{}`; anything unexpected reads as no history.
        Ok(serde_json::from_str(&raw).unwrap_or_default())
    }
}

fn too_large(reply: &Reply, limits: &SessionSettings) -> Result<(), SessionError> {
    if reply.status == "too_large" {
        return Err(SessionError::DataTooLarge {
            limit: limits.max_data_bytes,
        });
    }
    Ok(())
}
