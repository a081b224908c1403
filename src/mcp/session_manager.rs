//! [`ReplicatedSessionManager`]: rmcp's `LocalSessionManager` made safe to run behind a
//! round-robin load balancer.
//!
//! What it adds to the local manager:
//! - session ids with 160 random bits from the OS CSPRNG (rmcp's UUIDv4 has 122);
//! - the session is persisted before `initialize` is answered, and a failed write is a
//!   503 (a session limit, a 429; see [`store_failure_status`]), so no client holds a
//!   session other replicas cannot restore;
//! - every request slides the stored session's expiry and finds out whether it has
//!   expired (then the local copy is closed and the client gets 404, as the spec asks);
//! - the event store is used for 2025-era streams only: [`SessionManager::event_store`]
//!   returns `None`, so rmcp's 2026-07-28 path never persists a response stream and a
//!   dropped response still cancels its handler.

use std::sync::{Arc, Mutex};

use axum::{extract::Request, middleware::Next, response::IntoResponse, response::Response};
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

use crate::{
    metrics::Metrics,
    sessions::{ANONYMOUS, NewSession, SessionError, Sessions},
};

/// Why the session layer refused a request, for the HTTP status that replaces rmcp's
/// generic 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The store is unreachable: 503, retry.
    Unavailable,
    /// The principal holds the maximum number of sessions: 429.
    TooManySessions,
}

tokio::task_local! {
    /// Set by [`store_failure_status`] around each request; filled when the session
    /// layer refused it, so the response can say why.
    static REFUSAL: Arc<Mutex<Option<Refusal>>>;
}

fn flag(refusal: Refusal) {
    let _ = REFUSAL.try_with(|r| {
        *r.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
    });
}

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
pub struct ReplicatedSessionManager {
    local: LocalSessionManager,
    sessions: Sessions,
    metrics: Option<Metrics>,
}

impl ReplicatedSessionManager {
    /// Wraps `local` (configure its keep-alive and event store before) over `sessions`.
    pub fn new(local: LocalSessionManager, sessions: Sessions) -> Self {
        Self {
            local,
            sessions,
            metrics: None,
        }
    }

    /// Counts created sessions and store failures in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The `SessionStore` rmcp should use for restores with this manager.
    pub fn restore_store(&self) -> super::session_store::TransportStore {
        super::session_store::TransportStore::restore_only(self.sessions.clone())
    }

    fn store_error(&self, e: SessionError) -> ReplicatedSessionError {
        if let SessionError::TooManySessions { .. } = e {
            flag(Refusal::TooManySessions);
        } else {
            flag(Refusal::Unavailable);
            if let Some(m) = &self.metrics {
                m.store_error("transport");
            }
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
            tracing::warn!(session_id = %id, error = %e, "could not persist new session");
            let _ = self.local.close_session(id).await;
            return Err(self.store_error(e));
        }
        if let Some(m) = &self.metrics {
            m.sessions_created.inc();
        }
        Ok(response)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        if !self.local.has_session(id).await? {
            return Ok(false);
        }
        match self.sessions.touch(ANONYMOUS, id).await {
            Ok(Some(_)) => Ok(true),
            Ok(None) => {
                // Expired or deleted elsewhere: drop the local copy so the client gets 404.
                let _ = self.local.close_session(id).await;
                Ok(false)
            }
            Err(e) => Err(self.store_error(e)),
        }
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

/// axum middleware for `/mcp`: turns a request the session layer refused into a status
/// that says why, instead of rmcp's generic 500: `503 Service Unavailable` with
/// `Retry-After` when the session store is unreachable, `429 Too Many Requests` when
/// the principal already holds the maximum number of sessions.
pub async fn store_failure_status(request: Request, next: Next) -> Response {
    let refusal = Arc::new(Mutex::new(None));
    let response = REFUSAL.scope(refusal.clone(), next.run(request)).await;
    let refused = *refusal.lock().unwrap_or_else(|e| e.into_inner());
    match refused {
        Some(Refusal::Unavailable) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
            "Service Unavailable: the session store is unreachable; retry shortly",
        )
            .into_response(),
        Some(Refusal::TooManySessions) => (
            http::StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests: the maximum number of live sessions is reached; end one \
             (HTTP DELETE) or wait for one to expire",
        )
            .into_response(),
        None => response,
    }
}
