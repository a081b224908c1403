//! The `stateful-mcp` binary: load settings, start telemetry, build the replica, run it
//! until SIGINT/SIGTERM ([`stateful_mcp::cli::run`] with the production `/mcp`).

use std::process::ExitCode;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread returns freed pages to the system after a
/// second, so the memory of closed session workers leaves the replica's footprint even
/// while its threads are idle.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> ExitCode {
    stateful_mcp::cli::run("stateful-mcp", stateful_mcp::mcp::endpoint).await
}
