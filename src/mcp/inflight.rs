//! In-flight requests for the drain: a response body that holds a token of
//! [`AppState::requests`](crate::state::AppState::requests) until it ends or is dropped
//! (its client went away), so a drain waits for the responses clients still read and
//! for nothing else.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// `response` with its body holding `token` until the body ends or is dropped.
pub(crate) fn hold_until_sent(response: Response, token: TaskTrackerToken) -> Response {
    response.map(|inner| {
        Body::new(Held {
            inner,
            token: Some(token),
        })
    })
}

/// A body that releases its token with its last frame.
struct Held {
    inner: Body,
    token: Option<TaskTrackerToken>,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.token = None;
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio_util::task::TaskTracker;

    use super::*;

    #[tokio::test]
    async fn the_token_is_held_until_the_body_ends_or_is_dropped() {
        let tracker = TaskTracker::new();
        tracker.close();
        let read = hold_until_sent(Response::new(Body::from("done")), tracker.token());
        let dropped = hold_until_sent(Response::new(Body::from("lost")), tracker.token());
        assert_eq!(tracker.len(), 2);
        let bytes = read.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"done");
        assert_eq!(tracker.len(), 1);
        drop(dropped);
        assert!(tracker.is_empty());
    }
}
