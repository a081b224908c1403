//! Step 2, label: under which name a request is counted and logged. A JSON-RPC POST is
//! counted under its method when the method is a known one (`other` otherwise,
//! `response` for a client's answer), a POST whose body could not be used as
//! `invalid`; GET and DELETE carry no method and are not counted. The request's log
//! span gets the method and the fingerprint of a 2026-07-28 handle, never the handle.
//!
//! The [`Meter`] carries the label and the request's start from the first step to the
//! response, where the request is counted once, whichever step answered it.

use std::time::Instant;

use super::decode::Decoded;
use crate::{mcp::error::EdgeError, metrics::Metrics};

/// The label of a POST whose body the edge or rmcp could not use.
pub(crate) const INVALID: &str = "invalid";

/// The label of `request` (see the module docs), also recorded on the current span.
pub(crate) fn label(request: &Decoded) -> Option<&'static str> {
    let label = request.json_post.then(|| request.envelope.method_label());
    let span = tracing::Span::current();
    if !span.is_disabled() {
        if let Some(label) = label {
            span.record("mcp_method", label);
        }
        if let Some(handle) = &request.envelope.handle {
            span.record("session_id", crate::ids::fingerprint(handle));
        }
    }
    label
}

/// How one request is counted: since when, and under which label once one is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    started: Instant,
    label: Option<&'static str>,
}

impl Meter {
    /// A meter started now, with no label yet.
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            label: None,
        }
    }

    /// Counts the request under `label` from now on.
    pub(crate) fn label(&mut self, label: Option<&'static str>) {
        self.label = label;
    }

    /// Counts the request as [`INVALID`], refused with `refusal`.
    pub(crate) fn invalid(&mut self, refusal: EdgeError) -> EdgeError {
        self.label = Some(INVALID);
        refusal
    }

    /// The label the request is counted under.
    #[cfg(test)]
    pub(crate) fn current(&self) -> Option<&'static str> {
        self.label
    }

    /// Counts the request in `metrics`, with the time from its start to now, when it
    /// has a label.
    pub(crate) fn count(&self, metrics: &Metrics) {
        if let Some(label) = self.label {
            metrics.observe_request(label, self.started);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use axum::body::Body;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use crate::mcp::edge::envelope::Envelope;

    fn decoded(envelope: Envelope, json_post: bool) -> Decoded {
        Decoded {
            envelope,
            json_post,
            bytes: None,
            body: Body::empty(),
        }
    }

    fn post(body: &str) -> Decoded {
        decoded(Envelope::parse(body.as_bytes(), None).unwrap(), true)
    }

    #[test]
    fn known_methods_are_labels_and_client_text_never_is() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
        assert_eq!(label(&post(call)), Some("tools/call"));
        let own = r#"{"jsonrpc":"2.0","id":1,"method":"my/own/method"}"#;
        assert_eq!(label(&post(own)), Some("other"));
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        assert_eq!(label(&post(answer)), Some("response"));
        assert_eq!(
            label(&decoded(Envelope::from_headers(None), false)),
            None,
            "GET and DELETE"
        );
    }

    #[test]
    fn the_span_gets_the_method_and_a_handle_fingerprint_never_the_handle() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(lines.clone())
            .finish();
        let handle = crate::ids::mint();
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"counter",
            "arguments":{{"session_id":"{handle}"}}}}}}"#
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!(
                "request",
                mcp_method = tracing::field::Empty,
                session_id = tracing::field::Empty,
            );
            let _entered = span.enter();
            label(&post(&body));
            tracing::debug!("answered");
        });
        let logged = lines.text();
        assert!(logged.contains(r#""mcp_method":"tools/call""#), "{logged}");
        assert!(
            logged.contains(&crate::ids::fingerprint(&handle)),
            "{logged}"
        );
        assert!(!logged.contains(&handle), "{logged}");
    }

    #[test]
    fn a_request_is_counted_under_its_last_label() {
        let mut meter = Meter::start();
        assert_eq!(meter.current(), None);
        meter.label(Some("tools/call"));
        assert_eq!(meter.current(), Some("tools/call"));
        let refusal = meter.invalid(EdgeError::InvalidRequest("x".into()));
        assert_eq!(refusal, EdgeError::InvalidRequest("x".into()));
        assert_eq!(meter.current(), Some(INVALID));
    }

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }
}
