//! Integration tests: real `redis-server` processes, real replicas, real MCP clients.

mod sessions;
mod support;
