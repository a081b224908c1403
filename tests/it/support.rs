//! The test harness: one set of helpers for the integration tests and for the benchmarks,
//! which load this file with `#[path]`.
//!
//! - [`redis_server`]: private `redis-server` processes on free ports, and unique key prefixes;
//! - [`replica`]: app replicas on port 0 and a round-robin TCP hop in front of them;
//! - [`node`]: what a test node of one Redis-backed component (bus, event store, cache)
//!   runs on;
//! - [`client`]: rmcp clients of both protocol eras and readers of their results;
//! - [`http`]: raw HTTP requests, for what a client library would not send;
//! - [`sse`]: server-sent events read from raw responses;
//! - [`proxy`]: a TCP proxy in front of a Redis that delays, blackholes or resets;
//! - [`wait`]: the one way to wait: poll until a deadline, or bound a future by it.

// The integration tests and each benchmark use a different subset of these helpers.
#![allow(dead_code, unused_imports)]

// A file loaded with `#[path]` (as the benchmarks load this one) looks for its children as
// a `mod.rs` would, beside itself; explicit paths find them in `support/` for every target.
#[path = "support/client.rs"]
pub mod client;
#[path = "support/http.rs"]
pub mod http;
#[path = "support/node.rs"]
pub mod node;
#[path = "support/proxy.rs"]
pub mod proxy;
#[path = "support/redis_server.rs"]
pub mod redis_server;
#[path = "support/replica.rs"]
pub mod replica;
#[path = "support/sse.rs"]
pub mod sse;
#[path = "support/wait.rs"]
pub mod wait;
