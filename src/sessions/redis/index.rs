//! The indexes of the Redis backend, and what reads and keeps them: each principal's
//! sessions (read by [`RedisSessions::list`]) and the [`SESSION_BUCKETS`] buckets of
//! every session (summed by [`RedisSessions::stats`], checked by
//! [`RedisSessions::maintain`]). Each is one hash slot, read with
//! [`PooledConnection::each`](crate::redis_pool::PooledConnection::each) where a step
//! spans several.
//!
//! Upkeep checks, in each bucket, a bounded batch of the entries whose score has
//! passed (`PTTL` of each session): a gone one leaves its bucket and its owner's index
//! (the member names the owner), a live one is scored now + PTTL in both, so the next
//! round's batch moves on to others. Its work follows the sessions that end or outlive
//! their score, never the number of calls.

use std::{collections::BTreeMap, sync::atomic::Ordering};

use redis::Cmd;

use super::RedisSessions;
use crate::{
    keys::SESSION_BUCKETS,
    sessions::{SessionError, SessionStats, SessionSummary},
};

/// Entries whose score has passed that one upkeep round checks per bucket.
const CHECK_BATCH: usize = 256;

/// What upkeep found of one owner's sessions: gone ids, and live ones with their new
/// scores.
#[derive(Default)]
struct Verdicts<'a> {
    gone: Vec<&'a str>,
    live: Vec<(i64, &'a str)>,
}

impl RedisSessions {
    /// The principal's live sessions, oldest first: its index (which also lists
    /// pending reservations and ended sessions not yet checked), then each session's
    /// times in one round trip.
    pub(in crate::sessions) async fn list(
        &self,
        principal: &str,
    ) -> Result<Vec<SessionSummary>, SessionError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.pool.get().await?;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.principal_sessions(principal))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let commands: Vec<Cmd> = ids
            .iter()
            .map(|id| {
                let mut fields = redis::cmd("HMGET");
                fields
                    .arg(keys.session(id))
                    .arg("owner")
                    .arg("created")
                    .arg("accessed");
                fields
            })
            .collect();
        let rows = conn.each(&commands).await?;
        let mut live = Vec::new();
        for (id, row) in ids.into_iter().zip(rows) {
            let (owner, created, accessed): (Option<String>, Option<i64>, Option<i64>) =
                redis::from_redis_value(row)?;
            if owner.as_deref() == Some(principal) {
                let created_at_ms = created.unwrap_or_default();
                live.push(SessionSummary {
                    id,
                    created_at_ms,
                    last_accessed_ms: accessed.unwrap_or(created_at_ms),
                });
            }
        }
        live.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(live)
    }

    /// The buckets' sizes and newest flushed accesses: a constant number of commands
    /// in one round trip, whatever the number of sessions. The total counts live
    /// sessions and pending reservations, and sessions that ended since upkeep last
    /// checked their bucket entry (a round or two).
    pub(in crate::sessions) async fn stats(&self) -> Result<SessionStats, SessionError> {
        let keys = &self.shared.keys;
        let mut commands = Vec::with_capacity(2 * SESSION_BUCKETS);
        for bucket in 0..SESSION_BUCKETS {
            let mut size = redis::cmd("ZCARD");
            size.arg(keys.session_bucket(bucket));
            commands.push(size);
        }
        for bucket in 0..SESSION_BUCKETS {
            let mut newest = redis::cmd("GET");
            newest.arg(keys.bucket_last_access(bucket));
            commands.push(newest);
        }
        let replies = self.run_each(commands).await?;
        let mut total = 0u64;
        let mut flushed: Option<i64> = None;
        for (i, reply) in replies.into_iter().enumerate() {
            if i < SESSION_BUCKETS {
                total += redis::from_redis_value::<u64>(reply)?;
            } else {
                flushed = flushed.max(redis::from_redis_value::<Option<i64>>(reply)?);
            }
        }
        let local = self.shared.newest_access_ms.load(Ordering::Relaxed);
        let most_recent_access_ms = flushed.max((local > 0).then_some(local));
        Ok(SessionStats {
            total,
            most_recent_access_ms: if total == 0 {
                None
            } else {
                most_recent_access_ms
            },
        })
    }

    /// One upkeep round: flushes this replica's newest access into one bucket, then
    /// checks a batch of each bucket's entries whose score has passed. Returns how many
    /// ended sessions it removed (`ZREM` counts only what it removed, so replicas
    /// checking the same entries never count one twice).
    pub(in crate::sessions) async fn maintain(&self) -> Result<u64, SessionError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.pool.get().await?;
        let round = self.shared.rounds.fetch_add(1, Ordering::Relaxed);
        let newest = self.shared.newest_access_ms.load(Ordering::Relaxed);
        if newest > 0 {
            let _: i64 = self
                .shared
                .scripts
                .raise
                .key(keys.bucket_last_access(round % SESSION_BUCKETS))
                .arg(newest)
                .arg(self.shared.timeout_ms)
                .invoke_async(&mut conn)
                .await?;
        }
        // Any node's clock will do: a reservation's record is refused once any node's
        // clock is past its deadline (less the tolerated skew), so an entry whose score
        // has passed by this clock, read after this, is gone for good if absent.
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now = secs * 1000 + micros / 1000;
        let listings: Vec<Cmd> = (0..SESSION_BUCKETS)
            .map(|bucket| {
                let mut passed = redis::cmd("ZRANGE");
                passed
                    .arg(keys.session_bucket(bucket))
                    .arg("-inf")
                    .arg(format!("({now}"))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(CHECK_BATCH);
                passed
            })
            .collect();
        let mut found: Vec<(usize, String)> = Vec::new();
        for (bucket, listing) in conn.each(&listings).await?.into_iter().enumerate() {
            let members: Vec<String> = redis::from_redis_value(listing)?;
            found.extend(members.into_iter().map(|m| (bucket, m)));
        }
        let ids: Vec<String> = found
            .iter()
            .map(|(_, member)| member.split_once(':').map_or("", |(id, _)| id).to_owned())
            .collect();
        let lives = if ids.is_empty() {
            Vec::new()
        } else {
            self.remaining_lives(&mut conn, &ids).await?
        };

        let mut buckets: Vec<Verdicts> =
            (0..SESSION_BUCKETS).map(|_| Verdicts::default()).collect();
        let mut owners: BTreeMap<&str, Verdicts> = BTreeMap::new();
        for ((bucket, member), ttl) in found.iter().zip(lives) {
            let (id, owner) = member.split_once(':').unwrap_or((member, ""));
            let (in_bucket, in_index) = (&mut buckets[*bucket], owners.entry(owner).or_default());
            if ttl == -2 {
                in_bucket.gone.push(member);
                in_index.gone.push(id);
            } else {
                let score = now + if ttl < 0 { self.shared.timeout_ms } else { ttl };
                in_bucket.live.push((score, member));
                in_index.live.push((score, id));
            }
        }
        let ttl = self.index_ttl_ms();
        let mut writes = Vec::new();
        let mut removals = Vec::new();
        for (bucket, verdicts) in buckets.iter().enumerate() {
            let key = keys.session_bucket(bucket);
            if !verdicts.gone.is_empty() {
                removals.push(writes.len());
            }
            writes.extend(verdicts.commands(&key, None));
            // Every bucket, checked or not: the buckets outlive their members.
            let mut keep = redis::cmd("PEXPIRE");
            keep.arg(&key).arg(ttl);
            writes.push(keep);
        }
        for (owner, verdicts) in &owners {
            if owner.is_empty() {
                continue;
            }
            writes.extend(verdicts.commands(&keys.principal_sessions(owner), Some(ttl)));
        }
        let replies = conn.each(&writes).await?;
        let mut removed = 0;
        for i in removals {
            if let Some(reply) = replies.get(i) {
                removed += redis::from_redis_value::<u64>(reply.clone())?;
            }
        }
        Ok(removed)
    }
}

impl Verdicts<'_> {
    /// The commands that apply these verdicts to index `key`: remove the gone members,
    /// score the live ones again (only those still there, only raising a score), and,
    /// with `ttl`, refresh the key's TTL when a member lives on.
    fn commands(&self, key: &str, ttl: Option<i64>) -> Vec<Cmd> {
        let mut commands = Vec::new();
        if !self.gone.is_empty() {
            let mut remove = redis::cmd("ZREM");
            remove.arg(key).arg(&self.gone);
            commands.push(remove);
        }
        if !self.live.is_empty() {
            let mut rescore = redis::cmd("ZADD");
            rescore.arg(key).arg("XX").arg("GT");
            for (score, member) in &self.live {
                rescore.arg(*score).arg(*member);
            }
            commands.push(rescore);
            if let Some(ttl) = ttl {
                let mut keep = redis::cmd("PEXPIRE");
                keep.arg(key).arg(ttl);
                commands.push(keep);
            }
        }
        commands
    }
}
