//! The summary of a trace set that `gent stats` prints.

use serde::Serialize;
use std::collections::HashSet;

use super::assemble::{Defects, TraceSet};
use super::graph::TraceGraph;

/// Nearest-rank quantiles of a count distribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Quantiles {
    /// `values` need not be sorted; empty input gives zeros.
    pub fn of(mut values: Vec<u64>) -> Self {
        if values.is_empty() {
            return Quantiles::default();
        }
        values.sort_unstable();
        let rank = |q: f64| {
            let i = (q * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Quantiles { p50: rank(0.5), p99: rank(0.99), max: values[values.len() - 1] }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub traces: usize,
    /// Unique spans kept after duplicates were dropped.
    pub spans: usize,
    /// Exact duplicate spans dropped (also under `defects`).
    pub duplicate_spans: u64,
    pub services: usize,
    /// Distinct span (operation) names.
    pub span_names: usize,
    /// Distinct canonical topologies.
    pub topologies: usize,
    pub max_depth: u32,
    pub max_fan_out: usize,
    pub spans_per_trace: Quantiles,
    /// Spans whose parent is absent from their trace (fragment roots).
    pub orphan_spans: usize,
    /// Traces with more than one root.
    pub fragmented_traces: usize,
    pub defects: Defects,
}

impl Stats {
    pub fn of(set: &TraceSet) -> Self {
        let mut services = HashSet::new();
        let mut names = HashSet::new();
        let mut topologies = HashSet::new();
        let mut stats = Stats {
            traces: set.traces.len(),
            spans: set.span_count(),
            duplicate_spans: set.defects.duplicate_spans,
            defects: set.defects.clone(),
            ..Stats::default()
        };
        for trace in &set.traces {
            for span in &trace.spans {
                services.insert(span.service());
                names.insert(span.name.as_str());
            }
            let graph = TraceGraph::build(trace);
            topologies.insert(graph.topology_hash());
            stats.max_depth = stats.max_depth.max(graph.depth());
            stats.max_fan_out = stats.max_fan_out.max(graph.max_fan_out());
            stats.orphan_spans += graph.orphans();
            stats.fragmented_traces += usize::from(graph.roots().len() > 1);
        }
        stats.services = services.len();
        stats.span_names = names.len();
        stats.topologies = topologies.len();
        stats.spans_per_trace = Quantiles::of(set.traces.iter().map(|t| t.spans.len() as u64).collect());
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let q = Quantiles::of((1..=100).collect());
        assert_eq!((q.p50, q.p99, q.max), (50, 99, 100));
        assert_eq!(Quantiles::of(vec![7]).p99, 7);
        assert_eq!(Quantiles::of(vec![]), Quantiles::default());
    }
}
