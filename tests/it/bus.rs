//! The pub/sub bus between two replicas on a real `redis-server`, including a crash and
//! restart of that server.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use stateful_mcp::{
    bus::{Bus, BusHandler, BusMessage, BusOptions},
    config::RedisSettings,
    keys::Keys,
    redis_pool::RedisPool,
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::support::{RedisServer, unique_prefix};

const WAIT: Duration = Duration::from_secs(10);

/// Records what a handler is given.
struct Recorder {
    messages: mpsc::UnboundedSender<BusMessage>,
    gaps: AtomicUsize,
}

impl Recorder {
    fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<BusMessage>) {
        let (messages, rx) = mpsc::unbounded_channel();
        let recorder = Arc::new(Self {
            messages,
            gaps: AtomicUsize::new(0),
        });
        (recorder, rx)
    }

    fn gaps(&self) -> usize {
        self.gaps.load(Ordering::SeqCst)
    }
}

impl BusHandler for Recorder {
    fn on_message(&self, msg: BusMessage) {
        let _ = self.messages.send(msg);
    }

    fn on_gap(&self) {
        self.gaps.fetch_add(1, Ordering::SeqCst);
    }
}

struct Panicker;

impl BusHandler for Panicker {
    fn on_message(&self, _: BusMessage) {
        panic!("handler bug");
    }

    fn on_gap(&self) {}
}

/// One replica's bus with the background machinery it runs on.
struct Replica {
    bus: Bus,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Replica {
    fn start(url: &str, prefix: &str, replica_id: &str) -> Self {
        let pool = RedisPool::new(&RedisSettings {
            url: url.to_owned(),
            key_prefix: prefix.to_owned(),
            pool_size: 4,
            pool_wait_timeout_ms: 2000,
            command_timeout_ms: 1000,
            connect_timeout_ms: 1000,
        })
        .expect("valid settings");
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let options = BusOptions {
            health_check_interval: Duration::from_millis(100),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        };
        let bus = Bus::start_with_options(
            pool,
            Keys::new(prefix),
            replica_id,
            options,
            shutdown.clone(),
            &tracker,
        );
        Self {
            bus,
            shutdown,
            tracker,
        }
    }

    /// Publishes, retrying while the pool replaces connections a server restart broke.
    async fn publish(&self, topic: &str, payload: &[u8]) {
        tokio::time::timeout(WAIT, async {
            while let Err(error) = self.bus.publish(topic, payload).await {
                eprintln!("publish failed, retrying: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("publish succeeds once Redis is back");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(WAIT, self.tracker.wait())
            .await
            .expect("the subscriber task stops on shutdown");
        assert!(!self.bus.is_connected());
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

async fn next(rx: &mut mpsc::UnboundedReceiver<BusMessage>) -> BusMessage {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message arrives in time")
        .expect("the handler is alive")
}

#[tokio::test]
async fn publish_reaches_every_replica_with_its_origin() {
    let server = RedisServer::start().await;
    let prefix = unique_prefix("bus-origin");
    let a = Replica::start(server.url(), &prefix, "replica-a");
    let b = Replica::start(server.url(), &prefix, "replica-b");
    let (on_a, mut a_rx) = Recorder::new();
    let (on_b, mut b_rx) = Recorder::new();
    a.bus.subscribe("cache", on_a.clone());
    b.bus.subscribe("cache", on_b.clone());
    wait_until("both replicas subscribed", || {
        a.bus.is_subscribed("cache") && b.bus.is_subscribed("cache")
    })
    .await;
    assert!(a.bus.is_connected() && b.bus.is_connected());

    a.publish("cache", b"evict:42").await;
    let got = next(&mut b_rx).await;
    assert_eq!(got.topic, "cache");
    assert_eq!(got.origin, "replica-a");
    assert_eq!(got.payload, b"evict:42");
    assert!(!got.is_own());
    let echo = next(&mut a_rx).await;
    assert_eq!(echo.origin, "replica-a");
    assert!(echo.is_own());

    // Another topic is not delivered to `cache` handlers: the next message B sees is the
    // second `cache` one.
    a.publish("sessions", b"not for cache").await;
    b.publish("cache", b"evict:43").await;
    let got = next(&mut b_rx).await;
    assert_eq!(
        (got.origin.as_str(), got.payload.as_slice()),
        ("replica-b", &b"evict:43"[..])
    );
    assert!(got.is_own());

    assert_eq!(on_a.gaps() + on_b.gaps(), 0, "no reconnect, no gap");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn subscribing_before_redis_is_up_works_once_it_is() {
    let mut server = RedisServer::start().await;
    server.kill();
    let prefix = unique_prefix("bus-early");
    let b = Replica::start(server.url(), &prefix, "replica-b");
    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("cache", on_b.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.bus.is_connected(), "nothing to connect to yet");

    server.restart().await;
    wait_until("the bus connects by itself", || b.bus.is_connected()).await;
    assert!(b.bus.is_subscribed("cache"));
    let a = Replica::start(server.url(), &prefix, "replica-a");
    a.publish("cache", b"hello").await;
    let got = next(&mut b_rx).await;
    assert_eq!(
        (got.origin.as_str(), got.payload.as_slice()),
        ("replica-a", &b"hello"[..])
    );
    assert_eq!(on_b.gaps(), 0, "the first connection is not a gap");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn bus_reconnects_after_a_redis_crash_and_reports_the_gap() {
    let mut server = RedisServer::start().await;
    let prefix = unique_prefix("bus-restart");
    let a = Replica::start(server.url(), &prefix, "replica-a");
    let b = Replica::start(server.url(), &prefix, "replica-b");
    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("cache", on_b.clone());
    wait_until("B subscribed", || b.bus.is_connected()).await;
    a.publish("cache", b"before").await;
    assert_eq!(next(&mut b_rx).await.payload, b"before");

    server.kill();
    wait_until("B notices the crash", || !b.bus.is_connected()).await;
    assert!(!b.bus.is_subscribed("cache"));

    server.restart().await;
    wait_until("B reconnects", || b.bus.is_connected()).await;
    wait_until("B reports one gap", || on_b.gaps() == 1).await;
    a.publish("cache", b"after").await;
    let got = next(&mut b_rx).await;
    assert_eq!(
        (got.origin.as_str(), got.payload.as_slice()),
        ("replica-a", &b"after"[..])
    );
    assert_eq!(on_b.gaps(), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn topics_added_while_connected_are_subscribed_and_a_panicking_handler_is_contained() {
    let server = RedisServer::start().await;
    let prefix = unique_prefix("bus-late");
    let b = Replica::start(server.url(), &prefix, "replica-b");
    wait_until("B connects with no topics", || b.bus.is_connected()).await;

    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("late", Arc::new(Panicker));
    b.bus.subscribe("late", on_b.clone());
    wait_until("the late topic is subscribed", || {
        b.bus.is_subscribed("late")
    })
    .await;
    b.publish("late", b"one").await;
    b.publish("late", b"two").await;
    assert_eq!(next(&mut b_rx).await.payload, b"one");
    assert_eq!(next(&mut b_rx).await.payload, b"two");
    assert!(b.bus.is_connected());
    assert_eq!(on_b.gaps(), 0);
    b.stop().await;
}

#[tokio::test]
async fn health_checks_keep_a_quiet_connection() {
    let server = RedisServer::start().await;
    let prefix = unique_prefix("bus-quiet");
    let b = Replica::start(server.url(), &prefix, "replica-b");
    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("cache", on_b.clone());
    wait_until("B subscribed", || b.bus.is_connected()).await;
    // Several health-check PINGs go over the subscribed connection meanwhile; none may
    // be mistaken for a failure.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(b.bus.is_connected());
    assert_eq!(on_b.gaps(), 0, "the connection was never replaced");
    b.publish("cache", b"still here").await;
    assert_eq!(next(&mut b_rx).await.payload, b"still here");
    b.stop().await;
}
