//! The one tracing subscriber of the process: log lines (text or JSON) filtered by
//! `RUST_LOG` or `telemetry.filter`, and, when `telemetry.otlp_endpoint` is set,
//! OpenTelemetry spans exported over OTLP/HTTP, filtered by `telemetry.trace_filter`
//! alone (a quiet log keeps whole traces).
//!
//! The server's spans for traces are under the target [`OTEL_TARGET`], which the log
//! filter always turns off: without the exporter no layer enables them, so their
//! callsites stay disabled and a request builds none of them. `otlp.rs` builds the
//! exporter, `propagation.rs` reads and writes W3C trace context (`traceparent`,
//! `tracestate`, `baggage`) within bounds.

use tracing_subscriber::{EnvFilter, Layer, filter::Directive, fmt, prelude::*};

use crate::config::{LogFormat, TelemetrySettings};

mod otlp;
pub(crate) mod propagation;

/// The target of the spans exported as traces (HTTP request, MCP method, forward hop,
/// Redis round trip, task run); the log lines never show them.
pub const OTEL_TARGET: &str = "stateful_mcp::otel";

/// The OpenTelemetry service name of the replicas.
pub const SERVICE_NAME: &str = "stateful-mcp";

/// Whether spans are exported (the layer exporting them is installed and its filter
/// takes the server's spans): what is read only for them is left unread otherwise.
pub fn traces_on() -> bool {
    tracing::enabled!(target: OTEL_TARGET, tracing::Level::INFO)
}

/// What [`init`] started; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[must_use = "dropping it exports nothing more: call shutdown on a graceful stop"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter (a graceful stop's last
    /// step). Blocks until the collector answered or the export timed out: call it from
    /// a blocking thread, not a runtime's worker.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "spans not exported at shutdown");
        }
    }
}

/// Installs the global subscriber for replica `replica_id` (`service.instance.id` of
/// its spans). A second call (tests building several replicas in one process) installs
/// nothing and exports nothing: the first subscriber stays.
///
/// Must run within a Tokio runtime when `telemetry.otlp_endpoint` is set: the exporter
/// sends on it.
pub fn init(settings: &TelemetrySettings, replica_id: &str) -> Telemetry {
    let logs = log_filter(settings);
    let (traces, provider) = match otlp::layer(settings, replica_id) {
        Ok(Some((layer, provider))) => (Some(layer), Some(provider)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("stateful-mcp: traces are not exported: {e}");
            (None, None)
        }
    };
    let registry = tracing_subscriber::registry();
    // Without the exporter, the log filter is the subscriber's global filter, as if
    // traces did not exist: every callsite it turns off is disabled once and for all.
    // With it, each layer has its own filter (a quiet log, whole traces), which costs a
    // per-layer check on the callsites either enables.
    let installed = match (traces, settings.format) {
        (None, LogFormat::Json) => registry
            .with(logs)
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        (None, LogFormat::Text) => registry.with(logs).with(fmt::layer()).try_init(),
        (Some(traces), LogFormat::Json) => registry
            .with(traces)
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(logs),
            )
            .try_init(),
        (Some(traces), LogFormat::Text) => registry
            .with(traces)
            .with(fmt::layer().with_filter(logs))
            .try_init(),
    };
    match (installed, provider) {
        (Ok(()), provider) => Telemetry { provider },
        (Err(_), Some(provider)) => {
            // Another subscriber was there first: this exporter would get no span.
            let _ = provider.shutdown();
            Telemetry { provider: None }
        }
        (Err(_), None) => Telemetry { provider: None },
    }
}

/// The filter of the log lines: `RUST_LOG`, else `telemetry.filter`, and never the
/// spans of [`OTEL_TARGET`].
fn log_filter(settings: &TelemetrySettings) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.filter.as_str()));
    match format!("{OTEL_TARGET}=off").parse::<Directive>() {
        Ok(off) => filter.add_directive(off),
        Err(_) => filter,
    }
}

/// The id of one HTTP request: the caller's `x-request-id` when it is a short visible
/// ASCII string, else minted here. Put in the request's extensions so tool handlers can
/// log it; echoed in the `x-request-id` response header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// Takes the caller's id if usable, else mints one.
    pub fn from_header(value: Option<&str>) -> Self {
        match value {
            Some(v)
                if !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Self(v.to_owned())
            }
            _ => Self::mint(),
        }
    }

    /// 16 hex digits: 32 random bits drawn once per process, then a counter. A request
    /// id only tells requests apart in logs (a caller may pick its own), so it needs no
    /// secret; minting each from the operating system's random source cost a system
    /// call per request.
    fn mint() -> Self {
        static PROCESS: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| crate::ids::mint()[..8].to_owned());
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(format!("{}{n:08x}", *PROCESS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_callers_when_usable_else_distinct_minted_ones() {
        assert_eq!(RequestId::from_header(Some("abc-1")).0, "abc-1");
        let a = RequestId::from_header(None).0;
        let b = RequestId::from_header(Some("bad id")).0;
        let long = "x".repeat(65);
        let c = RequestId::from_header(Some(&long)).0;
        for id in [&a, &b, &c] {
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        assert!(a != b && b != c && a != c);
        assert_eq!(a[..8], b[..8], "one process, one prefix");
    }

    fn settings() -> TelemetrySettings {
        TelemetrySettings {
            format: LogFormat::Text,
            filter: "trace".to_owned(),
            otlp_endpoint: String::new(),
            trace_filter: "stateful_mcp::otel=info".to_owned(),
        }
    }

    /// Under the current subscriber, the exported spans are disabled and logged ones
    /// are not.
    fn exported_spans_are_off() {
        let span = tracing::info_span!(target: OTEL_TARGET, "request");
        assert!(
            span.is_disabled(),
            "the log filter turned an exported span on"
        );
        assert!(!traces_on());
        assert!(!tracing::error_span!("logged").is_disabled());
    }

    #[test]
    fn without_the_exporter_the_exported_spans_are_disabled_callsites() {
        // As `init` builds it without the exporter: the log filter is global.
        let global = tracing_subscriber::registry()
            .with(log_filter(&settings()))
            .with(fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(global, exported_spans_are_off);
        // And as a layer's own filter, as beside the exporter.
        let logs = fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(log_filter(&settings()));
        let per_layer = tracing_subscriber::registry().with(logs);
        tracing::subscriber::with_default(per_layer, exported_spans_are_off);
    }

    #[test]
    fn the_trace_filter_alone_chooses_the_exported_spans() {
        // A stand-in for the exporting layer, with the trace filter; the log filter
        // quiet (a RUST_LOG=warn deployment).
        let quiet = TelemetrySettings {
            filter: "warn".to_owned(),
            ..settings()
        };
        let traces = fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(EnvFilter::new(quiet.trace_filter.as_str()));
        let logs = fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(log_filter(&quiet));
        let subscriber = tracing_subscriber::registry().with(traces).with(logs);
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::info_span!(target: OTEL_TARGET, "request").is_disabled());
            assert!(traces_on());
        });
    }
}
