//! The pub/sub bus between two replicas on a real `redis-server`, including a crash and
//! restart of that server.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use stateful_mcp::bus::{Bus, BusHandler, BusMessage, BusOptions};
use tokio::sync::mpsc;

use crate::support::{
    node::{NodeBase, quick_settings},
    redis_server::{RedisServer, RedisServerExt, skipped_on_shared_cluster, unique_prefix},
    wait::{retry, wait_until, within},
};

/// Records what a handler is given.
pub(crate) struct Recorder {
    messages: mpsc::UnboundedSender<BusMessage>,
    gaps: AtomicUsize,
}

impl Recorder {
    pub(crate) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<BusMessage>) {
        let (messages, rx) = mpsc::unbounded_channel();
        let recorder = Arc::new(Self {
            messages,
            gaps: AtomicUsize::new(0),
        });
        (recorder, rx)
    }

    pub(crate) fn gaps(&self) -> usize {
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

/// One replica's bus, on the pool and background machinery of its own node.
pub(crate) struct BusNode {
    pub(crate) bus: Bus,
    base: NodeBase,
}

impl BusNode {
    pub(crate) fn start(server: &impl RedisServerExt, prefix: &str, replica_id: &str) -> Self {
        let base = NodeBase::new(quick_settings(server, 4, Duration::from_secs(2)), prefix);
        let options = BusOptions {
            health_check_interval: Duration::from_millis(100),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        };
        let bus = Bus::start_with_options(
            base.pool.clone(),
            base.keys.clone(),
            replica_id,
            options,
            &base.jobs,
        );
        Self { bus, base }
    }

    /// Publishes, retrying while the pool replaces connections a server restart broke.
    pub(crate) async fn publish(&self, topic: &str, payload: &[u8]) {
        retry("publish succeeds once Redis is back", async || {
            self.bus.publish(topic, payload).await
        })
        .await;
    }

    pub(crate) async fn stop(self) {
        self.base
            .stop("the subscriber task stops on shutdown")
            .await;
        assert!(!self.bus.is_connected());
    }
}

pub(crate) async fn next(rx: &mut mpsc::UnboundedReceiver<BusMessage>) -> BusMessage {
    within("a message arrives", rx.recv())
        .await
        .expect("the handler is alive")
}

#[tokio::test]
async fn publish_reaches_every_replica_with_its_origin() {
    let server = RedisServer::start().await;
    let prefix = unique_prefix("bus-origin");
    let a = BusNode::start(&server, &prefix, "replica-a");
    let b = BusNode::start(&server, &prefix, "replica-b");
    let (on_a, mut a_rx) = Recorder::new();
    let (on_b, mut b_rx) = Recorder::new();
    a.bus.subscribe("cache", on_a.clone());
    b.bus.subscribe("cache", on_b.clone());
    wait_until("both replicas subscribed", async || {
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
    if skipped_on_shared_cluster("subscribing_before_redis_is_up_works_once_it_is") {
        return;
    }
    let mut server = RedisServer::start().await;
    server.kill();
    let prefix = unique_prefix("bus-early");
    let b = BusNode::start(&server, &prefix, "replica-b");
    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("cache", on_b.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.bus.is_connected(), "nothing to connect to yet");

    server.restart().await;
    wait_until("the bus connects by itself", async || b.bus.is_connected()).await;
    assert!(b.bus.is_subscribed("cache"));
    let a = BusNode::start(&server, &prefix, "replica-a");
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
    if skipped_on_shared_cluster("bus_reconnects_after_a_redis_crash_and_reports_the_gap") {
        return;
    }
    let mut server = RedisServer::start().await;
    let prefix = unique_prefix("bus-restart");
    let a = BusNode::start(&server, &prefix, "replica-a");
    let b = BusNode::start(&server, &prefix, "replica-b");
    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("cache", on_b.clone());
    wait_until("B subscribed", async || b.bus.is_connected()).await;
    a.publish("cache", b"before").await;
    assert_eq!(next(&mut b_rx).await.payload, b"before");

    server.kill();
    wait_until("B notices the crash", async || !b.bus.is_connected()).await;
    assert!(!b.bus.is_subscribed("cache"));

    server.restart().await;
    wait_until("B reconnects", async || b.bus.is_connected()).await;
    wait_until("B reports one gap", async || on_b.gaps() == 1).await;
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
    let b = BusNode::start(&server, &prefix, "replica-b");
    wait_until("B connects with no topics", async || b.bus.is_connected()).await;

    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("late", Arc::new(Panicker));
    b.bus.subscribe("late", on_b.clone());
    wait_until("the late topic is subscribed", async || {
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
    let b = BusNode::start(&server, &prefix, "replica-b");
    let (on_b, mut b_rx) = Recorder::new();
    b.bus.subscribe("cache", on_b.clone());
    wait_until("B subscribed", async || b.bus.is_connected()).await;
    // Several health-check PINGs go over the subscribed connection meanwhile; none may
    // be mistaken for a failure.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(b.bus.is_connected());
    assert_eq!(on_b.gaps(), 0, "the connection was never replaced");
    b.publish("cache", b"still here").await;
    assert_eq!(next(&mut b_rx).await.payload, b"still here");
    b.stop().await;
}
