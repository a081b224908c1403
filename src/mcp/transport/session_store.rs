//! rmcp's `SessionStore` for restores: a 2025-era transport session initialized on one
//! replica is restored on any other, from the state the edge read for the caller.
//!
//! The client's `initialize` parameters are kept in the session record itself, so the
//! transport session and its state expire together. rmcp's `load` gets only a session
//! id, no request: so the edge, which has just touched the session for its owner,
//! offers the state here ([`Restores::offer`]) and `load` takes it. A session the edge
//! did not confirm for this request's caller is never restored.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use serde_json::Value;

/// How long an offered state waits for rmcp's restore (which follows at once).
const OFFER_TTL: Duration = Duration::from_secs(10);
/// Most offers held at once; beyond it an offer is dropped (the restore then answers
/// 404 and the client starts a new session) rather than memory growing.
const MAX_OFFERS: usize = 10_000;

/// Transport states the edge confirmed, waiting for rmcp to restore them here.
#[derive(Debug, Clone, Default)]
pub(crate) struct Restores(Arc<Mutex<HashMap<String, (Value, Instant)>>>);

impl Restores {
    /// Offers session `id`'s stored transport state for a restore.
    pub(crate) fn offer(&self, id: &str, transport: Value) {
        let mut offers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if offers.len() >= MAX_OFFERS / 2 {
            offers.retain(|_, (_, at)| now.duration_since(*at) < OFFER_TTL);
        }
        if offers.len() < MAX_OFFERS {
            offers.insert(id.to_owned(), (transport, now));
        }
    }

    fn take(&self, id: &str) -> Option<Value> {
        let mut offers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        offers
            .remove(id)
            .filter(|(_, at)| at.elapsed() < OFFER_TTL)
            .map(|(transport, _)| transport)
    }
}

/// [`SessionStore`] over the [`Restores`] the edge offers.
///
/// It never writes: the session manager persists the session itself before answering
/// `initialize` (so a refused write becomes a 503 or a 429 instead of rmcp's
/// logged-and-ignored error), and the edge ends it on an HTTP DELETE, for its owner only.
#[derive(Debug, Clone)]
pub(crate) struct TransportStore {
    restores: Restores,
}

impl TransportStore {
    /// A store that restores what the edge offers in `restores`.
    pub(crate) fn new(restores: Restores) -> Self {
        Self { restores }
    }
}

#[async_trait::async_trait]
impl SessionStore for TransportStore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(transport) = self.restores.take(session_id) else {
            return Ok(None);
        };
        match serde_json::from_value(transport) {
            Ok(params) => Ok(Some(SessionState::new(params))),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable transport state");
                Ok(None)
            }
        }
    }

    async fn store(&self, _: &str, _: &SessionState) -> Result<(), SessionStoreError> {
        Ok(())
    }

    async fn delete(&self, _: &str) -> Result<(), SessionStoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_taken_once() {
        let restores = Restores::default();
        restores.offer("a", serde_json::json!({"x": 1}));
        assert_eq!(restores.take("a"), Some(serde_json::json!({"x": 1})));
        assert_eq!(restores.take("a"), None);
        assert_eq!(restores.take("b"), None);
    }
}
