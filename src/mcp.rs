//! The MCP layer: the only part of the crate that speaks rmcp.
//!
//! - [`server`]: the tool handler ([`server::StatefulServer`]).
//! - [`session_manager`]: wraps rmcp's `LocalSessionManager` so 2025-era transport
//!   sessions can be served by any replica.
//! - [`session_store`]: rmcp's `SessionStore` over [`crate::sessions::Sessions`].
//! - [`event_store`]: rmcp's `EventStore` on Redis Streams, for `Last-Event-ID`.

pub mod event_store;
pub mod server;
pub mod session_manager;
pub mod session_store;
pub mod tool_cache;
