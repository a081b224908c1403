//! rmcp's `SessionStore` over the session layer, so a 2025-era transport session
//! initialized on one replica can be restored on any other.
//!
//! The client's `initialize` parameters are kept in the session record itself, so the
//! transport session and its state expire together, and every `load` slides both.

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::sessions::{ANONYMOUS, NewSession, SessionError, Sessions};

/// [`SessionStore`] backed by [`Sessions`] (memory or Redis).
#[derive(Debug, Clone)]
pub struct TransportStore {
    sessions: Sessions,
    write_on_store: bool,
}

impl TransportStore {
    /// A store that writes on [`SessionStore::store`], for plain rmcp servers that
    /// pass it as `StreamableHttpServerConfig::session_store`.
    pub fn new(sessions: Sessions) -> Self {
        Self {
            sessions,
            write_on_store: true,
        }
    }

    /// A store for [`super::session_manager::ReplicatedSessionManager`], which persists
    /// the session itself before answering `initialize` (so a refused write becomes a
    /// 503 or a 429 instead of rmcp's logged-and-ignored error); rmcp's own `store` call
    /// is then redundant and skipped.
    pub(crate) fn restore_only(sessions: Sessions) -> Self {
        Self {
            sessions,
            write_on_store: false,
        }
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

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        if !self.write_on_store {
            return Ok(());
        }
        let params = &state.initialize_params;
        let created = self
            .sessions
            .create(NewSession {
                id: Some(session_id.to_owned()),
                principal: ANONYMOUS.into(),
                client_info: serde_json::to_value(&params.client_info).ok(),
                transport: Some(serde_json::to_value(params)?),
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(SessionError::Invalid(_)) if crate::ids::is_well_formed(session_id) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.sessions.delete(ANONYMOUS, session_id).await?;
        Ok(())
    }
}
