//! The constraints of the paper's Appendix B, per layer and per graph. Every
//! check returns all violations found, each naming the rule it broke, so a
//! generator (or constrained decoding) can tell why a layer was refused.

use std::collections::HashSet;

use super::graph::{CallGraph, Edge, Layer, LayerConditions};

/// Each variant converts to its snake-case name (`&'static str`), the rule
/// `Rejection::rule` reports in tallies of what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Violation {
    #[error("the layer has {found} edges; num_current_edges asks for {expected}")]
    EdgeCount { expected: u64, found: u64 },
    #[error("edge {index} has id {found}; ids run on from start_edge_id, so {expected} was due")]
    EdgeId { index: usize, expected: u64, found: String },
    #[error("edge {id} starts at {start} ms, before the layer's start_communication_at {min} ms")]
    StartsEarly { id: u64, start: u64, min: u64 },
    #[error("edge {id} starts at {start} ms, after it finishes at {finish} ms")]
    StartAfterFinish { id: u64, start: u64, finish: u64 },
    #[error("edge {id} finishes at {finish} ms, after the layer's latency {latency} ms")]
    FinishesLate { id: u64, finish: u64, latency: u64 },
    #[error("subgraphs were given although {reason}")]
    UnexpectedSubgraphs { reason: &'static str },
    #[error("a subgraph names edge {edge}, which this layer does not have")]
    UnknownEdge { edge: u64 },
    #[error("two subgraphs extend edge {edge}")]
    DuplicateSubgraph { edge: u64 },
    #[error("the subgraph of edge {edge} lacks the condition {key}")]
    MissingCondition { edge: u64, key: &'static str },
    #[error("the subgraph of edge {edge} has remaining_depth {found}, not below the layer's {layer}")]
    DepthNotReduced { edge: u64, found: u64, layer: u64 },
    #[error("no subgraph has remaining_depth {expected} (the layer's minus one)")]
    DepthNotReached { expected: u64 },
    #[error("the subgraph of edge {edge} starts at node {found}, not at the edge's destination {expected}")]
    StartNode { edge: u64, found: String, expected: String },
    #[error("the subgraph of edge {edge} names caller {found}, not the layer's start_node {expected}")]
    Caller { edge: u64, found: String, expected: String },
    #[error("the subgraph of edge {edge} has latency {found} ms, beyond the edge's finish at {finish} ms")]
    SubgraphLatency { edge: u64, found: u64, finish: u64 },
    #[error("the subgraph of edge {edge} starts at {found} ms, after its own latency {latency} ms")]
    SubgraphStart { edge: u64, found: u64, latency: u64 },
    #[error("the subgraph of edge {edge} has {current} edges in its first layer but num_edges {total}")]
    SubgraphEdges { edge: u64, current: u64, total: u64 },
    #[error("the subgraphs hold {found} edges; {expected} remain (num_edges minus this layer's edges)")]
    EdgeBudget { expected: u64, found: u64 },
    #[error("{found} subgraphs were given; num_subgraphs says {expected}")]
    SubgraphCount { expected: u64, found: u64 },
    #[error("the graph has {found} edges; {expected} were requested")]
    GraphEdges { expected: u64, found: u64 },
    #[error("the graph is {found} deep; depth {expected} was requested")]
    GraphDepth { expected: u64, found: u64 },
    #[error("the graph's last call finishes at {found} ms, beyond the requested latency {expected} ms")]
    GraphLatency { expected: u64, found: u64 },
}

/// Every Appendix B violation of one layer against its own conditions.
pub fn layer(l: &Layer) -> Vec<Violation> {
    let mut out = Vec::new();
    let c = &l.conditions;
    let n = l.edges.len() as u64;
    if let Some(expected) = c.num_current_edges
        && expected != n
    {
        out.push(Violation::EdgeCount { expected, found: n });
    }
    edges(l, &mut out);
    let remaining = c.num_edges.map(|t| t.saturating_sub(n));
    if !l.subgraphs.is_empty() {
        if c.remaining_depth == Some(0) {
            out.push(Violation::UnexpectedSubgraphs { reason: "remaining_depth is 0" });
        } else if remaining == Some(0) {
            out.push(Violation::UnexpectedSubgraphs { reason: "no edges remain" });
        }
    }
    let (budget, deepest) = subgraphs(l, &mut out);
    if let (Some(layer), Some(d)) = (c.remaining_depth, deepest)
        && layer > 0
        && d != layer - 1
        && d < layer
    {
        out.push(Violation::DepthNotReached { expected: layer - 1 });
    }
    // With remaining_depth 0 no subgraph may follow, so the layer itself
    // must hold every edge of num_edges (the budget left is 0).
    if let Some(expected) = remaining
        && budget != expected
    {
        out.push(Violation::EdgeBudget { expected, found: budget });
    }
    if let Some(expected) = c.num_subgraphs
        && expected != l.subgraphs.len() as u64
    {
        out.push(Violation::SubgraphCount { expected, found: l.subgraphs.len() as u64 });
    }
    out
}

/// The layer's own edges: ids in sequence, times within the conditions.
fn edges(l: &Layer, out: &mut Vec<Violation>) {
    let c = &l.conditions;
    let first = c.start_edge_id.unwrap_or(if c.caller.is_none() { 0 } else { 1 });
    for (i, e) in l.edges.iter().enumerate() {
        let expected = first + i as u64;
        let id = e.id.first().map_or(u64::MAX, |&k| u64::from(k));
        if e.id.len() != 1 || id != expected {
            out.push(Violation::EdgeId { index: i, expected, found: super::graph::format_id(&e.id) });
        }
        if let Some(min) = c.start_communication_at
            && e.start < min
        {
            out.push(Violation::StartsEarly { id, start: e.start, min });
        }
        if e.start > e.finish {
            out.push(Violation::StartAfterFinish { id, start: e.start, finish: e.finish });
        }
        if let Some(latency) = c.latency
            && e.finish > latency
        {
            out.push(Violation::FinishesLate { id, finish: e.finish, latency });
        }
    }
}

/// The layer's subgraphs, each against the edge it hangs from; returns the
/// edges they claim between them and the deepest remaining depth named.
fn subgraphs(l: &Layer, out: &mut Vec<Violation>) -> (u64, Option<u64>) {
    let mut seen = HashSet::new();
    let mut budget = 0;
    let mut deepest = None;
    for (edge, s) in &l.subgraphs {
        let edge = *edge;
        if !seen.insert(edge) {
            out.push(Violation::DuplicateSubgraph { edge });
        }
        let Some(parent) = l.edges.iter().find(|e| e.id.first().map(|&k| u64::from(k)) == Some(edge)) else {
            out.push(Violation::UnknownEdge { edge });
            continue;
        };
        subgraph(edge, s, parent, &l.conditions, out);
        budget += s.num_edges.unwrap_or(0);
        if let (Some(d), Some(_)) = (s.remaining_depth, l.conditions.remaining_depth) {
            deepest = deepest.max(Some(d));
        }
    }
    (budget, deepest)
}

/// One subgraph's conditions `s` against its parent edge and the layer's `c`.
fn subgraph(edge: u64, s: &LayerConditions, parent: &Edge, c: &LayerConditions, out: &mut Vec<Violation>) {
    let mut need = |key: &'static str, present: bool| {
        if !present {
            out.push(Violation::MissingCondition { edge, key });
        }
    };
    need("num_edges", s.num_edges.is_some());
    need("remaining_depth", s.remaining_depth.is_some());
    need("start_node", s.start_node.is_some());
    if let (Some(d), Some(layer)) = (s.remaining_depth, c.remaining_depth)
        && d >= layer
    {
        out.push(Violation::DepthNotReduced { edge, found: d, layer });
    }
    if let Some(found) = &s.start_node
        && *found != parent.destination
    {
        out.push(Violation::StartNode { edge, found: found.clone(), expected: parent.destination.clone() });
    }
    if let (Some(found), Some(expected)) = (&s.caller, &c.start_node)
        && found != expected
    {
        out.push(Violation::Caller { edge, found: found.clone(), expected: expected.clone() });
    }
    if let Some(found) = s.latency
        && found > parent.finish
    {
        out.push(Violation::SubgraphLatency { edge, found, finish: parent.finish });
    }
    // Not checked against the parent's start: real traces carry clock skew
    // (a callee's first call a millisecond before its caller's start).
    if let (Some(found), Some(latency)) = (s.start_communication_at, s.latency)
        && found > latency
    {
        out.push(Violation::SubgraphStart { edge, found, latency });
    }
    if let (Some(current), Some(total)) = (s.num_current_edges, s.num_edges)
        && (current > total || current == 0)
    {
        out.push(Violation::SubgraphEdges { edge, current, total });
    }
}

/// What the user asked of a whole graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    pub num_edges: Option<u64>,
    pub depth: Option<u64>,
    pub latency: Option<u64>,
}

/// A whole graph against the request.
pub fn graph(g: &CallGraph, r: &Requested) -> Vec<Violation> {
    let mut out = Vec::new();
    let found = g.edges.len() as u64;
    if let Some(expected) = r.num_edges
        && expected != found
    {
        out.push(Violation::GraphEdges { expected, found });
    }
    if let Some(expected) = r.depth
        && expected != g.depth()
    {
        out.push(Violation::GraphDepth { expected, found: g.depth() });
    }
    if let Some(expected) = r.latency
        && g.latency() > expected
    {
        out.push(Violation::GraphLatency { expected, found: g.latency() });
    }
    out
}
