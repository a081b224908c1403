//! `[telemetry]`: the log format, the default `tracing` filter, and the OpenTelemetry
//! trace export (off unless `otlp_endpoint` is set) with its own filter.

use serde::Deserialize;

/// Logging and trace export settings.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `text` or `json` (one JSON object per line).
    pub format: LogFormat,
    /// Default `tracing` filter of the log lines; `RUST_LOG` overrides it.
    pub filter: String,
    /// The OTLP/HTTP collector spans are exported to (`http://host:4318`, to which
    /// `/v1/traces` is added unless the path already ends so). Empty = no traces.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// The `tracing` filter of the exported spans, independent of the log filter (and
    /// of `RUST_LOG`).
    #[serde(default = "default_trace_filter")]
    pub trace_filter: String,
}

fn default_trace_filter() -> String {
    "stateful_mcp::otel=info".to_owned()
}

impl TelemetrySettings {
    /// Whether spans are exported.
    pub fn traces_enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
