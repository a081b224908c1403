//! # stateful-mcp
//!
//! An MCP server whose replicas keep no state of their own: sessions, tool state and
//! resumable event streams live in Redis (or, for a single replica, in memory), so a plain
//! round-robin load balancer can send any request to any replica.
//!
//! ## Glossary
//! - **2026-07-28**: the current protocol revision, without transport sessions: a client
//!   keeps state across calls with server-minted handles passed as tool arguments.
//! - **2025-era**: the revisions 2025-03-26 to 2025-11-25, with an `initialize` handshake
//!   and a transport session named by the `Mcp-Session-Id` header.
//! - **Holder**: the replica that runs a 2025-era session's rmcp worker; every request of
//!   that session is served there (forwarded by any other replica).
//! - **Lease**: the holder's time-bounded claim on a session, kept in the session's
//!   Redis record and renewed while the session is in use; one that runs out lets another
//!   replica take the session over.
//! - **MRTR**: multi-round-trip requests (2026-07-28): a tool that needs input from the
//!   client answers `input_required` with a sealed `requestState` the client sends back.
//!
//! ## Layout
//! Dependencies point one way: HTTP → MCP → domain → storage.
//! - [`config`]: layered settings (`config/default.toml`, `--config FILE`, environment),
//!   one file per section.
//! - [`cli`]: the command line of the binaries: `stateful-mcp` (which also checks its
//!   settings, and reads or ends the stored sessions for an operator), and
//!   `stateful-mcp-conformance`, which serves the official conformance suite's fixtures
//!   (`src/bin/`) in front of [`mcp::handler`]'s handler through [`mcp::endpoint_with`].
//! - [`telemetry`]: the tracing subscriber and request ids; the OpenTelemetry export of
//!   the server's spans (off unless `telemetry.otlp_endpoint` is set) and the W3C trace
//!   context read from requests and carried on the forward hop.
//! - [`auth`]: bearer tokens (API keys or JWTs) to a [`auth::Principal`], and the
//!   RFC 9728 metadata.
//! - [`state`]: [`state::AppState`], the replica's cheap domain handles (settings, pool,
//!   sessions, cache, bus, metrics, shutdown tokens, task trackers), built once from the
//!   settings; it imports nothing of [`mcp`].
//! - [`startup`]: builds the [`startup::Application`] (router, listener, upkeep loop) and
//!   runs it until a shutdown signal, draining in order; [`listener`] is the accept loop
//!   that lets a drain serve what the backlog already holds; [`serve`] serves its
//!   connections, at most `server.max_connections`, with a deadline on request heads.
//! - [`http`]: `/healthz` (with the release, [`VERSION`]), `/readyz`, `/metrics`, and the
//!   mounting of `/mcp`.
//! - [`mcp`]: everything that speaks rmcp, in rooms that follow a request, over
//!   [`mcp::McpState`] (the replica's state with the MCP layer's own handles: the MRTR
//!   `requestState` codec and the `subscriptions/listen` streams):
//!   [`mcp::edge`] (authenticate, decode, route or forward, rate limit, refuse),
//!   the transport (2025-era sessions behind a balancer: session manager, restore
//!   store, leases, forwarding), [`mcp::event_store`] (`Last-Event-ID` on Redis
//!   Streams) and [`mcp::handler`] (the rmcp `ServerHandler`, its tools, the session
//!   each call binds to, resources, tasks, MRTR state, notifications);
//!   [`mcp::error`] holds the one refusal type they share and the one conversion of
//!   the domain's errors into what clients see (logged and counted there).
//! - [`sessions`]: the session state layer (create, get, update, counter, history,
//!   delete, list, stats, an operator's census) over the memory and Redis backends, one Lua script per
//!   operation on Redis, and the holding of 2025-era sessions (which replica holds
//!   each, under a lease).
//! - [`cache`]: the two-level cache (moka L1 per replica, Redis L2, invalidations on the
//!   bus); [`primes`]: the CPU-bound computation it serves, run on the [`cpu`] pool
//!   (blocking threads, a concurrency limit, cancellation between segments).
//! - [`tasks`]: background tasks any replica answers for: records in the store (one
//!   Lua script per transition), the replica's bounded worker pool with a share per
//!   principal, owner leases and the sweep that fails tasks whose replica died; cancels
//!   and input over the bus; each status change told to an observer (the MCP layer's
//!   `notifications/tasks`). [`fair`]: the semaphore under the workers and the CPU pool
//!   that hands a free permit to the principal holding fewest.
//! - [`managed`]: managed handles (files and dedicated connections tools hold open
//!   across calls; not MCP resources) and their [`managed::HandleManager`].
//! - [`events`]: resumable response streams on Redis Streams (append, replay, the
//!   replica's blocking readers, the retention of finished streams), for rmcp's
//!   event store in [`mcp::event_store`].
//! - [`bus`]: one pub/sub subscriber per replica for cross-replica messages.
//! - [`rate_limit`]: per-principal request budgets shared through Redis.
//! - [`metrics`]: the Prometheus registry of the replica and the request and tool
//!   series it measures; each component registers the figures it reads at scrape time.
//! - [`redis_pool`] and [`keys`]: the shared connection pool and every key name.
//! - `backend.rs`: the one macro with which [`sessions`] and [`tasks`] forward an
//!   operation to their memory or Redis backend.
//! - [`ids`]: unguessable ids for sessions and handles.
//! - [`jobs`]: the replica's background jobs, added by their components, started in one
//!   place (startup) in order and stopped in reverse.
//!
//! ## A request's path
//! [`serve`] admits the connection (under the cap; TCP_NODELAY; a first request and each
//! head within their deadline)
//! → [`http`] gives it an id and a span → the [`mcp::edge`] authenticates the caller,
//! reads the body once into an envelope (method, id, era, tool, handle, idempotency
//! key), refuses what is not JSON-RPC, labels metrics, and for a request naming an
//! `Mcp-Session-Id` (whatever its era) touches the caller's stored transport session
//! (404 when gone or another principal's, 503 when the store is down), which for a
//! 2025-era request also says which replica holds the session: a
//! request for a session held elsewhere is forwarded to its holder and answered from
//! there → the serving replica spends the caller's rate limit → rmcp's
//! `StreamableHttpService` validates Host/Origin and the protocol headers and picks the
//! era; 2025-era requests reach their session through the transport's session manager
//! (restored from the store by the replica that takes it over) → the handler in
//! [`mcp::handler`] times the tool call → the tool binds its state session
//! ([`mcp::handler::binding`]: the `session_id` handle, or the session the edge
//! confirmed) → one Redis script in [`sessions`] checks the owner, slides the expiry
//! and applies the operation (at most once per idempotency key).

#![warn(missing_docs)]

/// The release this build is (`Cargo.toml`'s version): reported at `/healthz` and as the
/// MCP `serverInfo.version`; `CHANGELOG.md` says what each release changed.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod auth;
mod backend;
pub mod bus;
pub mod cache;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod events;
pub mod fair;
pub mod http;
pub mod ids;
pub mod jobs;
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
