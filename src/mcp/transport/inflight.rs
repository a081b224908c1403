//! Response bodies tied to the drain: one that holds a token of
//! [`AppState::requests`](crate::state::AppState::requests) until it ends or is dropped
//! (its client went away), so a drain waits for the responses clients still read and
//! for nothing else ([`hold_until_sent`]); and one that ends when the drain ends the
//! streams ([`end_on`]).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::task_tracker::TaskTrackerToken,
};

/// `response` with its body holding `token` until the body ends or is dropped.
pub(crate) fn hold_until_sent(response: Response, token: TaskTrackerToken) -> Response {
    response.map(|inner| {
        Body::new(Held {
            inner,
            token: Some(token),
            stop: None,
        })
    })
}

/// `body`, ended early when `stop` fires.
pub(crate) fn end_on(body: Body, stop: CancellationToken) -> Body {
    Body::new(Held {
        inner: body,
        token: None,
        stop: Some(Box::pin(stop.cancelled_owned())),
    })
}

/// A body that releases its token with its last frame, and ends when `stop` fires.
struct Held {
    inner: Body,
    token: Option<TaskTrackerToken>,
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(stop) = &mut this.stop
            && stop.as_mut().poll(cx).is_ready()
        {
            this.token = None;
            return Poll::Ready(None);
        }
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

    #[tokio::test]
    async fn a_body_ended_on_a_token_ends_when_it_fires() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let endless = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let stop = CancellationToken::new();
        let mut body = end_on(endless, stop.clone());
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"a");
        stop.cancel();
        assert!(body.frame().await.is_none());
        drop(tx);
    }
}
