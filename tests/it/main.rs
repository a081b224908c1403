//! Integration tests: real `redis-server` processes, real replicas, real MCP clients.

mod auth;
mod bad_input;
mod bus;
mod cache;
mod conformance;
mod cpu;
mod decode;
mod drain;
mod edge;
mod event_store;
mod faults;
mod idempotency;
mod lifecycle;
mod listen;
mod metrics;
mod outage;
mod rate_limit;
mod redis_tls;
mod replicas;
mod request_state;
mod round_trips;
mod sessions;
mod streams;
mod support;
mod tasks;
mod tool_cache;
