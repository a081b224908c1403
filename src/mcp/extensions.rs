//! What the edge leaves in a request's extensions for the layers behind it: the
//! handler reads the caller's confirmed transport session and idempotency key here,
//! never from headers or fields of its own.

/// The `idempotencyKey` of a `tools/call` (SEP-3182). rmcp keeps no unknown params
/// field, so the edge lifts it out of the body for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

/// A 2025-era transport session the edge found alive for this request. Only a request
/// that carries it may act on its connection's session: an `Mcp-Session-Id` header on
/// its own is never trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSession(pub String);
