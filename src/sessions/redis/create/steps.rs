//! A create in steps of one hash slot each, as Redis Cluster needs them: a session, its
//! owner's index and its bucket live on different nodes.
//!
//! 1. **Reserve** (the owner's slot, `reserve.lua`): the cap counts the owner's index.
//!    Under it the new id goes in, scored by a deadline (now + the grace); at it, the
//!    entries whose score has passed come back as candidates. The replica reads their
//!    sessions' `PTTL` (one [`PooledConnection::each`]) and reserves again with the
//!    verdicts: gone entries leave for good (ids are never reused), live ones are
//!    scored now + PTTL. Only a create at the cap pays for this.
//! 2. **Record** (the session's slot, `record.lua`), written only while the deadline,
//!    less the clock skew tolerated between nodes, is ahead: a reservation that aged
//!    out, and may have been found gone, can never become a session outside the count,
//!    so the cap stays exact under concurrent creates on several replicas. Beside it, in
//!    the same round trip, the session's bucket entry, scored by the deadline.
//! 3. **Confirm** (plain commands in the owner's and the bucket's slots): both entries
//!    scored by the session's expiry, and a keyed create's record marked as made.
//!
//! So a create costs three round trips, two more per round of checks at the cap, and a
//! retried keyed create whose first call completed one. A keyed create's record is
//! written with the reservation, so a retry after a failure between the steps finds
//! it: a record marked made replays its session; one still pending runs step 2 again
//! for the same id and deadline (the session is then made, found made, or found made
//! and deleted since), and one whose deadline passed with no session is replaced by a
//! new reservation. Concurrent retries make one session: the record names one id, and
//! only one record script can write it.
//!
//! [`PooledConnection::each`]: crate::redis_pool::PooledConnection::each

use redis::Value;

use super::{CHECK_ROUNDS, MAX_CANDIDATES, Reserved, made};
use crate::{
    config::SessionSettings,
    sessions::{
        NewSession, Session, SessionError,
        redis::{RedisSessions, Reply},
    },
};

/// The clock skew between Redis nodes the steps tolerate: a record is written only
/// while its node's clock is this far short of the reservation's deadline, so that node
/// may run this far behind the one whose clock said the deadline had passed (before a
/// check found the reservation gone).
const CLOCK_SKEW_MS: i64 = 1000;

/// Reservations one create may take when its record comes too late.
const ATTEMPTS: usize = 2;

/// What step 2 found.
enum Written {
    /// The record, made at this time (ms).
    Created(i64),
    /// The owner's session was already there, made at this time.
    Exists(i64),
    /// The session was made at this time and deleted since.
    Gone(i64),
    /// The reservation's deadline had passed: it can never be made.
    Late,
    /// Another owner's session has this id.
    Taken,
}

impl RedisSessions {
    /// Creates session `id` in steps, from `found` (a keyed create's earlier
    /// reservation) when given, else from a new reservation.
    pub(super) async fn create_in_steps(
        &self,
        new: NewSession,
        mut id: String,
        mut found: Option<Reserved>,
        limits: &SessionSettings,
    ) -> Result<Session, SessionError> {
        let mut late: Option<String> = None;
        for _ in 0..ATTEMPTS {
            let reserved = match found.take() {
                Some(reserved) => reserved,
                None => self.reserve(&new, &id, late.as_deref(), limits).await?,
            };
            let (target, deadline, retried) = match reserved {
                Reserved::Fresh { deadline } => (id.clone(), deadline, false),
                Reserved::Made { id, created } => return Ok(made(new, id, created)),
                Reserved::Pending { id, deadline } => (id, deadline, true),
            };
            match self.write(&new, &target, deadline).await? {
                Written::Created(created) => {
                    self.confirm(&new, &target, created).await;
                    self.note_access();
                    return Ok(made(new, target, created));
                }
                Written::Exists(created) if retried => {
                    self.confirm(&new, &target, created).await;
                    return Ok(made(new, target, created));
                }
                Written::Gone(created) if retried => return Ok(made(new, target, created)),
                // The id names a session of the caller's already (its index entry stays).
                Written::Exists(_) => {
                    return Err(SessionError::Invalid("session id already in use".into()));
                }
                Written::Late => {
                    // It can never be made now: free its place, and never reserve that
                    // id again (a check may have found it gone).
                    self.release(&new.principal, &target).await;
                    if new.id.is_some() {
                        break;
                    }
                    late = Some(target);
                    id = crate::ids::mint();
                }
                Written::Gone(_) | Written::Taken => {
                    self.release(&new.principal, &target).await;
                    return Err(SessionError::Invalid("session id already in use".into()));
                }
            }
        }
        Err(SessionError::Unavailable(
            "the session record was not written before its reservation ran out".into(),
        ))
    }

    /// Step 1: reserves a place for `id` under `new.principal`'s cap (or finds a keyed
    /// create's earlier one), checking the entries whose score has passed when at the
    /// cap. `late` names a reservation of the same key whose record came too late.
    async fn reserve(
        &self,
        new: &NewSession,
        id: &str,
        late: Option<&str>,
        limits: &SessionSettings,
    ) -> Result<Reserved, SessionError> {
        let keys = &self.shared.keys;
        let limit = limits.max_sessions_per_principal;
        let mut verdicts: Vec<(String, i64)> = Vec::new();
        for round in 0..=CHECK_ROUNDS {
            let mut invocation = self
                .shared
                .scripts
                .reserve
                .key(keys.principal_sessions(&new.principal));
            invocation
                .arg(id)
                .arg(limit)
                .arg(self.shared.grace_ms)
                .arg(self.index_ttl_ms())
                .arg(MAX_CANDIDATES)
                .arg(self.shared.timeout_ms)
                .arg(late.unwrap_or(""));
            self.retry_args(&mut invocation, new, limits);
            for (candidate, ttl) in &verdicts {
                invocation.arg(candidate).arg(*ttl);
            }
            let mut conn = self.shared.pool.get().await?;
            let mut reply = Reply::parse(conn.invoke(&invocation).await?)?;
            match reply.status.as_str() {
                "ok" => {
                    if new.retry.is_some() {
                        self.shared.retry_records.wrote(reply.count(1)?);
                    }
                    return Ok(Reserved::Fresh {
                        deadline: reply.int(0)?,
                    });
                }
                "replay" => return Reserved::replayed(&mut reply),
                "retry_conflict" => return Err(SessionError::RetryConflict),
                "full" => {}
                other => {
                    return Err(SessionError::Unavailable(format!(
                        "unexpected reservation reply `{other}`"
                    )));
                }
            }
            let candidates = reply
                .values
                .into_iter()
                .map(redis::from_redis_value)
                .collect::<Result<Vec<String>, _>>()?;
            if candidates.is_empty() || round == CHECK_ROUNDS {
                break;
            }
            let lives = self.remaining_lives(&mut conn, &candidates).await?;
            verdicts = candidates.into_iter().zip(lives).collect();
        }
        Err(SessionError::TooManySessions { limit })
    }

    /// Step 2: the session record under the reservation good until `deadline`, and
    /// beside it the session's bucket entry (a failed one is added by step 3).
    async fn write(
        &self,
        new: &NewSession,
        id: &str,
        deadline: i64,
    ) -> Result<Written, SessionError> {
        let keys = &self.shared.keys;
        let mut invocation = self.shared.scripts.record.key(keys.session(id));
        invocation
            .key(keys.session_tombstone(id))
            .arg(deadline)
            .arg(CLOCK_SKEW_MS);
        self.record_args(&mut invocation, new);
        let record = async {
            let mut conn = self.shared.pool.get().await?;
            Ok::<Value, SessionError>(conn.invoke(&invocation).await?)
        };
        // GT: a retried create never moves a confirmed entry back to its deadline.
        let bucket = self.run_each(self.bucket_entry(id, &new.principal, deadline, true));
        let (record, bucket) = tokio::join!(record, bucket);
        if let Err(e) = bucket {
            tracing::debug!(error = %e, "bucket entry left to the confirmation");
        }
        let mut reply = Reply::parse(record?)?;
        Ok(match reply.status.as_str() {
            "ok" => Written::Created(reply.int(0)?),
            "exists" => Written::Exists(reply.int(0)?),
            "gone" => Written::Gone(reply.int(0)?),
            "late" => Written::Late,
            _ => Written::Taken,
        })
    }

    /// Step 3: the owner's and the bucket's entries scored by the expiry of the session
    /// made at `created`, and a keyed create's record marked made. A failure costs a
    /// check later (the entries keep their deadline), so it is logged, not returned:
    /// the session exists.
    async fn confirm(&self, new: &NewSession, id: &str, created: i64) {
        let keys = &self.shared.keys;
        let expires = created.saturating_add(self.shared.timeout_ms);
        let mut index = redis::cmd("ZADD");
        index
            .arg(keys.principal_sessions(&new.principal))
            .arg("XX")
            .arg(expires)
            .arg(id);
        let mut commands = vec![index];
        // Without XX: adds the bucket entry when step 2's failed.
        commands.extend(self.bucket_entry(id, &new.principal, expires, false));
        if let Some(retry) = &new.retry {
            let mut record = redis::cmd("SET");
            record
                .arg(keys.create_retry(&new.principal, &retry.key))
                .arg(format!("{}|{id}|{created}", retry.fingerprint))
                .arg("XX")
                .arg("KEEPTTL");
            commands.push(record);
        }
        if let Err(e) = self.run_each(commands).await {
            tracing::warn!(error = %e, "session created; its index entries wait for a check");
        }
    }

    /// Removes a reservation that will never be made from its owner's index and its
    /// bucket (best effort: a check finds what is left gone after its deadline).
    async fn release(&self, principal: &str, id: &str) {
        if let Err(e) = self.run_each(self.unindex(principal, id)).await {
            tracing::debug!(error = %e, "reservation left for a check to drop");
        }
    }
}
