//! `[auth]`: how callers authenticate (none, API keys, JWTs), and what this server
//! publishes about itself in its RFC 9728 metadata.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No authentication: every caller is the principal `anonymous` (local use).
    None,
    /// Bearer API keys listed by their SHA-256 in `auth.api_keys_file`.
    ApiKeys,
    /// Bearer JWTs verified with the keys of `auth.jwks_file`.
    Jwt,
}

/// Authentication settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// `none`, `api_keys` or `jwt`.
    pub mode: AuthMode,
    /// `api_keys`: one `<principal> <sha256 hex of the key>` per line, `#` comments.
    pub api_keys_file: PathBuf,
    /// `jwt`: a JWKS document, re-read when it changes.
    pub jwks_file: PathBuf,
    /// `jwt`: the required `iss`.
    pub issuer: String,
    /// `jwt`: the required `aud`.
    pub audience: String,
    /// This server's resource identifier (its `/mcp` URL), published in the RFC 9728
    /// metadata and named by the 401 challenge.
    pub resource: String,
    /// Authorization servers that issue tokens for this resource (RFC 9728 metadata).
    #[serde(deserialize_with = "super::comma_list")]
    pub authorization_servers: Vec<String>,
    /// Failed attempts one client address may make within `failure_window_secs` before
    /// its requests are refused (429) without being checked; 0 = no limit.
    pub max_failures_per_address: u32,
    /// The window of `max_failures_per_address`, from an address's first failure.
    pub failure_window_secs: u64,
}

impl AuthSettings {
    /// Checks that the mode has what it needs: its key file or JWKS, issuer and
    /// audience, and an http(s) resource URL.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first key missing or malformed.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let required = |key: &'static str, missing: bool| {
            if missing {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("is required with auth.mode = {:?}", self.mode),
                });
            }
            Ok(())
        };
        if self.max_failures_per_address > 0 && self.failure_window_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.failure_window_secs",
                reason: "must be positive when auth.max_failures_per_address is".into(),
            });
        }
        let empty = |p: &Path| p.as_os_str().is_empty();
        match self.mode {
            AuthMode::None => return Ok(()),
            AuthMode::ApiKeys => required("auth.api_keys_file", empty(&self.api_keys_file))?,
            AuthMode::Jwt => {
                required("auth.jwks_file", empty(&self.jwks_file))?;
                required("auth.issuer", self.issuer.is_empty())?;
                required("auth.audience", self.audience.is_empty())?;
            }
        }
        required("auth.resource", self.resource.is_empty())?;
        if !self.resource.starts_with("https://") && !self.resource.starts_with("http://") {
            return Err(ConfigError::Invalid {
                key: "auth.resource",
                reason: "must be the server's http(s) URL".into(),
            });
        }
        Ok(())
    }
}
