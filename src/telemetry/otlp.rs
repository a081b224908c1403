//! The OTLP/HTTP (protobuf) export of spans: the tracer provider with the replica's
//! resource (`service.name`, `service.version`, `service.instance.id`, then
//! `OTEL_RESOURCE_ATTRIBUTES`), the sampler of `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` and the batch settings of `OTEL_BSP_*` (both read by the
//! SDK), and the HTTP client the batch exporter sends with.

use std::time::Duration;

use axum::body::Body;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::TelemetrySettings;

/// Longest collector answer read (it says how many spans it refused, and why).
const MAX_RESPONSE: usize = 64 * 1024;

/// How long one export may take, answer included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The layer exporting spans, filtered by `telemetry.trace_filter`.
pub(super) type TraceLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The span-exporting layer and its provider, or `None` when `telemetry.otlp_endpoint`
/// is empty.
///
/// # Errors
/// A bad endpoint or trace filter, or no Tokio runtime to send on.
pub(super) fn layer(
    settings: &TelemetrySettings,
    replica_id: &str,
) -> Result<Option<(TraceLayer, SdkTracerProvider)>, String> {
    if !settings.traces_enabled() {
        return Ok(None);
    }
    let filter = EnvFilter::builder()
        .parse(settings.trace_filter.as_str())
        .map_err(|e| format!("telemetry.trace_filter: {e}"))?;
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "no Tokio runtime to export spans on".to_owned())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(&settings.otlp_endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(SpawningClient::new(handle))
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(replica_id))
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer(super::SERVICE_NAME);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // A span starts when its first child does or it ends, not when entered: the
        // edge can still give the request's span the parent its `_meta` names once
        // the body is read. Nothing else here reads the active OpenTelemetry context.
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_level(false)
        .with_target(false)
        .with_filter(filter);
    Ok(Some((Box::new(layer), provider)))
}

/// `endpoint` with `/v1/traces` added unless its path already ends so.
fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

/// The replica's resource: `OTEL_RESOURCE_ATTRIBUTES` (and `OTEL_SERVICE_NAME`) first,
/// then the service name (unless `OTEL_SERVICE_NAME` names one), the crate's version
/// and the replica id, which no variable overrides.
fn resource(replica_id: &str) -> Resource {
    let builder = Resource::builder();
    let builder = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder
    } else {
        builder.with_service_name(super::SERVICE_NAME)
    };
    builder
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", replica_id.to_owned()),
        ])
        .build()
}

/// Sends the exporter's requests on the Tokio runtime the replica runs on: the batch
/// exporter calls from its own thread, outside any runtime, where hyper cannot run.
#[derive(Debug)]
struct SpawningClient {
    handle: tokio::runtime::Handle,
    client: Client<HttpConnector, Body>,
}

impl SpawningClient {
    fn new(handle: tokio::runtime::Handle) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { handle, client }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for SpawningClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let send = async move {
            let response = client.request(request.map(Body::from)).await?;
            let (head, body) = response.into_parts();
            let body = axum::body::to_bytes(Body::new(body), MAX_RESPONSE).await?;
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(head, body))
        };
        // The timer too is made on the runtime: this thread has none.
        let sent = self
            .handle
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, send).await });
        match sent.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the collector did not answer in time".into()),
            Err(e) => Err(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
