//! # stateful-mcp
//!
//! An MCP server whose replicas keep no state of their own: sessions, tool state and
//! resumable event streams live in Redis (or, for a single replica, in memory), so a plain
//! round-robin load balancer can send any request to any replica.
//!
//! ## Layout
//! - [`config`]: layered settings (`config/default.toml`, `--config FILE`, environment).
//! - [`startup`]: builds the [`startup::Application`] (router, listener, background tasks)
//!   and runs it until a shutdown signal.
//! - [`http`]: `/healthz`, `/readyz` and the mounting of `/mcp`.
//! - [`mcp`]: everything that speaks MCP through rmcp: the tool server, the legacy
//!   session manager wrapper, rmcp's `SessionStore` and `EventStore` on Redis.
//! - [`sessions`]: the session state layer (create, get, update, delete, list, stats)
//!   over the memory and Redis backends.
//! - [`redis_pool`] and [`keys`]: the shared connection pool and every key name.
//! - [`ids`]: unguessable ids for sessions and handles.
//!
//! ## A request's path
//! axum accepts the connection (TCP_NODELAY) → rmcp's `StreamableHttpService` at `/mcp`
//! validates Host/Origin/body size and picks the protocol era → for 2025-era requests our
//! [`mcp::session_manager::ReplicatedSessionManager`] finds (or restores from Redis) the
//! transport session → the tool handler in [`mcp::server`] resolves the state session
//! (explicit `session_id` handle, or the transport's `Mcp-Session-Id`) → one Redis script
//! in [`sessions`] checks the owner, slides the expiry and applies the operation.

#![warn(missing_docs)]

pub mod bus;
pub mod cache;
pub mod config;
pub mod http;
pub mod ids;
pub mod keys;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod primes;
pub mod redis_pool;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod telemetry;
