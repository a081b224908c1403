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
//!
//! Task status notifications (`notifications/tasks`, `tasks.rs`) go the same way on
//! their own topic, to the streams of the task's owner only, and to the 2025-era session
//! that started the task on whichever replica holds its worker.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::metrics::counter::Counter;
use rmcp::{
    ErrorData as McpError, Peer, RoleServer,
    model::{
        GetMeta, ServerNotification, SubscriptionFilter, TaskStatusNotification,
        TaskStatusNotificationParams,
    },
    service::{SubscriptionContext, SubscriptionSendError},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use self::tasks::{Owner, TaskReceiver};
use crate::{
    bus::{Bus, BusHandler, BusMessage},
    config::ListenSettings,
    mcp::handler::binding::caller,
    metrics::ListenMetrics,
    redis_pool::RedisPoolError,
};

mod tasks;

pub use self::tasks::{
    MAX_NOTICE_BYTES, SESSION_PEERS_MAX, SESSION_QUEUE, SESSION_SEND_TIMEOUT, TASK_TOPIC,
    TaskStatusPublisher,
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
    /// The workers of 2025-era sessions with tasks, by their key (a digest of the id):
    /// at most [`tasks::SESSION_PEERS_MAX`], the closed ones dropped when it fills.
    sessions: Mutex<HashMap<String, Peer<RoleServer>>>,
    /// The queue of task statuses to those workers, started with its sender at first use.
    session_sender: OnceLock<mpsc::Sender<(Peer<RoleServer>, Arc<TaskStatusNotificationParams>)>>,
    next: AtomicU64,
    places: Arc<Semaphore>,
    buffer: usize,
    metrics: ListenMetrics,
}

/// What a listen stream is sent: a change, or the status of one of its principal's tasks.
#[derive(Debug, Clone, PartialEq)]
enum Delivery {
    Change(Change),
    Task(Arc<TaskStatusNotificationParams>),
}

/// What the notifier keeps of one open stream.
struct Stream {
    accepted: SubscriptionFilter,
    /// Whose stream it is: only this principal's task statuses go to it.
    owner: Owner,
    queue: mpsc::Sender<Delivery>,
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
            sessions: Mutex::new(HashMap::new()),
            session_sender: OnceLock::new(),
            next: AtomicU64::new(0),
            places: Arc::new(Semaphore::new(settings.max_streams)),
            buffer: settings.stream_buffer,
            metrics,
        });
        if let Some(bus) = bus {
            bus.subscribe(TOPIC, Arc::new(Receiver(Arc::clone(&shared))));
            bus.subscribe(TASK_TOPIC, Arc::new(TaskReceiver(Arc::clone(&shared))));
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
                owner: Owner::of(caller(context.request_context()).as_str()),
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
                delivery = pending.recv() => match delivery {
                    Some(delivery) => {
                        if !send(&context, delivery).await {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }
}

/// Writes `delivery` to the stream; `false` once the stream is gone.
async fn send(context: &SubscriptionContext, delivery: Delivery) -> bool {
    let sink = context.sink();
    let sent = match delivery {
        Delivery::Change(Change::ToolsListChanged) => sink.notify_tool_list_changed().await,
        Delivery::Change(Change::PromptsListChanged) => sink.notify_prompt_list_changed().await,
        Delivery::Change(Change::ResourcesListChanged) => sink.notify_resource_list_changed().await,
        Delivery::Change(Change::ResourceUpdated(uri)) => sink.notify_resource_updated(uri).await,
        // rmcp's sink refuses task statuses (its filter has no field for them yet), so
        // they go through the listen request's peer, tagged as the sink tags the rest.
        Delivery::Task(params) => {
            let request = context.request_context();
            let mut notification = ServerNotification::TaskStatusNotification(
                TaskStatusNotification::new(TaskStatusNotificationParams::clone(&params)),
            );
            notification
                .get_meta_mut()
                .set_subscription_id(request.id.clone());
            return request.peer.send_notification(notification).await.is_ok();
        }
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
            !change.wanted_by(&stream.accepted) || stream.offer(Delivery::Change(change.clone()))
        });
    }

    /// After messages may have been lost: each stream gets everything it accepted (at
    /// most three list changes and its own bounded resource URIs).
    fn deliver_everything(&self) {
        self.streams().retain(|_, stream| {
            Change::all_wanted_by(&stream.accepted)
                .into_iter()
                .all(|change| stream.offer(Delivery::Change(change)))
        });
    }
}

impl Stream {
    /// Queues `delivery`; `false` when the stream is gone or just closed for falling
    /// behind (the caller forgets it then).
    fn offer(&self, delivery: Delivery) -> bool {
        match self.queue.try_send(delivery) {
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
mod tests;
