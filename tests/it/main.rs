//! Integration tests: real `redis-server` processes, real replicas, real MCP clients.

mod bad_input;
mod cache;
mod cluster;
mod outage;
mod replicas;
mod round_trips;
mod sessions;
mod support;
