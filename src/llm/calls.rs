//! The calls training graphs made: which destinations each source called
//! (within a service's graphs and over all of them) and with which types.
//!
//! Constrained decoding names only these: a destination the layer's start
//! node called in the requested service's training graphs, else one it
//! called in any, else (a start node never seen calling) any known
//! microservice; a type the (source, destination) pair was called with. A
//! model that has to learn the traffic from a few hundred graphs then chooses
//! among real calls instead of among every microservice, as copying a real
//! graph does, while it still writes new combinations of them.
//!
//! Each call also keeps how often graphs of each size made it ([`Seen`]),
//! and each call's destination how many calls it made in turn and how many
//! edges lay below it ([`CountedShape`]). From these counts come priors over
//! a call's destination and type and over a layer's and a subgraph's size,
//! which the generator combines with the network's distribution, as a kNN
//! language model (Khandelwal et al., 2020) combines its retrieved
//! neighbours' with the network's: the training graphs of the service
//! nearest the request in size weigh most. A few hundred graphs are too few
//! for a small network to learn which entry, callees and fan-out go with a
//! graph's size; the counts hold exactly that.

use std::collections::{BTreeMap, HashMap};

use super::graph::CallGraph;

/// One call as the training graphs made it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Call {
    pub service: String,
    pub source: String,
    pub destination: String,
    pub kind: String,
}

/// How often graphs of one size made a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// The graph's edges.
    pub edges: u32,
    /// The graph's depth.
    pub depth: u32,
    /// Times graphs of this size made the call.
    pub count: u32,
}

/// A call with how often graphs of each size made it, as a model file stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountedCall {
    pub call: Call,
    pub seen: Vec<Seen>,
}

/// How many calls one call's destination made in turn (`own`) and how many
/// edges lie below it (`subtree`), with how often graphs of each size had it;
/// for `node` "USER", the graph's root calls and all its edges.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountedShape {
    pub service: String,
    pub node: String,
    pub own: u32,
    pub subtree: u32,
    pub seen: Vec<Seen>,
}

/// A request's size, which the counts of the graphs nearest it weigh most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub edges: u64,
    pub depth: u64,
}

/// Names by a first and a second name, looked up by `&str` without
/// allocating (a generator asks once per call it writes).
type ByPair = HashMap<String, HashMap<String, Vec<String>>>;

/// Distinct calls with lookups by (service, source), source, and (source, destination).
#[derive(Debug, Clone, Default)]
pub struct KnownCalls {
    calls: Vec<Call>,
    /// Per call (aligned with `calls`): how often graphs of each size made
    /// it; empty for a file written before counts.
    seen: Vec<Vec<Seen>>,
    by_service_source: ByPair,
    by_source: HashMap<String, Vec<String>>,
    kinds: ByPair,
    /// Indices into `calls`, by (service, source) and by source.
    calls_by_service_source: Indices,
    calls_by_source: HashMap<String, Vec<usize>>,
    shapes: Vec<CountedShape>,
    /// Indices into `shapes`, by (service, node) and by node.
    shapes_by_service_node: Indices,
    shapes_by_node: HashMap<String, Vec<usize>>,
}

/// `values` sorted and distinct, under `first` and `second`.
fn insert(map: &mut ByPair, first: &str, second: &str, value: &str) {
    let values = map.entry(first.to_string()).or_default().entry(second.to_string()).or_default();
    if let Err(at) = values.binary_search_by(|v| v.as_str().cmp(value)) {
        values.insert(at, value.to_string());
    }
}

fn get<'a>(map: &'a ByPair, first: &str, second: &str) -> Option<&'a Vec<String>> {
    map.get(first)?.get(second)
}

impl KnownCalls {
    /// Every distinct call of `graphs`, counted by graph size.
    pub fn of(graphs: &[CallGraph]) -> Self {
        let mut counted: BTreeMap<Call, BTreeMap<(u32, u32), u32>> = BTreeMap::new();
        for g in graphs {
            let size = (saturated(g.edges.len() as u64), saturated(g.depth()));
            for e in &g.edges {
                let call = Call {
                    service: g.service.clone(),
                    source: e.source.clone(),
                    destination: e.destination.clone(),
                    kind: e.kind.clone(),
                };
                let count = counted.entry(call).or_default().entry(size).or_default();
                *count = count.saturating_add(1);
            }
        }
        let seen = |sizes: BTreeMap<(u32, u32), u32>| -> Vec<Seen> {
            sizes.into_iter().map(|((edges, depth), count)| Seen { edges, depth, count }).collect()
        };
        let counted = counted.into_iter().map(|(call, sizes)| CountedCall { call, seen: seen(sizes) }).collect();
        let mut shapes: BTreeMap<(String, String, u32, u32), BTreeMap<(u32, u32), u32>> = BTreeMap::new();
        for g in graphs {
            let size = (saturated(g.edges.len() as u64), saturated(g.depth()));
            for (node, own, subtree) in node_shapes(g) {
                let count = shapes.entry((g.service.clone(), node, own, subtree)).or_default().entry(size).or_default();
                *count = count.saturating_add(1);
            }
        }
        let shapes = shapes
            .into_iter()
            .map(|((service, node, own, subtree), sizes)| CountedShape { service, node, own, subtree, seen: seen(sizes) })
            .collect();
        Self::from_counted(counted, shapes)
    }

    /// The lookups over `calls` without counts (a file written before them):
    /// no prior ([`KnownCalls::destination_prior`] is empty).
    pub fn from_calls(calls: Vec<Call>) -> Self {
        Self::from_counted(calls.into_iter().map(|call| CountedCall { call, seen: Vec::new() }).collect(), Vec::new())
    }

    /// The lookups over `counted` and `shapes` (as stored; order does not
    /// matter, and a record stored twice counts twice).
    pub fn from_counted(counted: Vec<CountedCall>, shapes: Vec<CountedShape>) -> Self {
        let (mut by_service_source, mut kinds) = (ByPair::new(), ByPair::new());
        let mut by_source: HashMap<String, Vec<String>> = HashMap::new();
        let (mut calls, mut seen) = (Vec::with_capacity(counted.len()), Vec::with_capacity(counted.len()));
        let mut calls_by_service_source: Indices = HashMap::new();
        let mut calls_by_source: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in counted.into_iter().enumerate() {
            calls_by_service_source.entry(c.call.service.clone()).or_default().entry(c.call.source.clone()).or_default().push(i);
            calls_by_source.entry(c.call.source.clone()).or_default().push(i);
            calls.push(c.call);
            seen.push(c.seen);
        }
        for c in &calls {
            insert(&mut by_service_source, &c.service, &c.source, &c.destination);
            insert(&mut kinds, &c.source, &c.destination, &c.kind);
            let values = by_source.entry(c.source.clone()).or_default();
            if let Err(at) = values.binary_search(&c.destination) {
                values.insert(at, c.destination.clone());
            }
        }
        let mut shapes_by_service_node: Indices = HashMap::new();
        let mut shapes_by_node: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in shapes.iter().enumerate() {
            shapes_by_service_node.entry(s.service.clone()).or_default().entry(s.node.clone()).or_default().push(i);
            shapes_by_node.entry(s.node.clone()).or_default().push(i);
        }
        KnownCalls {
            calls,
            seen,
            by_service_source,
            by_source,
            kinds,
            calls_by_service_source,
            calls_by_source,
            shapes,
            shapes_by_service_node,
            shapes_by_node,
        }
    }

    /// The node shapes with their counts, for storing.
    pub fn shapes(&self) -> &[CountedShape] {
        &self.shapes
    }

    /// The calls with their counts, for storing.
    pub fn counted(&self) -> Vec<CountedCall> {
        self.calls.iter().zip(&self.seen).map(|(call, seen)| CountedCall { call: call.clone(), seen: seen.clone() }).collect()
    }

    /// The distinct calls.
    pub fn calls(&self) -> &[Call] {
        &self.calls
    }

    /// Whether the calls carry counts (a file from before them does not).
    pub fn has_counts(&self) -> bool {
        self.seen.iter().any(|s| !s.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// What `source` called in `service`'s graphs, else in any graph; empty
    /// when it was never seen calling. Sorted.
    pub fn destinations(&self, service: &str, source: &str) -> &[String] {
        get(&self.by_service_source, service, source).or_else(|| self.by_source.get(source)).map_or(&[], Vec::as_slice)
    }

    /// The types `source` called `destination` with; empty when never. Sorted.
    pub fn kinds(&self, source: &str, destination: &str) -> &[String] {
        get(&self.kinds, source, destination).map_or(&[], Vec::as_slice)
    }

    /// How likely each destination of a call from `source` is in a graph of
    /// `service` and `size`: the calls [`KnownCalls::destinations`] draws
    /// on, each weighted by its counts in training graphs near `size`
    /// (`count × e^(−sharpness × distance)`, [`distance`]). Sums to 1 over the destinations, sorted by name;
    /// empty when there are no counts.
    pub fn destination_prior(&self, service: &str, source: &str, size: Size, sharpness: f64) -> Vec<(&str, f64)> {
        self.prior(self.drawn_on(service, source), size, sharpness, |c| &c.destination)
    }

    /// How likely each type of the call `source` → `destination` is, as
    /// [`KnownCalls::destination_prior`] weighs them.
    pub fn kind_prior(&self, (service, source): (&str, &str), destination: &str, size: Size, sharpness: f64) -> Vec<(&str, f64)> {
        let of_pair = |calls: &[usize]| -> Vec<usize> {
            calls.iter().copied().filter(|&i| self.calls[i].destination == destination).collect()
        };
        let mut calls = of_pair(self.drawn_on(service, source));
        if calls.is_empty() {
            calls = of_pair(self.calls_by_source.get(source).map_or(&[], Vec::as_slice));
        }
        self.prior(&calls, size, sharpness, |c| &c.kind)
    }

    /// How likely each number of edges below a call to `node` is (its
    /// subgraph's budget), weighed as [`KnownCalls::destination_prior`]
    /// weighs destinations; by number, sorted.
    pub fn subtree_prior(&self, service: &str, node: &str, size: Size, sharpness: f64) -> Vec<(u64, f64)> {
        self.shape_prior(self.shapes_of(service, node), size, sharpness, |s| s.subtree)
    }

    /// How likely each number of calls `node` makes itself is, among the
    /// shapes with `subtree` edges below it when there are any, else all.
    pub fn own_prior(&self, (service, node): (&str, &str), subtree: u64, size: Size, sharpness: f64) -> Vec<(u64, f64)> {
        let all = self.shapes_of(service, node);
        let fitting: Vec<usize> = all.iter().copied().filter(|&i| u64::from(self.shapes[i].subtree) == subtree).collect();
        self.shape_prior(if fitting.is_empty() { all } else { &fitting }, size, sharpness, |s| s.own)
    }

    fn shapes_of(&self, service: &str, node: &str) -> &[usize] {
        backed_off((&self.shapes_by_service_node, &self.shapes_by_node), service, node)
    }

    fn shape_prior(&self, shapes: &[usize], size: Size, sharpness: f64, key: impl Fn(&CountedShape) -> u32) -> Vec<(u64, f64)> {
        let weighted: Vec<(u64, &[Seen])> =
            shapes.iter().map(|&i| (u64::from(key(&self.shapes[i])), self.shapes[i].seen.as_slice())).collect();
        weigh(&weighted, size, sharpness)
    }

    /// The calls of `source` in `service`'s graphs, else in any.
    fn drawn_on(&self, service: &str, source: &str) -> &[usize] {
        backed_off((&self.calls_by_service_source, &self.calls_by_source), service, source)
    }

    /// The counts of `calls` weighted by nearness to `size`, summed by `key`
    /// and normalised. Nearness is relative to the nearest size seen, so a
    /// request far from every training graph still gets a distribution.
    fn prior<'s>(
        &'s self,
        calls: &[usize],
        size: Size,
        sharpness: f64,
        key: impl Fn(&'s Call) -> &'s str,
    ) -> Vec<(&'s str, f64)> {
        let weighted: Vec<(&str, &[Seen])> = calls.iter().map(|&i| (key(&self.calls[i]), self.seen[i].as_slice())).collect();
        weigh(&weighted, size, sharpness)
    }
}

/// The counts of each value's `seen` weighted by nearness to `size`, summed
/// by value, sorted and normalised. Nearness is relative to the nearest size
/// seen, so a request far from every training graph still gets a
/// distribution; empty without counts.
fn weigh<K: Ord + Copy>(values: &[(K, &[Seen])], size: Size, sharpness: f64) -> Vec<(K, f64)> {
    let distances = values.iter().flat_map(|(_, seen)| seen.iter().map(|s| distance(s, size)));
    let Some(nearest) = distances.min_by(f64::total_cmp) else { return Vec::new() };
    let mut out: Vec<(K, f64)> = Vec::new();
    for &(k, seen) in values {
        let w: f64 = seen.iter().map(|s| f64::from(s.count) * (-sharpness * (distance(s, size) - nearest)).exp()).sum();
        match out.binary_search_by(|(v, _)| v.cmp(&k)) {
            Ok(at) => out[at].1 += w,
            Err(at) => out.insert(at, (k, w)),
        }
    }
    let total: f64 = out.iter().map(|(_, w)| w).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Vec::new();
    }
    out.iter_mut().for_each(|(_, w)| *w /= total);
    out
}

/// Each call's destination with the calls it made itself and the edges below
/// it, and "USER" with the root calls and every edge. Edge ids are paths
/// (a child's id extends its parent's), so one sort puts each call's
/// descendants right after it; no recursion on input.
fn node_shapes(g: &CallGraph) -> Vec<(String, u32, u32)> {
    let mut order: Vec<&super::graph::Edge> = g.edges.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    let n = order.len();
    let (mut own, mut subtree) = (vec![0usize; n], vec![0usize; n]);
    // The calls whose descendants are still being read, outermost first;
    // a call's subtree ends where the first non-descendant starts.
    let mut open: Vec<usize> = Vec::new();
    for (j, e) in order.iter().enumerate() {
        while let Some(&top) = open.last() {
            if e.id.len() > order[top].id.len() && e.id.starts_with(&order[top].id) {
                break;
            }
            subtree[top] = j - top - 1;
            open.pop();
        }
        if let Some(&top) = open.last()
            && e.id.len() == order[top].id.len() + 1
        {
            own[top] += 1;
        }
        open.push(j);
    }
    for top in open {
        subtree[top] = n - top - 1;
    }
    let roots = order.iter().filter(|e| e.id.len() == 1).count();
    let mut out = vec![("USER".to_string(), saturated(roots as u64), saturated(n as u64))];
    for (i, e) in order.iter().enumerate() {
        out.push((e.destination.clone(), saturated(own[i] as u64), saturated(subtree[i] as u64)));
    }
    out
}

/// Indices by (service, name), else by name alone.
type Indices = HashMap<String, HashMap<String, Vec<usize>>>;

/// The indices under (`service`, `name`), else under `name` in any service.
fn backed_off<'m>(
    (by_service, by_name): (&'m Indices, &'m HashMap<String, Vec<usize>>),
    service: &str,
    name: &str,
) -> &'m [usize] {
    by_service.get(service).and_then(|m| m.get(name)).or_else(|| by_name.get(name)).map_or(&[], Vec::as_slice)
}

/// How far a training graph's size is from a request's: the sum of the log
/// ratios of edges and of depth, so that 5 against 10 edges is as far as 50
/// against 100.
fn distance(seen: &Seen, size: Size) -> f64 {
    let ratio = |a: u64, b: u64| ((a as f64 + 1.0) / (b as f64 + 1.0)).ln().abs();
    ratio(u64::from(seen.edges), size.edges) + ratio(u64::from(seen.depth), size.depth)
}

fn saturated(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Edge;

    fn graph(service: &str, calls: &[(&str, &str, &str)]) -> CallGraph {
        let edges = calls
            .iter()
            .enumerate()
            .map(|(i, (s, d, k))| Edge {
                id: vec![i as u32],
                source: s.to_string(),
                destination: d.to_string(),
                kind: k.to_string(),
                start: 0,
                finish: 1,
            })
            .collect();
        CallGraph { service: service.into(), edges }
    }

    #[test]
    fn destinations_back_off_from_the_service_to_any_graph_to_none() {
        let known = KnownCalls::of(&[
            graph("S_1", &[("USER", "MS_00001", "http"), ("MS_00001", "MS_00002", "rpc")]),
            graph("S_2", &[("USER", "MS_00003", "http"), ("MS_00001", "MS_00004", "mc"), ("MS_00001", "MS_00002", "db")]),
        ]);
        assert_eq!(known.destinations("S_1", "USER"), ["MS_00001"]);
        assert_eq!(known.destinations("S_2", "MS_00001"), ["MS_00002", "MS_00004"]);
        // An unseen service: what the source called anywhere.
        assert_eq!(known.destinations("S_9", "USER"), ["MS_00001", "MS_00003"]);
        assert!(known.destinations("S_1", "MS_00002").is_empty());
        assert_eq!(known.kinds("MS_00001", "MS_00002"), ["db", "rpc"]);
        assert!(known.kinds("MS_00002", "MS_00001").is_empty());
        // Stored and read back, the lookups are the same.
        let again = KnownCalls::from_calls(known.calls().to_vec());
        assert_eq!(again.destinations("S_2", "MS_00001"), known.destinations("S_2", "MS_00001"));
        assert_eq!(known.calls().len(), 5);
    }

    #[test]
    fn node_shapes_count_each_calls_own_calls_and_the_edges_below_it() {
        let edge = |id: &[u32], d: &str| Edge {
            id: id.to_vec(),
            source: String::new(),
            destination: d.into(),
            kind: "rpc".into(),
            start: 0,
            finish: 1,
        };
        // Out of order on purpose: shapes come from the ids, not the order.
        let g = CallGraph {
            service: "S_1".into(),
            edges: vec![
                edge(&[1], "MS_5"),
                edge(&[0, 1, 0], "MS_4"),
                edge(&[0], "MS_1"),
                edge(&[0, 0], "MS_2"),
                edge(&[0, 1], "MS_3"),
            ],
        };
        let mut shapes = node_shapes(&g);
        shapes.sort();
        let want = [("MS_1", 2, 3), ("MS_2", 0, 0), ("MS_3", 1, 1), ("MS_4", 0, 0), ("MS_5", 0, 0), ("USER", 2, 5)];
        assert_eq!(shapes, want.map(|(n, o, s)| (n.to_string(), o, s)));
        let known = KnownCalls::of(&[g]);
        let size = Size { edges: 5, depth: 3 };
        assert_eq!(known.subtree_prior("S_1", "MS_1", size, 4.0), [(3, 1.0)]);
        assert_eq!(known.own_prior(("S_1", "USER"), 5, size, 4.0), [(2, 1.0)]);
        // A subtree never seen: every shape of the node.
        assert_eq!(known.own_prior(("S_1", "MS_3"), 7, size, 4.0), [(1, 1.0)]);
    }

    #[test]
    fn the_prior_weighs_the_calls_of_graphs_near_the_requested_size() {
        let small = graph("S_1", &[("USER", "MS_00001", "http")]);
        let large =
            graph("S_1", &[("USER", "MS_00002", "http"), ("MS_00002", "MS_00003", "rpc"), ("MS_00002", "MS_00003", "mc")]);
        let known = KnownCalls::of(&[small.clone(), small.clone(), small, large]);
        let share = |prior: &[(&str, f64)], name: &str| prior.iter().find(|p| p.0 == name).map_or(0.0, |p| p.1);
        let (one, three) = (Size { edges: 1, depth: 1 }, Size { edges: 3, depth: 1 });
        // Every size alike: the counts (3 small graphs, 1 large).
        let flat = known.destination_prior("S_1", "USER", one, 0.0);
        assert!((share(&flat, "MS_00001") - 0.75).abs() < 1e-9, "{flat:?}");
        // Sharp: the graphs of the requested size decide.
        assert!(share(&known.destination_prior("S_1", "USER", one, 8.0), "MS_00001") > 0.99);
        assert!(share(&known.destination_prior("S_1", "USER", three, 8.0), "MS_00002") > 0.98, "3 small graphs at 1/2^8 each");
        // Far from every graph, it is still a distribution (nearest first).
        let far = known.destination_prior("S_1", "USER", Size { edges: 1_000_000, depth: 50 }, 8.0);
        assert!((far.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-9 && share(&far, "MS_00002") > 0.98, "{far:?}");
        // An unseen service backs off to the source's calls in any graph; types by their counts.
        assert_eq!(known.destination_prior("S_9", "USER", one, 0.0).len(), 2);
        let kinds = known.kind_prior(("S_1", "MS_00002"), "MS_00003", three, 4.0);
        assert_eq!(kinds, [("mc", 0.5), ("rpc", 0.5)]);
        // Without counts (a file before them) there is no prior.
        assert!(KnownCalls::from_calls(known.calls().to_vec()).destination_prior("S_1", "USER", one, 4.0).is_empty());
        // Stored with counts and read back, the prior is the same.
        let again = KnownCalls::from_counted(known.counted(), known.shapes().to_vec());
        assert_eq!(again.destination_prior("S_1", "USER", three, 4.0), known.destination_prior("S_1", "USER", three, 4.0));
    }
}
