//! The processes, ports and waits that stateful-mcp's integration tests (`tests/it`) and
//! its benchmarks (`benches/`) run on, in one place.
//!
//! - [`process`]: the one wrapper of child processes, stopped on drop and by the kernel
//!   when the run that started them dies (`PR_SET_PDEATHSIG`);
//! - [`redis_server`]: private `redis-server` processes on free ports (killed, paused,
//!   restarted; `REDIS_URL` to use another), and unique key prefixes;
//! - [`redis_cluster`]: a 3-master / 3-replica Redis Cluster (nodes killed, restarted,
//!   paused; slots migrated) and [`redis_sentinel`]: a primary, its replica and three
//!   sentinels (failover, the primary killed and restarted); Valkey's binaries run both
//!   (`scripts/ensure-valkey.sh`, `REDIS_SERVER_BIN`, `REDIS_CLI_BIN`);
//! - [`free_port`]: free loopback ports; [`temp_dir`]: directories removed on drop;
//! - [`replica`]: a replica's settings overrides, the binary as a child process, and its
//!   `/metrics`;
//! - [`http`]: raw MCP requests over HTTP, 2026-07-28 calls and 2025-11-25 sessions;
//! - [`wait`]: the one way to wait: poll until a deadline, or bound a future by it.
//!
//! It does not depend on the `stateful-mcp` crate, so it never brings a second copy of
//! that crate's types into a test: what needs them (an in-process replica, pools on the
//! app's settings) stays in `tests/it/support`.

pub mod http;
mod port;
pub mod process;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod replica;
pub mod temp_dir;
pub mod wait;

pub use port::free_port;
