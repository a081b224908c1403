//! rmcp's `SessionStore` over the session layer, so a 2025-era transport session
//! initialized on one replica can be restored on any other.
//!
//! The client's `initialize` parameters are kept in the session record itself, so the
//! transport session and its state expire together, and every `load` slides both.

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::sessions::{ANONYMOUS, Sessions};

/// [`SessionStore`] backed by [`Sessions`] (memory or Redis), for restores.
///
/// It never writes: [`super::session_manager::ReplicatedSessionManager`] persists the
/// session itself before answering `initialize`, so a refused write becomes a 503 or a
/// 429 instead of rmcp's logged-and-ignored error, and rmcp's own `store` call after the
/// handshake is redundant.
#[derive(Debug, Clone)]
pub(crate) struct TransportStore {
    sessions: Sessions,
}

impl TransportStore {
    /// A store over `sessions`.
    pub(crate) fn new(sessions: Sessions) -> Self {
        Self { sessions }
    }
}

#[async_trait::async_trait]
impl SessionStore for TransportStore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(transport) = self.sessions.touch(ANONYMOUS, session_id).await? else {
            return Ok(None);
        };
        // A 2026-07-28 handle has no transport state: it is not a transport session id.
        if transport.is_null() {
            return Ok(None);
        }
        match serde_json::from_value(transport) {
            Ok(params) => Ok(Some(SessionState::new(params))),
            Err(e) => {
                tracing::warn!(session_id, error = %e, "undecodable transport state");
                Ok(None)
            }
        }
    }

    async fn store(&self, _: &str, _: &SessionState) -> Result<(), SessionStoreError> {
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.sessions.delete(ANONYMOUS, session_id).await?;
        Ok(())
    }
}
