//! The 2026-07-28 `subscriptions/listen` streams open on this replica ([`Listeners`]),
//! so the `test_trigger_*` fixtures can announce a list change on them.
//!
//! Per replica by design: a trigger reaches the streams of the replica that serves it.
//! Delivering it to every replica's streams is the job of a cross-replica fan-out,
//! which would replace [`Listeners::notify`] and nothing else here.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use rmcp::{
    ErrorData as McpError,
    model::SubscriptionFilter,
    service::{SubscriptionContext, SubscriptionSink},
};

/// Most listen streams one replica keeps open for the fixtures.
const MAX_LISTENERS: usize = 1024;
/// Most resource URIs one listen stream may ask to follow.
pub(super) const MAX_RESOURCE_SUBSCRIPTIONS: usize = 64;

/// Which list changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListChange {
    /// `notifications/tools/list_changed`.
    Tools,
    /// `notifications/prompts/list_changed`.
    Prompts,
}

/// The open listen streams of this replica. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(super) struct Listeners {
    open: Arc<Mutex<HashMap<u64, SubscriptionSink>>>,
    next: Arc<AtomicU64>,
}

impl Listeners {
    /// Serves one listen stream until the client closes it.
    ///
    /// # Errors
    /// When this replica already holds [`MAX_LISTENERS`] streams.
    pub(super) async fn serve(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.lock();
            if open.len() >= MAX_LISTENERS {
                return Err(McpError::internal_error(
                    "too many subscriptions/listen streams on this server; retry later",
                    None,
                ));
            }
            open.insert(key, context.sink().clone());
        }
        // Removes the stream however this future ends (closed, or dropped).
        let _registered = Registration {
            listeners: self,
            key,
        };
        context.cancelled().await;
        Ok(())
    }

    /// Sends `change` to every stream that asked for it; returns how many got it.
    pub(super) async fn notify(&self, change: ListChange) -> usize {
        let sinks: Vec<SubscriptionSink> = self.lock().values().cloned().collect();
        let mut delivered = 0;
        for sink in sinks {
            let sent = match change {
                ListChange::Tools => sink.notify_tool_list_changed().await,
                ListChange::Prompts => sink.notify_prompt_list_changed().await,
            };
            // A stream that did not ask for this change refuses it: that is the filter.
            delivered += usize::from(sent.is_ok());
        }
        delivered
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SubscriptionSink>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Registration<'a> {
    listeners: &'a Listeners,
    key: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.listeners.lock().remove(&self.key);
    }
}

/// The part of `requested` a stream gets: what the capabilities allow, with at most
/// [`MAX_RESOURCE_SUBSCRIPTIONS`] resource URIs.
pub(super) fn accepted(
    requested: &SubscriptionFilter,
    capabilities: &rmcp::model::ServerCapabilities,
) -> SubscriptionFilter {
    let mut accepted = requested.supported_by(capabilities);
    if let Some(uris) = &mut accepted.resource_subscriptions {
        uris.truncate(MAX_RESOURCE_SUBSCRIPTIONS);
    }
    accepted
}
