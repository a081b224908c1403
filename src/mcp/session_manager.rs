//! [`ReplicatedSessionManager`]: rmcp's `LocalSessionManager` made safe to run behind a
//! round-robin load balancer.
//!
//! What it adds to the local manager:
//! - session ids with 160 random bits from the OS CSPRNG (rmcp's UUIDv4 has 122);
//! - the session is persisted before `initialize` is answered, and a failed write is a
//!   503 (a session limit, a 429; oversized client metadata, a 400), reported to the edge through the request's
//!   [`RefusalSlot`], so no client holds a session other replicas cannot restore;
//! - it never touches the store in [`SessionManager::has_session`] (rmcp gives it no
//!   request there): the edge slides the stored session's expiry on every request and
//!   closes the local copy of one that expired elsewhere ([`ReplicatedSessionManager::close_local`]);
//! - the event store is used for 2025-era streams only: [`SessionManager::event_store`]
//!   returns `None`, so rmcp's 2026-07-28 path never persists a response stream and a
//!   dropped response still cancels its handler.

use std::sync::Arc;

use futures::Stream;
use rmcp::{
    model::{ClientJsonRpcMessage, ClientRequest, GetExtensions, ServerJsonRpcMessage},
    transport::{
        WorkerTransport,
        streamable_http_server::session::{
            EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
            SessionRestoreMarker,
            local::{LocalSessionManager, LocalSessionManagerError, LocalSessionWorker},
        },
    },
};

use super::edge::{EdgeError, RefusalSlot};
use crate::{
    metrics::Metrics,
    sessions::{ANONYMOUS, NewSession, SessionError, Sessions},
};

/// Errors of [`ReplicatedSessionManager`].
#[derive(Debug, thiserror::Error)]
pub enum ReplicatedSessionError {
    /// The local session manager failed.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    /// The shared session store failed; the request should be retried.
    #[error("session store unavailable: {0}")]
    Store(SessionError),
    /// The local manager refused to create a session under our id.
    #[error("could not create a local session")]
    Create,
}

/// A `SessionManager` over rmcp's `LocalSessionManager` and the shared [`Sessions`].
pub(crate) struct ReplicatedSessionManager {
    local: LocalSessionManager,
    sessions: Sessions,
    metrics: Metrics,
}

impl ReplicatedSessionManager {
    /// Wraps `local` (configure its keep-alive and event store before) over `sessions`.
    pub(crate) fn new(local: LocalSessionManager, sessions: Sessions, metrics: Metrics) -> Self {
        Self {
            local,
            sessions,
            metrics,
        }
    }

    /// Closes this replica's copy of session `id`, if it has one.
    pub(crate) async fn close_local(&self, id: &str) {
        let _ = self.local.close_session(&SessionId::from(id)).await;
    }

    /// Reports `e` to the edge through the request's slot.
    fn refuse(&self, slot: Option<RefusalSlot>, e: SessionError) -> ReplicatedSessionError {
        let refusal = match e {
            SessionError::TooManySessions { .. } => EdgeError::TooManySessions,
            SessionError::ClientMetadataTooLarge { limit, .. } => {
                EdgeError::ClientMetadataTooLarge { limit }
            }
            _ => {
                self.metrics.store_error("transport");
                EdgeError::Unavailable
            }
        };
        if let Some(slot) = slot {
            slot.set(refusal);
        }
        ReplicatedSessionError::Store(e)
    }
}

impl SessionManager for ReplicatedSessionManager {
    type Error = ReplicatedSessionError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let id: SessionId = crate::ids::mint().into();
        // `restore_session` is the local manager's way to create a session under an id
        // chosen by the caller.
        match self.local.restore_session(id.clone()).await? {
            RestoreOutcome::Restored(transport) => Ok((id, transport)),
            _ => Err(ReplicatedSessionError::Create),
        }
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        // A restore replays `initialize` from the stored record: nothing new to persist.
        let params = match &message {
            ClientJsonRpcMessage::Request(req)
                if req
                    .request
                    .extensions()
                    .get::<SessionRestoreMarker>()
                    .is_none() =>
            {
                match &req.request {
                    ClientRequest::InitializeRequest(init) => Some(init.params.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let slot = match &message {
            ClientJsonRpcMessage::Request(req) => req
                .request
                .extensions()
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<RefusalSlot>())
                .cloned(),
            _ => None,
        };
        let response = self.local.initialize_session(id, message).await?;
        let (Some(params), ServerJsonRpcMessage::Response(_)) = (params, &response) else {
            return Ok(response);
        };
        let persisted = self
            .sessions
            .create(NewSession {
                id: Some(id.to_string()),
                principal: ANONYMOUS.into(),
                client_info: serde_json::to_value(&params.client_info).ok(),
                transport: serde_json::to_value(&params).ok(),
            })
            .await;
        if let Err(e) = persisted {
            tracing::warn!(error = %e, "could not persist new session");
            let _ = self.local.close_session(id).await;
            return Err(self.refuse(slot, e));
        }
        self.metrics.sessions_created.inc();
        Ok(response)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        // The edge already confirmed the stored session for this request.
        Ok(self.local.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        // Local only: rmcp also calls this when a session worker idles out here, while
        // other replicas may still be serving the session. An HTTP DELETE removes the
        // stored record through the `SessionStore`.
        Ok(self.local.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.local.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.local.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.local.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.local.resume(id, last_event_id).await?)
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.local.restore_session(id).await?)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }
}
