//! What an operator reads of every stored session (`stateful-mcp sessions`): the
//! buckets of the index of every session, scanned a page at a time (`ZSCAN`, never
//! `KEYS`), each page's records read in one round trip. Each bucket is its own hash
//! slot and each record its own, so it reads a Redis Cluster as it reads one node.

use redis::Cmd;

use super::RedisSessions;
use crate::{
    keys::SESSION_BUCKETS,
    sessions::{SessionError, StoredSession},
};

/// A record's `owner`, `created`, `accessed`, `node` and `lease` fields.
type Fields = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// Bucket entries asked for per `ZSCAN` step: one page's records are read at once.
const PAGE: usize = 200;

impl RedisSessions {
    /// Calls `visit` with every live session (a bucket entry whose record is there),
    /// a page at a time; stops early when `visit` returns `false`. Entries of ended
    /// sessions and pending reservations are skipped.
    pub(in crate::sessions) async fn census(
        &self,
        visit: &mut (dyn FnMut(StoredSession) -> bool + Send),
    ) -> Result<(), SessionError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.pool.get().await?;
        for bucket in 0..SESSION_BUCKETS {
            let key = keys.session_bucket(bucket);
            let mut cursor = 0u64;
            loop {
                let (next, entries): (u64, Vec<String>) = redis::cmd("ZSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut conn)
                    .await?;
                // Members come with their scores: `<id>:<owner>`, score, ...
                let ids: Vec<&str> = entries
                    .iter()
                    .step_by(2)
                    .filter_map(|member| member.split_once(':').map(|(id, _)| id))
                    .filter(|id| crate::ids::is_well_formed(id))
                    .collect();
                let mut commands: Vec<Cmd> = Vec::with_capacity(ids.len() * 3);
                for id in &ids {
                    let record = keys.session(id);
                    let mut fields = redis::cmd("HMGET");
                    fields
                        .arg(&record)
                        .arg(&["owner", "created", "accessed", "node", "lease"]);
                    let mut transport = redis::cmd("HEXISTS");
                    transport.arg(&record).arg("init");
                    let mut ttl = redis::cmd("PTTL");
                    ttl.arg(&record);
                    commands.extend([fields, transport, ttl]);
                }
                let replies = if commands.is_empty() {
                    Vec::new()
                } else {
                    conn.each(&commands).await?
                };
                for (id, reply) in ids.iter().zip(replies.chunks(3)) {
                    let [fields, transport, ttl] = reply else {
                        continue;
                    };
                    let (owner, created, accessed, node, lease): Fields =
                        redis::from_redis_value(fields.clone())?;
                    let Some(owner) = owner else { continue };
                    let created_at_ms = created.unwrap_or_default();
                    let session = StoredSession {
                        id: (*id).to_owned(),
                        owner,
                        transport: redis::from_redis_value(transport.clone())?,
                        created_at_ms,
                        last_accessed_ms: accessed.unwrap_or(created_at_ms).max(created_at_ms),
                        expires_in_ms: redis::from_redis_value(ttl.clone())?,
                        holder: node.filter(|n| !n.is_empty()),
                        lease_until_ms: lease,
                    };
                    if !visit(session) {
                        return Ok(());
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}
