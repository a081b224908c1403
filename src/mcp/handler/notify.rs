//! [`Notifier`]: the change notifications of 2026-07-28 `subscriptions/listen` streams
//! (tools, prompts or resources list changed, a resource updated), delivered to the
//! streams every replica holds, whichever replica published them.
//!
//! [`Notifier::publish`] puts the change on the bus topic [`TOPIC`] (Redis pub/sub, see
//! [`crate::bus`]); every replica's notifier, this one included, receives it and hands
//! it to its own streams. Without a bus (memory backend: one replica) it goes to the
//! local streams directly.
//!
//! Bounded on every side: at most `listen.max_streams` streams per replica, reserved by
//! the edge before rmcp acknowledges the stream ([`Notifier::reserve`]), so a refused
//! stream never sees an acknowledgement; each stream has a buffer of
//! `listen.stream_buffer` notifications, and a stream that falls that far behind is
//! closed with an error (its client listens again) rather than buffered without bound.
//! `/metrics` counts the open streams, the refused ones and the ones closed for
//! falling behind (`stateful_mcp_listen_*`). The bus delivers at most once: after the subscriber reconnects, every stream gets
//! every notification it accepted (a list may have changed unseen; clients re-read).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::metrics::counter::Counter;
use rmcp::{
    ErrorData as McpError,
    model::SubscriptionFilter,
    service::{SubscriptionContext, SubscriptionSendError, SubscriptionSink},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{Bus, BusHandler, BusMessage},
    config::ListenSettings,
    metrics::ListenMetrics,
    redis_pool::RedisPoolError,
};

/// The bus topic notifications travel on.
pub const TOPIC: &str = "notify";
/// Longest resource URI a notification may name.
pub const MAX_URI_BYTES: usize = 2048;

/// A change a listen stream may be told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "uri", rename_all = "snake_case")]
pub enum Change {
    /// `notifications/tools/list_changed`.
    ToolsListChanged,
    /// `notifications/prompts/list_changed`.
    PromptsListChanged,
    /// `notifications/resources/list_changed`.
    ResourcesListChanged,
    /// `notifications/resources/updated` for one URI.
    ResourceUpdated(String),
}

impl Change {
    /// Whether a stream that accepted `filter` wants this change.
    fn wanted_by(&self, filter: &SubscriptionFilter) -> bool {
        match self {
            Self::ToolsListChanged => filter.tools_list_changed == Some(true),
            Self::PromptsListChanged => filter.prompts_list_changed == Some(true),
            Self::ResourcesListChanged => filter.resources_list_changed == Some(true),
            Self::ResourceUpdated(uri) => filter
                .resource_subscriptions
                .as_ref()
                .is_some_and(|uris| uris.contains(uri)),
        }
    }

    /// Every change a stream that accepted `filter` may have missed.
    fn all_wanted_by(filter: &SubscriptionFilter) -> Vec<Self> {
        let mut changes: Vec<Self> = [
            Self::ToolsListChanged,
            Self::PromptsListChanged,
            Self::ResourcesListChanged,
        ]
        .into_iter()
        .filter(|c| c.wanted_by(filter))
        .collect();
        changes.extend(
            filter
                .resource_subscriptions
                .iter()
                .flatten()
                .map(|uri| Self::ResourceUpdated(uri.clone())),
        );
        changes
    }
}

/// Why a change could not be published.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The resource URI is longer than [`MAX_URI_BYTES`].
    #[error("a resource URI in a notification is limited to {MAX_URI_BYTES} bytes")]
    UriTooLong,
    /// The bus could not publish it.
    #[error("publishing the notification: {0}")]
    Bus(#[from] RedisPoolError),
}

impl From<NotifyError> for McpError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::UriTooLong => McpError::invalid_params(e.to_string(), None),
            NotifyError::Bus(_) => {
                McpError::internal_error("the notification bus is unavailable; retry shortly", None)
            }
        }
    }
}

/// A place for one listen stream on this replica, taken before the stream is
/// acknowledged and held until it ends.
#[derive(Debug)]
pub struct ListenPermit(#[expect(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

/// The listen streams of this replica and the way to notify every replica's streams.
/// Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("streams", &self.streams())
            .finish_non_exhaustive()
    }
}

struct Shared {
    bus: Option<Bus>,
    streams: Mutex<HashMap<u64, Stream>>,
    next: AtomicU64,
    places: Arc<Semaphore>,
    buffer: usize,
    metrics: ListenMetrics,
}

/// What the notifier keeps of one open stream.
struct Stream {
    accepted: SubscriptionFilter,
    queue: mpsc::Sender<Change>,
    /// Fired when the stream fell `buffer` notifications behind.
    overflowed: CancellationToken,
    /// Counts that closing.
    closed_behind: Counter,
}

/// The bus side: hands every message of [`TOPIC`] to the local streams.
struct Receiver(Arc<Shared>);

impl BusHandler for Receiver {
    fn on_message(&self, msg: BusMessage) {
        match serde_json::from_slice::<Change>(&msg.payload) {
            Ok(Change::ResourceUpdated(uri)) if uri.len() > MAX_URI_BYTES => {
                tracing::warn!(origin = %msg.origin, "notification with an oversized URI dropped");
            }
            Ok(change) => self.0.deliver(&change),
            Err(_) => tracing::warn!(origin = %msg.origin, "malformed notification dropped"),
        }
    }

    fn on_gap(&self) {
        self.0.deliver_everything();
    }
}

impl Notifier {
    /// The notifier of this replica, over `bus` when there is one (every replica's
    /// streams) or on its own (this replica's streams), counting into `metrics`.
    pub fn new(bus: Option<Bus>, settings: &ListenSettings, metrics: ListenMetrics) -> Self {
        let shared = Arc::new(Shared {
            bus: bus.clone(),
            streams: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            places: Arc::new(Semaphore::new(settings.max_streams)),
            buffer: settings.stream_buffer,
            metrics,
        });
        if let Some(bus) = bus {
            bus.subscribe(TOPIC, Arc::new(Receiver(Arc::clone(&shared))));
        }
        Self { shared }
    }

    /// Tells every listen stream that accepted `change`, on every replica.
    ///
    /// # Errors
    /// [`NotifyError`] for a URI above [`MAX_URI_BYTES`], or when the bus cannot
    /// publish (nothing was delivered then).
    pub async fn publish(&self, change: Change) -> Result<(), NotifyError> {
        if let Change::ResourceUpdated(uri) = &change
            && uri.len() > MAX_URI_BYTES
        {
            return Err(NotifyError::UriTooLong);
        }
        match &self.shared.bus {
            Some(bus) => {
                let payload = serde_json::to_vec(&change).unwrap_or_default();
                bus.publish(TOPIC, &payload).await?;
            }
            None => self.shared.deliver(&change),
        }
        Ok(())
    }

    /// A place for one more listen stream, or `None` when this replica holds
    /// `listen.max_streams` already.
    pub fn reserve(&self) -> Option<ListenPermit> {
        let place = Arc::clone(&self.shared.places).try_acquire_owned().ok();
        if place.is_none() {
            self.shared.metrics.refused.inc();
        }
        place.map(ListenPermit)
    }

    /// The listen streams open on this replica.
    pub fn streams(&self) -> usize {
        self.shared.streams().len()
    }

    /// Serves one acknowledged listen stream until the client closes it: what
    /// [`rmcp::ServerHandler::listen`] does.
    ///
    /// # Errors
    /// When the stream fell `listen.stream_buffer` notifications behind: the client
    /// should listen again (and re-read its lists).
    pub async fn serve(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let (queue, mut pending) = mpsc::channel(self.shared.buffer);
        let overflowed = CancellationToken::new();
        let key = self.shared.next.fetch_add(1, Ordering::Relaxed);
        self.shared.streams().insert(
            key,
            Stream {
                accepted: context.accepted().clone(),
                queue,
                overflowed: overflowed.clone(),
                closed_behind: self.shared.metrics.closed_behind.clone(),
            },
        );
        self.shared.metrics.streams.inc();
        // Removes the stream however this future ends (closed, overflowed, dropped).
        let _registered = Registration {
            shared: &self.shared,
            key,
        };
        let sink = context.sink();
        loop {
            tokio::select! {
                biased;
                () = context.cancelled() => return Ok(()),
                () = overflowed.cancelled() => {
                    return Err(McpError::internal_error(
                        format!(
                            "this subscriptions/listen stream fell {} notifications behind \
                             and was closed; listen again and re-read the lists",
                            self.shared.buffer
                        ),
                        None,
                    ));
                }
                change = pending.recv() => match change {
                    Some(change) => {
                        if !send(sink, change).await {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }
}

/// Writes `change` to the stream; `false` once the stream is gone.
async fn send(sink: &SubscriptionSink, change: Change) -> bool {
    let sent = match change {
        Change::ToolsListChanged => sink.notify_tool_list_changed().await,
        Change::PromptsListChanged => sink.notify_prompt_list_changed().await,
        Change::ResourcesListChanged => sink.notify_resource_list_changed().await,
        Change::ResourceUpdated(uri) => sink.notify_resource_updated(uri).await,
    };
    match sent {
        // Filtered before it was queued; a refusal here changes nothing.
        Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => true,
        Err(_) => false,
    }
}

impl Shared {
    fn streams(&self) -> MutexGuard<'_, HashMap<u64, Stream>> {
        // Only plain map operations run under the lock.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `change` for every local stream that accepted it, closing the streams
    /// whose queue is full. Never waits: it runs on the bus's subscriber task.
    fn deliver(&self, change: &Change) {
        self.streams().retain(|_, stream| {
            !change.wanted_by(&stream.accepted) || stream.offer(change.clone())
        });
    }

    /// After messages may have been lost: each stream gets everything it accepted (at
    /// most three list changes and its own bounded resource URIs).
    fn deliver_everything(&self) {
        self.streams().retain(|_, stream| {
            Change::all_wanted_by(&stream.accepted)
                .into_iter()
                .all(|change| stream.offer(change))
        });
    }
}

impl Stream {
    /// Queues `change`; `false` when the stream is gone or just closed for falling
    /// behind (the caller forgets it then).
    fn offer(&self, change: Change) -> bool {
        match self.queue.try_send(change) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!("a listen stream fell behind its buffer; closing it");
                self.closed_behind.inc();
                self.overflowed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

struct Registration<'a> {
    shared: &'a Shared,
    key: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.shared.streams().remove(&self.key);
        self.shared.metrics.streams.dec();
    }
}

#[cfg(test)]
mod tests {
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
    ) -> (Shared, mpsc::Receiver<Change>, CancellationToken) {
        let shared = Shared {
            bus: None,
            streams: Mutex::new(HashMap::new()),
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
        assert_eq!(pending.recv().await, Some(Change::ToolsListChanged));
    }

    #[tokio::test]
    async fn after_a_gap_a_stream_gets_everything_it_accepted() {
        let mut accepted = SubscriptionFilter::default();
        accepted.prompts_list_changed = Some(true);
        accepted.resource_subscriptions = Some(vec!["test://a".into()]);
        let (shared, mut pending, overflowed) = one_stream(accepted, 4);
        shared.deliver_everything();
        assert!(!overflowed.is_cancelled());
        assert_eq!(pending.recv().await, Some(Change::PromptsListChanged));
        assert_eq!(
            pending.recv().await,
            Some(Change::ResourceUpdated("test://a".into()))
        );
        assert!(pending.try_recv().is_err(), "nothing it did not accept");
    }
}
