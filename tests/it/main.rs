//! Integration tests: real `redis-server` processes, real replicas, real MCP clients.

mod auth;
mod bad_input;
mod bus;
mod cache;
mod cpu;
mod decode;
mod drain;
mod edge;
mod event_store;
mod faults;
mod idempotency;
mod legacy;
mod metrics;
mod outage;
mod rate_limit;
mod redis_tls;
mod replicas;
mod round_trips;
mod sessions;
mod streams;
mod support;
mod tool_cache;
