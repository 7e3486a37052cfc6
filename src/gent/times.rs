//! Where each node of a trace starts and ends, kept for a head sample of a
//! window far larger than its share (issue 20).
//!
//! The calibrated timing ([`super::timing`]) reads nothing of a trace but
//! its topology and its nodes' times. Fitted on the share alone, a window
//! fitted on half its spans lost 0.037 of its bottlenecks score against the
//! whole window (BENCHMARKS.md "Where the share loses bottlenecks"): the
//! copula's couplings and loadings, correlations between the ranks of a
//! trace's spans (how slow a call is with its caller, its siblings and the
//! rest of its trace), need many whole traces, and each sketch's quantiles
//! need many values. This sample keeps only the times, 16 bytes a span
//! against a packed span's 80 (and its attribute sets), so the timing is
//! fitted on several times the share's traces in less memory than the share.

use super::topology::Placement;
use crate::trace::{SpanView, TraceId};

/// One trace's timing: its topology and each node's (start, end) in
/// nanoseconds, in the topology's canonical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTimes {
    pub trace_id: TraceId,
    pub topology: u32,
    pub times: Box<[(u64, u64)]>,
}

impl NodeTimes {
    /// `spans`' timing as `placement` orders them.
    pub fn of<S: SpanView>(trace_id: TraceId, spans: &[S], placement: &Placement) -> Self {
        NodeTimes { trace_id, topology: placement.topology as u32, times: node_times(spans, placement) }
    }
}

/// Where `spans`' nodes start and end, in canonical order (an end before its
/// start read as the start).
pub fn node_times<S: SpanView>(spans: &[S], placement: &Placement) -> Box<[(u64, u64)]> {
    (placement.spans.iter())
        .map(|&i| {
            let s = &spans[i];
            (s.start_ns(), s.end_ns().max(s.start_ns()))
        })
        .collect()
}

impl super::digest::Held for NodeTimes {
    fn trace_id(&self) -> &TraceId {
        &self.trace_id
    }
    fn span_count(&self) -> usize {
        self.times.len()
    }
}
