//! Spans and traces as gent holds them in memory: times in Unix ns, fixed-size ids.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];
/// Typed OTLP attribute values, kept as the wire types so nothing is lost.
pub type Attributes = Vec<KeyValue>;

/// Resource attribute (`true`) on every span gent regenerates, so a backend
/// can tell synthetic spans from real ones.
pub const SYNTHETIC_ATTRIBUTE: &str = "gent.synthetic";

/// The [`SYNTHETIC_ATTRIBUTE`] key-value.
pub fn synthetic_marker() -> KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    KeyValue {
        key: SYNTHETIC_ATTRIBUTE.into(),
        value: Some(AnyValue { value: Some(any_value::Value::BoolValue(true)) }),
        ..Default::default()
    }
}

/// Service name used when a producer sends none, as the OpenTelemetry SDKs do.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// What produced a span: shared by every span of one process, so it is
/// reference-counted rather than copied per span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    /// `service.name`; kept out of `attributes` so it is never duplicated.
    pub service: String,
    pub attributes: Attributes,
}

impl Resource {
    pub fn new(service: impl Into<String>, attributes: Attributes) -> Arc<Self> {
        Arc::new(Resource { service: service.into(), attributes })
    }
}

/// The instrumentation scope (library) that recorded a span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub const ALL: [SpanKind; 6] =
        [SpanKind::Unspecified, SpanKind::Internal, SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer];

    /// From the OTLP enum value; unknown values degrade to `Unspecified` as the
    /// OTLP specification asks of receivers.
    pub fn from_otlp(value: i32) -> Self {
        usize::try_from(value).ok().and_then(|i| Self::ALL.get(i)).copied().unwrap_or_default()
    }

    pub fn to_otlp(self) -> i32 {
        self as i32
    }

    /// Lower-case name as Jaeger and Zipkin spell it (`server`, `client`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    pub fn to_otlp(self) -> i32 {
        self as i32
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "UNSET",
            StatusCode::Ok => "OK",
            StatusCode::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

/// One span. Times are nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
    pub name: String,
    pub kind: SpanKind,
    pub status: Status,
    pub start: u64,
    pub end: u64,
    pub attributes: Attributes,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
}

/// What the topology, the window's fold and the repairs read of a span, held
/// in full ([`Span`]) or in compact form ([`super::OpenSpan`]): a completed
/// trace is folded in the form it was held in, not made spans again.
pub trait SpanView {
    fn id(&self) -> SpanId;
    fn parent_id(&self) -> Option<SpanId>;
    fn start_ns(&self) -> u64;
    fn end_ns(&self) -> u64;
    fn resource(&self) -> &Resource;
    fn service_name(&self) -> &str {
        &self.resource().service
    }
    fn span_name(&self) -> &str;
    /// Whether the span's status is ERROR.
    fn failed(&self) -> bool;
}

/// [`SpanView`] for a span type whose fields carry the same names in both
/// forms (`span_id`, `parent_span_id`, `start`, `end`, `resource`, and a
/// `name` that borrows as `str`), with `$code` reading its status code.
macro_rules! impl_span_view {
    ($span:ty, $code:expr) => {
        impl $crate::trace::SpanView for $span {
            fn id(&self) -> $crate::trace::SpanId {
                self.span_id
            }
            fn parent_id(&self) -> Option<$crate::trace::SpanId> {
                self.parent_span_id
            }
            fn start_ns(&self) -> u64 {
                self.start
            }
            fn end_ns(&self) -> u64 {
                self.end
            }
            fn resource(&self) -> &$crate::trace::Resource {
                &self.resource
            }
            fn span_name(&self) -> &str {
                std::borrow::Borrow::borrow(&self.name)
            }
            fn failed(&self) -> bool {
                let code: fn(&Self) -> $crate::trace::StatusCode = $code;
                code(self) == $crate::trace::StatusCode::Error
            }
        }
    };
}
pub(super) use impl_span_view;

impl_span_view!(Span, |s| s.status.code);

impl Span {
    pub fn service(&self) -> &str {
        &self.resource.service
    }

    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Whether head sampling at 1:`n` with `seed` keeps the trace `trace_id`:
/// the seeded xxh3 of the id, as a fraction of 2^64, falls below 1/n. The
/// decision depends on the id only, as it must for every service of a trace
/// to agree.
pub fn head_keeps(trace_id: &TraceId, n: u64, seed: u64) -> bool {
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(trace_id, seed);
    n <= 1 || (u128::from(hash) * u128::from(n)) >> 64 == 0
}

/// The spans of one trace id, sorted by start time, after assembly has removed
/// duplicates and repaired defects (see [`crate::trace::assemble`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub trace_id: TraceId,
    pub spans: Vec<Span>,
}

impl Trace {
    /// Earliest span start: the trace's start time.
    pub fn start(&self) -> u64 {
        start_of(&self.spans)
    }

    pub fn end(&self) -> u64 {
        end_of(&self.spans)
    }
}

/// A trace's start, from its spans in either form: the earliest (0 for none).
pub fn start_of<S: SpanView>(spans: &[S]) -> u64 {
    spans.iter().map(SpanView::start_ns).min().unwrap_or(0)
}

/// A trace's end, from its spans in either form: the latest (0 for none).
pub fn end_of<S: SpanView>(spans: &[S]) -> u64 {
    spans.iter().map(SpanView::end_ns).max().unwrap_or(0)
}

/// A minimal span for unit tests: service `svc`, name `op`, ids repeated bytes.
#[cfg(test)]
pub(crate) fn test_span(trace: u8, id: u8, parent: Option<u8>, start: u64, end: u64) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        resource: Resource::new("svc", vec![]),
        scope: Arc::new(Scope::default()),
        name: "op".into(),
        kind: SpanKind::Server,
        status: Status::default(),
        start,
        end,
        attributes: vec![],
        events: vec![],
        links: vec![],
    }
}
