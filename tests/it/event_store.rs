//! The Redis Streams event store: storing, replaying, following streams written by
//! another replica, one reader connection for many followers, recovery after a crash,
//! the short retention of finished streams, and streams replayed only by their session;
//! `event_store/readers.rs`: readers per hash slot (Redis Cluster) and the follower cap.

mod readers;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, future::join_all};
use rmcp::{
    model::ServerJsonRpcMessage,
    transport::streamable_http_server::session::{EventStore, EventStream, ServerSseMessage},
};
use serde_json::json;
use stateful_mcp::{
    events::{EventStoreSettings, RedisEventStore, RedisEventStoreError},
    keys::hash_slot,
    mcp::event_store::SessionEvents,
};

use crate::support::{
    node::{NodeBase, quick_settings},
    redis_server::{RedisServer, skipped_on_shared_cluster, unique_prefix},
    wait::{retry, wait_until, within},
};

const TTL: Duration = Duration::from_secs(60);
const COMPLETED_TTL: Duration = Duration::from_secs(5);
const DELIVERED_TTL: Duration = Duration::from_secs(2);
/// The session whose streams the tests store, unless a test says otherwise.
const SESSION: &str = "session-a";

/// One replica's event store, on the pool and background machinery of its own node.
struct EventStoreNode {
    store: Arc<RedisEventStore>,
    /// What rmcp sees of the store for session [`SESSION`].
    events: SessionEvents,
    base: NodeBase,
}

impl EventStoreNode {
    /// A node whose readers group streams by hash slot on a one-node cluster (which
    /// refuses a cross-slot `XREAD`), else as on any single node.
    fn start(server: &RedisServer, prefix: &str, replica_id: &str, pool_size: usize) -> Self {
        Self::start_with(server, prefix, replica_id, pool_size, |_| {})
    }

    /// A node as [`EventStoreNode::start`], its settings changed by `change`.
    fn start_with(
        server: &RedisServer,
        prefix: &str,
        replica_id: &str,
        pool_size: usize,
        change: impl FnOnce(&mut EventStoreSettings),
    ) -> Self {
        let base = NodeBase::new(
            quick_settings(server, pool_size, Duration::from_secs(5)),
            prefix,
        );
        let mut settings = EventStoreSettings {
            ttl: TTL,
            completed_ttl: COMPLETED_TTL,
            delivered_ttl: DELIVERED_TTL,
            max_len: 1000,
            block: Duration::from_secs(2),
            follow_idle_timeout: Duration::from_secs(20),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_followers: 1024,
            per_slot_readers: RedisServer::one_node_cluster(),
        };
        change(&mut settings);
        let store = RedisEventStore::start(
            base.pool.clone(),
            base.keys.clone(),
            replica_id,
            settings,
            &base.jobs,
        );
        let events = SessionEvents::new(&store, SESSION);
        Self {
            store,
            events,
            base,
        }
    }

    async fn store(&self, stream_id: &str, event: &ServerSseMessage) -> String {
        self.events
            .store_event(stream_id, event)
            .await
            .expect("event stored")
    }

    /// Stores the priming event (a one-second retry) a response stream starts with.
    async fn prime(&self, stream_id: &str) -> String {
        self.store(stream_id, &ServerSseMessage::retry(Duration::from_secs(1)))
            .await
    }

    async fn replay(&self, after: &str) -> EventStream {
        self.events
            .replay_events_after(after)
            .await
            .expect("replay starts")
    }

    async fn stop(self) {
        self.base.stop("the reader stops on shutdown").await;
    }
}

fn notification(progress: u32) -> ServerSseMessage {
    message(json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": { "progressToken": "tok", "progress": progress }
    }))
}

fn response(id: u32) -> ServerSseMessage {
    message(json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": { "content": [{ "type": "text", "text": "done" }], "isError": false }
    }))
}

fn message(value: serde_json::Value) -> ServerSseMessage {
    let message: ServerJsonRpcMessage =
        serde_json::from_value(value).expect("a valid server message");
    ServerSseMessage::from_message(message)
}

fn json_of(event: &ServerSseMessage) -> Option<serde_json::Value> {
    event
        .message
        .as_deref()
        .map(|m| serde_json::to_value(m).expect("serialisable"))
}

/// The next event, within the test's bound.
async fn next(stream: &mut EventStream) -> Option<ServerSseMessage> {
    within("the stream yields or ends", stream.next()).await
}

/// Everything left in a stream that must end by itself.
async fn drain(stream: EventStream) -> Vec<ServerSseMessage> {
    within("the stream ends by itself", stream.collect()).await
}

fn stream_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn replay_returns_later_events_with_their_ids_and_ends_after_the_response() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-replay");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let stream = stream_id();

    let primed = a
        .store(&stream, &ServerSseMessage::retry(Duration::from_secs(3)))
        .await;
    let mut with_retry = notification(1);
    with_retry.retry = Some(Duration::from_millis(2500));
    let progress = a.store(&stream, &with_retry).await;
    let done = a.store(&stream, &response(7)).await;
    assert!(primed.starts_with(&format!("{stream}/")), "{primed}");
    assert!(primed != progress && progress != done);

    let events = drain(a.replay(&primed).await).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_id.as_deref(), Some(progress.as_str()));
    assert_eq!(json_of(&events[0]), json_of(&with_retry));
    assert_eq!(events[0].retry, Some(Duration::from_millis(2500)));
    assert_eq!(events[1].event_id.as_deref(), Some(done.as_str()));
    assert_eq!(json_of(&events[1]), json_of(&response(7)));
    assert_eq!(events[1].retry, None);

    let events = drain(a.replay(&progress).await).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id.as_deref(), Some(done.as_str()));

    assert!(
        drain(a.replay(&done).await).await.is_empty(),
        "after the final response nothing follows"
    );
    assert_eq!(a.store.follower_count(), 0);
    a.stop().await;
}

#[tokio::test]
async fn a_request_streams_priming_event_is_never_written_and_resuming_after_it_waits_here() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-primed");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let b = EventStoreNode::start(&server, &prefix, "replica-b", 4);
    let stream = stream_id();
    let primed = a.prime(&stream).await;
    assert_eq!(primed, format!("{stream}/0-1"));
    assert!(
        server.keys(&format!("{prefix}:*")).await.is_empty(),
        "the priming event wrote nothing"
    );

    // On the replica running the request, a resume after it waits for what comes.
    let mut resumed = a.replay(&primed).await;
    // Anywhere else nothing of the stream exists yet: an unknown event.
    assert!(matches!(
        b.store.replay(SESSION, &primed).await.err(),
        Some(RedisEventStoreError::UnknownEvent(_))
    ));
    let progress = a.store(&stream, &notification(1)).await;
    // A later priming event of the same stream (a stream the server closes, for the
    // client to resume) is stored like any other event.
    let again = a.prime(&stream).await;
    assert_ne!(again, primed);
    let done = a.store(&stream, &response(2)).await;
    let mut seen = Vec::new();
    while let Some(event) = next(&mut resumed).await {
        seen.push(event.event_id);
    }
    assert_eq!(
        seen,
        [
            Some(progress.clone()),
            Some(again.clone()),
            Some(done.clone())
        ]
    );

    // Once stored, the stream replays after the priming id on any replica.
    let replayed = drain(b.replay(&primed).await).await;
    let ids: Vec<_> = replayed.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, [Some(progress), Some(again), Some(done)]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn another_replica_follows_the_stream_until_the_final_response() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-follow");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let b = EventStoreNode::start(&server, &prefix, "replica-b", 4);
    let stream = stream_id();
    let primed = a.prime(&stream).await;
    let first = a.store(&stream, &notification(1)).await;

    let mut resumed = b.replay(&primed).await;
    let got = next(&mut resumed).await.expect("the stored event");
    assert_eq!(got.event_id.as_deref(), Some(first.as_str()));
    assert_eq!(b.store.follower_count(), 1);

    // A writes the rest of the response later; B's stream delivers it as it comes.
    let second = a.store(&stream, &notification(2)).await;
    let got = next(&mut resumed).await.expect("the live notification");
    assert_eq!(got.event_id.as_deref(), Some(second.as_str()));
    assert_eq!(json_of(&got), json_of(&notification(2)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = a.store(&stream, &response(1)).await;
    let got = next(&mut resumed).await.expect("the final response");
    assert_eq!(got.event_id.as_deref(), Some(done.as_str()));
    assert_eq!(json_of(&got), json_of(&response(1)));
    assert!(
        next(&mut resumed).await.is_none(),
        "the stream ends after it"
    );
    wait_until("B's follower is gone", async || {
        b.store.follower_count() == 0
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_resume_after_an_event_still_being_written_waits_for_it() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-behind");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let b = EventStoreNode::start(&server, &prefix, "replica-b", 4);
    let stream = stream_id();
    a.prime(&stream).await;
    // Ids minted on A, after the priming id, for events A writes behind their delivery.
    let first = a.store(&stream, &notification(1)).await;
    let second = a.store(&stream, &notification(2)).await;
    assert_eq!(first, format!("{stream}/0-2"));
    assert_eq!(second, format!("{stream}/0-3"));
    // A client that got the first event resumes on B at once: B waits for its entry
    // rather than calling it unknown, then follows the stream.
    let mut resumed = b.replay(&first).await;
    let got = next(&mut resumed)
        .await
        .expect("the event after the resumed one");
    assert_eq!(got.event_id.as_deref(), Some(second.as_str()));
    let done = a.store(&stream, &response(1)).await;
    let got = next(&mut resumed).await.expect("the final response");
    assert_eq!(got.event_id.as_deref(), Some(done.as_str()));
    assert!(next(&mut resumed).await.is_none());
    // An id no replica minted is still unknown, once the wait is over.
    assert!(matches!(
        b.store
            .replay(SESSION, &format!("{stream}/0-99"))
            .await
            .err(),
        Some(RedisEventStoreError::UnknownEvent(_))
    ));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_standalone_stream_is_followed_until_the_consumer_leaves() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-common");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let b = EventStoreNode::start(&server, &prefix, "replica-b", 4);
    let stream = format!("{}:common", stream_id());
    let primed = a.prime(&stream).await;

    let mut resumed = b.replay(&primed).await;
    // A response on the standalone stream does not end it.
    let reply = a.store(&stream, &response(3)).await;
    let later = a.store(&stream, &notification(9)).await;
    assert_eq!(
        next(&mut resumed).await.and_then(|e| e.event_id),
        Some(reply)
    );
    assert_eq!(
        next(&mut resumed).await.and_then(|e| e.event_id),
        Some(later)
    );
    assert_eq!(b.store.follower_count(), 1);
    drop(resumed);
    assert_eq!(
        b.store.follower_count(),
        0,
        "dropping the stream unregisters it"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn many_followers_share_one_reader_connection() {
    if skipped_on_shared_cluster("many_followers_share_one_reader_connection") {
        return;
    }
    let server = RedisServer::start().await;
    let prefix = unique_prefix("es-many");
    let b = EventStoreNode::start(&server, &prefix, "replica-b", 1);
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let mut probe = server.conn().await;
    let clients = |list: &str| list.lines().filter(|l| !l.trim().is_empty()).count();

    let streams: Vec<String> = (0..10).map(|_| stream_id()).collect();
    // Each stream has its priming event (minted by A, never stored) and a stored
    // notification, after which B resumes.
    let mut primed = Vec::new();
    for stream in &streams {
        a.prime(stream).await;
        primed.push(a.store(stream, &notification(0)).await);
    }
    let mut followers = vec![b.replay(&primed[0]).await];
    wait_until("B's reader is connected", async || {
        b.store.is_reader_connected()
    })
    .await;
    let before: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut probe)
        .await
        .unwrap();

    // Two followers per stream, resumed concurrently.
    let more = join_all(
        primed
            .iter()
            .chain(&primed)
            .skip(1)
            .map(|id| b.events.replay_events_after(id)),
    )
    .await;
    for follower in more {
        followers.push(follower.expect("replay starts"));
    }
    assert_eq!(followers.len(), 20);
    assert_eq!(b.store.follower_count(), 20);
    let after: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut probe)
        .await
        .unwrap();
    assert_eq!(
        clients(&after),
        clients(&before),
        "followers open no connections:\n{before}\n---\n{after}"
    );
    let blocked = after.lines().filter(|l| l.contains("cmd=xread")).count();
    // One node: one reader per replica. Per slot: B's one reader of the session's slot.
    assert_eq!(b.store.reader_count(), 1);
    assert_eq!(
        blocked,
        a.store.reader_count() + b.store.reader_count(),
        "one blocking reader for the streams of one session:\n{after}"
    );

    let mut done = Vec::new();
    for stream in &streams {
        done.push(a.store(stream, &response(1)).await);
    }
    let results = join_all(followers.into_iter().map(drain)).await;
    for (i, events) in results.iter().enumerate() {
        let ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, [Some(done[i % 10].clone())], "follower {i}");
    }
    assert_eq!(b.store.follower_count(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_event_ids_are_errors() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-bad-ids");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let stream = stream_id();
    a.store(&stream, &notification(1)).await;
    let last = a.store(&stream, &notification(2)).await;
    let (_, entry) = last.split_once('/').unwrap();
    let (ms, seq) = entry.split_once('-').unwrap();
    let never_issued = format!("{stream}/{ms}-{}", seq.parse::<u64>().unwrap() + 5);

    for id in ["", "garbage", "abc/", "abc/1", "abc/1-x", "abc/1-0/2-0"] {
        let error = a.store.replay(SESSION, id).await.err().expect(id);
        assert!(
            matches!(error, RedisEventStoreError::MalformedEventId(_)),
            "{id}: {error}"
        );
    }
    for id in ["/1-0", "a{b}/1-0", "a b/1-0", "../x/1-0"] {
        assert!(a.store.replay(SESSION, id).await.is_err(), "{id}");
    }
    for id in [format!("{}/1-0", stream_id()), never_issued] {
        let error = a.store.replay(SESSION, &id).await.err().expect(&id);
        assert!(
            matches!(error, RedisEventStoreError::UnknownEvent(_)),
            "{id}: {error}"
        );
    }
    // Through rmcp's trait the errors arrive boxed, still without a panic.
    assert!(a.events.replay_events_after("nope").await.is_err());
    let error = a
        .events
        .store_event("bad{stream}", &notification(1))
        .await
        .expect_err("a stream id that cannot be keyed");
    assert!(error.to_string().contains("invalid stream id"), "{error}");
    a.stop().await;
}

#[tokio::test]
async fn every_key_has_the_prefix_and_a_ttl() {
    if skipped_on_shared_cluster("every_key_has_the_prefix_and_a_ttl") {
        return;
    }
    let server = RedisServer::start().await;
    let prefix = unique_prefix("es-keys");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let stream = stream_id();
    let primed = a.prime(&stream).await;
    // Following makes the replica write a wake stream too (a second follower wakes the
    // reader of the first when readers are per slot).
    let follower = a.replay(&primed).await;
    let second = a.replay(&primed).await;
    a.store(&stream, &response(1)).await;
    assert_eq!(drain(follower).await.len(), 1);
    assert_eq!(drain(second).await.len(), 1);

    let keys = server.keys("*").await;
    let events = format!("{prefix}:{{{SESSION}}}:events:{stream}");
    let wake = if RedisServer::one_node_cluster() {
        a.base
            .keys
            .slot_reader_wake(hash_slot(&events), "replica-a")
    } else {
        format!("{prefix}:replica:replica-a:wake")
    };
    let mut expected = vec![events, wake];
    expected.sort();
    assert_eq!(keys, expected);
    for key in &keys {
        let ttl = server.pttl(key).await;
        assert!(ttl > 0, "{key}: {ttl}");
        if key.contains(":events:") {
            assert!(ttl <= TTL.as_millis() as i64, "{key}: {ttl}");
        }
    }
    a.stop().await;
}

#[tokio::test]
async fn finished_request_streams_are_kept_only_for_the_short_window() {
    if skipped_on_shared_cluster("finished_request_streams_are_kept_only_for_the_short_window") {
        return;
    }
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-retention");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let key = |stream: &str| a.base.keys.event_stream(SESSION, stream);
    let mut finished = Vec::new();
    for i in 0..20 {
        let stream = stream_id();
        let primed = a.prime(&stream).await;
        a.store(&stream, &notification(i)).await;
        a.store(&stream, &response(i)).await;
        finished.push((stream, primed));
    }
    let open = stream_id();
    a.prime(&open).await;
    a.store(&open, &notification(1)).await;
    // A response on the standalone stream does not end it.
    let standalone = format!("{}:common", stream_id());
    a.prime(&standalone).await;
    a.store(&standalone, &response(1)).await;

    for (stream, _) in &finished {
        let ttl = server.pttl(&key(stream)).await;
        assert!(
            0 < ttl && ttl <= COMPLETED_TTL.as_millis() as i64,
            "{stream}: {ttl}"
        );
    }
    for stream in [&open, &standalone] {
        let ttl = server.pttl(&key(stream)).await;
        assert!(ttl > COMPLETED_TTL.as_millis() as i64, "{stream}: {ttl}");
    }
    // Within the window a client that lost the response still gets it.
    let (_, primed) = &finished[0];
    let events = drain(a.replay(primed).await).await;
    assert_eq!(events.len(), 2);
    assert_eq!(json_of(&events[1]), json_of(&response(0)));
    a.stop().await;
}

#[tokio::test]
async fn a_delivered_stream_is_kept_for_the_delivered_window_and_an_abandoned_one_for_resumption() {
    if skipped_on_shared_cluster(
        "a_delivered_stream_is_kept_for_the_delivered_window_and_an_abandoned_one_for_resumption",
    ) {
        return;
    }
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-delivery");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let key = |stream: &str| a.base.keys.event_stream(SESSION, stream);
    let delivered_ms = DELIVERED_TTL.as_millis() as i64;
    // A stream started here is written behind its events: its TTL once it is there.
    let pttl = |key: String| {
        let server = &server;
        async move {
            wait_until("the stream is written", async || {
                server.pttl(&key).await > 0
            })
            .await;
            server.pttl(&key).await
        }
    };
    let completed_ms = COMPLETED_TTL.as_millis() as i64;

    // Read to its end: the short window.
    let delivered = stream_id();
    a.prime(&delivered).await;
    a.store(&delivered, &response(1)).await;
    a.store.stream_closed(&delivered, true);
    let ttl = pttl(key(&delivered)).await;
    assert!(0 < ttl && ttl <= delivered_ms, "delivered: {ttl}");

    // Its client left mid-call: what comes is kept for the resumption window.
    let left_early = stream_id();
    let primed = a.prime(&left_early).await;
    a.store.stream_closed(&left_early, false);
    a.store(&left_early, &notification(1)).await;
    a.store(&left_early, &response(2)).await;
    let ttl = pttl(key(&left_early)).await;
    assert!(
        delivered_ms < ttl && ttl <= completed_ms,
        "left early: {ttl}"
    );
    let events = drain(a.replay(&primed).await).await;
    assert_eq!(json_of(&events[1]), json_of(&response(2)));

    // The server ended the stream before the response (the client resumes for it).
    let ended_early = stream_id();
    a.prime(&ended_early).await;
    a.store.stream_closed(&ended_early, true);
    a.store(&ended_early, &response(3)).await;
    let ttl = pttl(key(&ended_early)).await;
    assert!(
        delivered_ms < ttl && ttl <= completed_ms,
        "ended early: {ttl}"
    );

    // The response was stored, then the body was dropped before it got through: the
    // stream is extended to the resumption window.
    let lost = stream_id();
    let primed = a.prime(&lost).await;
    a.store(&lost, &response(4)).await;
    assert!(pttl(key(&lost)).await <= delivered_ms);
    a.store.stream_closed(&lost, false);
    wait_until("the lost response's stream is extended", || async {
        server.pttl(&key(&lost)).await > delivered_ms
    })
    .await;
    tokio::time::sleep(DELIVERED_TTL + Duration::from_millis(200)).await;
    let events = drain(a.replay(&primed).await).await;
    assert_eq!(json_of(&events[0]), json_of(&response(4)));

    // A stream this replica did not start (its priming event was stored by another
    // replica or not tracked) keeps the resumption window.
    let untracked = stream_id();
    a.store(&untracked, &notification(1)).await;
    a.store(&untracked, &response(5)).await;
    let ttl = server.pttl(&key(&untracked)).await;
    assert!(
        delivered_ms < ttl && ttl <= completed_ms,
        "untracked: {ttl}"
    );

    // Reports on streams that do not exist change nothing.
    a.store.stream_closed("no-such-stream", false);
    a.stop().await;
}

#[tokio::test]
async fn a_stream_is_replayed_only_for_its_own_session() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-owner");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let other = SessionEvents::new(&a.store, "session-b");
    let request = stream_id();
    let primed = a.prime(&request).await;
    a.store(&request, &response(1)).await;
    let standalone = format!("{SESSION}:common");
    let common_primed = a.prime(&standalone).await;
    a.store(&standalone, &notification(1)).await;

    // Its own session replays both.
    assert_eq!(drain(a.replay(&primed).await).await.len(), 1);
    let mut own = a.replay(&common_primed).await;
    assert!(next(&mut own).await.is_some());
    drop(own);
    for id in [&primed, &common_primed] {
        let error = a.store.replay("session-b", id).await.err().expect(id);
        assert!(
            matches!(error, RedisEventStoreError::UnknownEvent(_)),
            "{id}: {error}"
        );
        assert!(other.replay_events_after(id).await.is_err(), "{id}");
    }
    assert_eq!(a.store.follower_count(), 0, "nothing follows for session B");
    for session in ["", "a{b}", "a b"] {
        let error = a.store.replay(session, &primed).await.err().expect(session);
        assert!(
            matches!(error, RedisEventStoreError::InvalidSessionId(_)),
            "{session}: {error}"
        );
    }
    a.stop().await;
}

#[tokio::test]
async fn the_reader_recovers_after_a_redis_crash() {
    if skipped_on_shared_cluster("the_reader_recovers_after_a_redis_crash") {
        return;
    }
    let mut server = RedisServer::start().await;
    let prefix = unique_prefix("es-crash");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let b = EventStoreNode::start(&server, &prefix, "replica-b", 4);
    let stream = stream_id();
    a.prime(&stream).await;
    let progress = a.store(&stream, &notification(0)).await;
    let mut resumed = b.replay(&progress).await;
    wait_until("B's reader is connected", async || {
        b.store.is_reader_connected()
    })
    .await;

    server.kill();
    wait_until("B's reader notices the crash", async || {
        !b.store.is_reader_connected()
    })
    .await;
    server.restart().await;
    wait_until("B's reader reconnects", async || {
        b.store.is_reader_connected()
    })
    .await;

    // The restarted server lost the stream; the response A writes now starts it afresh
    // with later ids, and the follower still gets it.
    let done = retry("A stores again once Redis is back", async || {
        a.events.store_event(&stream, &response(1)).await
    })
    .await;
    let got = next(&mut resumed).await.expect("the final response");
    assert_eq!(got.event_id, Some(done));
    assert!(next(&mut resumed).await.is_none());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn shutdown_ends_followed_streams() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-shutdown");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let stream = format!("{}:common", stream_id());
    let primed = a.prime(&stream).await;
    let follower = a.replay(&primed).await;
    let store = Arc::clone(&a.store);
    a.stop().await;
    assert!(drain(follower).await.is_empty());
    assert_eq!(store.follower_count(), 0);
    // After shutdown a replay returns what is stored and does not follow.
    let after = store.replay(SESSION, &primed).await.expect("replay");
    let after: Vec<_> = within("the stream ends by itself", after.collect()).await;
    assert!(after.is_empty());
}

#[tokio::test]
async fn long_streams_are_replayed_and_followed_in_pages() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-long");
    let a = EventStoreNode::start(&server, &prefix, "replica-a", 4);
    let b = EventStoreNode::start(&server, &prefix, "replica-b", 4);
    let stream = stream_id();
    let primed = a.prime(&stream).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(a.store(&stream, &notification(i)).await);
    }
    let resumed = b.replay(&primed).await;
    let consumer = tokio::spawn(drain(resumed));
    for i in 300..500 {
        ids.push(a.store(&stream, &notification(i)).await);
    }
    ids.push(a.store(&stream, &response(1)).await);

    let events = consumer.await.expect("the consumer finishes");
    let got: Vec<String> = events.iter().filter_map(|e| e.event_id.clone()).collect();
    assert_eq!(
        got, ids,
        "every event once, in order, ending with the response"
    );
    a.stop().await;
    b.stop().await;
}
