//! W3C trace context in and out: `traceparent`, `tracestate` and `baggage` read from a
//! request's headers or its `params._meta` ([`TraceCarrier`]), and written into the
//! headers of a hop to another replica. Every value read is bounded in length (a
//! longer one is ignored) and parsed by the OpenTelemetry propagators, which refuse
//! malformed values without panicking: a client's junk starts a new trace.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    baggage::BaggageExt,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context header (and `_meta` key).
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state header (and `_meta` key).
pub const TRACESTATE: &str = "tracestate";
/// The W3C baggage header (and `_meta` key).
pub const BAGGAGE: &str = "baggage";

/// The longest value read of each key: a version-00 `traceparent` has 55 characters
/// (later versions may append fields); W3C asks that at least 512 characters of a
/// `tracestate` be propagated, and a `baggage` is kept to 2 KiB here.
pub const fn max_len(key: &str) -> usize {
    match key.as_bytes() {
        b"traceparent" => 128,
        b"tracestate" => 512,
        b"baggage" => 2048,
        _ => 0,
    }
}

/// The trace context a request's `params._meta` carries, each value within
/// [`max_len`] (a longer one is left out when the body is read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceCarrier {
    /// `_meta.traceparent`.
    pub traceparent: Option<String>,
    /// `_meta.tracestate`.
    pub tracestate: Option<String>,
    /// `_meta.baggage`.
    pub baggage: Option<String>,
}

impl TraceCarrier {
    /// The remote parent it names, or `None` when it names no valid one.
    pub fn context(&self) -> Option<Context> {
        // The common case costs nothing: no parent named, none looked for.
        self.traceparent.as_ref()?;
        extract(self)
    }
}

impl Extractor for TraceCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            BAGGAGE => self.baggage.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE, BAGGAGE]
    }
}

/// A request's headers, read within [`max_len`].
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        if value.len() > max_len(key) {
            return None;
        }
        value.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE, BAGGAGE]
    }
}

struct HeadersOut<'a>(&'a mut HeaderMap);

impl Injector for HeadersOut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent `headers` name, or `None` when they name no valid one.
pub fn from_headers(headers: &HeaderMap) -> Option<Context> {
    if !headers.contains_key(TRACEPARENT) {
        return None;
    }
    extract(&Headers(headers))
}

fn extract(carrier: &dyn Extractor) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(carrier);
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let cx = BaggagePropagator::new().extract_with_context(&cx, carrier);
    Some(cx)
}

/// Makes `cx` the parent of `span` (the span of a request, before any child of it
/// starts); nothing when the span is not exported.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    if !span.is_disabled() {
        let _ = span.set_parent(cx);
    }
}

/// Replaces the trace context in `headers` with `span`'s, so the receiver's spans join
/// its trace as its children; a span not exported leaves `headers` as they are.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    for name in [TRACEPARENT, TRACESTATE, BAGGAGE] {
        headers.remove(name);
    }
    let mut out = HeadersOut(headers);
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    if !cx.baggage().is_empty() {
        BaggagePropagator::new().inject_context(&cx, &mut out);
    }
}

/// `span`'s W3C `traceparent`, to keep beside what outlives it (a task record); `None`
/// when the span is not exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = Traceparent(None);
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

/// The remote parent a kept `traceparent` names.
pub fn from_traceparent(traceparent: &str) -> Option<Context> {
    TraceCarrier {
        traceparent: Some(traceparent.to_owned()),
        ..TraceCarrier::default()
    }
    .context()
}

struct Traceparent(Option<String>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT && value.len() <= max_len(TRACEPARENT) {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_header_names_the_parent() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        let cx = from_headers(&headers).expect("a parent");
        let parent = cx.span().span_context().clone();
        assert_eq!(
            parent.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(parent.is_remote());
    }

    #[test]
    fn junk_and_overlong_values_name_no_parent() {
        let long = format!("{PARENT}-{}", "a".repeat(200));
        for bad in [
            "",
            "00-",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "\u{e9}\u{e9}",
            long.as_str(),
        ] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(bad) {
                headers.insert(TRACEPARENT, value);
            }
            assert!(from_headers(&headers).is_none(), "{bad:?}");
            let carrier = TraceCarrier {
                traceparent: Some(bad.to_owned()),
                tracestate: Some("x".repeat(5000)),
                baggage: Some("=;=,,".repeat(100)),
            };
            assert!(carrier.context().is_none(), "{bad:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_bytes(b"00-\xff\xfe").expect("opaque bytes"),
        );
        assert!(from_headers(&headers).is_none());
    }

    #[test]
    fn meta_carries_its_parent_and_baggage() {
        let carrier = TraceCarrier {
            traceparent: Some(PARENT.to_owned()),
            tracestate: None,
            baggage: Some("k=v".to_owned()),
        };
        let cx = carrier.context().expect("a parent");
        assert!(cx.span().span_context().is_valid());
        assert_eq!(
            cx.baggage().get("k").map(|v| v.as_str().to_owned()),
            Some("v".into())
        );
    }
}
