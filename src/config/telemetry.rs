//! `[telemetry]`: the log format and the default `tracing` filter.

use serde::Deserialize;

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `text` or `json` (one JSON object per line).
    pub format: LogFormat,
    /// Default `tracing` filter; `RUST_LOG` overrides it.
    pub filter: String,
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
