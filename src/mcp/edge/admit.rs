//! Step 5, admit: what a request takes into rmcp and what it holds while there.
//!
//! - Every request but a GET stream is in flight from its first moment until its
//!   response ends ([`in_flight`], [`hold`]): a drain waits for those, and ends GET
//!   streams instead (they last as long as their sessions). Such a response of a
//!   2025-era stream also tells the event store whether it got through.
//! - The handler learns the caller, the `idempotencyKey` and the request's deadline
//!   from the request's extensions ([`hand_over`]), never from headers or fields of its
//!   own.
//! - A 2026-07-28 `subscriptions/listen` takes one of the replica's
//!   `listen.max_streams` places before rmcp acknowledges it (503 when there is none),
//!   held until its response ends ([`listen_place`], [`keep_place`]).

use std::sync::Arc;

use axum::{body::Body, response::Response};
use futures::StreamExt;
use http::{Extensions, Method};
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::envelope::Envelope;
use crate::{
    auth::Principal,
    events::RedisEventStore,
    mcp::{
        error::EdgeError,
        event_store::track_delivery,
        extensions::{Deadline, IdempotencyKey},
        handler::notify::{ListenPermit, Notifier},
        transport::inflight::hold_until_sent,
    },
};

/// The 2026-07-28 method that opens a notification stream.
const LISTEN: &str = "subscriptions/listen";

/// A token of `requests` for a request of `method`, unless it is a GET (a stream the
/// drain ends rather than waits for).
pub(crate) fn in_flight(requests: &TaskTracker, method: &Method) -> Option<TaskTrackerToken> {
    (method != Method::GET).then(|| requests.token())
}

/// `response`, held in flight with `token` until it ends; with a token and an event
/// store, also reporting to `events` whether a stream got through.
pub(crate) fn hold(
    response: Response,
    token: Option<TaskTrackerToken>,
    events: Option<&Arc<RedisEventStore>>,
) -> Response {
    let Some(token) = token else {
        return response;
    };
    let response = match events {
        Some(events) => track_delivery(response, events),
        None => response,
    };
    hold_until_sent(response, token)
}

/// Puts `principal`, `envelope`'s `idempotencyKey` and the request's `deadline` in
/// `extensions`, for the session manager and the handler.
pub(crate) fn hand_over(
    extensions: &mut Extensions,
    principal: Principal,
    envelope: &mut Envelope,
    deadline: Deadline,
) {
    extensions.insert(principal);
    extensions.insert(deadline);
    if let Some(key) = envelope.idempotency_key.take() {
        extensions.insert(IdempotencyKey(key));
    }
}

/// A place among `notifier`'s listen streams for a 2026-07-28 `subscriptions/listen`;
/// `None` for any other request.
///
/// # Errors
/// [`EdgeError::TooManyListeners`] when every place is taken.
pub(crate) fn listen_place(
    notifier: &Notifier,
    envelope: &Envelope,
) -> Result<Option<ListenPermit>, EdgeError> {
    if envelope.legacy || envelope.method.as_deref() != Some(LISTEN) {
        return Ok(None);
    }
    notifier
        .reserve()
        .map(Some)
        .ok_or(EdgeError::TooManyListeners)
}

/// `response`, keeping `place` for as long as its body streams.
pub(crate) fn keep_place(response: Response, place: Option<ListenPermit>) -> Response {
    let Some(place) = place else {
        return response;
    };
    response.map(|body| {
        Body::from_stream(body.into_data_stream().inspect(move |_| {
            let _held = &place;
        }))
    })
}

#[cfg(test)]
mod tests {
    use crate::{config::ListenSettings, metrics::ListenMetrics};

    use super::*;

    async fn read(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn every_request_but_a_get_is_in_flight_until_its_response_is_read() {
        let requests = TaskTracker::new();
        assert!(in_flight(&requests, &Method::GET).is_none());
        for method in [Method::POST, Method::DELETE] {
            let token = in_flight(&requests, &method);
            assert_eq!(requests.len(), 1, "{method}");
            let response = hold(Response::new(Body::from("done")), token, None);
            assert_eq!(requests.len(), 1, "{method}: unread");
            assert_eq!(read(response).await, "done");
            assert!(requests.is_empty(), "{method}: read");
        }
    }

    #[test]
    fn the_handler_gets_the_caller_the_idempotency_key_and_the_deadline() {
        let mut envelope = Envelope::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
                "params":{"name":"counter","idempotencyKey":"k-1"}}"#,
            None,
        )
        .unwrap();
        let mut extensions = Extensions::new();
        let deadline = Deadline::after(std::time::Duration::from_secs(3));
        hand_over(
            &mut extensions,
            Principal::anonymous(),
            &mut envelope,
            deadline,
        );
        assert_eq!(extensions.get(), Some(&Principal::anonymous()));
        assert_eq!(extensions.get(), Some(&IdempotencyKey("k-1".into())));
        assert_eq!(extensions.get(), Some(&deadline));
    }

    #[tokio::test]
    async fn a_listen_stream_takes_a_place_and_keeps_it_until_its_response_ends() {
        let notifier = Notifier::new(
            None,
            &ListenSettings {
                max_streams: 1,
                stream_buffer: 4,
            },
            ListenMetrics::default(),
        );
        let listen = Envelope::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"_meta":{
                "io.modelcontextprotocol/protocolVersion":"2026-07-28",
                "io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            None,
        )
        .unwrap();
        let legacy = Envelope::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen"}"#,
            None,
        )
        .unwrap();
        let place = listen_place(&notifier, &listen).unwrap();
        assert!(place.is_some());
        assert_eq!(
            listen_place(&notifier, &listen).unwrap_err(),
            EdgeError::TooManyListeners
        );
        assert!(
            listen_place(&notifier, &legacy).unwrap().is_none(),
            "a 2025-era method of that name takes no place"
        );
        let response = keep_place(Response::new(Body::from("event")), place);
        assert!(listen_place(&notifier, &listen).is_err(), "still streaming");
        assert_eq!(read(response).await, "event");
        assert!(listen_place(&notifier, &listen).unwrap().is_some());
    }
}
