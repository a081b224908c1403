//! What the tests of the edge's steps build on: the edge of a memory-backed replica, an
//! authenticator that knows one API key, and a bare rmcp service.

use std::{path::PathBuf, sync::Arc};

use rmcp::transport::streamable_http_server::session::local::SessionConfig;
use sha2::{Digest, Sha256};

use super::Edge;
use crate::{
    auth::Authenticator,
    config::{AuthMode, Settings},
    mcp::{
        McpState, holder_lease,
        transport::{session_manager::ReplicatedSessionManager, session_store::Restores},
    },
    state::AppState,
};

/// The API key [`api_key_auth`] accepts, and the principal it names.
pub(crate) const API_KEY: (&str, &str) = ("secret", "alice");

/// A memory-backed replica under the defaults and the `STATEFUL_MCP__*` pairs of `env`
/// (call it on a Tokio runtime: it starts background tasks).
pub(crate) fn state(env: &[(&str, &str)]) -> AppState {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    AppState::build(Settings::load_with_env(None, env).unwrap()).unwrap()
}

/// The edge of `state`, wired as [`crate::mcp::endpoint_with`] wires it, without the
/// event store (the memory backend has none).
pub(crate) fn edge(state: &AppState) -> Edge {
    let mcp = McpState::build(state).unwrap();
    let lease = holder_lease(state);
    let manager = Arc::new(ReplicatedSessionManager::new(
        SessionConfig::default(),
        None,
        state.sessions.clone(),
        state.metrics.clone(),
        lease.clone(),
        state.shutdown.clone(),
    ));
    // Every Host and Origin passes (`origin.rs` is tested with rmcp's checks).
    let hosts = super::HostCheck::new(|_| {
        Box::pin(async {
            axum::response::IntoResponse::into_response(http::StatusCode::METHOD_NOT_ALLOWED)
        })
    });
    Edge::new(&mcp, manager, Restores::default(), lease, None, hosts)
}

/// A deadline no step of these tests reaches.
pub(crate) fn far() -> crate::mcp::extensions::Deadline {
    crate::mcp::extensions::Deadline::after(std::time::Duration::from_secs(600))
}

/// An authenticator in API-key mode that knows [`API_KEY`]; keep the file while it is
/// used.
pub(crate) fn api_key_auth() -> (Authenticator, TempFile) {
    let file = TempFile::new(&format!(
        "{} {:x}\n",
        API_KEY.1,
        Sha256::digest(API_KEY.0.as_bytes())
    ));
    let mut settings = Settings::load_with_env(None, Vec::new()).unwrap().auth;
    settings.mode = AuthMode::ApiKeys;
    settings.api_keys_file = file.0.clone();
    settings.resource = "http://127.0.0.1/mcp".into();
    (Authenticator::from_settings(&settings).unwrap(), file)
}

/// A file under the system's temporary directory, removed on drop.
pub(crate) struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("stateful-mcp-edge-{}", crate::ids::mint()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A handler with nothing of its own: rmcp's transport is all that is under test.
#[derive(Clone)]
struct Bare;

impl rmcp::ServerHandler for Bare {}

/// rmcp's Streamable HTTP service over [`Bare`] handlers with `config`.
pub(crate) fn bare_service(
    config: rmcp::transport::streamable_http_server::StreamableHttpServerConfig,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    impl rmcp::ServerHandler,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        || Ok(Bare),
        Arc::new(Default::default()),
        config,
    )
}
