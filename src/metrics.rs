//! The one place where `gent_` metric names live, each with its help text, and
//! the `/metrics` endpoint that serves them in Prometheus text format.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::connections::{self, ConnectionConfig, ConnectionStats};

/// The `metrics` section of both daemons' configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus `/metrics` listen address; `null` turns it off.
    pub endpoint: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { endpoint: Some(SocketAddr::from(([0, 0, 0, 0], 9464))) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Why spans were refused; the `reason` label of `gent_refused_spans_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The payload could not be decoded (bad protobuf or JSON, bad compression).
    Decode,
    /// The request was larger than `max_message_bytes`.
    TooLarge,
    /// The request held more than `max_spans_per_request` spans.
    TooManySpans,
    /// Content type or encoding not supported.
    UnsupportedMedia,
    /// A trace or span id of the wrong length or all zeroes.
    InvalidId,
    /// More attributes than `max_attributes_per_span`.
    TooManyAttributes,
    /// An attribute value longer than `max_attribute_value_bytes`.
    AttributeTooLarge,
    /// The span budget was spent: backpressure.
    QueueFull,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The request (its body, mostly) took longer than `request_timeout`.
    Timeout,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 10] = [
        RefusalReason::Decode,
        RefusalReason::TooLarge,
        RefusalReason::TooManySpans,
        RefusalReason::UnsupportedMedia,
        RefusalReason::InvalidId,
        RefusalReason::TooManyAttributes,
        RefusalReason::AttributeTooLarge,
        RefusalReason::QueueFull,
        RefusalReason::ShuttingDown,
        RefusalReason::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::Decode => "decode_error",
            RefusalReason::TooLarge => "too_large",
            RefusalReason::TooManySpans => "too_many_spans",
            RefusalReason::UnsupportedMedia => "unsupported_media_type",
            RefusalReason::InvalidId => "invalid_id",
            RefusalReason::TooManyAttributes => "too_many_attributes",
            RefusalReason::AttributeTooLarge => "attribute_too_large",
            RefusalReason::QueueFull => "queue_full",
            RefusalReason::ShuttingDown => "shutting_down",
            RefusalReason::Timeout => "timeout",
        }
    }
}

/// Every metric of the compressor's ingest half.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Spans accepted, by `protocol` (grpc, http).
    pub received_spans: IntCounterVec,
    /// Requests whose payload decoded, by `protocol`.
    pub received_requests: IntCounterVec,
    /// Request payload bytes after decompression, by `protocol`.
    pub received_bytes: IntCounterVec,
    /// Spans refused, by `reason`. A request refused whole counts its spans when
    /// they could be counted, else one.
    pub refused_spans: IntCounterVec,
    /// Distinct traces in closed windows.
    pub received_traces: IntCounter,
    /// Spans held between receipt and the sink (bounded by the span budget).
    pub resident_spans: IntGauge,
    pub span_budget: IntGauge,
    /// Spans accepted but not yet filed into a window by the assembler.
    pub queue_spans: IntGauge,
    pub windows_closed: IntCounter,
    pub window_traces: Histogram,
    pub window_spans: Histogram,
    /// Spans that arrived for a trace already completed, moved to the next window.
    pub late_spans: IntCounter,
    /// Exact duplicate spans dropped when a window was assembled.
    pub duplicate_spans: IntCounter,
    /// Spans dropped because their trace already held `window.max_spans_per_trace`.
    pub oversized_trace_spans: IntCounter,
    /// Windows the sink failed to take.
    pub sink_errors: IntCounter,
    /// Seconds the sink spent on each window, and each window waited for it.
    pub sink_seconds: Histogram,
    pub sink_wait_seconds: Histogram,
    /// Spans in closed windows (after duplicates were dropped).
    pub window_spans_total: IntCounter,
    /// The pipeline's half: training, packets, self-evaluation, the link.
    pub pipeline: PipelineMetrics,
    pub connections: ConnectionMetrics,
}

/// The connections of every server a daemon runs, by `server`.
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGaugeVec,
    idle_closed: IntCounterVec,
}

impl ConnectionMetrics {
    fn new(r: &Reg, servers: &[&str]) -> Result<Self, MetricsError> {
        let open = IntGaugeVec::new(Opts::new("gent_connections", "Connections open now, by server."), &["server"])?;
        r.0.register(Box::new(open.clone()))?;
        let idle_closed = r.counter_vec(
            "gent_connections_idle_closed_total",
            "Connections closed after idle_timeout with no request in flight, by server.",
            "server",
        )?;
        let m = ConnectionMetrics { open, idle_closed };
        for server in servers {
            m.stats(server);
        }
        Ok(m)
    }

    /// The handles one server reports through.
    pub fn stats(&self, server: &str) -> ConnectionStats {
        ConnectionStats {
            open: self.open.with_label_values(&[server]),
            idle_closed: self.idle_closed.with_label_values(&[server]),
        }
    }
}

/// What the compressor does with closed windows.
#[derive(Clone)]
pub struct PipelineMetrics {
    pub training_seconds: Histogram,
    /// Share of the configured training steps windows train with now.
    pub training_step_share: Gauge,
    pub self_evaluation_seconds: Histogram,
    pub training_errors: IntCounter,
    /// Bytes of packets produced (model or fallback payloads).
    pub packet_bytes: IntCounter,
    /// The same windows as raw OTLP protobuf, and gzip-compressed: what
    /// forwarding every span would have cost.
    pub window_raw_bytes: IntCounter,
    pub window_gzip_bytes: IntCounter,
    /// Self-evaluated fidelity of the last window, and of every window.
    pub fidelity_last: Gauge,
    pub fidelity: Histogram,
    pub fidelity_head_same_bytes: Gauge,
    /// Windows shipped as head-sampled traces because their fidelity was below the floor.
    pub fallback_windows: IntCounter,
    /// Windows shipped whole because their traces were smaller than their model.
    pub raw_windows: IntCounter,
    pub packets_sent: IntCounter,
    /// Packets the decompressor refused as invalid (moved aside in the spool).
    pub packets_failed: IntCounter,
    pub packets_retried: IntCounter,
    pub spool_packets: IntGauge,
    pub spool_bytes: IntGauge,
}

/// Every metric of the decompressor.
#[derive(Clone)]
pub struct DecompressorMetrics {
    pub registry: Registry,
    pub packets_received: IntCounter,
    /// Packets refused, by `reason` (unauthenticated, invalid, duplicate is not a refusal).
    pub packets_rejected: IntCounterVec,
    pub packets_duplicate: IntCounter,
    /// Windows delivered (every exporter took them), by `kind`: model (Gen-T
    /// regenerated), llm (a language model regenerated the call graphs), traces.
    pub windows: IntCounterVec,
    /// Traces a language model wrote smaller than they were (over `llm.max_edges`).
    pub llm_clamped_traces: IntCounter,
    /// Spans the compressor saw in the delivered windows.
    pub window_spans: IntCounter,
    pub spans_regenerated: IntCounter,
    /// Spans exported and export failures, by `exporter`.
    pub spans_exported: IntCounterVec,
    pub export_errors: IntCounterVec,
    pub regenerate_seconds: Histogram,
    /// Seconds from a window's close at the compressor to its export, last window.
    pub lag_seconds: Gauge,
    pub connections: ConnectionMetrics,
}

impl DecompressorMetrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let r = Reg(&registry);
        let m = DecompressorMetrics {
            packets_received: r.counter("gent_packets_received_total", "Packets received over the link and verified.")?,
            packets_rejected: r.counter_vec("gent_packets_rejected_total", "Pushes refused, by reason.", "reason")?,
            packets_duplicate: r.counter(
                "gent_packets_duplicate_total",
                "Pushes of a window already delivered (acknowledged again, not regenerated).",
            )?,
            windows: r.counter_vec(
                "gent_windows_delivered_total",
                "Windows regenerated and exported, by kind (model, llm, traces).",
                "kind",
            )?,
            llm_clamped_traces: r.counter(
                "gent_llm_clamped_traces_total",
                "Traces a language model regenerated smaller than they were (over llm.max_edges).",
            )?,
            window_spans: r.counter("gent_delivered_window_spans_total", "Spans the compressor saw in the delivered windows.")?,
            spans_regenerated: r.counter("gent_regenerated_spans_total", "Spans regenerated (or forwarded real traces).")?,
            spans_exported: r.counter_vec("gent_exported_spans_total", "Spans exported, by exporter.", "exporter")?,
            export_errors: r.counter_vec(
                "gent_export_errors_total",
                "Window exports that failed after retries, by exporter.",
                "exporter",
            )?,
            regenerate_seconds: r.histogram("gent_regenerate_seconds", "Seconds to verify and regenerate one window.", 0.01)?,
            lag_seconds: r
                .gauge_f64("gent_lag_seconds", "Seconds from window close at the compressor to export, last window.")?,
            connections: ConnectionMetrics::new(&r, &["link", "metrics"])?,
            registry,
        };
        for reason in ["unauthenticated", "invalid"] {
            m.packets_rejected.with_label_values(&[reason]);
        }
        for kind in crate::codec::Origin::ALL {
            m.windows.with_label_values(&[kind.as_str()]);
        }
        Ok(m)
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// Registers metrics as they are made.
struct Reg<'a>(&'a Registry);

impl Reg<'_> {
    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
        let c = IntCounter::new(name, help)?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }
    fn counter_vec(&self, name: &str, help: &str, label: &str) -> Result<IntCounterVec, MetricsError> {
        let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }
    fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        let g = IntGauge::new(name, help)?;
        self.0.register(Box::new(g.clone()))?;
        Ok(g)
    }
    fn gauge_f64(&self, name: &str, help: &str) -> Result<Gauge, MetricsError> {
        let g = Gauge::new(name, help)?;
        self.0.register(Box::new(g.clone()))?;
        Ok(g)
    }
    /// Buckets growing by 4 from `start`.
    fn histogram(&self, name: &str, help: &str, start: f64) -> Result<Histogram, MetricsError> {
        let buckets = prometheus::exponential_buckets(start, 4.0, 12)?;
        let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
        self.0.register(Box::new(h.clone()))?;
        Ok(h)
    }
}

fn render(registry: &Registry) -> String {
    TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let r = Reg(&registry);
        let counter_vec = |name: &str, help: &str, label: &str| r.counter_vec(name, help, label);
        let counter = |name: &str, help: &str| r.counter(name, help);
        let gauge = |name: &str, help: &str| r.gauge(name, help);
        let histogram = |name: &str, help: &str| r.histogram(name, help, 1.0);
        let pipeline = PipelineMetrics {
            training_seconds: r.histogram("gent_training_seconds", "Seconds to train one window's model.", 0.05)?,
            training_step_share: r.gauge_f64(
                "gent_training_step_share",
                "Share (0..1] of pipeline.model.ctgan.max_steps (or epochs) windows train with: below 1 after a window took the sink longer than window.duration.",
            )?,
            self_evaluation_seconds: r.histogram(
                "gent_self_evaluation_seconds",
                "Seconds to regenerate one window from its packet and score it.",
                0.05,
            )?,
            training_errors: counter("gent_training_errors_total", "Windows whose model could not be trained or packed.")?,
            packet_bytes: counter("gent_packet_bytes_total", "Bytes of packets produced for the link.")?,
            window_raw_bytes: counter(
                "gent_window_raw_bytes_total",
                "The same windows as raw OTLP protobuf bytes (estimated from a trace sample above pipeline.fidelity.sample_spans).",
            )?,
            window_gzip_bytes: counter(
                "gent_window_gzip_bytes_total",
                "The same windows as gzip-compressed OTLP protobuf bytes (estimated from a trace sample above pipeline.fidelity.sample_spans).",
            )?,
            fidelity_last: r.gauge_f64("gent_fidelity_score", "Self-evaluated fidelity (0..1) of the last window.")?,
            fidelity_head_same_bytes: r.gauge_f64(
                "gent_fidelity_head_same_bytes",
                "Fidelity (0..1) of head sampling the last window at the rate whose bytes equal its packet, on the same queries.",
            )?,
            fidelity: {
                let h = Histogram::with_opts(
                    HistogramOpts::new("gent_window_fidelity", "Self-evaluated fidelity (0..1) per window.")
                        .buckets((1..=10).map(|i| i as f64 / 10.0).collect()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            fallback_windows: counter(
                "gent_fallback_windows_total",
                "Windows shipped head-sampled because their fidelity was below the floor.",
            )?,
            raw_windows: counter(
                "gent_raw_windows_total",
                "Windows shipped whole as OTLP because that was smaller than their model.",
            )?,
            packets_sent: counter("gent_packets_sent_total", "Packets acknowledged by the decompressor.")?,
            packets_failed: counter("gent_packets_failed_total", "Packets the decompressor refused as invalid.")?,
            packets_retried: counter("gent_packets_retried_total", "Push attempts that failed and will be retried.")?,
            spool_packets: gauge("gent_spool_packets", "Packets waiting in the spool for acknowledgement.")?,
            spool_bytes: gauge("gent_spool_bytes", "Bytes waiting in the spool.")?,
        };
        let metrics = Metrics {
            received_spans: counter_vec("gent_received_spans_total", "Spans accepted by the receiver.", "protocol")?,
            received_requests: counter_vec("gent_received_requests_total", "Export requests whose payload decoded.", "protocol")?,
            received_bytes: counter_vec("gent_received_bytes_total", "Request payload bytes after decompression.", "protocol")?,
            refused_spans: counter_vec("gent_refused_spans_total", "Spans refused, by reason.", "reason")?,
            received_traces: counter("gent_received_traces_total", "Distinct traces in closed windows.")?,
            resident_spans: gauge(
                "gent_resident_spans",
                "Spans held between receipt and the sink (queue, open and closing windows).",
            )?,
            span_budget: gauge("gent_span_budget", "Most spans held at once before the receiver pushes back.")?,
            queue_spans: gauge("gent_queue_spans", "Spans accepted and queued, not yet filed into a window.")?,
            windows_closed: counter("gent_windows_closed_total", "Windows closed and handed to the sink.")?,
            window_traces: histogram("gent_window_traces", "Traces per closed window.")?,
            window_spans: histogram("gent_window_spans", "Spans per closed window.")?,
            late_spans: counter(
                "gent_late_spans_total",
                "Spans that arrived for an already completed trace and went to the next window.",
            )?,
            duplicate_spans: counter("gent_duplicate_spans_total", "Exact duplicate spans dropped.")?,
            oversized_trace_spans: counter(
                "gent_oversized_trace_spans_total",
                "Spans dropped because their trace already held window.max_spans_per_trace spans.",
            )?,
            sink_errors: counter("gent_sink_errors_total", "Closed windows the sink failed to take, and failed writes of windows to sink.otlp_json_dir.")?,
            sink_seconds: r.histogram(
                "gent_sink_seconds",
                "Seconds the sink spent on one closed window (assembly, training, self-evaluation, spooling); above window.duration the sink cannot keep up: closed windows wait and the receivers push back.",
                0.05,
            )?,
            sink_wait_seconds: r.histogram(
                "gent_sink_wait_seconds",
                "Seconds a closed window waited for the sink to take it.",
                0.05,
            )?,
            window_spans_total: counter("gent_window_spans_total", "Spans in closed windows.")?,
            pipeline,
            connections: ConnectionMetrics::new(&r, &["grpc", "http", "metrics"])?,
            registry,
        };
        // Every reason is visible from the start, at zero.
        for reason in RefusalReason::ALL {
            metrics.refused_spans.with_label_values(&[reason.label()]);
        }
        for protocol in ["grpc", "http"] {
            metrics.received_spans.with_label_values(&[protocol]);
            metrics.received_requests.with_label_values(&[protocol]);
            metrics.received_bytes.with_label_values(&[protocol]);
        }
        Ok(metrics)
    }

    pub fn refuse(&self, reason: RefusalReason, spans: u64) {
        self.refused_spans.with_label_values(&[reason.label()]).inc_by(spans);
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// Whether a daemon can take work now: `Err` says why not (shutting down, span
/// budget spent, spool not writable).
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves, until `shutdown` resolves:
/// - `GET /metrics`: `registry` in Prometheus text format;
/// - `GET /healthz`: 200 while the process serves (liveness);
/// - `GET /readyz`: 200 when `ready` says so, else 503 with its reason (readiness).
pub async fn serve(
    registry: Registry,
    ready: Readiness,
    listener: tokio::net::TcpListener,
    stats: ConnectionStats,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header::CONTENT_TYPE};
    use axum::routing::get;
    const TEXT: &str = "text/plain; charset=utf-8";
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&registry)) }
            }),
        )
        .route("/healthz", get(|| async { ([(CONTENT_TYPE, TEXT)], "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, [(CONTENT_TYPE, TEXT)], "ready\n".to_string()),
                        Err(reason) => {
                            (StatusCode::SERVICE_UNAVAILABLE, [(CONTENT_TYPE, TEXT)], format!("not ready: {reason}\n"))
                        }
                    }
                }
            }),
        )
        .layer(connections::TrackLayer);
    let config = ConnectionConfig::default();
    let listener = connections::Listener::new(listener, &config, stats);
    connections::serve_http(listener, app, &config, |_| {}, shutdown).await;
    Ok(())
}
