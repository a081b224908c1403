//! Readers per hash slot, the shape they have on Redis Cluster, forced on one node
//! (`per_slot_readers`): followers on many sessions resume and follow with one reader
//! per slot followed, a reader ends with its last follower and starts again with the
//! next, a reader that loses its connection reconnects alone; and the follower cap, in
//! whichever shape the run gives.

use std::collections::HashSet;

use super::*;

fn per_slot(settings: &mut EventStoreSettings) {
    settings.per_slot_readers = true;
}

/// The ids of the clients whose last command was `XREAD`: the readers (pooled
/// connections never send it).
async fn readers(server: &RedisServer) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    list.lines()
        .filter(|line| line.contains("cmd=xread"))
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

/// `session`'s view of `node`'s store.
fn view(node: &EventStoreNode, session: &str) -> SessionEvents {
    SessionEvents::new(&node.store, session)
}

#[tokio::test]
async fn followers_on_many_sessions_resume_and_follow_with_one_reader_per_slot() {
    if skipped_on_shared_cluster(
        "followers_on_many_sessions_resume_and_follow_with_one_reader_per_slot",
    ) {
        return;
    }
    let server = RedisServer::start().await;
    let prefix = unique_prefix("es-slots");
    let a = EventStoreNode::start_with(&server, &prefix, "replica-a", 4, per_slot);
    let b = EventStoreNode::start_with(&server, &prefix, "replica-b", 4, per_slot);
    let slot = |session: &str| hash_slot(&a.base.keys.event_stream(session, "any"));
    // Twelve sessions, two of which share a slot.
    let mut sessions: Vec<String> = (0..11).map(|i| format!("session-{i}")).collect();
    let twin = (0..)
        .map(|i| format!("twin-{i}"))
        .find(|twin| slot(twin) == slot(&sessions[0]))
        .unwrap();
    sessions.push(twin);
    let slots: HashSet<u16> = sessions.iter().map(|s| slot(s)).collect();
    assert!(slots.len() < sessions.len());

    // A runs a call in each session (its priming event minted, one notification
    // stored); B resumes each after the priming event, twice.
    let mut calls = Vec::new();
    let mut followers = Vec::new();
    for session in &sessions {
        let (writer, reader) = (view(&a, session), view(&b, session));
        let stream = stream_id();
        let primed = writer
            .store_event(&stream, &ServerSseMessage::retry(Duration::from_secs(1)))
            .await
            .unwrap();
        let first = writer.store_event(&stream, &notification(0)).await.unwrap();
        for _ in 0..2 {
            let mut follower = reader.replay_events_after(&primed).await.unwrap();
            let got = next(&mut follower).await.and_then(|e| e.event_id);
            assert_eq!(got.as_deref(), Some(first.as_str()), "{session}");
            followers.push(follower);
        }
        calls.push((writer, stream));
    }
    assert_eq!(b.store.follower_count(), 2 * sessions.len());
    assert_eq!(b.store.reader_count(), slots.len());
    assert_eq!(
        a.store.reader_count(),
        0,
        "A follows nothing, so reads nothing"
    );
    wait_until("one blocking reader per slot followed", async || {
        readers(&server).await.len() == slots.len()
    })
    .await;
    assert!(b.store.is_reader_connected());

    // The rest of every call comes live, whichever reader reads it.
    let mut ends = Vec::new();
    for (writer, stream) in &calls {
        let later = writer.store_event(stream, &notification(1)).await.unwrap();
        let done = writer.store_event(stream, &response(1)).await.unwrap();
        ends.push([Some(later), Some(done)]);
    }
    let results = join_all(followers.into_iter().map(drain)).await;
    for (i, events) in results.iter().enumerate() {
        let ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, ends[i / 2], "follower {i}");
    }

    // Each reader ended with its last follower, and closed its connection.
    assert_eq!(b.store.follower_count(), 0);
    assert_eq!(b.store.reader_count(), 0);
    wait_until("the readers' connections are closed", async || {
        readers(&server).await.is_empty()
    })
    .await;

    // The next follower of a slot starts its reader again.
    let (writer, reader) = (view(&a, &sessions[0]), view(&b, &sessions[0]));
    let stream = format!("{}:common", sessions[0]);
    let primed = writer
        .store_event(&stream, &ServerSseMessage::retry(Duration::from_secs(1)))
        .await
        .unwrap();
    let mut follower = reader.replay_events_after(&primed).await.unwrap();
    assert_eq!(b.store.reader_count(), 1);
    let later = writer.store_event(&stream, &notification(2)).await.unwrap();
    assert_eq!(
        next(&mut follower).await.and_then(|e| e.event_id),
        Some(later)
    );
    drop(follower);
    assert_eq!(b.store.reader_count(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_slot_reader_that_loses_its_connection_reconnects_and_the_others_keep_theirs() {
    if skipped_on_shared_cluster(
        "a_slot_reader_that_loses_its_connection_reconnects_and_the_others_keep_theirs",
    ) {
        return;
    }
    let server = RedisServer::start().await;
    let prefix = unique_prefix("es-slot-lost");
    let a = EventStoreNode::start_with(&server, &prefix, "replica-a", 4, per_slot);
    let b = EventStoreNode::start_with(&server, &prefix, "replica-b", 4, per_slot);
    let sessions = ["session-x", "session-y"];
    let slot = |session: &str| hash_slot(&a.base.keys.event_stream(session, "any"));
    assert_ne!(slot(sessions[0]), slot(sessions[1]));

    // The standalone stream of each session, followed on B.
    let mut streams = Vec::new();
    for session in sessions {
        let (writer, reader) = (view(&a, session), view(&b, session));
        let stream = format!("{session}:common");
        let primed = writer
            .store_event(&stream, &ServerSseMessage::retry(Duration::from_secs(1)))
            .await
            .unwrap();
        let follower = reader.replay_events_after(&primed).await.unwrap();
        streams.push((writer, stream, follower));
    }
    wait_until("both readers are connected", async || {
        readers(&server).await.len() == 2 && b.store.is_reader_connected()
    })
    .await;
    let before = readers(&server).await;

    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(before[0])
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    wait_until("the lost reader is replaced", async || {
        let now = readers(&server).await;
        now.len() == 2 && !now.contains(&before[0])
    })
    .await;
    assert!(
        readers(&server).await.contains(&before[1]),
        "the other slot's reader kept its connection"
    );
    wait_until("the readers are connected", async || {
        b.store.is_reader_connected()
    })
    .await;

    for (writer, stream, follower) in &mut streams {
        let id = writer.store_event(stream, &notification(3)).await.unwrap();
        assert_eq!(next(follower).await.and_then(|e| e.event_id), Some(id));
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_follower_past_the_cap_gets_the_stored_events_and_ends() {
    let server = RedisServer::shared_or_start().await;
    let prefix = unique_prefix("es-cap");
    let a = EventStoreNode::start_with(&server, &prefix, "replica-a", 4, |settings| {
        settings.max_followers = 2;
    });
    // Standalone streams: followed until their consumer leaves, so one that ends by
    // itself was not followed.
    let mut primed = Vec::new();
    let mut first = Vec::new();
    for _ in 0..3 {
        let stream = format!("{}:common", stream_id());
        primed.push(a.prime(&stream).await);
        first.push(a.store(&stream, &notification(0)).await);
    }
    let mut followed = vec![a.replay(&primed[0]).await, a.replay(&primed[1]).await];
    let refused = drain(a.replay(&primed[2]).await).await;
    let ids: Vec<_> = refused.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, [Some(first[2].clone())]);
    assert_eq!(a.store.follower_count(), 2);
    for (i, follower) in followed.iter_mut().enumerate() {
        assert_eq!(
            next(follower).await.and_then(|e| e.event_id),
            Some(first[i].clone())
        );
    }

    // Once a follower leaves, another may follow.
    drop(followed.remove(0));
    let mut again = a.replay(&primed[2]).await;
    assert_eq!(
        next(&mut again).await.and_then(|e| e.event_id),
        Some(first[2].clone())
    );
    let stream = primed[2].split_once('/').unwrap().0;
    let later = a.store(stream, &notification(1)).await;
    assert_eq!(next(&mut again).await.and_then(|e| e.event_id), Some(later));
    a.stop().await;
}
