//! Step 2 for traces: the request's exported span (`http.rs`) takes the parent its
//! `params._meta` names (`traceparent`, `tracestate`, `baggage`), which wins over its
//! headers', except on a request another replica forwarded, whose parent is that
//! replica's hop; and the MCP method's span begins, named and described as
//! OpenTelemetry's MCP conventions say. Nothing here runs while traces are not
//! exported: the span is then disabled and the envelope carries no trace context.

use http::request::Parts;

use super::envelope::{Envelope, JsonRpcId};
use crate::{
    mcp::transport::forward::FORWARDED_HEADER,
    telemetry::{OTEL_TARGET, propagation},
};

/// The span of the request's MCP method, a child of the request's span, after giving
/// that one its `_meta` parent.
pub(super) fn method_span(parts: &Parts, envelope: &Envelope) -> tracing::Span {
    // Before the method's span is made: a child starts the request's span, and a
    // started span keeps its parent. (The envelope carries no trace context while
    // traces are not exported.)
    if !parts.headers.contains_key(FORWARDED_HEADER)
        && let Some(parent) = envelope.trace.context()
    {
        propagation::set_parent(&tracing::Span::current(), parent);
    }
    let method = envelope.method_label();
    let span = tracing::info_span!(
        target: OTEL_TARGET,
        "mcp.request",
        otel.name = tracing::field::Empty,
        mcp.method.name = method,
        gen_ai.tool.name = tracing::field::Empty,
        gen_ai.operation.name = tracing::field::Empty,
        jsonrpc.request.id = tracing::field::Empty,
        mcp.session.id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    match (&envelope.tool, method) {
        (Some(tool), "tools/call") => {
            span.record("otel.name", format!("{method} {tool}"));
            span.record("gen_ai.tool.name", tool.as_str());
            span.record("gen_ai.operation.name", "execute_tool");
        }
        _ => {
            span.record("otel.name", method);
        }
    }
    match &envelope.id {
        Some(JsonRpcId::Int(id)) => {
            span.record("jsonrpc.request.id", id.to_string());
        }
        Some(JsonRpcId::Str(id)) => {
            span.record("jsonrpc.request.id", id.as_str());
        }
        None => {}
    }
    // Ids never leave the replica: the session (a 2025-era transport session, else a
    // 2026-07-28 handle) is named by its fingerprint.
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| crate::ids::is_well_formed(v))
        .or(envelope.handle.as_deref());
    if let Some(session) = session {
        span.record("mcp.session.id", crate::ids::fingerprint(session));
    }
    span
}
