//! Creating and deleting a session on the Redis backend. A session's record, its
//! owner's index (what the per-principal cap counts) and its bucket are in three hash
//! slots: on Redis Cluster they live on different nodes, and no script may span them.
//!
//! - **On a single node** (standalone or Sentinel's primary) one script does the whole
//!   create (`create_node.lua`): a keyed create's record replayed, the cap counted, the
//!   owner's entries whose score has passed checked right there (their sessions'
//!   `PTTL`), the record written, and the entries in the owner's index and the bucket
//!   scored by the session's expiry. One round trip, at the cap too.
//! - **On Redis Cluster** a create takes steps of one slot each (`create/steps.rs`):
//!   a reservation in the owner's slot, the record in the session's, a confirmation.
//!   Three round trips, two more per round of checks at the cap.
//!
//! Both paths run the same Lua (`create_parts.lua`, ahead of each script), so they
//! judge the owner's entries, keep keyed-create records and write the record alike, and
//! a replica of either kind can finish what the other began. A keyed create whose
//! record names a reservation made in steps and not known to be made goes on in steps
//! from there. A node that refuses a script across slots (a cluster reached as one
//! node) refuses it before running any of it: that store then creates in steps.
//!
//! A delete runs in the session's slot first (`delete.lua`), then removes the entries in
//! the owner's index and the bucket: one a failure leaves behind is found gone later.

mod steps;

use redis::{Cmd, ErrorKind, ScriptInvocation, ServerErrorKind};
use serde_json::Value as Json;

use super::{RedisSessions, Reply, bucket_member};
use crate::{
    config::SessionSettings,
    keys::Keys,
    redis_pool::RedisPoolError,
    sessions::{NewSession, Session, SessionError, record::SCHEMA_VERSION},
};

/// The most candidates one round of checks at the cap takes.
const MAX_CANDIDATES: usize = 64;

/// Rounds of checks at the cap before a create is refused.
const CHECK_ROUNDS: usize = 4;

/// A place for a session under its owner's cap, or a keyed create's earlier one.
enum Reserved {
    /// A new reservation, good until `deadline` (ms, Redis time).
    Fresh { deadline: i64 },
    /// A keyed create's earlier session, made at `created` (ms).
    Made { id: String, created: i64 },
    /// A keyed create's earlier reservation, not known to be made.
    Pending { id: String, deadline: i64 },
}

impl Reserved {
    /// What a `{'replay', id, state}` reply names: a session made at `state`, or a
    /// reservation still pending until the deadline after `p`.
    fn replayed(reply: &mut Reply) -> Result<Self, SessionError> {
        let id = reply.string(0)?;
        let state = reply.string(1)?;
        let time = |text: &str| {
            text.parse()
                .map_err(|_| SessionError::Unavailable("unreadable create record".into()))
        };
        Ok(match state.strip_prefix('p') {
            Some(deadline) => Self::Pending {
                id,
                deadline: time(deadline)?,
            },
            None => Self::Made {
                id,
                created: time(&state)?,
            },
        })
    }
}

/// What the create in one script did.
enum AtOnce {
    /// Made the session at this time (ms).
    Created(i64),
    /// Found a keyed create's earlier session or reservation.
    Found(Reserved),
    /// Nothing: the node refused a script across slots.
    Refused,
}

impl RedisSessions {
    pub(in crate::sessions) async fn create(
        &self,
        new: NewSession,
        limits: &SessionSettings,
    ) -> Result<Session, SessionError> {
        let id = new.id.clone().unwrap_or_else(crate::ids::mint);
        let mut found = None;
        if !self
            .shared
            .in_steps
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            match self.create_at_once(&new, &id, limits).await? {
                AtOnce::Created(created) => {
                    self.note_access();
                    return Ok(made(new, id, created));
                }
                AtOnce::Found(Reserved::Made { id, created }) => return Ok(made(new, id, created)),
                AtOnce::Found(pending) => found = Some(pending),
                AtOnce::Refused => {}
            }
        }
        self.create_in_steps(new, id, found, limits).await
    }

    /// The whole create of session `id` in one script, on a single node.
    async fn create_at_once(
        &self,
        new: &NewSession,
        id: &str,
        limits: &SessionSettings,
    ) -> Result<AtOnce, SessionError> {
        let keys = &self.shared.keys;
        let limit = limits.max_sessions_per_principal;
        let (head, tail) = keys.session_around();
        let mut invocation = self
            .shared
            .scripts
            .create_node
            .key(keys.principal_sessions(&new.principal));
        invocation
            .key(keys.session(id))
            .key(keys.session_tombstone(id))
            .key(keys.session_bucket(Keys::session_bucket_of(id)))
            .arg(id)
            .arg(limit);
        self.record_args(&mut invocation, new);
        invocation
            .arg(self.index_ttl_ms())
            .arg(MAX_CANDIDATES)
            .arg(CHECK_ROUNDS)
            .arg(bucket_member(id, &new.principal))
            .arg(head)
            .arg(tail);
        self.retry_args(&mut invocation, new, limits);
        let mut conn = self.shared.pool.get().await?;
        let mut reply = match conn.invoke(&invocation).await {
            Err(RedisPoolError::Command(e))
                if e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot) =>
            {
                self.shared
                    .in_steps
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    "the Redis node refuses scripts across hash slots (a cluster reached \
                     as one node? set redis.mode = \"cluster\"): creating sessions in steps"
                );
                return Ok(AtOnce::Refused);
            }
            other => Reply::parse(other?)?,
        };
        match reply.status.as_str() {
            "ok" => {
                if new.retry.is_some() {
                    self.shared.retry_records.wrote(reply.count(1)?);
                }
                Ok(AtOnce::Created(reply.int(0)?))
            }
            "replay" => Ok(AtOnce::Found(Reserved::replayed(&mut reply)?)),
            "retry_conflict" => Err(SessionError::RetryConflict),
            "full" => Err(SessionError::TooManySessions { limit }),
            "exists" | "gone" | "taken" => {
                Err(SessionError::Invalid("session id already in use".into()))
            }
            other => Err(SessionError::Unavailable(format!(
                "unexpected create reply `{other}`"
            ))),
        }
    }

    /// Adds the eight values of a new session's record that `write_session`
    /// (`create_parts.lua`) reads to `invocation`.
    fn record_args(&self, invocation: &mut ScriptInvocation<'_>, new: &NewSession) {
        let json = |v: &Option<Json>| v.as_ref().map(Json::to_string).unwrap_or_default();
        let (node, url, lease_ms) = match &new.lease {
            Some(lease) => (
                lease.holder.replica.as_str(),
                lease.holder.url.as_str(),
                lease.ttl_ms(),
            ),
            None => ("", "", 0),
        };
        invocation
            .arg(self.shared.timeout_ms)
            .arg(SCHEMA_VERSION)
            .arg(&new.principal)
            .arg(json(&new.client_info))
            .arg(json(&new.transport))
            .arg(node)
            .arg(url)
            .arg(lease_ms);
    }

    /// Adds a keyed create's record keys and values to `invocation` (the fingerprint,
    /// how long a record is kept in ms, the most records an owner keeps), or the empty
    /// values of a create without a key.
    fn retry_args(
        &self,
        invocation: &mut ScriptInvocation<'_>,
        new: &NewSession,
        limits: &SessionSettings,
    ) {
        let keys = &self.shared.keys;
        match &new.retry {
            Some(retry) => {
                invocation
                    .key(keys.create_retry(&new.principal, &retry.key))
                    .key(keys.create_retries(&new.principal))
                    .arg(&retry.fingerprint)
                    .arg(limits.idempotency_ttl_secs.saturating_mul(1000))
                    .arg(limits.max_retry_records);
            }
            None => {
                invocation.arg("").arg(0).arg(0);
            }
        }
    }

    /// The commands that set session `id`'s bucket entry to `score` (only raising it,
    /// when `raise`) and refresh the bucket's TTL.
    fn bucket_entry(&self, id: &str, principal: &str, score: i64, raise: bool) -> Vec<Cmd> {
        let bucket = self.shared.keys.session_bucket(Keys::session_bucket_of(id));
        let mut add = redis::cmd("ZADD");
        add.arg(&bucket);
        if raise {
            add.arg("GT");
        }
        add.arg(score).arg(bucket_member(id, principal));
        let mut ttl = redis::cmd("PEXPIRE");
        ttl.arg(&bucket).arg(self.index_ttl_ms());
        vec![add, ttl]
    }

    /// The commands that remove session `id` from its owner's index and its bucket.
    fn unindex(&self, principal: &str, id: &str) -> Vec<Cmd> {
        let keys = &self.shared.keys;
        let mut owner = redis::cmd("ZREM");
        owner.arg(keys.principal_sessions(principal)).arg(id);
        let mut bucket = redis::cmd("ZREM");
        bucket
            .arg(keys.session_bucket(Keys::session_bucket_of(id)))
            .arg(bucket_member(id, principal));
        vec![owner, bucket]
    }

    pub(in crate::sessions) async fn delete(
        &self,
        principal: &str,
        id: &str,
    ) -> Result<bool, SessionError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.pool.get().await?;
        let mut invocation = self.shared.scripts.delete.key(keys.session(id));
        invocation.key(keys.session_tombstone(id)).arg(principal);
        let deleted: i64 = conn.invoke(&invocation).await?;
        if deleted != 1 {
            return Ok(false);
        }
        if let Err(e) = conn.each(&self.unindex(principal, id)).await {
            tracing::warn!(error = %e, "session deleted; its index entries wait for a check");
        }
        Ok(true)
    }
}

/// The session a create made (or replays): `id`, made at `created`.
fn made(new: NewSession, id: String, created: i64) -> Session {
    Session {
        id,
        owner: new.principal,
        created_at_ms: created,
        last_accessed_ms: created,
        data: Default::default(),
        client_info: new.client_info,
        version: SCHEMA_VERSION,
    }
}
