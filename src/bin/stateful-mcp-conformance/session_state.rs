//! What a 2025-era session keeps for the fixtures: the log level `logging/setLevel` set
//! and the resources `resources/subscribe` named. Both live in the session's record
//! (one data value each, written by the session layer's atomic update), so every
//! replica that serves the session sees them and they expire with it.

#![expect(
    deprecated,
    reason = "logging/setLevel is what the 2025-era suites test"
)]

use rmcp::{ErrorData as McpError, model::LoggingLevel};
use serde_json::Value;
use sha2::{Digest, Sha256};

use stateful_mcp::{
    auth::Principal,
    mcp::error::{DomainErrors, ToolFailure},
    sessions::{SessionError, Sessions},
};

/// The data key of the session's log level.
const LOG_LEVEL_KEY: &str = "conformance.log_level";
/// The prefix of the data keys of resource subscriptions; the rest is a digest of the
/// URI, so any URI (within the session's data budget) fits a bounded key.
const SUBSCRIPTION_KEY_PREFIX: &str = "conformance.subscription.";

/// Levels from the least to the most severe (RFC 5424 order, as MCP defines them).
const SEVERITY: [LoggingLevel; 8] = [
    LoggingLevel::Debug,
    LoggingLevel::Info,
    LoggingLevel::Notice,
    LoggingLevel::Warning,
    LoggingLevel::Error,
    LoggingLevel::Critical,
    LoggingLevel::Alert,
    LoggingLevel::Emergency,
];

/// Whether a message at `level` passes the threshold `minimum`.
pub(super) fn passes(level: LoggingLevel, minimum: LoggingLevel) -> bool {
    let rank = |l| SEVERITY.iter().position(|s| *s == l).unwrap_or(0);
    rank(level) >= rank(minimum)
}

/// The fixtures' state in one 2025-era session of one principal.
pub(super) struct SessionState<'a> {
    pub(super) sessions: &'a Sessions,
    pub(super) errors: &'a DomainErrors,
    pub(super) principal: Principal,
    pub(super) id: String,
}

impl SessionState<'_> {
    /// Stores the session's log level.
    ///
    /// # Errors
    /// A JSON-RPC error when the session is gone, full, or the store unreachable.
    pub(super) async fn set_log_level(&self, level: LoggingLevel) -> Result<(), McpError> {
        let value = serde_json::to_value(level)
            .map_err(|e| McpError::internal_error(format!("log level: {e}"), None))?;
        self.update(LOG_LEVEL_KEY, Some(&value)).await
    }

    /// The session's log level; `None` when none was set.
    ///
    /// # Errors
    /// As [`SessionState::set_log_level`].
    pub(super) async fn log_level(&self) -> Result<Option<LoggingLevel>, McpError> {
        let session = self
            .sessions
            .get(self.principal.as_str(), &self.id)
            .await
            .map_err(|e| self.error(e))?;
        Ok(session
            .data
            .get(LOG_LEVEL_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok()))
    }

    /// Records a subscription to `uri`.
    ///
    /// # Errors
    /// As [`SessionState::set_log_level`].
    pub(super) async fn subscribe(&self, uri: &str) -> Result<(), McpError> {
        let value = Value::String(uri.to_owned());
        self.update(&subscription_key(uri), Some(&value)).await
    }

    /// Removes the subscription to `uri`, if there is one.
    ///
    /// # Errors
    /// As [`SessionState::set_log_level`].
    pub(super) async fn unsubscribe(&self, uri: &str) -> Result<(), McpError> {
        self.update(&subscription_key(uri), None).await
    }

    async fn update(&self, key: &str, value: Option<&Value>) -> Result<(), McpError> {
        self.sessions
            .update(self.principal.as_str(), &self.id, key, value)
            .await
            .map_err(|e| self.error(e))
    }

    /// The session layer's refusal as the JSON-RPC error of a request that is not a tool
    /// call: what the caller can act on is invalid params, the rest as tools report it.
    fn error(&self, e: SessionError) -> McpError {
        match self.errors.session(e) {
            ToolFailure::Refused(text) => McpError::invalid_params(text, None),
            ToolFailure::Internal(e) => e,
        }
    }
}

fn subscription_key(uri: &str) -> String {
    let digest = Sha256::digest(uri.as_bytes());
    format!(
        "{SUBSCRIPTION_KEY_PREFIX}{}",
        stateful_mcp::ids::hex(&digest[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_the_mcp_order() {
        assert!(passes(LoggingLevel::Info, LoggingLevel::Debug));
        assert!(passes(LoggingLevel::Info, LoggingLevel::Info));
        assert!(!passes(LoggingLevel::Info, LoggingLevel::Warning));
        assert!(passes(LoggingLevel::Emergency, LoggingLevel::Error));
    }

    #[test]
    fn subscription_keys_are_bounded_whatever_the_uri() {
        let long = format!("test://{}", "x".repeat(10_000));
        assert!(subscription_key(&long).len() <= stateful_mcp::sessions::MAX_DATA_KEY_BYTES);
        assert_ne!(subscription_key("test://a"), subscription_key("test://b"));
    }
}
