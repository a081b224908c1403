//! The notifier's filters, places, overflow and gap catch-up, without a bus.

use super::*;

#[test]
fn changes_travel_as_small_json() {
    for change in [
        Change::ToolsListChanged,
        Change::ResourceUpdated("test://x".into()),
    ] {
        let bytes = serde_json::to_vec(&change).unwrap();
        assert_eq!(serde_json::from_slice::<Change>(&bytes).unwrap(), change);
    }
    assert_eq!(
        serde_json::to_string(&Change::PromptsListChanged).unwrap(),
        r#"{"kind":"prompts_list_changed"}"#
    );
}

#[test]
fn filters_pick_what_a_stream_gets() {
    let mut filter = SubscriptionFilter::default();
    filter.tools_list_changed = Some(true);
    filter.resource_subscriptions = Some(vec!["test://a".into()]);
    assert!(Change::ToolsListChanged.wanted_by(&filter));
    assert!(!Change::PromptsListChanged.wanted_by(&filter));
    assert!(Change::ResourceUpdated("test://a".into()).wanted_by(&filter));
    assert!(!Change::ResourceUpdated("test://b".into()).wanted_by(&filter));
    assert_eq!(
        Change::all_wanted_by(&filter),
        [
            Change::ToolsListChanged,
            Change::ResourceUpdated("test://a".into())
        ]
    );
}

#[tokio::test]
async fn places_are_bounded_and_come_back() {
    let notifier = Notifier::new(
        None,
        &ListenSettings {
            max_streams: 2,
            stream_buffer: 4,
        },
        ListenMetrics::default(),
    );
    let a = notifier.reserve().unwrap();
    let _b = notifier.reserve().unwrap();
    assert!(notifier.reserve().is_none());
    assert_eq!(notifier.shared.metrics.refused.get(), 1);
    drop(a);
    assert!(notifier.reserve().is_some());
}

/// A notifier's shared part holding one stream that accepted `accepted`, with a
/// queue of `buffer`: the stream's receiving end and its overflow token.
fn one_stream(
    accepted: SubscriptionFilter,
    buffer: usize,
) -> (Shared, mpsc::Receiver<Delivery>, CancellationToken) {
    let shared = Shared {
        bus: None,
        streams: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        session_sender: OnceLock::new(),
        next: AtomicU64::new(0),
        places: Arc::new(Semaphore::new(1)),
        buffer,
        metrics: ListenMetrics::default(),
    };
    let (queue, pending) = mpsc::channel(buffer);
    let overflowed = CancellationToken::new();
    shared.streams().insert(
        0,
        Stream {
            accepted,
            owner: Owner::of("alice"),
            queue,
            overflowed: overflowed.clone(),
            closed_behind: shared.metrics.closed_behind.clone(),
        },
    );
    (shared, pending, overflowed)
}

#[tokio::test]
async fn a_full_queue_closes_its_stream() {
    let mut accepted = SubscriptionFilter::default();
    accepted.tools_list_changed = Some(true);
    let (shared, mut pending, overflowed) = one_stream(accepted, 1);
    shared.deliver(&Change::PromptsListChanged);
    assert!(!overflowed.is_cancelled(), "not asked for, not queued");
    shared.deliver(&Change::ToolsListChanged);
    assert!(!overflowed.is_cancelled());
    shared.deliver(&Change::ToolsListChanged);
    assert!(overflowed.is_cancelled(), "the second one did not fit");
    assert!(shared.streams().is_empty());
    assert_eq!(shared.metrics.closed_behind.get(), 1);
    assert_eq!(
        pending.recv().await,
        Some(Delivery::Change(Change::ToolsListChanged))
    );
}

#[tokio::test]
async fn after_a_gap_a_stream_gets_everything_it_accepted() {
    let mut accepted = SubscriptionFilter::default();
    accepted.prompts_list_changed = Some(true);
    accepted.resource_subscriptions = Some(vec!["test://a".into()]);
    let (shared, mut pending, overflowed) = one_stream(accepted, 4);
    shared.deliver_everything();
    assert!(!overflowed.is_cancelled());
    assert_eq!(
        pending.recv().await,
        Some(Delivery::Change(Change::PromptsListChanged))
    );
    assert_eq!(
        pending.recv().await,
        Some(Delivery::Change(Change::ResourceUpdated("test://a".into())))
    );
    assert!(pending.try_recv().is_err(), "nothing it did not accept");
}

/// A task of `owner`'s as the bus would carry it.
fn notice(owner: &str) -> tasks::Notice {
    let new = crate::tasks::NewTask {
        id: crate::ids::mint(),
        owner: owner.into(),
        replica: "r".into(),
        tool: "t".into(),
        trace: None,
    };
    let times = crate::tasks::TaskTimes {
        ttl_ms: 1_000,
        poll_ms: 100,
        lease_ms: 1_000,
    };
    let record = crate::tasks::TaskRecord::working(&new, times, 0);
    tasks::Notice {
        owner: Owner::of(owner),
        session: None,
        task: crate::mcp::handler::tasks::detailed(record),
    }
}

#[tokio::test]
async fn a_task_status_goes_to_its_owners_streams_only_and_travels_as_json() {
    let (shared, mut pending, _) = one_stream(SubscriptionFilter::default(), 4);
    shared.deliver_task(notice("bob"));
    assert!(pending.try_recv().is_err(), "bob's task, alice's stream");
    let alices = notice("alice");
    let bytes = serde_json::to_vec(&alices).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("alice"),
        "the owner travels as a digest: {text}"
    );
    let read: tasks::Notice = serde_json::from_slice(&bytes).unwrap();
    let id = read.task.task.task_id.clone();
    shared.deliver_task(read);
    match pending.try_recv() {
        Ok(Delivery::Task(params)) => assert_eq!(params.task.task.task_id, id),
        other => panic!("{other:?}"),
    }
    assert_ne!(
        serde_json::to_value(Owner::of("x")).unwrap(),
        tasks::session_key("x"),
        "an owner and a session of one name never share a key"
    );
}
