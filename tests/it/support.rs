//! The integration tests' harness: what needs the `stateful_mcp` crate itself, over the
//! processes, ports and waits of `testkit` (which the benchmarks share).
//!
//! - [`redis_server`]: `testkit`'s private `redis-server`s, with the app's settings and
//!   pools on them;
//! - [`replica`]: app replicas in this process on port 0, the binary as a process, and a
//!   round-robin TCP hop in front of several;
//! - [`node`]: what a test node of one Redis-backed component (bus, event store, cache)
//!   runs on;
//! - [`collector`]: an OTLP/HTTP collector on loopback that keeps the spans replicas
//!   export;
//! - [`client`]: rmcp clients of both protocol eras and readers of their results;
//! - [`http`]: raw HTTP requests, for what a client library would not send (`testkit`'s);
//! - [`sse`]: server-sent events read from raw responses;
//! - [`keyed_load`]: clients retrying keyed increments under a fault, and what they saw;
//! - [`nginx`]: an nginx balancer in front of replicas on loopback ports;
//! - [`proxy`]: a TCP proxy in front of a Redis that delays, blackholes or resets;
//! - [`wait`]: the one way to wait: poll until a deadline, or bound a future by it
//!   (`testkit`'s).

pub mod client;
pub mod collector;
pub mod keyed_load;
pub mod nginx;
pub mod node;
pub mod proxy;
pub mod redis_server;
pub mod replica;
pub mod sse;

pub use testkit::{http, wait};
