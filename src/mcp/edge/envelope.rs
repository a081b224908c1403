//! [`Envelope`]: what the edge needs to know of a request (method, id, protocol era,
//! session, tool), read from the body in one pass before rmcp parses it for itself.
//!
//! The body is deserialized once into borrowed, lenient shapes: values the edge does
//! not need are skipped without being built, and a field of an unexpected type is
//! recorded as such instead of failing the whole request (rmcp and the tools give those
//! their own, more precise errors); those shapes are in `envelope/wire.rs`.

use self::wire::{Shape, Wire};
use crate::{
    mcp::error::EdgeError,
    telemetry::propagation::{self, TraceCarrier},
};

#[cfg(test)]
mod oracle;
mod wire;

/// The first protocol revision without `initialize` and transport sessions.
pub const STATELESS_ERA: &str = "2026-07-28";
/// The revision a request without any version signal speaks.
const DEFAULT_ERA: &str = "2025-03-26";
/// Longest string the edge keeps from a body (method, tool name, version); longer ones
/// are treated as absent or unknown.
const MAX_FIELD: usize = 128;

/// Longest `idempotencyKey`, in characters.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The methods of the MCP revisions this server speaks. Only these become metric labels.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/update",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
];

/// What one request is, as far as the edge is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The JSON-RPC method, for requests and notifications.
    pub method: Option<String>,
    /// Whether the message carries an `id` (a request, or a response to the server).
    pub has_id: bool,
    /// Whether the message follows the session-based (2025-era) lifecycle, classified
    /// exactly as rmcp routes it: an `initialize` request always; another request
    /// unless its `_meta` carries a protocol version and client capabilities rmcp
    /// decodes, or its version (`_meta`, else the header) is 2026-07-28 or later; a
    /// notification or a response by the header alone (rmcp reads no `_meta` of
    /// theirs). The edge confirms the `Mcp-Session-Id` a message names whatever this
    /// says (`route.rs`); it decides what else the message is served as.
    pub legacy: bool,
    /// `params.name` (the tool of a `tools/call`).
    pub tool: Option<String>,
    /// `params.arguments.session_id` (a 2026-07-28 handle), when it is a string.
    pub handle: Option<String>,
    /// `params.idempotencyKey` of a `tools/call` (SEP-3182).
    pub idempotency_key: Option<String>,
    /// The JSON-RPC `id`: an integer always, a string (at most 128 bytes) only while
    /// traces are exported (it is read for them alone).
    pub id: Option<JsonRpcId>,
    /// `params._meta`'s trace context, read only while traces are exported.
    pub trace: TraceCarrier,
}

/// A request's JSON-RPC `id`, as far as the edge keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonRpcId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl Envelope {
    /// The envelope of a request without a body (GET, DELETE): only headers speak.
    pub fn from_headers(header_version: Option<&str>) -> Self {
        Self {
            legacy: header_version.unwrap_or(DEFAULT_ERA) < STATELESS_ERA,
            ..Self::default()
        }
    }

    /// Reads a POST body.
    ///
    /// # Errors
    /// [`EdgeError::Parse`] when the body is not JSON, [`EdgeError::InvalidRequest`]
    /// when it is JSON but not a JSON-RPC 2.0 message.
    pub fn parse(body: &[u8], header_version: Option<&str>) -> Result<Self, EdgeError> {
        let wire: Wire<'_> = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                EdgeError::InvalidRequest(format!("not a JSON-RPC message: {e}"))
            } else {
                EdgeError::Parse(e.to_string())
            }
        })?;
        if wire.jsonrpc.as_str() != Some("2.0") {
            return Err(EdgeError::InvalidRequest(
                "`jsonrpc` must be \"2.0\"".to_owned(),
            ));
        }
        let method = match wire.method {
            Shape::Absent => None,
            Shape::Str(m) if m.len() <= MAX_FIELD => Some(m.into_owned()),
            _ => {
                return Err(EdgeError::InvalidRequest(
                    "`method` must be a short string".to_owned(),
                ));
            }
        };
        let has_id = !matches!(wire.id, Shape::Absent);
        let traced = crate::telemetry::traces_on();
        let id = match &wire.id {
            Shape::Int(n) => Some(JsonRpcId::Int(*n)),
            Shape::Str(s) if traced && s.len() <= MAX_FIELD => Some(JsonRpcId::Str(s.to_string())),
            _ => None,
        };
        if method.is_none() && !(has_id && (wire.result || wire.error)) {
            return Err(EdgeError::InvalidRequest(
                "a message needs a `method`, or an `id` with a `result` or an `error`".to_owned(),
            ));
        }
        let params = wire.params.unwrap_or_default();
        let idempotency_key = match params.idempotency_key {
            Shape::Absent => None,
            Shape::Str(k) if (1..=MAX_IDEMPOTENCY_KEY).contains(&k.chars().count()) => {
                Some(k.into_owned())
            }
            _ => return Err(EdgeError::InvalidIdempotencyKey),
        };
        let meta = params.meta.unwrap_or_default();
        // rmcp's shapes: a request has a `method` and an `id`, a notification a
        // `method` alone, and anything with a `result` or an `error` beside a `method`
        // is no message rmcp accepts (whatever the edge says of it).
        let request = has_id && !wire.result && !wire.error;
        let legacy = match method.as_deref() {
            Some("initialize") if request => true,
            Some(_) if request => {
                let per_request =
                    matches!(meta.protocol_version, Shape::Str(_)) && meta.client_capabilities;
                let version = meta
                    .protocol_version
                    .as_str()
                    .or(header_version)
                    .unwrap_or(DEFAULT_ERA);
                !per_request && version < STATELESS_ERA
            }
            // Notifications and responses: rmcp reads no `_meta` of theirs, only the
            // header.
            _ => header_version.unwrap_or(DEFAULT_ERA) < STATELESS_ERA,
        };
        let short = |s: Shape<'_>| {
            s.as_str()
                .filter(|s| s.len() <= MAX_FIELD)
                .map(str::to_owned)
        };
        let kept = |s: &Shape<'_>, key: &str| {
            s.as_str()
                .filter(|s| traced && s.len() <= propagation::max_len(key))
                .map(str::to_owned)
        };
        let trace = TraceCarrier {
            traceparent: kept(&meta.traceparent, propagation::TRACEPARENT),
            tracestate: kept(&meta.tracestate, propagation::TRACESTATE),
            baggage: kept(&meta.baggage, propagation::BAGGAGE),
        };
        Ok(Self {
            method,
            has_id,
            id,
            trace,
            legacy,
            tool: short(params.name),
            handle: params
                .arguments
                .and_then(|a| short(a.session_id))
                .filter(|h| crate::ids::is_well_formed(h)),
            idempotency_key,
        })
    }

    /// The metric label of this request: a known MCP method, `other` for any other
    /// method, `response` for a client's answer to a server request. Never a string the
    /// client chose.
    pub fn method_label(&self) -> &'static str {
        match &self.method {
            Some(m) => KNOWN_METHODS
                .iter()
                .find(|k| **k == m.as_str())
                .copied()
                .unwrap_or("other"),
            None if self.has_id => "response",
            None => "other",
        }
    }
}

/// Decodes `body` as the edge does and checks what the rest of the server relies on,
/// panicking when a property breaks: this is the fuzz target's oracle (`fuzz/`).
///
/// - decoding never panics, whatever the bytes;
/// - a body that is not JSON is never accepted;
/// - everything kept is bounded: method, tool and version strings (and a string id) at
///   most [`MAX_FIELD`] bytes, an idempotency key 1..=255 characters, a handle only when
///   it is a well-formed server id, `_meta`'s trace context within its bounds;
/// - the metric label is a known method, `other` or `response`, never client text;
/// - every refusal renders as an HTTP response with a 4xx status.
#[doc(hidden)]
pub fn check_decoder(body: &[u8], header_version: Option<&str>) {
    use axum::response::IntoResponse;
    match Envelope::parse(body, header_version) {
        Ok(envelope) => {
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
                "accepted a body that is not JSON"
            );
            for field in [&envelope.method, &envelope.tool] {
                assert!(field.as_ref().is_none_or(|s| s.len() <= MAX_FIELD));
            }
            if let Some(key) = &envelope.idempotency_key {
                assert!((1..=MAX_IDEMPOTENCY_KEY).contains(&key.chars().count()));
            }
            if let Some(handle) = &envelope.handle {
                assert!(crate::ids::is_well_formed(handle));
            }
            let trace = &envelope.trace;
            for (key, value) in [
                (propagation::TRACEPARENT, &trace.traceparent),
                (propagation::TRACESTATE, &trace.tracestate),
                (propagation::BAGGAGE, &trace.baggage),
            ] {
                assert!(
                    value
                        .as_ref()
                        .is_none_or(|v| v.len() <= propagation::max_len(key))
                );
            }
            if let Some(JsonRpcId::Str(id)) = &envelope.id {
                assert!(id.len() <= MAX_FIELD);
            }
            let label = envelope.method_label();
            assert!(
                KNOWN_METHODS.contains(&label) || label == "other" || label == "response",
                "metric label {label:?} is client text"
            );
        }
        Err(error) => {
            let status = error.into_response().status();
            assert!(status.is_client_error(), "a refusal answered {status}");
        }
    }
}

#[cfg(test)]
mod tests {

    /// A subscriber under which traces count as exported (a layer takes the server's
    /// spans), as the OTLP layer makes them.
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        use tracing_subscriber::{Layer, prelude::*};
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::EnvFilter::new(
                "stateful_mcp::otel=info",
            ));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f)
    }

    #[test]
    fn meta_trace_context_is_read_only_while_traced_and_within_bounds() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":"r-1","method":"ping","params":{{"_meta":{{
            "traceparent":"{parent}","tracestate":"{}","baggage":"k=v"}}}}}}"#,
            "a".repeat(600)
        );
        let env = traced(|| parse(&body)).unwrap();
        assert_eq!(env.trace.traceparent.as_deref(), Some(parent));
        assert_eq!(env.trace.tracestate, None, "longer than 512: ignored");
        assert_eq!(env.trace.baggage.as_deref(), Some("k=v"));
        assert_eq!(env.id, Some(JsonRpcId::Str("r-1".to_owned())));
        // Not traced: nothing kept (nothing allocated for it), but an integer id.
        let env = parse(&body).unwrap();
        assert_eq!(env.trace, TraceCarrier::default());
        assert_eq!(env.id, None);
        let env = parse(r#"{"jsonrpc":"2.0","id":42,"method":"ping"}"#).unwrap();
        assert_eq!(env.id, Some(JsonRpcId::Int(42)));
    }
    use super::*;

    fn parse(body: &str) -> Result<Envelope, EdgeError> {
        Envelope::parse(body.as_bytes(), None)
    }

    #[test]
    fn a_2026_tool_call_is_stateless_and_names_its_tool_and_handle() {
        let handle = crate::ids::mint();
        let env = parse(&format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"counter",
            "arguments":{{"operation":"get","session_id":"{handle}","deep":[{{"a":[1,2]}}]}},
            "_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        ))
        .unwrap();
        assert_eq!(env.method.as_deref(), Some("tools/call"));
        assert!(env.has_id);
        assert!(!env.legacy);
        assert_eq!(env.tool.as_deref(), Some("counter"));
        assert_eq!(env.handle.as_deref(), Some(handle.as_str()));
        assert_eq!(env.method_label(), "tools/call");
    }

    #[test]
    fn the_era_follows_rmcp_routing() {
        let legacy = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert!(parse(legacy).unwrap().legacy);
        assert!(
            !Envelope::parse(legacy.as_bytes(), Some("2026-07-28"))
                .unwrap()
                .legacy
        );
        // `initialize` is legacy whatever the header says.
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        assert!(
            Envelope::parse(init.as_bytes(), Some("2026-07-28"))
                .unwrap()
                .legacy
        );
        // Per-request signals route statelessly even when they name a 2025 version.
        let meta = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
            "io.modelcontextprotocol/protocolVersion":"2025-11-25",
            "io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        assert!(!parse(meta).unwrap().legacy);
        assert!(Envelope::from_headers(None).legacy);
        assert!(!Envelope::from_headers(Some("2026-07-28")).legacy);
    }

    #[test]
    fn malformed_bodies_are_parse_errors_and_other_json_is_an_invalid_request() {
        for body in [r#"{"jsonrpc":"2.0","id":1,"method":"#, "", "{} x", "nope"] {
            assert!(matches!(parse(body), Err(EdgeError::Parse(_))), "{body}");
        }
        for body in [
            r#"{"hello":"world"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#""ping""#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
        ] {
            assert!(
                matches!(parse(body), Err(EdgeError::InvalidRequest(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn fields_of_unexpected_types_are_left_to_rmcp_and_the_tools() {
        let env = parse(
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call",
            "params":{"name":5,"arguments":{"session_id":{"x":1}}}}"#,
        )
        .unwrap();
        assert_eq!((env.tool, env.handle), (None, None));
        let env = parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1,2]}"#).unwrap();
        assert_eq!(env.method.as_deref(), Some("ping"));
        // A handle that is not one of ours is not recorded.
        let env = parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"counter","arguments":{"session_id":"aaaa"}}}"#,
        )
        .unwrap();
        assert_eq!(env.handle, None);
    }

    #[test]
    fn only_known_methods_become_labels() {
        let label = |body: &str| parse(body).unwrap().method_label();
        assert_eq!(label(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), "ping");
        assert_eq!(
            label("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\\n# EOF\"}"),
            "other"
        );
        assert_eq!(label(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#), "response");
        assert_eq!(
            label(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            "notifications/initialized"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused_and_labels_stay_known(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            header in proptest::option::of("[0-9-]{0,12}"),
        ) {
            if let Ok(env) = Envelope::parse(&body, header.as_deref()) {
                let label = env.method_label();
                proptest::prop_assert!(
                    KNOWN_METHODS.contains(&label) || label == "other" || label == "response"
                );
                proptest::prop_assert!(env.handle.iter().all(|h| crate::ids::is_well_formed(h)));
                proptest::prop_assert!(env.tool.iter().all(|t| t.len() <= MAX_FIELD));
            }
        }
    }
}
