//! Alibaba call-graph text, the tabular encoding of the TraceLLM paper:
//!
//! ```text
//! [GENERATE GRAPH]id:S_000034483/latency:8/num_edges:7/depth:3
//! <edges>
//! (source is USER,edge_id is 0,communication finishes at 8 milliseconds,type is http,destination is MS_63670,communication starts at 0 milliseconds)
//! </edges>
//! ```
//!
//! Each graph becomes a trace and each edge a span of its destination
//! microservice, parented by the edge whose id is its dot-decimal prefix (`0.1.2`
//! → `0.1`). Graphs carry no absolute time, so times are milliseconds after the
//! Unix epoch. Ids are derived by hashing, so a file always reads to the same ids.

use std::collections::HashMap;
use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::{ParseError, Position};
use crate::otlp::string_attribute;
use crate::trace::{Resource, Scope, Span, SpanId, SpanKind, Status, Trace, TraceId};

pub const RPC_TYPE_ATTRIBUTE: &str = "alibaba.rpc_type";
pub const RPC_ID_ATTRIBUTE: &str = "alibaba.rpc_id";
pub const UPSTREAM_ATTRIBUTE: &str = "alibaba.upstream";
pub const SERVICE_ID_ATTRIBUTE: &str = "alibaba.service_id";
const HEADER: &str = "[GENERATE GRAPH]";
const NANOS_PER_MILLI: u64 = 1_000_000;

struct Graph {
    trace_id: TraceId,
    service_id: String,
    resources: HashMap<String, Arc<Resource>>,
    /// Generated, not read: resources carry `gent.synthetic = true`.
    synthetic: bool,
}

pub fn read(text: &[u8], out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    let text =
        std::str::from_utf8(text).map_err(|e| ParseError::new(Position::Byte(e.valid_up_to() as u64), "not UTF-8 text"))?;
    let scope = Arc::new(Scope::default());
    let mut graph: Option<Graph> = None;
    let mut ordinal = 0u64;
    for (n, line) in text.lines().enumerate() {
        let position = Position::Line { line: n as u64 + 1, column: 1 };
        let line = line.trim();
        if let Some(attributes) = line.strip_prefix(HEADER) {
            let service_id = graph_attribute(attributes, "id").unwrap_or_default().to_string();
            let trace_id = graph_trace_id(ordinal, &service_id);
            ordinal += 1;
            graph = Some(Graph { trace_id, service_id, resources: HashMap::new(), synthetic: false });
        } else if line.starts_with('(') {
            let graph = graph.as_mut().ok_or_else(|| ParseError::new(position, format!("edge before any {HEADER} line")))?;
            let span = parse_edge(line, graph, &scope).map_err(|e| ParseError::new(position, e))?;
            if out.len() >= max {
                return Err(ParseError::new(position, super::too_many_spans(max)));
            }
            out.push(span);
        } else if !(line.is_empty() || line == "<edges>" || line == "</edges>") {
            return Err(ParseError::new(position, format!("unexpected line {:?}", shorten(line))));
        }
    }
    Ok(())
}

fn graph_attribute<'a>(attributes: &'a str, key: &str) -> Option<&'a str> {
    attributes.split('/').find_map(|kv| kv.strip_prefix(key)?.strip_prefix(':'))
}

fn parse_edge(line: &str, graph: &mut Graph, scope: &Arc<Scope>) -> Result<Span, String> {
    let inner = line.strip_prefix('(').and_then(|l| l.strip_suffix(')')).ok_or("an edge must be enclosed in parentheses")?;
    let (mut source, mut destination, mut rpc_type, mut edge_id) = (None, None, None, None);
    let (mut starts, mut finishes) = (None, None);
    for part in inner.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("source is ") {
            source = Some(v);
        } else if let Some(v) = part.strip_prefix("destination is ") {
            destination = Some(v);
        } else if let Some(v) = part.strip_prefix("type is ") {
            rpc_type = Some(v);
        } else if let Some(v) = part.strip_prefix("edge_id is ") {
            edge_id = Some(v);
        } else if let Some(v) = part.strip_prefix("communication starts at ") {
            starts = Some(millis(v)?);
        } else if let Some(v) = part.strip_prefix("communication finishes at ") {
            finishes = Some(millis(v)?);
        } else {
            return Err(format!("unknown edge attribute {:?}", shorten(part)));
        }
    }
    let missing = |what: &str| format!("edge lacks its {what}");
    let edge_id = edge_id.ok_or_else(|| missing("edge_id"))?;
    if edge_id.is_empty() || !edge_id.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("edge_id {:?} is not dot-decimal", shorten(edge_id)));
    }
    let call = Call {
        source,
        destination: destination.ok_or_else(|| missing("destination"))?,
        rpc_type: rpc_type.ok_or_else(|| missing("type"))?,
        edge_id,
        start: starts.ok_or_else(|| missing("start time"))?,
        end: finishes.ok_or_else(|| missing("finish time"))?,
    };
    Ok(edge_span(&call, graph, scope))
}

/// One edge's fields, times in Unix nanoseconds.
struct Call<'a> {
    source: Option<&'a str>,
    destination: &'a str,
    rpc_type: &'a str,
    edge_id: &'a str,
    start: u64,
    end: u64,
}

/// The span of one edge: a span of its destination microservice, parented by
/// the edge whose id is its dot-decimal prefix.
fn edge_span(call: &Call<'_>, graph: &mut Graph, scope: &Arc<Scope>) -> Span {
    let resource = graph
        .resources
        .entry(call.destination.to_string())
        .or_insert_with(|| {
            let mut attributes = vec![string_attribute(SERVICE_ID_ATTRIBUTE, &graph.service_id)];
            if graph.synthetic {
                attributes.push(crate::trace::synthetic_marker());
            }
            Resource::new(call.destination, attributes)
        })
        .clone();
    let mut attributes =
        vec![string_attribute(RPC_TYPE_ATTRIBUTE, call.rpc_type), string_attribute(RPC_ID_ATTRIBUTE, call.edge_id)];
    if let Some(source) = call.source {
        attributes.push(string_attribute(UPSTREAM_ATTRIBUTE, source));
    }
    Span {
        trace_id: graph.trace_id,
        span_id: edge_span_id(&graph.trace_id, call.edge_id),
        parent_span_id: call.edge_id.rsplit_once('.').map(|(parent, _)| edge_span_id(&graph.trace_id, parent)),
        resource,
        scope: scope.clone(),
        name: call.rpc_type.to_string(),
        kind: if call.rpc_type == "mq" { SpanKind::Consumer } else { SpanKind::Server },
        status: Status::default(),
        start: call.start,
        end: call.end,
        attributes,
        events: vec![],
        links: vec![],
    }
}

/// An edge's dot-decimal path: `0.2.1` as `[0, 2, 1]`.
pub type EdgeId = Vec<u32>;

/// One call of a [`CallGraph`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub id: EdgeId,
    pub source: String,
    pub destination: String,
    /// Communication type: `http`, `rpc`, `mc`, `db`, `mq`, ...
    pub kind: String,
    /// Communication start and finish, milliseconds from the graph's start.
    pub start: u64,
    pub finish: u64,
}

/// A microservice call graph as TraceLLM writes it (its layers, and the
/// model that generates them, are `crate::llm`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallGraph {
    /// Service id, e.g. `S_000034483`.
    pub service: String,
    /// In depth-first order of their ids.
    pub edges: Vec<Edge>,
}

/// `[0, 2, 1]` as `0.2.1`.
pub fn format_id(id: &[u32]) -> String {
    id.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// A generated call graph as the spans of trace `trace_id`, spans as the
/// reader makes them from the same graph's text, resources marked
/// `gent.synthetic = true`; the graph's millisecond
/// times count from `start` (Unix nanoseconds).
pub fn call_graph_trace(g: &CallGraph, trace_id: TraceId, start: u64) -> Trace {
    let scope = Arc::new(Scope::default());
    let mut graph = Graph { trace_id, service_id: g.service.clone(), resources: HashMap::new(), synthetic: true };
    let at = |ms: u64| start.saturating_add(ms.saturating_mul(NANOS_PER_MILLI));
    let mut spans: Vec<Span> = g
        .edges
        .iter()
        .map(|e| {
            let edge_id = format_id(&e.id);
            let call = Call {
                source: Some(&e.source),
                destination: &e.destination,
                rpc_type: &e.kind,
                edge_id: &edge_id,
                start: at(e.start),
                end: at(e.finish),
            };
            edge_span(&call, &mut graph, &scope)
        })
        .collect();
    // A trace's spans are in start order (see `Trace`).
    spans.sort_by_key(|s| s.start);
    Trace { trace_id, spans }
}

/// The trace id the reader gives the `ordinal`-th graph of a file.
pub fn graph_trace_id(ordinal: u64, service_id: &str) -> TraceId {
    xxh3_128(format!("alibaba/{ordinal}/{service_id}").as_bytes()).to_be_bytes()
}

fn edge_span_id(trace_id: &TraceId, edge_id: &str) -> SpanId {
    let mut seed = trace_id.to_vec();
    seed.extend_from_slice(edge_id.as_bytes());
    xxh3_64(&seed).max(1).to_be_bytes()
}

fn millis(text: &str) -> Result<u64, String> {
    let number = text.strip_suffix(" milliseconds").unwrap_or(text).trim();
    number
        .parse::<u64>()
        .ok()
        .and_then(|ms| ms.checked_mul(NANOS_PER_MILLI))
        .ok_or_else(|| format!("time {:?} is not a whole number of milliseconds", shorten(text)))
}

fn shorten(text: &str) -> &str {
    match text.char_indices().nth(60) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_become_spans_parented_by_rpc_id_prefix() {
        let text = "[GENERATE GRAPH]id:S_1/num_edges:2\n<edges>\n\
            (source is USER,edge_id is 0,communication finishes at 8 milliseconds,type is http,destination is MS_1,communication starts at 0 milliseconds)\n\
            (destination is MS_2,type is rpc,communication starts at 1 milliseconds,edge_id is 0.1,source is MS_1,communication finishes at 3 milliseconds)\n\
            </edges>\n";
        let mut spans = Vec::new();
        read(text.as_bytes(), &mut spans, usize::MAX).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].parent_span_id, Some(spans[0].span_id));
        assert_eq!(spans[1].service(), "MS_2");
        assert_eq!((spans[1].start, spans[1].end), (1_000_000, 3_000_000));
        assert_eq!(spans[0].parent_span_id, None);
    }

    #[test]
    fn malformed_edges_name_their_line() {
        let text = "[GENERATE GRAPH]id:S_1\n<edges>\n(source is USER,edge_id is x.1,type is http)\n";
        let err = read(text.as_bytes(), &mut Vec::new(), usize::MAX).unwrap_err();
        assert_eq!(err.position, Position::Line { line: 3, column: 1 });
        assert!(err.reason.contains("edge_id"));
    }
}
