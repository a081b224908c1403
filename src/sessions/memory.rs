//! The in-process backend: one replica, nothing to install, state lost on restart. Its
//! session records are here; `memory/holding.rs` answers for the leases of the one
//! replica that holds every session.

mod holding;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::Value;
use tokio::time::Instant;

use super::{
    CounterOp, HistoryOp, NewSession, Retry, Session, SessionError, SessionStats, SessionSummary,
    record::SCHEMA_VERSION,
    retry_records::{RetryRecordCounts, RetryRecordFigures},
};
use crate::config::SessionSettings;

/// Sessions in a mutex-guarded map; expiry is checked on every access (tokio time, so
/// tests can pause it) and swept by [`super::Sessions::maintain`].
#[derive(Debug, Clone)]
pub struct MemorySessions {
    inner: Arc<Mutex<Inner>>,
    timeout: Duration,
    retry_records: Arc<RetryRecordCounts>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Entry>,
    /// Each principal's session ids ordered by expiry (the Redis backend's index holds
    /// a lower bound of it): a create drops the expired ones from the front and counts
    /// the rest, without looking at other sessions.
    by_principal: HashMap<String, BTreeSet<(Instant, String)>>,
    /// First replies of idempotent creates by principal and retry key, at most
    /// `session.max_retry_records` per principal.
    creates: HashMap<String, HashMap<String, CreateRecord>>,
}

/// The first reply of an idempotent create.
#[derive(Debug)]
struct CreateRecord {
    fingerprint: String,
    id: String,
    created_ms: i64,
    expires_at: Instant,
}

impl Inner {
    /// Removes session `id` (if any) from the map and from its owner's index.
    fn remove(&mut self, id: &str) {
        if let Some(e) = self.sessions.remove(id) {
            self.unindex(&e.session.owner, e.expires_at, id);
        }
    }

    fn unindex(&mut self, owner: &str, expires_at: Instant, id: &str) {
        if let Some(index) = self.by_principal.get_mut(owner) {
            index.remove(&(expires_at, id.to_owned()));
            if index.is_empty() {
                self.by_principal.remove(owner);
            }
        }
    }

    /// Drops the principal's expired sessions and returns how many live ones it holds.
    fn live_count(&mut self, principal: &str, now: Instant) -> usize {
        let Some(index) = self.by_principal.get_mut(principal) else {
            return 0;
        };
        while let Some((expires_at, _)) = index.first()
            && *expires_at <= now
        {
            if let Some((_, id)) = index.pop_first() {
                self.sessions.remove(&id);
            }
        }
        index.len()
    }
}

#[derive(Debug)]
struct Entry {
    session: Session,
    transport: Option<Value>,
    expires_at: Instant,
    /// Serialized size of the data values, kept up to date by `set_checked` so a write
    /// does not re-serialize the whole session.
    data_bytes: usize,
    /// First replies of idempotent calls by retry key: fingerprint, reply, expiry.
    retries: HashMap<String, (String, Value, Instant)>,
}

/// Runs `op` on `e` at most once per `retry` key (see [`super::Retry`]), keeping at
/// most `session.max_retry_records` replies of at most `session.max_retry_bytes` in
/// all (the oldest go first), and counting them in `counts`.
fn once<T: serde::Serialize + serde::de::DeserializeOwned>(
    e: &mut Entry,
    retry: Option<&Retry>,
    limits: &SessionSettings,
    counts: &RetryRecordCounts,
    op: impl FnOnce(&mut Entry) -> Result<T, SessionError>,
) -> Result<T, SessionError> {
    let ttl = std::time::Duration::from_secs(limits.idempotency_ttl_secs);
    let Some(retry) = retry else {
        return op(e);
    };
    let now = Instant::now();
    if let Some((fingerprint, reply, expires)) = e.retries.get(&retry.key)
        && *expires > now
    {
        if *fingerprint != retry.fingerprint {
            return Err(SessionError::RetryConflict);
        }
        return serde_json::from_value(reply.clone())
            .map_err(|err| SessionError::Invalid(format!("kept reply unreadable: {err}")));
    }
    let result = op(e)?;
    let reply = serde_json::to_value(&result)
        .map_err(|err| SessionError::Invalid(format!("reply not keepable: {err}")))?;
    let size = |reply: &Value| reply.to_string().len();
    e.retries.retain(|_, (_, _, expires)| *expires > now);
    let mut bytes: usize =
        e.retries.values().map(|(_, r, _)| size(r)).sum::<usize>() + size(&reply);
    let mut dropped = 0;
    while !e.retries.is_empty()
        && (e.retries.len() >= limits.max_retry_records || bytes > limits.max_retry_bytes)
    {
        let Some(oldest) = e
            .retries
            .iter()
            .min_by_key(|(_, (_, _, expires))| *expires)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        if let Some((_, r, _)) = e.retries.remove(&oldest) {
            bytes -= size(&r);
            dropped += 1;
        }
    }
    e.retries.insert(
        retry.key.clone(),
        (retry.fingerprint.clone(), reply, now + ttl),
    );
    counts.wrote(dropped);
    Ok(result)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl MemorySessions {
    /// An empty store whose sessions expire after `timeout` without access.
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: Arc::default(),
            timeout,
            retry_records: Arc::default(),
        }
    }

    pub(super) fn retry_records(&self) -> RetryRecordFigures {
        self.retry_records.figures()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written entry or an index out
        // of step with the map (nothing that can panic runs between their writes), so a
        // poisoned lock still guards consistent state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds the caller's live session, slides its expiry and hands it to `f`.
    fn with_live<T>(
        &self,
        principal: &str,
        id: &str,
        f: impl FnOnce(&mut Entry) -> Result<T, SessionError>,
    ) -> Result<T, SessionError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let now = Instant::now();
        match inner.sessions.get_mut(id) {
            Some(entry) if entry.expires_at > now && entry.session.owner == principal => {
                let expires_at = now + self.timeout;
                if let Some(index) = inner.by_principal.get_mut(principal) {
                    index.remove(&(entry.expires_at, id.to_owned()));
                    index.insert((expires_at, id.to_owned()));
                }
                entry.expires_at = expires_at;
                entry.session.last_accessed_ms = now_ms().max(entry.session.created_at_ms);
                f(entry)
            }
            Some(entry) if entry.expires_at <= now => {
                inner.remove(id);
                Err(SessionError::NotFound(id.to_owned()))
            }
            _ => Err(SessionError::NotFound(id.to_owned())),
        }
    }

    pub(super) async fn create(
        &self,
        new: NewSession,
        limits: &SessionSettings,
    ) -> Result<Session, SessionError> {
        let mut inner = self.lock();
        let now = Instant::now();
        if let Some(retry) = &new.retry
            && let Some(first) = inner
                .creates
                .get(&new.principal)
                .and_then(|records| records.get(&retry.key))
                .filter(|first| first.expires_at > now)
        {
            if first.fingerprint != retry.fingerprint {
                return Err(SessionError::RetryConflict);
            }
            return Ok(Session {
                id: first.id.clone(),
                owner: new.principal,
                created_at_ms: first.created_ms,
                last_accessed_ms: first.created_ms,
                data: Default::default(),
                client_info: new.client_info,
                version: SCHEMA_VERSION,
            });
        }
        if inner.live_count(&new.principal, now) >= limits.max_sessions_per_principal {
            return Err(SessionError::TooManySessions {
                limit: limits.max_sessions_per_principal,
            });
        }
        let id = new.id.unwrap_or_else(crate::ids::mint);
        match inner.sessions.get(&id) {
            Some(e) if e.expires_at > now => {
                return Err(SessionError::Invalid("session id already in use".into()));
            }
            Some(_) => inner.remove(&id),
            None => {}
        }
        let created = now_ms();
        let session = Session {
            id: id.clone(),
            owner: new.principal,
            created_at_ms: created,
            last_accessed_ms: created,
            data: Default::default(),
            client_info: new.client_info,
            version: SCHEMA_VERSION,
        };
        let expires_at = now + self.timeout;
        if let Some(retry) = new.retry {
            let records = inner.creates.entry(session.owner.clone()).or_default();
            records.retain(|_, r| r.expires_at > now);
            // The oldest go first, as on Redis.
            let mut dropped = 0;
            while records.len() >= limits.max_retry_records {
                let Some(oldest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.expires_at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                records.remove(&oldest);
                dropped += 1;
            }
            self.retry_records.wrote(dropped);
            records.insert(
                retry.key,
                CreateRecord {
                    fingerprint: retry.fingerprint,
                    id: id.clone(),
                    created_ms: created,
                    expires_at: now + Duration::from_secs(limits.idempotency_ttl_secs),
                },
            );
        }
        inner
            .by_principal
            .entry(session.owner.clone())
            .or_default()
            .insert((expires_at, id.clone()));
        inner.sessions.insert(
            id,
            Entry {
                session: session.clone(),
                transport: new.transport,
                expires_at,
                data_bytes: 0,
                retries: HashMap::new(),
            },
        );
        Ok(session)
    }

    pub(super) async fn get(&self, principal: &str, id: &str) -> Result<Session, SessionError> {
        self.with_live(principal, id, |e| Ok(e.session.clone()))
    }

    pub(super) async fn update(
        &self,
        principal: &str,
        id: &str,
        key: &str,
        value: Option<String>,
        limits: &SessionSettings,
    ) -> Result<(), SessionError> {
        self.with_live(principal, id, |e| {
            let value = value
                .map(|raw| serde_json::from_str(&raw))
                .transpose()
                .map_err(|err| SessionError::Invalid(err.to_string()))?;
            set_checked(e, key, value, limits.max_data_bytes)
        })
    }

    pub(super) async fn counter(
        &self,
        principal: &str,
        id: &str,
        op: CounterOp,
        retry: Option<&Retry>,
        limits: &SessionSettings,
    ) -> Result<i64, SessionError> {
        self.with_live(principal, id, |e| {
            once(e, retry, limits, &self.retry_records, |e| {
                // Reset needs no current value: it is how a caller recovers a counter that
                // holds something other than an integer.
                let current = || match e.session.data.get("counter") {
                    None => Ok(0),
                    Some(v) => v.as_i64().ok_or_else(|| {
                        SessionError::Invalid("stored counter is not an integer".into())
                    }),
                };
                let next = match op {
                    CounterOp::Get => return current(),
                    CounterOp::Add(n) => current()?
                        .checked_add(n)
                        .ok_or(SessionError::CounterOverflow)?,
                    CounterOp::Reset => 0,
                };
                set_checked(e, "counter", Some(next.into()), limits.max_data_bytes)?;
                Ok(next)
            })
        })
    }

    pub(super) async fn history(
        &self,
        principal: &str,
        id: &str,
        op: HistoryOp,
        retry: Option<&Retry>,
        limits: &SessionSettings,
    ) -> Result<Vec<String>, SessionError> {
        self.with_live(principal, id, |e| {
            once(e, retry, limits, &self.retry_records, |e| {
                let mut entries: Vec<String> = e
                    .session
                    .data
                    .get("history")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                match op {
                    HistoryOp::List => return Ok(entries),
                    HistoryOp::Add(entry) => {
                        entries.push(entry);
                        let excess = entries.len().saturating_sub(limits.history_limit);
                        entries.drain(..excess);
                    }
                    HistoryOp::Clear => entries.clear(),
                }
                let value = (!entries.is_empty()).then(|| Value::from(entries.clone()));
                set_checked(e, "history", value, limits.max_data_bytes)?;
                Ok(entries)
            })
        })
    }

    pub(super) async fn delete(&self, principal: &str, id: &str) -> Result<bool, SessionError> {
        let mut inner = self.lock();
        let now = Instant::now();
        Ok(match inner.sessions.get(id) {
            Some(e) if e.session.owner == principal => {
                let live = e.expires_at > now;
                inner.remove(id);
                live
            }
            _ => false,
        })
    }

    pub(super) async fn list(&self, principal: &str) -> Result<Vec<SessionSummary>, SessionError> {
        let now = Instant::now();
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .by_principal
            .get(principal)
            .into_iter()
            .flatten()
            .filter(|(expires_at, _)| *expires_at > now)
            .filter_map(|(_, id)| inner.sessions.get(id))
            .map(|e| e.session.summary())
            .collect();
        out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(out)
    }

    pub(super) async fn stats(&self) -> Result<SessionStats, SessionError> {
        let now = Instant::now();
        let inner = self.lock();
        let live = inner.sessions.values().filter(|e| e.expires_at > now);
        let mut stats = SessionStats {
            total: 0,
            most_recent_access_ms: None,
        };
        for e in live {
            stats.total += 1;
            stats.most_recent_access_ms = stats
                .most_recent_access_ms
                .max(Some(e.session.last_accessed_ms));
        }
        Ok(stats)
    }

    /// Drops the expired sessions; returns how many.
    pub(super) async fn maintain(&self) -> Result<u64, SessionError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let before = inner.sessions.len();
        inner.sessions.retain(|_, e| e.expires_at > now);
        inner.by_principal.retain(|_, index| {
            index.retain(|(expires_at, _)| *expires_at > now);
            !index.is_empty()
        });
        inner.creates.retain(|_, records| {
            records.retain(|_, r| r.expires_at > now);
            !records.is_empty()
        });
        Ok((before - inner.sessions.len()) as u64)
    }
}

/// Writes one data value unless that takes the session over its byte limit.
fn set_checked(
    e: &mut Entry,
    key: &str,
    value: Option<Value>,
    max_bytes: usize,
) -> Result<(), SessionError> {
    let old = e.session.data.get(key).map_or(0, |v| v.to_string().len());
    let new = value.as_ref().map_or(0, |v| v.to_string().len());
    if new > old && e.data_bytes - old + new > max_bytes {
        return Err(SessionError::DataTooLarge { limit: max_bytes });
    }
    e.data_bytes = e.data_bytes - old + new;
    match value {
        Some(v) => e.session.data.insert(key.to_owned(), v),
        None => e.session.data.remove(key),
    };
    Ok(())
}
