//! The internal trace model: spans, traces assembled from them, and the shapes
//! derived from a trace (DAG, canonical topology, chains) that the models learn from.
//! `span` holds the data, `open` the same in compact form (open traces, samples), `assemble` turns loose spans into repaired traces,
//! `graph` the DAG and its topology, `sample` stratified samples, `stats` the summary behind `gent stats`.

mod assemble;
mod graph;
mod open;
mod sample;
mod span;
mod stats;

pub use assemble::{Defects, TraceSet, assemble, assemble_grouped, assemble_open};
pub use graph::{TraceGraph, chains, escaped_label, topology_hash};
pub use open::{Names, OpenSpan, PackedTrace, into_spans};
pub use sample::{Stratum, stratified, stratum, systematic};
#[cfg(test)]
pub(crate) use span::test_span;
pub use span::{
    Attributes, Resource, SYNTHETIC_ATTRIBUTE, Scope, Span, SpanId, SpanKind, SpanView, Status, StatusCode, Trace, TraceId,
    UNKNOWN_SERVICE, end_of, head_keeps, start_of, synthetic_marker,
};
pub use stats::{Quantiles, Stats};
