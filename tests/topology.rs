//! The topology histogram on real traces: exact counts, canonical node order
//! that lines spans up across traces, and the chain decomposition.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::{data, read_set};
use gent::gent::TopologyHistogram;
use gent::trace::{Resource, Scope, Span, SpanKind, Status, Trace, TraceGraph, TraceSet};

fn trainticket_hour_12() -> TraceSet {
    read_set(&(0..60).map(|m| data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect::<Vec<_>>())
}

/// A trace with one span per topology node, built from the histogram alone.
fn rebuild(h: &TopologyHistogram, t: usize) -> Trace {
    let topology = &h.topologies[t];
    let id = |k: usize| (k as u64 + 1).to_be_bytes();
    let spans = (0..topology.len())
        .map(|k| {
            let label = &h.labels[topology.labels[k] as usize];
            Span {
                trace_id: [1; 16],
                span_id: id(k),
                parent_span_id: topology.parents[k].map(|p| id(p as usize)),
                resource: Resource::new(label.service.clone(), vec![]),
                scope: Arc::new(Scope::default()),
                name: label.name.clone(),
                kind: SpanKind::Internal,
                status: Status::default(),
                start: 1_000 + k as u64,
                end: 2_000,
                attributes: vec![],
                events: vec![],
                links: vec![],
            }
        })
        .collect();
    Trace { trace_id: [1; 16], spans }
}

fn check(set: &TraceSet, expected_topologies: usize) {
    let (h, placements) = TopologyHistogram::build(&set.traces);
    println!("{} traces, {} spans, {} topologies, {} labels", h.traces(), h.spans(), h.topologies.len(), h.labels.len());
    assert_eq!(h.traces(), set.traces.len() as u64);
    assert_eq!(h.spans(), set.span_count() as u64);
    assert_eq!(h.topologies.len(), expected_topologies);

    // Same topology ⇔ same canonical string, and the histogram alone rebuilds it.
    let mut canonical: HashMap<usize, String> = HashMap::new();
    for (trace, placement) in set.traces.iter().zip(&placements) {
        let s = TraceGraph::build(trace).canonical_string();
        assert_eq!(canonical.entry(placement.topology).or_insert_with(|| s.clone()), &s);
    }
    let distinct: HashSet<&String> = canonical.values().collect();
    assert_eq!(distinct.len(), h.topologies.len());
    for (t, s) in &canonical {
        assert_eq!(&TraceGraph::build(&rebuild(&h, *t)).canonical_string(), s, "topology {t} does not rebuild");
    }

    // Node k of every trace carries the topology's label k and its parent link.
    for (trace, placement) in set.traces.iter().zip(&placements) {
        let topology = &h.topologies[placement.topology];
        assert_eq!(placement.spans.len(), topology.len());
        for (k, &i) in placement.spans.iter().enumerate() {
            let span = &trace.spans[i];
            let label = &h.labels[topology.labels[k] as usize];
            assert_eq!((span.service(), span.name.as_str()), (label.service.as_str(), label.name.as_str()));
            let parent = topology.parents[k].map(|p| trace.spans[placement.spans[p as usize]].span_id);
            if parent.is_some() {
                assert_eq!(span.parent_span_id, parent);
            }
        }
    }

    // Regeneration order reproduces every count exactly.
    let mut counts = vec![0u32; h.topologies.len()];
    for t in h.expand() {
        counts[t] += 1;
    }
    assert_eq!(counts, h.counts);

    // Chains cover every edge once; each head is filled before its chain.
    for topology in &h.topologies {
        for length in [2, 3, 5] {
            let mut edges = HashSet::new();
            let mut filled: HashSet<usize> = topology.roots().collect();
            for chain in topology.chains(length) {
                assert!((2..=length).contains(&chain.len()));
                assert!(filled.contains(&chain[0]));
                for w in chain.windows(2) {
                    assert_eq!(topology.parents[w[1]], Some(w[0] as u32));
                    assert!(edges.insert((w[0], w[1])));
                }
                filled.extend(chain);
            }
            assert_eq!(edges.len(), topology.edges().count());
            assert_eq!(filled.len(), topology.len());
        }
    }
}

#[test]
fn trainticket_topologies_are_counted_exactly() {
    let set = trainticket_hour_12();
    let expected: HashSet<u64> = set.traces.iter().map(|t| TraceGraph::build(t).topology_hash()).collect();
    check(&set, expected.len());
}

#[test]
fn hipster_topologies_are_counted_exactly() {
    // `gent stats` reports 24 topologies for this set (README, "Measured results").
    check(&read_set(&[data("hipster")]), 24);
}

#[test]
fn the_histogram_survives_a_packet() {
    let set = read_set(&[data("hipster")]);
    let (h, _) = TopologyHistogram::build(&set.traces);
    let packet = gent::container::seal(&h).unwrap();
    println!("hipster histogram: {} bytes as a packet", packet.len());
    assert_eq!(gent::container::open::<TopologyHistogram>(&packet).unwrap(), h);
}
