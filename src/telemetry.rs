//! The one tracing subscriber of the process: text or JSON lines, filtered by
//! `RUST_LOG` or `telemetry.filter`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global subscriber. A second call (tests building several replicas in one
/// process) is a no-op.
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.filter.as_str()));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
    };
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
            _ => Self(crate::ids::mint()[..16].to_owned()),
        }
    }
}
