//! Integration tests: real `redis-server` processes, real replicas, real MCP clients.

mod cluster;
mod replicas;
mod sessions;
mod support;
mod bad_input;
