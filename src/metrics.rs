//! The one place where `gent_` metric names live, each with its help text, and
//! the `/metrics` endpoint that serves them in Prometheus text format.

use std::net::SocketAddr;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

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
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 9] = [
        RefusalReason::Decode,
        RefusalReason::TooLarge,
        RefusalReason::TooManySpans,
        RefusalReason::UnsupportedMedia,
        RefusalReason::InvalidId,
        RefusalReason::TooManyAttributes,
        RefusalReason::AttributeTooLarge,
        RefusalReason::QueueFull,
        RefusalReason::ShuttingDown,
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
    /// Windows the sink failed to take.
    pub sink_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, label: &str| -> Result<IntCounterVec, MetricsError> {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str| -> Result<Histogram, MetricsError> {
            let buckets = prometheus::exponential_buckets(1.0, 4.0, 12)?;
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
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
            sink_errors: counter("gent_sink_errors_total", "Closed windows the sink failed to take.")?,
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
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    metrics: Metrics,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render()) }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
