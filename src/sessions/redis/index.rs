//! The indexes of the Redis backend, and what reads them: each principal's sessions by
//! last access (kept by the scripts, read by [`RedisSessions::list`]) and every session
//! by creation (written on create and delete, read by [`RedisSessions::stats`] and kept
//! tidy by [`RedisSessions::maintain`]).

use std::sync::atomic::Ordering;

use super::RedisSessions;
use crate::sessions::{SessionError, SessionStats, SessionSummary};

/// Ids checked per round trip when pruning indexes.
const PRUNE_BATCH: isize = 500;

impl RedisSessions {
    /// The principal's live sessions, oldest first; ids of expired ones are removed from
    /// its index on the way.
    pub(in crate::sessions) async fn list(
        &self,
        principal: &str,
    ) -> Result<Vec<SessionSummary>, SessionError> {
        let index = self.shared.keys.principal_sessions(principal);
        let mut conn = self.shared.pool.get().await?;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let (mut live, dead) = self.check(&mut conn, ids, Some(principal)).await?;
        if !dead.is_empty() {
            let _: () = redis::cmd("ZREM")
                .arg(&index)
                .arg(&dead)
                .query_async(&mut conn)
                .await?;
        }
        // The index is ordered by last access.
        live.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(live)
    }

    /// Splits ids into live sessions (with their times) and dead ids, one pipeline.
    async fn check(
        &self,
        conn: &mut crate::redis_pool::PooledConnection,
        ids: Vec<String>,
        owner: Option<&str>,
    ) -> Result<(Vec<SessionSummary>, Vec<String>), SessionError> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.shared.keys.session(id))
                .arg("owner")
                .arg("created")
                .arg("accessed");
        }
        let rows: Vec<(Option<String>, Option<i64>, Option<i64>)> = pipe.query_async(conn).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, (o, created, accessed)) in ids.into_iter().zip(rows) {
            match o {
                Some(o) if owner.is_none_or(|p| p == o) => {
                    let created_at_ms = created.unwrap_or_default();
                    live.push(SessionSummary {
                        id,
                        created_at_ms,
                        last_accessed_ms: accessed.unwrap_or(created_at_ms),
                    });
                }
                _ => dead.push(id),
            }
        }
        Ok((live, dead))
    }

    pub(in crate::sessions) async fn stats(&self) -> Result<SessionStats, SessionError> {
        let index = self.shared.keys.all_sessions();
        let mut conn = self.shared.pool.get().await?;
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now_ms = secs * 1000 + micros / 1000;
        // A session created within the last timeout cannot have expired (deletes also
        // remove it from the index), so only older ids need checking.
        let horizon = now_ms - self.shared.timeout_ms;
        let recent: u64 = redis::cmd("ZCOUNT")
            .arg(&index)
            .arg(format!("({horizon}"))
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        let mut total = recent;
        let mut oldest: Option<SessionSummary> = None;
        let mut offset = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&index)
                .arg("-inf")
                .arg(horizon)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(offset)
                .arg(PRUNE_BATCH)
                .query_async(&mut conn)
                .await?;
            let fetched = ids.len();
            let (live, dead) = self.check(&mut conn, ids, None).await?;
            total += live.len() as u64;
            if oldest.is_none() {
                oldest = live.into_iter().next();
            }
            if !dead.is_empty() {
                let _: () = redis::cmd("ZREM")
                    .arg(&index)
                    .arg(&dead)
                    .query_async(&mut conn)
                    .await?;
            }
            offset += (fetched - dead.len()) as isize;
            if (fetched as isize) < PRUNE_BATCH {
                break;
            }
        }
        if oldest.is_none() && recent > 0 {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(format!("({horizon}"))
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(1)
                .query_async(&mut conn)
                .await?;
            oldest = self.check(&mut conn, ids, None).await?.0.into_iter().next();
        }
        let flushed: Option<i64> = redis::cmd("GET")
            .arg(self.shared.keys.last_access())
            .query_async(&mut conn)
            .await?;
        let local = self.shared.newest_access_ms.load(Ordering::Relaxed);
        let most_recent_access_ms = flushed.max((local > 0).then_some(local));
        Ok(SessionStats {
            total,
            oldest,
            most_recent_access_ms: if total == 0 {
                None
            } else {
                most_recent_access_ms
            },
        })
    }

    pub(in crate::sessions) async fn maintain(&self) -> Result<u64, SessionError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.pool.get().await?;
        let newest = self.shared.newest_access_ms.load(Ordering::Relaxed);
        if newest > 0 {
            let _: i64 = self
                .shared
                .scripts
                .raise
                .key(keys.last_access())
                .arg(newest)
                .arg(self.shared.timeout_ms)
                .invoke_async(&mut conn)
                .await?;
        }
        // Principals' indexes need no refresh here: every access to one of their
        // sessions refreshes them.
        let _: () = redis::cmd("PEXPIRE")
            .arg(keys.all_sessions())
            .arg(self.index_ttl_ms())
            .query_async(&mut conn)
            .await?;
        // Prune one batch of expired ids per round from the global index.
        let (secs, _micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let horizon = secs * 1000 - self.shared.timeout_ms;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.all_sessions())
            .arg("-inf")
            .arg(horizon)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(PRUNE_BATCH)
            .query_async(&mut conn)
            .await?;
        let (_, dead) = self.check(&mut conn, ids, None).await?;
        if !dead.is_empty() {
            // ZREM counts only what it removed, so replicas pruning at once do not
            // count an expiry twice.
            let removed: u64 = redis::cmd("ZREM")
                .arg(keys.all_sessions())
                .arg(&dead)
                .query_async(&mut conn)
                .await?;
            return Ok(removed);
        }
        Ok(0)
    }
}
