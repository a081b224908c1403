//! Step 6, refusals: the answers rmcp would get wrong, put right.
//!
//! - rmcp turns every error of the session manager into a bare 500. The edge hands rmcp
//!   a [`RefusalSlot`] in the request's extensions ([`slot`]), through which the
//!   session manager reports why it refused an `initialize` or a stream; the edge
//!   answers that refusal instead, as 400, 429 or 503 ([`reported`]).
//! - rmcp answers 415 to a JSON POST it could not read as a message: the content type
//!   was right, so that is a `-32600` invalid request ([`unreadable`]).

use axum::response::Response;
use http::{Extensions, StatusCode};

use crate::mcp::error::{EdgeError, RefusalSlot};

/// Most bytes of rmcp's 415 body kept as the detail of the invalid request.
const DETAIL_LIMIT: usize = 1024;

/// A new, empty slot, also put in `extensions` for the session manager.
pub(crate) fn slot(extensions: &mut Extensions) -> RefusalSlot {
    let slot = RefusalSlot::default();
    extensions.insert(slot.clone());
    slot
}

/// Whether the session manager left a refusal in `slot`.
///
/// # Errors
/// The refusal it left.
pub(crate) fn reported(slot: &RefusalSlot) -> Result<(), EdgeError> {
    slot.take().map_or(Ok(()), Err)
}

/// `response`, unless rmcp refused a `json_post` as an unsupported media type.
///
/// # Errors
/// [`EdgeError::InvalidRequest`] with the head of rmcp's explanation.
pub(crate) async fn unreadable(json_post: bool, response: Response) -> Result<Response, EdgeError> {
    if !json_post || response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return Ok(response);
    }
    let detail = axum::body::to_bytes(response.into_body(), DETAIL_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Err(EdgeError::InvalidRequest(detail))
}

#[cfg(test)]
mod tests {
    use axum::{
        Router, body::Body, extract::Request, middleware::Next, response::IntoResponse,
        routing::post,
    };
    use tower::ServiceExt;

    use super::*;

    /// A session manager stand-in that reports `refusal` through the request's slot and
    /// answers 500, as rmcp does for any manager error.
    async fn refusing(request: Request) -> Response {
        let slot = request.extensions().get::<RefusalSlot>().unwrap();
        slot.set(EdgeError::TooManySessions);
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }

    /// The slot around `next`, as the edge uses it.
    async fn with_slot(request: Request, next: Next) -> Response {
        let (mut parts, body) = request.into_parts();
        let slot = slot(&mut parts.extensions);
        let response = next.run(Request::from_parts(parts, body)).await;
        match reported(&slot) {
            Ok(()) => response,
            Err(refusal) => refusal.into_response(),
        }
    }

    #[tokio::test]
    async fn a_refusal_reported_from_behind_rmcp_replaces_its_bare_500() {
        let app = Router::new()
            .route("/refuse", post(refusing))
            .route("/fine", post(|| async { "ok" }))
            .layer(axum::middleware::from_fn(with_slot));
        let call = |path| {
            app.clone()
                .oneshot(Request::post(path).body(Body::empty()).unwrap())
        };
        let refused = call("/refuse").await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(call("/fine").await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_415_to_a_json_post_is_an_invalid_request() {
        let rmcp_415 = || {
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type: bad message",
            )
                .into_response()
        };
        let refusal = unreadable(true, rmcp_415()).await.unwrap_err();
        assert_eq!(
            refusal,
            EdgeError::InvalidRequest("Unsupported Media Type: bad message".into())
        );
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], -32600);

        let other = unreadable(false, rmcp_415()).await.unwrap();
        assert_eq!(
            other.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not JSON"
        );
    }
}
