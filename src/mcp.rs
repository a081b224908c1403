//! MCP layer.
pub mod event_store;
