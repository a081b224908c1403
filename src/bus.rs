//! The replica's single Redis pub/sub subscriber, shared by every feature that needs
//! cross-replica messages (cache invalidation, session eviction, ...).
//!
//! One background task owns the subscriber connections of the replica (`bus/subscriber.rs`:
//! one plain pub/sub connection, or on a Redis Cluster sharded pub/sub on the master of
//! each channel's slot). Features register a [`BusHandler`] per topic with
//! [`Bus::subscribe`]; the task subscribes to `<prefix>:bus:<topic>` (see
//! [`Keys::bus_channel`]) and hands every message to the topic's handlers. Publishing
//! (`PUBLISH`, or `SPUBLISH` on a cluster) goes through the shared pool, so it never
//! waits on the subscriber.
//!
//! Pub/sub delivers at most once: while the subscriber is disconnected, messages are lost.
//! The task reconnects by itself with capped backoff (after a lost connection, a moved
//! primary or, on a cluster, a channel's slot moved to another master), subscribes every
//! topic again and then calls [`BusHandler::on_gap`] on every handler, so a cache can
//! drop whatever it may have missed invalidations for.
//!
//! Every message is wrapped in a small envelope naming the replica that published it:
//! one version byte, the origin's length as a big-endian `u16`, the origin, the payload.

use std::{
    collections::{HashMap, HashSet},
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{Msg, RedisError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::subscriber::Subscriber;
use crate::{
    jobs::Jobs,
    keys::Keys,
    redis_pool::{Backoff, RedisPool, RedisPoolError},
};

mod subscriber;

/// The envelope format this build writes and reads.
const ENVELOPE_VERSION: u8 = 1;

/// What a feature does with the messages of the topics it subscribed to.
///
/// Both methods run on the bus's subscriber task, one message at a time: they must return
/// quickly and never block (hand heavy work to a channel or a spawned task). A panic is
/// caught and logged so one faulty handler cannot stop the bus.
pub trait BusHandler: Send + Sync {
    /// A message published on a topic this handler subscribed to, by any replica
    /// (including this one: see [`BusMessage::is_own`]).
    fn on_message(&self, msg: BusMessage);

    /// Messages may have been missed: the subscriber reconnected after losing its
    /// connection (never called for the first successful connection). State kept in sync
    /// by messages should be dropped or re-read.
    fn on_gap(&self);
}

/// One message received on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// The topic it was published on.
    pub topic: String,
    /// The replica id of the publisher.
    pub origin: String,
    /// The publisher's bytes, unchanged.
    pub payload: Vec<u8>,
    own: bool,
}

impl BusMessage {
    /// A message as received by replica `local_replica`.
    pub fn new(topic: String, origin: String, payload: Vec<u8>, local_replica: &str) -> Self {
        let own = origin == local_replica;
        Self {
            topic,
            origin,
            payload,
            own,
        }
    }

    /// Whether the receiving replica published it itself.
    pub fn is_own(&self) -> bool {
        self.own
    }
}

/// Timing of the subscriber task; [`Default`] suits production.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// How often the subscriber `PING`s its connection, so a connection that died without
    /// a reset (a network partition) is noticed instead of silently delivering nothing.
    pub health_check_interval: Duration,
    /// First delay before reconnecting after a failure.
    pub min_backoff: Duration,
    /// Largest delay between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            health_check_interval: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Cheap-clone handle on the replica's bus; clones share the subscriber.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("replica_id", &self.shared.origin)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Adds the subscriber to `jobs` (the job `bus subscriber`) with
    /// [`BusOptions::default`].
    ///
    /// Never fails: while Redis is unreachable the subscriber keeps retrying in the
    /// background, and [`Bus::is_connected`] says whether it is subscribed.
    pub fn start(pool: RedisPool, keys: Keys, replica_id: impl Into<String>, jobs: &Jobs) -> Self {
        Self::start_with_options(pool, keys, replica_id, BusOptions::default(), jobs)
    }

    /// Like [`Bus::start`] with explicit timing.
    pub fn start_with_options(
        pool: RedisPool,
        keys: Keys,
        replica_id: impl Into<String>,
        options: BusOptions,
        jobs: &Jobs,
    ) -> Self {
        let mut origin: String = replica_id.into();
        truncate_to_boundary(&mut origin, usize::from(u16::MAX));
        let shared = Arc::new(Shared {
            pool,
            keys,
            origin,
            options,
            state: Mutex::new(State::default()),
            connected: AtomicBool::new(false),
            changed: Notify::new(),
        });
        let subscriber = Arc::clone(&shared);
        jobs.add("bus subscriber", move |stop| subscriber.run(stop));
        Self { shared }
    }

    /// Adds `handler` for `topic`. Works before the subscriber is connected and survives
    /// reconnections; the subscriber sends `SUBSCRIBE` for a new topic at once when
    /// connected. Messages published before that `SUBSCRIBE` took effect are not seen
    /// (see [`Bus::is_subscribed`]).
    pub fn subscribe(&self, topic: &str, handler: Arc<dyn BusHandler>) {
        self.shared
            .state()
            .handlers
            .entry(topic.to_owned())
            .or_default()
            .push(handler);
        self.shared.changed.notify_one();
    }

    /// Publishes `payload` on `topic` to every replica subscribed to it, this one included.
    ///
    /// # Errors
    /// [`RedisPoolError`] when no pooled connection can be had or `PUBLISH` (`SPUBLISH`
    /// on a cluster) fails.
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), RedisPoolError> {
        let envelope = encode(&self.shared.origin, payload);
        let mut conn = self.shared.pool.get().await?;
        redis::cmd(Subscriber::publish_command(&self.shared.pool))
            .arg(self.shared.keys.bus_channel(topic))
            .arg(envelope)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether the subscriber is connected and subscribed to every topic registered so far
    /// (what readiness reports).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire) && {
            let state = self.shared.state();
            state
                .handlers
                .keys()
                .all(|topic| state.subscribed.contains(topic))
        }
    }

    /// Whether `topic` is subscribed on the live connection, i.e. messages published on it
    /// from now on reach this replica.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.shared.connected.load(Ordering::Acquire)
            && self.shared.state().subscribed.contains(topic)
    }

    /// The replica id stamped on every published message.
    pub fn replica_id(&self) -> &str {
        &self.shared.origin
    }
}

struct Shared {
    pool: RedisPool,
    keys: Keys,
    origin: String,
    options: BusOptions,
    state: Mutex<State>,
    connected: AtomicBool,
    /// Signalled when a topic is added, so the subscriber sends `SUBSCRIBE` for it.
    changed: Notify,
}

#[derive(Default)]
struct State {
    handlers: HashMap<String, Vec<Arc<dyn BusHandler>>>,
    /// Topics the live connection has confirmed; empty while disconnected.
    subscribed: HashSet<String>,
}

/// Why a subscriber connection ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("`{0}` timed out")]
    CommandTimeout(&'static str),
    #[error("the server closed the subscription connection")]
    Closed,
    #[error("the Redis primary or the cluster's slot map may have moved")]
    Moved,
    #[error("a channel's slot moved to another master")]
    SlotMoved,
    #[error("no master serves a channel's slot")]
    Unserved,
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Handlers never run under this lock, so a poisoned lock only means a panic
        // elsewhere between two plain map operations; the maps are still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The subscriber task: one connection at a time, until `shutdown`.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.options.min_backoff, self.options.max_backoff);
        let mut established_before = false;
        loop {
            let outcome = self
                .connection(&shutdown, &mut established_before, &mut backoff)
                .await;
            self.mark_disconnected();
            if !backoff
                .reconnect_after(outcome, "bus subscriber", &self.origin, &shutdown)
                .await
            {
                break;
            }
        }
        tracing::debug!(replica = %self.origin, "bus subscriber stopped");
    }

    /// Runs one subscriber connection: `Ok` on shutdown, `Err` when it has to be replaced.
    async fn connection(
        &self,
        shutdown: &CancellationToken,
        established_before: &mut bool,
        backoff: &mut Backoff,
    ) -> Result<(), Lost> {
        let connect_timeout = self.pool.connect_timeout();
        let mut topology = self.pool.topology();
        topology.borrow_and_update();
        let mut subscriber = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            subscriber = tokio::time::timeout(connect_timeout, Subscriber::connect(&self.pool)) => {
                subscriber.map_err(|_| Lost::ConnectTimeout(connect_timeout))??
            }
        };
        let mut channels = HashMap::new();
        self.sync_subscriptions(&mut subscriber, &mut channels)
            .await?;
        self.connected.store(true, Ordering::Release);
        backoff.reset();
        if *established_before {
            tracing::info!(replica = %self.origin, "bus subscriber reconnected; reporting a gap");
            self.report_gap();
        } else {
            tracing::info!(replica = %self.origin, "bus subscriber connected");
        }
        *established_before = true;

        let mut health = tokio::time::interval_at(
            tokio::time::Instant::now() + self.options.health_check_interval,
            self.options.health_check_interval,
        );
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                msg = subscriber.next() => self.dispatch(&channels, &msg?),
                _ = self.changed.notified() => {
                    self.sync_subscriptions(&mut subscriber, &mut channels).await?;
                }
                _ = topology.changed() => return Err(Lost::Moved),
                _ = health.tick() => subscriber.ping(self.pool.command_timeout()).await?,
            }
        }
    }

    /// Subscribes every registered topic the connection does not have yet.
    async fn sync_subscriptions(
        &self,
        subscriber: &mut Subscriber,
        channels: &mut HashMap<String, String>,
    ) -> Result<(), Lost> {
        let missing: Vec<String> = {
            let state = self.state();
            state
                .handlers
                .keys()
                .filter(|topic| !state.subscribed.contains(*topic))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing
            .iter()
            .map(|topic| self.keys.bus_channel(topic))
            .collect();
        subscriber.subscribe(&self.pool, &names).await?;
        tracing::debug!(replica = %self.origin, topics = ?missing, "bus subscribed");
        let mut state = self.state();
        for (channel, topic) in names.into_iter().zip(missing) {
            channels.insert(channel, topic.clone());
            state.subscribed.insert(topic);
        }
        Ok(())
    }

    fn dispatch(&self, channels: &HashMap<String, String>, msg: &Msg) {
        let channel = msg.get_channel_name();
        let Some(topic) = channels.get(channel) else {
            tracing::debug!(replica = %self.origin, channel, "bus message on an unknown channel");
            return;
        };
        let Some((origin, payload)) = decode(msg.get_payload_bytes()) else {
            tracing::warn!(replica = %self.origin, topic, "bus message without a valid envelope");
            return;
        };
        let handlers = self
            .state()
            .handlers
            .get(topic)
            .cloned()
            .unwrap_or_default();
        for handler in handlers {
            let msg = BusMessage::new(
                topic.clone(),
                origin.to_owned(),
                payload.to_vec(),
                &self.origin,
            );
            if std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_message(msg))).is_err() {
                tracing::error!(replica = %self.origin, topic, "bus handler panicked on a message");
            }
        }
    }

    fn report_gap(&self) {
        let handlers: Vec<Arc<dyn BusHandler>> =
            self.state().handlers.values().flatten().cloned().collect();
        for handler in handlers {
            if std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_gap())).is_err() {
                tracing::error!(replica = %self.origin, "bus handler panicked on a gap");
            }
        }
    }

    fn mark_disconnected(&self) {
        self.connected.store(false, Ordering::Release);
        self.state().subscribed.clear();
    }
}

/// Wraps `payload` in the envelope naming `origin` (at most `u16::MAX` bytes).
fn encode(origin: &str, payload: &[u8]) -> Vec<u8> {
    // `Bus::start_with_options` truncates the origin, so the length always fits.
    let len = u16::try_from(origin.len()).unwrap_or(u16::MAX);
    let origin = &origin.as_bytes()[..usize::from(len)];
    let mut out = Vec::with_capacity(3 + origin.len() + payload.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(origin);
    out.extend_from_slice(payload);
    out
}

/// Splits an envelope into origin and payload; `None` for anything this build did not
/// write.
fn decode(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (&version, rest) = bytes.split_first()?;
    if version != ENVELOPE_VERSION {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return None;
    }
    let (origin, payload) = rest.split_at(len);
    Some((std::str::from_utf8(origin).ok()?, payload))
}

fn truncate_to_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let bytes = encode("replica-a", b"\x00payload\xff");
        assert_eq!(decode(&bytes), Some(("replica-a", &b"\x00payload\xff"[..])));
        assert_eq!(decode(&encode("", b"")), Some(("", &b""[..])));
    }

    #[test]
    fn malformed_envelopes_are_rejected() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x02\x00\x00"), None);
        assert_eq!(decode(b"\x01\x00"), None);
        assert_eq!(decode(b"\x01\x00\x05abc"), None);
        assert_eq!(decode(b"\x01\x00\x02\xff\xfe"), None);
    }

    #[test]
    fn own_messages_are_recognised() {
        let msg = BusMessage::new("t".into(), "a".into(), vec![], "a");
        assert!(msg.is_own());
        let msg = BusMessage::new("t".into(), "a".into(), vec![], "b");
        assert!(!msg.is_own());
    }

    #[test]
    fn long_origins_are_cut_on_a_char_boundary() {
        let mut s = "é".repeat(5);
        truncate_to_boundary(&mut s, 5);
        assert_eq!(s, "éé");
    }
}
