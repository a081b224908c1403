//! # stateful-mcp
//!
//! An MCP server whose replicas keep no state of their own: sessions, tool state and
//! resumable event streams live in Redis (or, for a single replica, in memory), so a plain
//! round-robin load balancer can send any request to any replica.
//!
//! ## Layout
//! Dependencies point one way: HTTP → MCP → tools → domain → storage.
//! - [`config`]: layered settings (`config/default.toml`, `--config FILE`, environment).
//! - [`cli`]: the command line of the binaries: `stateful-mcp`, and
//!   `stateful-mcp-conformance`, which serves the official conformance suite's fixtures
//!   (`src/bin/`) in front of [`mcp::server`]'s handler through [`mcp::endpoint_with`].
//! - [`telemetry`]: the tracing subscriber and request ids.
//! - [`auth`]: bearer tokens (API keys or JWTs) to a [`auth::Principal`], and the
//!   RFC 9728 metadata.
//! - [`state`]: [`state::AppState`], the replica's cheap handles (settings, pool, sessions,
//!   cache, bus, metrics, shutdown tokens, task trackers), built once from the settings.
//! - [`startup`]: builds the [`startup::Application`] (router, listener, upkeep loop) and
//!   runs it until a shutdown signal, draining in order; [`listener`] is the accept loop
//!   that lets a drain serve what the backlog already holds; [`serve`] serves its
//!   connections with a deadline on request heads.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`, and the mounting of `/mcp`.
//! - [`mcp`]: everything that speaks rmcp. [`mcp::endpoint`] builds `/mcp`: the edge
//!   ([`mcp::edge`], which forwards a 2025-era request to the replica holding its
//!   session), rmcp's Streamable HTTP service over our session manager, session
//!   store and Redis event store ([`mcp::event_store`]), and the handler
//!   ([`mcp::server`]) with its tools, session binding ([`mcp::binding`]) and resources.
//! - [`sessions`]: the session state layer (create, get, update, counter, history,
//!   delete, list, stats) over the memory and Redis backends, one Lua script per
//!   operation on Redis.
//! - [`cache`]: the two-level cache (moka L1 per replica, Redis L2, invalidations on the
//!   bus); [`primes`]: the CPU-bound computation it serves, run on the [`cpu`] pool
//!   (blocking threads, a concurrency limit, cancellation between segments).
//! - [`tasks`]: background tasks any replica answers for: records in the store (one
//!   Lua script per transition), the replica's bounded worker pool, owner leases and
//!   the sweep that fails tasks whose replica died; cancels and input over the bus.
//! - [`bus`]: one pub/sub subscriber per replica for cross-replica messages.
//! - [`rate_limit`]: per-principal request budgets shared through Redis.
//! - [`metrics`]: the Prometheus registry of the replica.
//! - [`redis_pool`] and [`keys`]: the shared connection pool and every key name.
//! - [`ids`]: unguessable ids for sessions and handles.
//!
//! ## A request's path
//! [`serve`] accepts the connection (TCP_NODELAY; the request head within its deadline)
//! → [`http`] gives it an id and a span → the [`mcp::edge`] authenticates the caller,
//! reads the body once into an envelope (method, id, era, tool, handle, idempotency
//! key), refuses what is not JSON-RPC, labels metrics, and for a 2025-era request
//! touches the caller's stored transport session (404 when gone or another principal's,
//! 503 when the store is down), which also says which replica holds the session: a
//! request for a session held elsewhere is forwarded there and answered from there →
//! the serving replica spends the caller's rate limit → rmcp's `StreamableHttpService`
//! validates Host/Origin and the protocol headers and picks the era; 2025-era requests
//! reach their session through our session manager (restored from the store by the
//! replica that takes it over) → the handler in [`mcp::server`] times the tool call →
//! the tool binds its state session ([`mcp::binding`]: the `session_id` handle, or the
//! session the edge confirmed) → one Redis script in [`sessions`] checks the owner,
//! slides the expiry and applies the operation (at most
//! once per idempotency key).

#![warn(missing_docs)]

pub mod auth;
pub mod bus;
pub mod cache;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod http;
pub mod ids;
pub mod keys;
pub mod listener;
pub mod managed;
pub mod mcp;
pub mod metrics;
pub mod primes;
pub mod rate_limit;
pub mod redis_pool;
pub mod serve;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod tasks;
pub mod telemetry;
