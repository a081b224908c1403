//! Task status notifications (`notifications/tasks`, SEP-2663): what the replica that
//! runs a task publishes on each status change ([`TaskStatusPublisher`], the task
//! runner's [`TaskObserver`]), and what every replica does with it ([`TaskReceiver`]):
//! queue it for the listen streams of the task's owner, and send it to the 2025-era
//! session that started the task when this replica holds that session's worker.
//!
//! The bus message names the owner and the session by SHA-256 digests only (never a
//! principal's name nor a session id), and carries the task as `tasks/get` reads it
//! (its id included: task ids are server-minted, and never logged).
//!
//! Bounded: a stream's task statuses share its queue of `listen.stream_buffer`; the
//! session workers remembered are at most [`SESSION_PEERS_MAX`] (the closed ones are
//! dropped when it fills, and a session past it goes without notifications: its client
//! polls `tasks/get`); statuses for sessions go through one queue of
//! [`SESSION_QUEUE`] to one sender, each send bounded by [`SESSION_SEND_TIMEOUT`];
//! a bus message above [`MAX_NOTICE_BYTES`] is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use rmcp::{
    Peer, RoleServer,
    model::{
        DetailedTask, ServerNotification, TaskStatusNotification, TaskStatusNotificationParams,
    },
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Delivery, Notifier, Shared};
use crate::{
    bus::{BusHandler, BusMessage},
    mcp::handler::tasks::detailed,
    tasks::{TaskObserver, TaskRecord},
};

/// The bus topic task statuses travel on.
pub const TASK_TOPIC: &str = "task_status";
/// Most 2025-era session workers a replica remembers for task statuses.
pub const SESSION_PEERS_MAX: usize = 4096;
/// Task statuses waiting to be sent to sessions on this replica.
pub const SESSION_QUEUE: usize = 1024;
/// Longest wait for a session's worker to take one status.
pub const SESSION_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest task status message a replica reads from the bus.
pub const MAX_NOTICE_BYTES: usize = 4 << 20;

/// A principal as task statuses name it: a digest of its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Owner(String);

impl Owner {
    /// The owner key of `principal`.
    pub(super) fn of(principal: &str) -> Self {
        Self(digest("principal", principal))
    }
}

/// The key a session's worker is remembered under, and the bus names it by.
pub(super) fn session_key(session_id: &str) -> String {
    digest("session", session_id)
}

fn digest(kind: &str, name: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    hash.update([0]);
    hash.update(name.as_bytes());
    crate::ids::hex(&hash.finalize())
}

/// One status change on the bus.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Notice {
    pub(super) owner: Owner,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) session: Option<String>,
    pub(super) task: DetailedTask,
}

/// The task runner's observer: publishes each status change of a task this replica
/// runs to every replica (or, without a bus, delivers it here).
#[derive(Debug, Clone)]
pub struct TaskStatusPublisher(pub(super) Notifier);

#[async_trait]
impl TaskObserver for TaskStatusPublisher {
    async fn status_changed(&self, record: &TaskRecord, origin: Option<&str>) {
        let notice = Notice {
            owner: Owner::of(&record.owner),
            session: origin.map(session_key),
            task: detailed(record.clone()),
        };
        let shared = &self.0.shared;
        match &shared.bus {
            Some(bus) => {
                let Ok(payload) = serde_json::to_vec(&notice) else {
                    return;
                };
                if let Err(e) = bus.publish(TASK_TOPIC, &payload).await {
                    // Clients read the status with `tasks/get` at their poll interval.
                    tracing::warn!(error = %e, "task status notification not published");
                }
            }
            None => shared.deliver_task(notice),
        }
    }
}

/// The bus side: hands every task status to this replica's streams and sessions.
pub(super) struct TaskReceiver(pub(super) Arc<Shared>);

impl BusHandler for TaskReceiver {
    fn on_message(&self, msg: BusMessage) {
        if msg.payload.len() > MAX_NOTICE_BYTES {
            tracing::warn!(origin = %msg.origin, "oversized task status dropped");
            return;
        }
        match serde_json::from_slice::<Notice>(&msg.payload) {
            Ok(notice) => self.0.deliver_task(notice),
            Err(_) => tracing::warn!(origin = %msg.origin, "malformed task status dropped"),
        }
    }

    fn on_gap(&self) {
        // A status missed is read with `tasks/get`: clients poll at the task's interval.
    }
}

impl Notifier {
    /// Remembers `peer` as the worker of 2025-era session `session_id` on this
    /// replica, so the statuses of the session's tasks reach it. Call it on each task
    /// request of the session: a session whose worker moved to this replica is found
    /// again at its next one.
    pub fn remember_session(&self, session_id: &str, peer: &Peer<RoleServer>) {
        let key = session_key(session_id);
        let mut peers = self.shared.session_peers();
        if !peers.contains_key(&key) && peers.len() >= SESSION_PEERS_MAX {
            peers.retain(|_, peer| !peer.is_transport_closed());
            if peers.len() >= SESSION_PEERS_MAX {
                tracing::debug!("too many sessions with tasks to notify; this one polls");
                return;
            }
        }
        peers.insert(key, peer.clone());
    }

    /// The observer that publishes the status changes of this replica's tasks: give it
    /// to [`crate::tasks::TaskManager::observe`].
    pub fn task_publisher(&self) -> TaskStatusPublisher {
        TaskStatusPublisher(self.clone())
    }
}

impl Shared {
    pub(super) fn session_peers(&self) -> MutexGuard<'_, HashMap<String, Peer<RoleServer>>> {
        // Only plain map operations run under the lock.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `notice` for the owner's streams here and for its session, when its
    /// worker is here. Never waits: it runs on the bus's subscriber task.
    pub(super) fn deliver_task(&self, notice: Notice) {
        let params = Arc::new(TaskStatusNotificationParams::new(notice.task));
        self.streams().retain(|_, stream| {
            stream.owner != notice.owner || stream.offer(Delivery::Task(params.clone()))
        });
        let Some(key) = notice.session else { return };
        let peer = {
            let mut peers = self.session_peers();
            match peers.get(&key) {
                Some(peer) if peer.is_transport_closed() => {
                    peers.remove(&key);
                    None
                }
                found => found.cloned(),
            }
        };
        if let Some(peer) = peer {
            let sender = self.session_sender.get_or_init(start_session_sender);
            if sender.try_send((peer, params)).is_err() {
                tracing::info!("task status for a session dropped: its queue is full");
            }
        }
    }
}

/// The one task that sends statuses to session workers, in the order they came (a
/// session sees its task's statuses in order); its queue holds [`SESSION_QUEUE`].
fn start_session_sender() -> mpsc::Sender<(Peer<RoleServer>, Arc<TaskStatusNotificationParams>)> {
    let (sender, mut queue) =
        mpsc::channel::<(Peer<RoleServer>, Arc<TaskStatusNotificationParams>)>(SESSION_QUEUE);
    tokio::spawn(async move {
        while let Some((peer, params)) = queue.recv().await {
            let notification = ServerNotification::TaskStatusNotification(
                TaskStatusNotification::new(TaskStatusNotificationParams::clone(&params)),
            );
            let sent =
                tokio::time::timeout(SESSION_SEND_TIMEOUT, peer.send_notification(notification));
            if !matches!(sent.await, Ok(Ok(()))) {
                tracing::info!("task status not sent: the session's worker is gone or stuck");
            }
        }
    });
    sender
}
