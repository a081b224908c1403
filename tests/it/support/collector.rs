//! An OTLP/HTTP trace collector on a loopback port: it decodes each
//! `ExportTraceServiceRequest` (protobuf) replicas post to `/v1/traces` and keeps its
//! spans, each with the `service.instance.id` of the replica that sent it.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
};
use prost::Message;

/// One exported span, as the collector keeps it.
#[derive(Debug, Clone)]
pub struct Span {
    /// The span's name.
    pub name: String,
    /// Trace id, in hex.
    pub trace_id: String,
    /// Span id, in hex.
    pub span_id: String,
    /// The parent's span id in hex, empty for a root.
    pub parent_span_id: String,
    /// The OTLP span kind (2 = server, 3 = client).
    pub kind: i32,
    /// Its attributes, values rendered as strings.
    pub attributes: Vec<(String, String)>,
    /// Its resource's attributes.
    pub resource: Vec<(String, String)>,
}

impl Span {
    /// The value of attribute `key`, if it has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        find(&self.attributes, key)
    }

    /// The value of resource attribute `key`, if it has it.
    pub fn resource(&self, key: &str) -> Option<&str> {
        find(&self.resource, key)
    }
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The collector; stops serving when dropped.
pub struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    endpoint: String,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Starts one on a free loopback port.
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            spans,
            endpoint,
            server,
        }
    }

    /// Its base URL, for `telemetry.otlp_endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans received so far in trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn export(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut kept = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| pairs(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Span {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: pairs(&span.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    ""
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
