//! rmcp's [`EventStore`] over the replica's [`RedisEventStore`] ([`crate::events`]):
//! each 2025-era session gets its own view ([`SessionEvents`]) that puts the session into
//! every key it writes and reads, and converts rmcp's SSE messages to and from the
//! store's JSON events. [`track_delivery`] tells the store, from a response's body,
//! whether the request stream it carries got through (which decides how long Redis
//! keeps it).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use rmcp::{
    model::{JsonRpcMessage, ServerJsonRpcMessage},
    transport::streamable_http_server::session::{
        EventId, EventStore, EventStoreError, EventStream, ServerSseMessage,
    },
};

use crate::events::{
    EventKind, RedisEventStore, RedisEventStoreError, StoredEvent, format::primed_stream,
};

/// One session's view of the [`RedisEventStore`]: the [`EventStore`] rmcp's local
/// session manager of that session writes to and resumes from. Only this session's
/// streams can be replayed through it.
#[derive(Clone)]
pub struct SessionEvents {
    store: Arc<RedisEventStore>,
    session_id: Arc<str>,
}

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEvents")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl SessionEvents {
    /// Session `session_id`'s view of `store`, for rmcp's local session manager of that
    /// session.
    pub fn new(store: &Arc<RedisEventStore>, session_id: impl Into<Arc<str>>) -> Self {
        Self {
            store: Arc::clone(store),
            session_id: session_id.into(),
        }
    }

    /// The session's events after `last_event_id`, then those that follow (see
    /// [`RedisEventStore::replay`]).
    ///
    /// # Errors
    /// As [`RedisEventStore::replay`].
    pub async fn replay(&self, last_event_id: &str) -> Result<EventStream, RedisEventStoreError> {
        let events = self.store.replay(&self.session_id, last_event_id).await?;
        Ok(Box::pin(
            events.filter_map(|event| async move { sse_message(event) }),
        ))
    }
}

#[async_trait::async_trait]
impl EventStore for SessionEvents {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        let (kind, message) = match event.message.as_deref() {
            None => (EventKind::Bare, String::new()),
            Some(message) => (
                if is_final(message) {
                    EventKind::Final
                } else {
                    EventKind::Message
                },
                serde_json::to_string(message).map_err(RedisEventStoreError::Encode)?,
            ),
        };
        Ok(self
            .store
            .append(&self.session_id, stream_id, kind, message, event.retry)
            .await?)
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        Ok(self.replay(last_event_id).await?)
    }
}

/// A JSON-RPC response or error: the last event of a request's stream.
fn is_final(message: &ServerJsonRpcMessage) -> bool {
    matches!(
        message,
        JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_)
    )
}

/// The SSE event of a stored event, under its original id; `None` for a stored message
/// that no longer parses (skipped, as a client could not use it).
fn sse_message(event: StoredEvent) -> Option<ServerSseMessage> {
    let mut sse = ServerSseMessage::default();
    if let Some(message) = &event.message {
        match serde_json::from_str::<ServerJsonRpcMessage>(message) {
            Ok(message) => sse.message = Some(Arc::new(message)),
            Err(error) => {
                tracing::warn!(
                    event = %crate::ids::fingerprint(&event.event_id),
                    error = %error,
                    "stored event does not parse; skipping it"
                );
                return None;
            }
        }
    }
    sse.event_id = Some(event.event_id);
    sse.retry = event.retry;
    Some(sse)
}

/// `response` with its SSE body reporting to `store`, when it ends or is dropped, what
/// became of the request stream it carries (see the module docs on retention). Other
/// responses pass unchanged.
pub fn track_delivery(response: Response, store: &Arc<RedisEventStore>) -> Response {
    let is_sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return response;
    }
    let store = Arc::clone(store);
    response.map(|inner| {
        Body::new(Delivery {
            inner,
            store,
            sniffed: false,
            stream_id: None,
        })
    })
}

/// A request stream's SSE body that tells the store whether it got through.
struct Delivery {
    inner: Body,
    store: Arc<RedisEventStore>,
    /// Whether the first data frame was read for the stream id.
    sniffed: bool,
    /// The request stream, from its priming event's id, until it is reported on.
    stream_id: Option<String>,
}

impl Delivery {
    fn report(&mut self, ended: bool) {
        if let Some(stream_id) = self.stream_id.take() {
            self.store.stream_closed(&stream_id, ended);
        }
    }
}

/// The stream id in an SSE frame whose event id is a minted priming id.
fn primed_stream_id(frame: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(frame).ok()?;
    text.lines()
        .filter_map(|line| line.strip_prefix("id:"))
        .map(|id| id.trim_start_matches(' '))
        .find_map(primed_stream)
}

impl http_body::Body for Delivery {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if !this.sniffed => {
                if let Some(data) = frame.data_ref() {
                    this.sniffed = true;
                    this.stream_id = primed_stream_id(data).map(str::to_owned);
                }
            }
            Poll::Ready(None) => this.report(true),
            Poll::Ready(Some(Err(_))) => this.report(false),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.report(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_of_a_primed_frame_is_found() {
        let stream = "6f1c2d3e-0000-4000-8000-000000000001";
        assert_eq!(
            primed_stream_id(format!("data:\nid:{stream}/0-1\nretry:1000\n\n").as_bytes()),
            Some(stream)
        );
        assert_eq!(
            primed_stream_id(format!("id: {stream}/0-1\r\ndata:\r\n\r\n").as_bytes()),
            Some(stream)
        );
        for frame in [
            format!("data:\nid:{stream}/1700000000000-0\n\n"),
            "data: {\"id\": \"x/0-1\"}\n\n".to_owned(),
            "id:a{b}/0-1\n\n".to_owned(),
            ": keep-alive\n\n".to_owned(),
        ] {
            assert_eq!(primed_stream_id(frame.as_bytes()), None, "{frame}");
        }
    }
}
