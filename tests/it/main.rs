//! Integration tests: real `redis-server` processes, real replicas, real MCP clients.

mod bus;
mod event_store;
mod support;
