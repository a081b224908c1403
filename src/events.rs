//! Resumable response streams on Redis Streams: every SSE event of a 2025-era response
//! stream is an entry of `<prefix>:{<session_id>}:events:<stream_id>`, so a client can resume on any
//! replica, and only from its own session.
//!
//! - **Sessions**: rmcp tells a store the stream of an event but not its session (request
//!   streams have random ids; only the standalone stream is `<session>:common`), so each
//!   session gets its own view (`mcp::event_store::SessionEvents`), which puts the
//!   session into every key it writes and reads. An event id presented with another
//!   session's `Mcp-Session-Id` names a key that does not exist: it is an unknown event,
//!   and replays nothing.
//! - **Event ids** are `<stream_id>/<entry-id>` (`entry-id` is Redis's `<ms>-<seq>`): the
//!   stream is found from the id and the caller's session, and ids are unique because
//!   entry ids are unique within a stream and stream ids are unique. Stream and session
//!   ids may only use `[A-Za-z0-9_.:-]`, so the `/` separator is unambiguous and neither
//!   can break out of its key's `{hash tag}`.
//! - **Storing** an event is one script: `XADD` with an approximate `MAXLEN`, then
//!   `PEXPIRE`, so every stream is bounded in time and size. A request stream started
//!   here costs its request no round trip: its priming event carries no message, so its
//!   id is minted as `<stream_id>/0-1`, below every id Redis gives, and nothing is
//!   written; its later events (progress, the response) get ids minted after it
//!   (`0-2`, `0-3`, …), go to the client at once and are written behind, in batches,
//!   by one job per replica (`writer.rs`), so a session's worker never waits for Redis
//!   between its messages. Resuming after the priming id replays the whole stream;
//!   while the request runs here (its stream is open) and nothing is stored yet, it
//!   follows the stream for what comes; anywhere else, an empty stream is an unknown
//!   event as before. Resuming after a later minted id waits up to a second for that
//!   id's entry, which may still be on its way. The standalone
//!   stream's events, and those of a stream this replica does not track, are stored
//!   before their id goes out, under ids Redis gives.
//! - **Retention** follows open streams, not calls: every event keeps its stream for
//!   [`EventStoreSettings::ttl`]; the final response of a request stream shortens that
//!   in the same script. A response that reaches its client needs no resumption, so a
//!   request stream started here keeps its events only
//!   [`EventStoreSettings::delivered_ttl`] (seconds) after its final response, unless its
//!   client got an event of it and then lost the connection before the end: such a
//!   stream keeps them [`EventStoreSettings::completed_ttl`], the window in which that
//!   client resumes. The edge learns which it was from the response body
//!   (`mcp::event_store::track_delivery`): one that ends after the final response was stored was
//!   delivered; one dropped earlier was abandoned, and if its final response is stored
//!   already, its expiry is extended then (a command only on that rare path). A stream
//!   this replica does not track keeps the long window. What a finished call leaves in
//!   Redis is thus bounded by the call rate times a few seconds, not a minute. The
//!   standalone stream has no final event and keeps the long TTL.
//! - **Replaying** returns the stored events after the given id and then keeps following
//!   the stream until its final JSON-RPC response or error arrives, whichever replica
//!   writes it. The standalone stream (`<session>:common`) has no final event: it is
//!   followed until the consumer drops it or the replica shuts down.
//! - **Following** costs connections per replica, not per stream: a background reader
//!   blocks in one `XREAD` over the streams it follows and forwards new entries to the
//!   followers' channels. A new follower wakes it through its wake stream so it
//!   re-issues `XREAD` with the new set of keys. On one node one reader covers every
//!   followed stream; on Redis Cluster, where a multi-key `XREAD` stays in one hash
//!   slot, there is a reader per slot with followers, on a connection to that slot's
//!   node, that ends with its last follower.
//!
//! Layout: [`mod@format`] (ids, fields, entries), `open.rs` (the request streams started
//! here), `writer.rs` (their events written behind), `reader.rs` (followers and how
//! their streams are grouped into readers),
//! `reader/connection.rs` (one reader's blocking reads), `store.rs`
//! ([`RedisEventStore`]). This module knows nothing of MCP: events are JSON text; the
//! rmcp adapter is `mcp::event_store`.

pub mod format;
mod open;
mod reader;
mod store;
mod writer;

use std::{pin::Pin, time::Duration};

pub use self::store::{EventStoreSettings, RedisEventStore, RedisEventStoreError};

/// A replayed (and then followed) stream of events.
pub type EventStream = Pin<Box<dyn futures::Stream<Item = StoredEvent> + Send + Sync>>;

/// What an event is to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// No message: a retry hint (a priming event).
    Bare,
    /// A message that does not end its stream (a notification, a request).
    Message,
    /// A message that ends a request's stream (its JSON-RPC response or error).
    Final,
}

/// An event read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its event id, `<stream_id>/<ms>-<seq>`.
    pub event_id: String,
    /// Its JSON message; `None` for a bare event.
    pub message: Option<String>,
    /// Its SSE retry hint.
    pub retry: Option<Duration>,
}
