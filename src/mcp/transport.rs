//! How rmcp's 2025-era transport sessions live behind a round-robin balancer: the
//! session manager ([`session_manager`], rmcp's local manager made safe across
//! replicas), the restore store ([`session_store`], any replica restores a session),
//! the leases that name the replica holding each session ([`leases`]), the mark that
//! tells a dead holder from a slow one ([`liveness`]), the forwarding of a request to
//! that holder ([`forward`]) and the response bodies a drain waits for ([`inflight`]).

pub(crate) mod forward;
pub(crate) mod inflight;
pub(crate) mod leases;
pub(crate) mod liveness;
pub(crate) mod session_manager;
pub(crate) mod session_store;
