//! OTLP ingest. `grpc` and `http` decode requests their own way and hand them to
//! [`Ingest`], which validates span by span, reserves budget and queues the spans
//! for the window assembler, answering as the OTLP specification asks: success,
//! partial success for spans that fail validation, or a refusal with a reason.

mod config;
mod grpc;
mod http;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use tokio::sync::mpsc;

pub use config::ReceiverConfig;
pub use grpc::serve as serve_grpc;
pub use http::serve as serve_http;

use crate::io;
use crate::metrics::{Metrics, RefusalReason};
use crate::trace::Span;
use crate::window::{Batch, Budget};

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("cannot listen for OTLP/{protocol} on {addr}: {source}")]
    Bind { protocol: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("OTLP/{protocol} server failed: {reason}")]
    Serve { protocol: &'static str, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

/// A request taken, possibly in part.
#[derive(Debug, PartialEq)]
pub struct Accepted {
    pub rejected_spans: u64,
    /// Why spans were rejected (empty when none were).
    pub message: String,
}

impl Accepted {
    /// The OTLP response: `partial_success` only when spans were rejected.
    pub fn response(self) -> ExportTraceServiceResponse {
        let partial_success = (self.rejected_spans > 0)
            .then(|| ExportTracePartialSuccess { rejected_spans: self.rejected_spans as i64, error_message: self.message });
        ExportTraceServiceResponse { partial_success }
    }
}

/// A request refused whole.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub message: String,
}

/// What both servers share: limits, the budget, the queue, the metrics.
pub struct Ingest {
    limits: ReceiverConfig,
    budget: Budget,
    queue: mpsc::UnboundedSender<Batch>,
    metrics: Metrics,
}

impl Ingest {
    pub fn new(limits: ReceiverConfig, budget: Budget, queue: mpsc::UnboundedSender<Batch>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Ingest { limits, budget, queue, metrics })
    }

    pub fn limits(&self) -> &ReceiverConfig {
        &self.limits
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts a request refused before its spans could be counted.
    pub fn refuse_undecoded(&self, reason: RefusalReason, message: String) -> Refusal {
        self.metrics.refuse(reason, 1);
        tracing::debug!(reason = reason.label(), %message, "request refused");
        Refusal { reason, message }
    }

    /// Takes a protobuf `ExportTraceServiceRequest`, decoded straight into spans.
    pub fn export_protobuf(&self, bytes: &[u8], protocol: Protocol) -> Result<Accepted, Refusal> {
        let mut spans = Vec::new();
        let mut invalid = Vec::new();
        io::decode_request(bytes, &mut spans, &mut |_, reason| invalid.push(reason)).map_err(|e| {
            let message = format!("undecodable OTLP protobuf payload: byte {}: {}", e.offset, e.reason);
            self.refuse_undecoded(RefusalReason::Decode, message)
        })?;
        self.admit(spans, invalid, protocol)
    }

    /// Takes a request decoded elsewhere (OTLP JSON).
    pub fn export(&self, request: ExportTraceServiceRequest, protocol: Protocol) -> Result<Accepted, Refusal> {
        let mut spans = Vec::new();
        let mut invalid = Vec::new();
        for rs in request.resource_spans {
            let resource = io::resource_from_otlp(rs.resource.unwrap_or_default());
            for ss in rs.scope_spans {
                let scope = io::scope_from_otlp(ss.scope);
                for span in ss.spans {
                    match io::span_from_otlp(span, &resource, &scope) {
                        Ok(span) => spans.push(span),
                        Err(reason) => invalid.push(reason),
                    }
                }
            }
        }
        self.admit(spans, invalid, protocol)
    }

    /// Applies the limits, reserves budget for and queues the valid spans of one
    /// request; `invalid` holds why the others (bad ids) were left out.
    fn admit(&self, spans: Vec<Span>, invalid: Vec<String>, protocol: Protocol) -> Result<Accepted, Refusal> {
        self.metrics.received_requests.with_label_values(&[protocol.label()]).inc();
        let total = spans.len() + invalid.len();
        let max = self.limits.max_spans_per_request;
        if total > max {
            return Err(self.refuse(
                RefusalReason::TooManySpans,
                total,
                format!("request holds {total} spans, more than the limit of {max}; send smaller batches"),
            ));
        }
        let mut rejected = Rejections::default();
        for reason in invalid {
            rejected.add(&self.metrics, RefusalReason::InvalidId, reason);
        }
        let mut kept = Vec::with_capacity(spans.len());
        for span in spans {
            match self.check(&span) {
                Ok(()) => kept.push(span),
                Err((reason, message)) => rejected.add(&self.metrics, reason, message),
            }
        }
        if !kept.is_empty() {
            let n = kept.len();
            let Some(held) = self.budget.try_reserve(n) else {
                return Err(self.refuse(
                    RefusalReason::QueueFull,
                    n,
                    format!("span budget of {} spans is spent; retry later", self.budget.total()),
                ));
            };
            self.metrics.queue_spans.add(n as i64);
            if self.queue.send(Batch { spans: kept, held }).is_err() {
                self.metrics.queue_spans.sub(n as i64);
                return Err(self.refuse(RefusalReason::ShuttingDown, n, "gent is shutting down".into()));
            }
            self.metrics.received_spans.with_label_values(&[protocol.label()]).inc_by(n as u64);
        }
        Ok(Accepted { rejected_spans: rejected.count, message: rejected.message() })
    }

    fn refuse(&self, reason: RefusalReason, spans: usize, message: String) -> Refusal {
        self.metrics.refuse(reason, spans as u64);
        tracing::debug!(reason = reason.label(), spans, %message, "request refused");
        Refusal { reason, message }
    }

    /// The configured limits on one span.
    fn check(&self, span: &Span) -> Result<(), (RefusalReason, String)> {
        let max = self.limits.max_attributes_per_span;
        if span.attributes.len() > max {
            return Err((
                RefusalReason::TooManyAttributes,
                format!("span {:?} has {} attributes, more than the limit of {max}", span.name, span.attributes.len()),
            ));
        }
        let max = self.limits.max_attribute_value_bytes;
        if let Some(kv) = span.attributes.iter().find(|kv| value_bytes(kv) > max) {
            return Err((
                RefusalReason::AttributeTooLarge,
                format!("span {:?} attribute {:?} is longer than the limit of {max} bytes", span.name, kv.key),
            ));
        }
        Ok(())
    }
}

/// Spans rejected from one request: how many, and the first reason or two.
#[derive(Default)]
struct Rejections {
    count: u64,
    examples: Vec<String>,
}

impl Rejections {
    fn add(&mut self, metrics: &Metrics, reason: RefusalReason, message: String) {
        metrics.refuse(reason, 1);
        self.count += 1;
        if self.examples.len() < 2 {
            self.examples.push(message);
        }
    }

    fn message(&self) -> String {
        match self.count {
            0 => String::new(),
            n => format!("{n} spans rejected: {}", self.examples.join("; ")),
        }
    }
}

/// Bytes of string and byte content in an attribute value, nested values included.
fn value_bytes(kv: &KeyValue) -> usize {
    fn size(value: Option<&AnyValue>) -> usize {
        match value.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => s.len(),
            Some(Value::BytesValue(b)) => b.len(),
            Some(Value::ArrayValue(a)) => a.values.iter().map(|v| size(Some(v))).sum(),
            Some(Value::KvlistValue(l)) => l.values.iter().map(value_bytes).sum(),
            _ => 8,
        }
    }
    size(kv.value.as_ref())
}
