//! `[telemetry]`: the log format, the default `tracing` filter, and the OpenTelemetry
//! trace export (off unless `otlp_endpoint` is set) with its own filter.

use serde::Deserialize;

use super::ConfigError;

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

    /// Checks the trace export keys, so a bad one stops the replica (and
    /// `check-config`) instead of leaving it running without traces.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `telemetry.otlp_endpoint` (not an `http://` URL:
    /// the exporter has no TLS) or `telemetry.trace_filter` (not a `tracing` filter).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.traces_enabled() {
            return Ok(());
        }
        let endpoint = self.otlp_endpoint.trim();
        let url = endpoint.parse::<http::Uri>().ok();
        if !url.is_some_and(|u| u.scheme_str() == Some("http") && u.authority().is_some()) {
            return Err(ConfigError::Invalid {
                key: "telemetry.otlp_endpoint",
                reason: "must be the http:// URL of an OTLP/HTTP collector (the exporter speaks \
                         plain HTTP: run the collector beside the replica or on its private \
                         network)"
                    .into(),
            });
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(self.trace_filter.as_str())
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid {
                key: "telemetry.trace_filter",
                reason: format!("is not a tracing filter: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporting(endpoint: &str, filter: &str) -> TelemetrySettings {
        TelemetrySettings {
            format: LogFormat::Text,
            filter: "info".to_owned(),
            otlp_endpoint: endpoint.to_owned(),
            trace_filter: filter.to_owned(),
        }
    }

    #[test]
    fn a_bad_endpoint_or_trace_filter_is_refused_by_name() {
        assert!(exporting("", "[[[").validate().is_ok(), "off: not read");
        assert!(
            exporting("http://collector:4318", "stateful_mcp::otel=info")
                .validate()
                .is_ok()
        );
        for (endpoint, filter, key) in [
            ("collector:4318", "info", "telemetry.otlp_endpoint"),
            ("ftp://collector", "info", "telemetry.otlp_endpoint"),
            ("https://collector:4318", "info", "telemetry.otlp_endpoint"),
            (
                "http://collector:4318",
                "stateful_mcp::otel=loud",
                "telemetry.trace_filter",
            ),
        ] {
            match exporting(endpoint, filter).validate() {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{endpoint} {filter}: {other:?}"),
            }
        }
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
