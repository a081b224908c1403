//! Holding on the Redis backend: the lease is three fields of the session's hash (the
//! holding replica, its URL, the lease's end on Redis's clock), taken by the touch script
//! and renewed or released by the lease script, one round trip per batch of sessions
//! (one command per session, each in its own hash slot). Each replica's liveness mark is
//! a string key with a short TTL ([`crate::keys::Keys::replica_alive`]).

use std::time::Duration;

use redis::{AsyncCommands, Cmd, ErrorKind, ServerErrorKind};
use serde_json::Value as Json;

use super::RedisSessions;
use crate::sessions::{Holder, Lease, LeaseState, Renewal, SessionError, Touched, Transport};

/// Sessions whose leases one round trip renews or releases.
const LEASE_BATCH: usize = 500;

impl RedisSessions {
    /// Runs the touch script: whether the session is a transport session (its state
    /// too, for the replica `reader` if the session is left to it) and its holder,
    /// after taking the lease for `claim` when it is free or expired, or held by the
    /// replica `dead` (or renewing `claim`'s own once half of it has run out).
    pub(in crate::sessions) async fn touch(
        &self,
        principal: &str,
        id: &str,
        claim: Option<&Lease>,
        dead: Option<&str>,
        reader: Option<&str>,
    ) -> Result<Option<Touched>, SessionError> {
        let ttl_ms = claim.map(|l| l.ttl_ms().to_string()).unwrap_or_default();
        let mut args = match claim {
            Some(lease) => vec![
                lease.holder.replica.as_str(),
                lease.holder.url.as_str(),
                ttl_ms.as_str(),
            ],
            None => vec!["", "", "0"],
        };
        args.push(reader.unwrap_or_default());
        // Only a claim takes a lease, from a dead holder as from nobody.
        if let Some(dead) = dead.filter(|_| claim.is_some()) {
            args.push(dead);
        }
        match self
            .run(&self.shared.scripts.touch, principal, id, &args)
            .await
        {
            Ok(mut reply) => {
                let transport = match (reply.string(0)?.as_str(), reply.values.len()) {
                    ("", _) => Transport::Absent,
                    (_, 4) => Transport::Read(
                        serde_json::from_str(&reply.string(3)?).unwrap_or(Json::Null),
                    ),
                    _ => Transport::Unread,
                };
                let (replica, url) = (reply.string(1)?, reply.string(2)?);
                let holder = (!replica.is_empty()).then_some(Holder { replica, url });
                Ok(Some(Touched { transport, holder }))
            }
            Err(SessionError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets `replica`'s liveness mark for `ttl` (one `SET … PX`).
    pub(in crate::sessions) async fn mark_alive(
        &self,
        replica: &str,
        ttl: Duration,
    ) -> Result<(), SessionError> {
        let mut conn = self.shared.pool.get().await?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let () = conn
            .pset_ex(self.shared.keys.replica_alive(replica), 1, ttl_ms)
            .await?;
        Ok(())
    }

    /// Whether `replica`'s liveness mark is there (one `EXISTS`).
    pub(in crate::sessions) async fn is_alive(&self, replica: &str) -> Result<bool, SessionError> {
        let mut conn = self.shared.pool.get().await?;
        Ok(conn.exists(self.shared.keys.replica_alive(replica)).await?)
    }

    /// Deletes `replica`'s liveness mark (one `DEL`).
    pub(in crate::sessions) async fn mark_gone(&self, replica: &str) -> Result<(), SessionError> {
        let mut conn = self.shared.pool.get().await?;
        let _: i64 = conn.del(self.shared.keys.replica_alive(replica)).await?;
        Ok(())
    }

    pub(in crate::sessions) async fn renew_leases(
        &self,
        lease: &Lease,
        sessions: &[Renewal],
    ) -> Result<Vec<LeaseState>, SessionError> {
        self.leases(&lease.holder.replica, lease.ttl_ms(), sessions)
            .await
    }

    /// Releases `holder`'s leases: the lease script with a length of 0.
    pub(in crate::sessions) async fn release_leases(
        &self,
        holder: &Holder,
        ids: &[String],
    ) -> Result<Vec<LeaseState>, SessionError> {
        let sessions: Vec<_> = ids.iter().map(|id| Renewal::unused(id)).collect();
        self.leases(&holder.replica, 0, &sessions).await
    }

    /// Renews (`ttl_ms` > 0) or releases (0) `replica`'s lease on each of `sessions`,
    /// one round trip per batch; a renewal of a used session also slides its expiry.
    async fn leases(
        &self,
        replica: &str,
        ttl_ms: u64,
        sessions: &[Renewal],
    ) -> Result<Vec<LeaseState>, SessionError> {
        let mut states = Vec::with_capacity(sessions.len());
        if sessions.is_empty() {
            return Ok(states);
        }
        let mut conn = self.shared.pool.get().await?;
        let keys = &self.shared.keys;
        let script = &self.shared.scripts.lease;
        for batch in sessions.chunks(LEASE_BATCH) {
            // Each session is its own hash slot: one `EVALSHA` command per session.
            let commands: Vec<Cmd> = batch
                .iter()
                .map(|session| {
                    let mut renew = redis::cmd("EVALSHA");
                    renew
                        .arg(script.get_hash())
                        .arg(1)
                        .arg(keys.session(&session.id))
                        .arg(replica)
                        .arg(ttl_ms);
                    if let Some(owner) = session.used_by.as_deref().filter(|_| ttl_ms > 0) {
                        renew.arg(owner).arg(self.shared.timeout_ms);
                    }
                    renew
                })
                .collect();
            let replies = match conn.each(&commands).await {
                // A server that never ran the script (or lost its cache): nothing ran.
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    script.load_async(&mut conn).await?;
                    conn.each(&commands).await?
                }
                other => other?,
            };
            for reply in replies {
                states.push(match redis::from_redis_value::<String>(reply)?.as_str() {
                    "held" => LeaseState::Held,
                    "gone" => LeaseState::Gone,
                    _ => LeaseState::Lost,
                });
            }
        }
        if sessions.iter().any(|s| s.used_by.is_some()) && ttl_ms > 0 {
            self.note_access();
        }
        Ok(states)
    }
}
