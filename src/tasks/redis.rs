//! The Redis backend: one hash per task (`Keys::task`) whose every change is one Lua
//! script (`lua/*.lua` after `lua/prelude.lua`), and the lease index of unfinished tasks
//! by lease expiry, split into a fixed number of buckets (`Keys::task_leases_of`) that
//! the sweep walks. A task's record and its bucket share a hash slot, so each script
//! touches one slot (Redis Cluster); the sweep reads every bucket in one
//! [`PooledConnection::each`](crate::redis_pool::PooledConnection::each).

use std::{collections::BTreeMap, sync::Arc};

use redis::{Cmd, Script, Value};
use serde_json::Value as Json;

use super::{
    Answers, Changed, Held, NewTask, Settled, Swept, TaskError, TaskRecord, TaskStatus, TaskTimes,
    lease_lost_error,
};
use crate::{keys::Keys, redis_pool::RedisPool};

/// Expired candidates one sweep round looks at in each lease bucket.
const SWEEP_BATCH: isize = 32;

struct Scripts {
    create: Script,
    get: Script,
    update: Script,
    cancel: Script,
    renew: Script,
    ask: Script,
    take: Script,
    finish: Script,
    expire: Script,
}

impl Scripts {
    /// The scripts, named on `pool` for the spans of their round trips.
    fn new(pool: &RedisPool) -> Self {
        let prelude = include_str!("lua/prelude.lua");
        let script = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        let scripts = Self {
            create: script(include_str!("lua/create.lua")),
            get: script(include_str!("lua/get.lua")),
            update: script(include_str!("lua/update.lua")),
            cancel: script(include_str!("lua/cancel.lua")),
            renew: script(include_str!("lua/renew.lua")),
            ask: script(include_str!("lua/ask.lua")),
            take: script(include_str!("lua/take.lua")),
            finish: script(include_str!("lua/finish.lua")),
            expire: script(include_str!("lua/expire.lua")),
        };
        pool.name_scripts(&[
            ("task.create", &scripts.create),
            ("task.get", &scripts.get),
            ("task.update", &scripts.update),
            ("task.cancel", &scripts.cancel),
            ("task.renew", &scripts.renew),
            ("task.ask", &scripts.ask),
            ("task.take", &scripts.take),
            ("task.finish", &scripts.finish),
            ("task.expire", &scripts.expire),
        ]);
        scripts
    }
}

/// Cheap-clone handle on the Redis task records.
#[derive(Clone)]
pub struct RedisTasks {
    shared: Arc<Shared>,
}

struct Shared {
    pool: RedisPool,
    keys: Keys,
    scripts: Scripts,
}

/// A script's reply: its status word and the strings after it.
struct Reply {
    word: String,
    rest: Vec<String>,
}

impl Reply {
    fn parse(v: Value) -> Result<Self, TaskError> {
        let mut items: Vec<Option<String>> = redis::from_redis_value(v)?;
        if items.is_empty() {
            return Err(TaskError::Unavailable("empty script reply".into()));
        }
        let word = items.remove(0).unwrap_or_default();
        Ok(Self {
            word,
            rest: items.into_iter().map(Option::unwrap_or_default).collect(),
        })
    }

    fn pairs(self) -> impl Iterator<Item = (String, String)> {
        let mut it = self.rest.into_iter();
        std::iter::from_fn(move || Some((it.next()?, it.next()?)))
    }

    fn status(&self) -> Result<TaskStatus, TaskError> {
        TaskStatus::parse(&self.word)
            .ok_or_else(|| TaskError::Unavailable(format!("unexpected reply `{}`", self.word)))
    }

    /// The {'ok', status, replica} reply of update and cancel.
    fn changed(self) -> Result<Option<Changed>, TaskError> {
        if self.word == "unknown" {
            return Ok(None);
        }
        let mut rest = self.rest.into_iter();
        let status = rest.next().and_then(|s| TaskStatus::parse(&s));
        match status {
            Some(status) => Ok(Some(Changed {
                status,
                replica: rest.next().unwrap_or_default(),
            })),
            None => Err(TaskError::Unavailable("unexpected reply".into())),
        }
    }

    /// The reply of the running replica's scripts: ok, a status, or gone.
    fn held(&self) -> Result<Held, TaskError> {
        if self.word == "gone" {
            return Ok(Held::Lost);
        }
        let status = self.status()?;
        Ok(if status.is_terminal() {
            Held::Lost
        } else {
            Held::Running(status)
        })
    }
}

impl RedisTasks {
    /// Task records on `pool` under `keys`.
    pub fn new(pool: RedisPool, keys: Keys) -> Self {
        let scripts = Scripts::new(&pool);
        Self {
            shared: Arc::new(Shared {
                pool,
                keys,
                scripts,
            }),
        }
    }

    /// Runs `script` on task `id`'s record and its lease bucket with `args`.
    async fn run(&self, script: &Script, id: &str, args: &[&str]) -> Result<Reply, TaskError> {
        let keys = &self.shared.keys;
        let mut invocation = script.key(keys.task(id));
        invocation.key(keys.task_leases_of(id));
        for a in args {
            invocation.arg(*a);
        }
        let mut conn = self.shared.pool.get().await?;
        Reply::parse(conn.invoke(&invocation).await?)
    }

    /// How long a lease bucket lives: it must outlive every task it lists.
    fn index_ttl(times: TaskTimes) -> String {
        times.ttl_ms.saturating_add(times.lease_ms).to_string()
    }

    pub(super) async fn create(
        &self,
        new: &NewTask,
        times: TaskTimes,
    ) -> Result<TaskRecord, TaskError> {
        let s = &self.shared.scripts;
        let (ttl, poll, lease) = (
            times.ttl_ms.to_string(),
            times.poll_ms.to_string(),
            times.lease_ms.to_string(),
        );
        let index_ttl = Self::index_ttl(times);
        let reply = self
            .run(
                &s.create,
                &new.id,
                &[
                    &new.id,
                    &new.owner,
                    &new.replica,
                    &new.tool,
                    &ttl,
                    &poll,
                    &lease,
                    &index_ttl,
                    new.trace.as_deref().unwrap_or(""),
                ],
            )
            .await?;
        if reply.word != "ok" {
            return Err(TaskError::Exists);
        }
        let now: i64 = reply
            .rest
            .first()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        Ok(TaskRecord::working(new, times, now))
    }

    pub(super) async fn get(&self, owner: &str, id: &str) -> Result<Option<TaskRecord>, TaskError> {
        let reply = self.run(&self.shared.scripts.get, id, &[owner]).await?;
        if reply.word != "ok" {
            return Ok(None);
        }
        Ok(Some(TaskRecord::from_fields(id, reply.pairs())))
    }

    pub(super) async fn update(
        &self,
        owner: &str,
        id: &str,
        answers: &BTreeMap<String, Json>,
    ) -> Result<Option<Changed>, TaskError> {
        let encoded: Vec<(String, String)> = answers
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let mut args: Vec<&str> = vec![owner];
        for (k, v) in &encoded {
            args.push(k);
            args.push(v);
        }
        self.run(&self.shared.scripts.update, id, &args)
            .await?
            .changed()
    }

    pub(super) async fn cancel(&self, owner: &str, id: &str) -> Result<Option<Changed>, TaskError> {
        self.run(&self.shared.scripts.cancel, id, &[owner, id])
            .await?
            .changed()
    }

    pub(super) async fn renew(
        &self,
        id: &str,
        replica: &str,
        message: Option<&str>,
        times: TaskTimes,
    ) -> Result<Held, TaskError> {
        let lease = times.lease_ms.to_string();
        let index_ttl = Self::index_ttl(times);
        let (set, text) = match message {
            Some(m) => ("1", m),
            None => ("0", ""),
        };
        self.run(
            &self.shared.scripts.renew,
            id,
            &[id, replica, &lease, &index_ttl, set, text],
        )
        .await?
        .held()
    }

    pub(super) async fn ask(
        &self,
        id: &str,
        replica: &str,
        requests: &BTreeMap<String, Json>,
    ) -> Result<Held, TaskError> {
        let encoded: Vec<(String, String)> = requests
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let mut args: Vec<&str> = vec![replica];
        for (k, v) in &encoded {
            args.push(k);
            args.push(v);
        }
        let reply = self.run(&self.shared.scripts.ask, id, &args).await?;
        if reply.word == "ok" {
            return Ok(Held::Running(TaskStatus::InputRequired));
        }
        match reply.held()? {
            // Not working (already waiting): the runner asks only from `working`.
            Held::Running(_) => Ok(Held::Lost),
            lost => Ok(lost),
        }
    }

    pub(super) async fn take(&self, id: &str, replica: &str) -> Result<Answers, TaskError> {
        let reply = self.run(&self.shared.scripts.take, id, &[replica]).await?;
        match reply.word.as_str() {
            "ok" => Ok(Answers::Ready(
                reply
                    .pairs()
                    .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Json::Null)))
                    .collect(),
            )),
            "waiting" => Ok(Answers::Waiting),
            _ => Ok(Answers::Lost),
        }
    }

    pub(super) async fn finish(
        &self,
        id: &str,
        replica: &str,
        settled: &Settled,
    ) -> Result<bool, TaskError> {
        let (status, field, payload) = settled.parts();
        let reply = self
            .run(
                &self.shared.scripts.finish,
                id,
                &[id, replica, status.as_str(), field, &payload],
            )
            .await?;
        Ok(reply.word == "ok")
    }

    pub(super) async fn sweep(&self) -> Result<Vec<Swept>, TaskError> {
        let now = chrono::Utc::now().timestamp_millis();
        let expired: Vec<Cmd> = self
            .shared
            .keys
            .task_lease_buckets()
            .map(|bucket| {
                let mut cmd = redis::cmd("ZRANGEBYSCORE");
                cmd.arg(bucket)
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SWEEP_BATCH);
                cmd
            })
            .collect();
        let replies = {
            let mut conn = self.shared.pool.get().await?;
            conn.each(&expired).await?
        };
        let error = lease_lost_error().to_string();
        let mut failed = Vec::new();
        for reply in replies {
            let candidates: Vec<String> = redis::from_redis_value(reply)?;
            for id in candidates {
                // The script decides on Redis's clock; the local one only picked candidates.
                let reply = self
                    .run(&self.shared.scripts.expire, &id, &[&id, &error])
                    .await?;
                if reply.word == "failed" {
                    let owner = reply.rest.into_iter().next().unwrap_or_default();
                    failed.push(Swept { id, owner });
                }
            }
        }
        Ok(failed)
    }
}
