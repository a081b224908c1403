//! Prometheus metrics of one replica, served at `/metrics` in the text format.
//!
//! Every series carries the `replica` label. Request counts and latencies by MCP method
//! are taken where the JSON-RPC body is parsed (latency to the response head: for a
//! streamed response that is when the stream starts); tool latencies are measured around
//! the tool call itself, and a call whose future is dropped before it finishes (the client
//! went away) counts as `cancelled`.
//!
//! This module measures only what it sees itself (requests, tool calls) and keeps the
//! handles other layers update (sessions, listen streams, forwards, store errors). A
//! component whose figures are read at scrape time (the Redis pool, the cache, the CPU
//! pool, managed resources, the task runner) says what it measures in its own module: it
//! implements prometheus-client's [`Collector`] there (with [`encode_gauge`] and
//! [`encode_counter`]) and registers it with [`Metrics::register_collector`] from a
//! `register_metrics` method of its own, which `AppState::build` calls. This module
//! knows no component.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};

/// Labels of per-method series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The JSON-RPC method (`tools/call`, `initialize`, …).
    pub method: String,
}

/// Labels of per-tool latency series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// The tool name.
    pub tool: String,
}

/// Labels of per-tool call counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolOutcomeLabels {
    /// The tool name.
    pub tool: String,
    /// `ok`, `tool_error` (an `isError` result), `error` (a JSON-RPC error) or
    /// `cancelled`.
    pub outcome: &'static str,
}

/// Labels of error counts by component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// `sessions`, `transport`, …
    pub component: &'static str,
}

/// Labels of `request_deadlines_expired_total`: the step that was waiting when the
/// request's deadline passed (a name from the code, never from a client).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `route` (the session touch and the forward), `rate_limit`, `finish`,
    /// `session_create` (a 2025-era session's writes) or `tool`.
    pub step: &'static str,
}

/// The figures of the replica's `subscriptions/listen` streams. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ListenMetrics {
    /// Listen streams open on this replica.
    pub streams: Gauge,
    /// Listen streams refused because the replica held `listen.max_streams`.
    pub refused: Counter,
    /// Listen streams closed because they fell `listen.stream_buffer` notifications
    /// behind.
    pub closed_behind: Counter,
}

/// Labels of forwarded requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// `forwarded` (sent on to the replica holding the session), `unreachable` (that
    /// replica could not be reached), `taken_over` (this replica took the session
    /// over after that), `moved` (a forwarded request for a session held elsewhere) or
    /// `rerouted` (the holder forwarded to answered `moved`: routed once more).
    pub outcome: &'static str,
}

/// The metrics of one replica. Cheap to clone (one reference count: every request
/// clones it).
#[derive(Clone)]
pub struct Metrics(Arc<MetricsInner>);

impl std::ops::Deref for Metrics {
    type Target = MetricsInner;

    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}

/// What [`Metrics`] shares: the registry and the figures code updates directly.
pub struct MetricsInner {
    /// Behind a lock because components register their collectors after the handle
    /// exists (and is cloned); a scrape holds it while it encodes.
    registry: Mutex<Registry>,
    requests: Family<MethodLabels, Counter>,
    request_seconds: Family<MethodLabels, Histogram>,
    tool_calls: Family<ToolOutcomeLabels, Counter>,
    tool_seconds: Family<ToolLabels, Histogram>,
    /// Live sessions of the deployment, refreshed at each scrape.
    pub sessions_active: Gauge,
    /// Sessions this replica created.
    pub sessions_created: Counter,
    /// Expired sessions this replica removed from the session index.
    pub sessions_expired: Counter,
    /// 1 when this replica's last session upkeep round reached the state store, 0 when
    /// it failed (and until the first round ends): the one figure that says "Redis
    /// unreachable" even while no request comes in.
    pub store_reachable: Gauge,
    /// The listen streams.
    pub listen: ListenMetrics,
    /// 2025-era sessions whose worker runs on this replica.
    pub local_sessions: Gauge,
    forwards: Family<ForwardLabels, Counter>,
    store_errors: Family<ComponentLabels, Counter>,
    deadlines_expired: Family<StepLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// A registry for replica `replica_id` on the store `backend` (`memory` or `redis`,
    /// the `build` series' label), with the series this module measures; components add
    /// theirs with [`Metrics::register_collector`].
    pub fn new(replica_id: &str, backend: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "stateful_mcp",
            [("replica".into(), replica_id.to_owned().into())].into_iter(),
        );
        let requests = Family::<MethodLabels, Counter>::default();
        let request_seconds =
            Family::<MethodLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let tool_calls = Family::<ToolOutcomeLabels, Counter>::default();
        let tool_seconds =
            Family::<ToolLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let sessions_active = Gauge::default();
        let sessions_created = Counter::default();
        let sessions_expired = Counter::default();
        let store_reachable = Gauge::default();
        let local_sessions = Gauge::default();
        let forwards = Family::<ForwardLabels, Counter>::default();
        let store_errors = Family::<ComponentLabels, Counter>::default();
        let deadlines_expired = Family::<StepLabels, Counter>::default();
        let listen = ListenMetrics::default();
        registry.register(
            "listen_streams",
            "subscriptions/listen streams open on this replica",
            listen.streams.clone(),
        );
        registry.register(
            "listen_refused",
            "subscriptions/listen streams refused at listen.max_streams",
            listen.refused.clone(),
        );
        registry.register(
            "listen_closed_behind",
            "subscriptions/listen streams closed for falling listen.stream_buffer behind",
            listen.closed_behind.clone(),
        );
        registry.register(
            "mcp_requests",
            "JSON-RPC requests received, by method",
            requests.clone(),
        );
        registry.register(
            "mcp_request_duration_seconds",
            "Time from request to response head, by JSON-RPC method",
            request_seconds.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls by tool and outcome",
            tool_calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call latency, by tool",
            tool_seconds.clone(),
        );
        registry.register(
            "sessions_active",
            "Live sessions of the deployment (read at scrape time)",
            sessions_active.clone(),
        );
        registry.register(
            "sessions_created",
            "Sessions created by this replica",
            sessions_created.clone(),
        );
        registry.register(
            "sessions_expired",
            "Expired sessions this replica removed from the session index",
            sessions_expired.clone(),
        );
        registry.register(
            "store_reachable",
            "1 when the last session upkeep round (every session.maintenance_interval_secs) \
             reached the state store, 0 when it failed",
            store_reachable.clone(),
        );
        registry.register(
            "local_sessions",
            "2025-era sessions whose worker runs on this replica",
            local_sessions.clone(),
        );
        registry.register(
            "session_forwards",
            "2025-era requests for sessions held by another replica, by outcome",
            forwards.clone(),
        );
        registry.register(
            "store_errors",
            "Failed state-store operations, by component",
            store_errors.clone(),
        );
        registry.register(
            "request_deadlines_expired",
            "Requests whose server.request_deadline_ms passed while a step waited on the \
             store or on another replica, by step",
            deadlines_expired.clone(),
        );
        registry.register(
            "build",
            "Version and backend of this replica",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("backend", backend.to_owned()),
            ]),
        );
        Self(Arc::new(MetricsInner {
            registry: Mutex::new(registry),
            requests,
            request_seconds,
            tool_calls,
            tool_seconds,
            sessions_active,
            sessions_created,
            sessions_expired,
            store_reachable,
            listen,
            local_sessions,
            forwards,
            store_errors,
            deadlines_expired,
        }))
    }

    /// Adds `collector`'s series to every scrape, after the series registered before
    /// it, under the replica's prefix and `replica` label.
    ///
    /// A component calls it once, when it is wired, with a collector that reads its
    /// figures at scrape time: the series names and help texts stay in the component.
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(Box::new(collector));
    }

    /// Counts one request of `method` that took `started.elapsed()` to its response head.
    pub fn observe_request(&self, method: &str, started: Instant) {
        let labels = MethodLabels {
            method: method.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Starts timing a call of `tool`; see [`ToolCallTimer`].
    pub fn tool_call(&self, tool: &str) -> ToolCallTimer {
        ToolCallTimer {
            metrics: self.clone(),
            tool: tool.to_owned(),
            started: Instant::now(),
            finished: false,
        }
    }

    /// Counts a request for a session another replica holds, by `outcome` (see
    /// [`ForwardLabels`]).
    pub fn forward(&self, outcome: &'static str) {
        self.forwards
            .get_or_create(&ForwardLabels { outcome })
            .inc();
    }

    /// Counts a failed state-store operation.
    pub fn store_error(&self, component: &'static str) {
        self.store_errors
            .get_or_create(&ComponentLabels { component })
            .inc();
    }

    /// Counts a request whose deadline passed while `step` waited.
    pub fn deadline_expired(&self, step: &'static str) {
        self.deadlines_expired
            .get_or_create(&StepLabels { step })
            .inc();
    }

    /// Calls of `tool` that ended with `outcome` so far.
    pub fn tool_calls(&self, tool: &str, outcome: &'static str) -> u64 {
        self.tool_calls
            .get_or_create(&ToolOutcomeLabels {
                tool: tool.to_owned(),
                outcome,
            })
            .get()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // A collector that panicked mid-scrape left the registry itself intact.
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Times one tool call; dropped unfinished (the request was cancelled), it counts as
/// `cancelled`.
pub struct ToolCallTimer {
    metrics: Metrics,
    tool: String,
    started: Instant,
    finished: bool,
}

impl ToolCallTimer {
    /// Records the call's outcome and latency.
    pub fn finish(mut self, outcome: &'static str) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: &'static str) {
        self.finished = true;
        self.metrics
            .tool_calls
            .get_or_create(&ToolOutcomeLabels {
                tool: self.tool.clone(),
                outcome,
            })
            .inc();
        self.metrics
            .tool_seconds
            .get_or_create(&ToolLabels {
                tool: self.tool.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for ToolCallTimer {
    fn drop(&mut self) {
        if !self.finished {
            self.record("cancelled");
        }
    }
}

/// Encodes the gauge `name` with value `value`, for a [`Collector`] that reads its
/// figures at scrape time.
///
/// # Errors
/// When the encoder fails to write.
pub fn encode_gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Encodes the counter `name` (exposed as `name_total`) with value `value`, for a
/// [`Collector`] that reads its figures at scrape time.
///
/// # Errors
/// When the encoder fails to write.
pub fn encode_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component with one figure, read at scrape time.
    #[derive(Debug)]
    struct Widgets(u64);

    impl Collector for Widgets {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            encode_gauge(&mut enc, "widgets_open", "Open widgets", self.0 as f64)?;
            encode_counter(&mut enc, "widgets_made", "Widgets made", self.0)
        }
    }

    #[test]
    fn a_registered_collector_is_scraped_after_the_own_series_with_prefix_and_label() {
        let metrics = Metrics::new("r1", "memory");
        let before = metrics.render();
        assert!(!before.contains("widgets"), "{before}");
        metrics.clone().register_collector(Widgets(3));
        let text = metrics.render();
        let open = "# HELP stateful_mcp_widgets_open Open widgets\n\
                    # TYPE stateful_mcp_widgets_open gauge\n\
                    stateful_mcp_widgets_open{replica=\"r1\"} 3.0\n";
        let made = "# HELP stateful_mcp_widgets_made Widgets made\n\
                    # TYPE stateful_mcp_widgets_made counter\n\
                    stateful_mcp_widgets_made_total{replica=\"r1\"} 3\n";
        assert!(text.contains(&format!("{open}{made}")), "{text}");
        let build = text.find("stateful_mcp_build_info{").unwrap();
        assert!(build < text.find("stateful_mcp_widgets_open{").unwrap());
    }
}
