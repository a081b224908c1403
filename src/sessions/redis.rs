//! The Redis backend: one hash per session whose TTL is the sliding expiry, changed only
//! by Lua scripts that check the owner, slide the TTL and apply the operation in one
//! round trip.
//!
//! Each principal's index scores its sessions by last access: every script that slides a
//! session's expiry also moves its index entry (same round trip), so the create script
//! counts the principal's live sessions against the cap by dropping the entries older
//! than the timeout and taking `ZCARD`, without reading any session. The index of all
//! sessions (stats) is written on create and delete only; [`RedisSessions::maintain`]
//! keeps it tidy.
//!
//! The record operations are here; `redis/holding.rs` takes, renews and releases the
//! leases of 2025-era sessions, and `redis/index.rs` reads and tidies the indexes (list,
//! stats, maintain).

mod holding;
mod index;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use redis::{Script, Value};
use serde_json::Value as Json;

use super::{
    CounterOp, HistoryOp, NewSession, Retry, Session, SessionError, record::SCHEMA_VERSION,
};
use crate::{config::SessionSettings, keys::Keys, redis_pool::RedisPool};

/// Extra lifetime of index keys beyond the session timeout, so an index outlives the
/// sessions it lists between two maintenance rounds.
const INDEX_TTL_MARGIN_MS: i64 = 5 * 60 * 1000;

struct Scripts {
    get: Script,
    touch: Script,
    update: Script,
    counter: Script,
    history: Script,
    create: Script,
    delete: Script,
    raise: Script,
    lease: Script,
}

impl Scripts {
    fn new() -> Self {
        let prelude = include_str!("lua/prelude.lua");
        // The operation runs as a function so the prelude's `finish` can keep its reply
        // for idempotent retries; `peek` names a field the prelude reads for it.
        let with_prelude = |body: &str, peek: Option<&str>| {
            let peek = peek.map_or_else(|| "nil".to_owned(), |field| format!("'{field}'"));
            Script::new(&format!(
                "local peek = {peek}\n{prelude}\nlocal function operation()\n{body}\nend\nreturn finish(operation())"
            ))
        };
        Self {
            get: with_prelude(include_str!("lua/get.lua"), None),
            touch: with_prelude(include_str!("lua/touch.lua"), None),
            update: with_prelude(include_str!("lua/update.lua"), None),
            counter: with_prelude(include_str!("lua/counter.lua"), Some("d:counter")),
            history: with_prelude(include_str!("lua/history.lua"), None),
            create: Script::new(include_str!("lua/create.lua")),
            delete: Script::new(include_str!("lua/delete.lua")),
            raise: Script::new(include_str!("lua/raise.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
        }
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
    scripts: Scripts,
    /// Newest access this replica made, flushed to Redis by `maintain` so stats see it
    /// without a global write on every request.
    newest_access_ms: AtomicI64,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("prefix", &self.shared.keys.prefix())
            .finish()
    }
}

/// A script's reply: a status word and its values.
struct Reply {
    status: String,
    values: Vec<Value>,
}

impl Reply {
    fn parse(v: Value) -> Result<Self, SessionError> {
        let Value::Array(mut items) = v else {
            return Err(SessionError::Unavailable(
                "unexpected script reply shape".into(),
            ));
        };
        if items.is_empty() {
            return Err(SessionError::Unavailable("empty script reply".into()));
        }
        let status = redis::from_redis_value(items.remove(0))?;
        Ok(Self {
            status,
            values: items,
        })
    }

    fn string(&mut self, i: usize) -> Result<String, SessionError> {
        let v = std::mem::replace(&mut self.values[i], Value::Nil);
        Ok(redis::from_redis_value::<Option<String>>(v)?.unwrap_or_default())
    }
}

impl RedisSessions {
    /// A store on `pool` under `keys`, whose sessions expire after `timeout` without access.
    pub fn new(pool: RedisPool, keys: Keys, timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                keys,
                timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
                scripts: Scripts::new(),
                newest_access_ms: AtomicI64::new(0),
            }),
        }
    }

    fn index_ttl_ms(&self) -> i64 {
        self.shared.timeout_ms.saturating_add(INDEX_TTL_MARGIN_MS)
    }

    fn note_access(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        self.shared
            .newest_access_ms
            .fetch_max(now, Ordering::Relaxed);
    }

    /// Runs a prelude script (owner check, touch, index score) and maps the shared
    /// statuses.
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
        invocation
            .key(keys.principal_sessions(principal))
            .arg(principal)
            .arg(self.shared.timeout_ms)
            .arg(self.index_ttl_ms())
            .arg(id);
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
        let reply = Reply::parse(conn.invoke(&invocation).await?)?;
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

    pub(super) async fn create(
        &self,
        new: NewSession,
        limits: &SessionSettings,
    ) -> Result<Session, SessionError> {
        let id = new.id.unwrap_or_else(crate::ids::mint);
        let keys = &self.shared.keys;
        let limit = limits.max_sessions_per_principal;
        let client = new
            .client_info
            .as_ref()
            .map(Json::to_string)
            .unwrap_or_default();
        let transport = new
            .transport
            .as_ref()
            .map(Json::to_string)
            .unwrap_or_default();
        let (node, url, lease_ms) = match &new.lease {
            Some(lease) => (
                lease.holder.replica.as_str(),
                lease.holder.url.as_str(),
                lease.ttl_ms(),
            ),
            None => ("", "", 0),
        };
        let mut conn = self.shared.pool.get().await?;
        let mut invocation = self
            .shared
            .scripts
            .create
            .key(keys.principal_sessions(&new.principal));
        invocation
            .key(keys.session(&id))
            .key(keys.all_sessions())
            .arg(&id)
            .arg(limit)
            .arg(self.shared.timeout_ms)
            .arg(self.index_ttl_ms())
            .arg(SCHEMA_VERSION)
            .arg(&new.principal)
            .arg(&client)
            .arg(&transport)
            .arg(node)
            .arg(url)
            .arg(lease_ms);
        if let Some(retry) = &new.retry {
            invocation
                .key(keys.create_retry(&new.principal, &retry.key))
                .arg(&retry.fingerprint)
                .arg(limits.idempotency_ttl_secs.saturating_mul(1000));
        }
        let mut reply = Reply::parse(conn.invoke(&invocation).await?)?;
        let (id, created_ms) = match reply.status.as_str() {
            "ok" => (id, reply.string(0)?),
            "replay" => (reply.string(0)?, reply.string(1)?),
            "full" => return Err(SessionError::TooManySessions { limit }),
            "retry_conflict" => return Err(SessionError::RetryConflict),
            _ => return Err(SessionError::Invalid("session id already in use".into())),
        };
        let created_ms: i64 = created_ms.parse().unwrap_or_default();
        self.note_access();
        Ok(Session {
            id,
            owner: new.principal,
            created_at_ms: created_ms,
            last_accessed_ms: created_ms,
            data: Default::default(),
            client_info: new.client_info,
            version: SCHEMA_VERSION,
        })
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

    pub(super) async fn delete(&self, principal: &str, id: &str) -> Result<bool, SessionError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.pool.get().await?;
        let mut invocation = self.shared.scripts.delete.key(keys.session(id));
        invocation
            .key(keys.principal_sessions(principal))
            .key(keys.all_sessions())
            .arg(principal)
            .arg(id);
        let deleted: i64 = conn.invoke(&invocation).await?;
        Ok(deleted == 1)
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
