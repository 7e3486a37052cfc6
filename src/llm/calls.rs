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

use std::collections::{BTreeSet, HashMap};

use super::graph::CallGraph;

/// One call as the training graphs made it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Call {
    pub service: String,
    pub source: String,
    pub destination: String,
    pub kind: String,
}

/// Names by a first and a second name, looked up by `&str` without
/// allocating (a generator asks once per call it writes).
type ByPair = HashMap<String, HashMap<String, Vec<String>>>;

/// Distinct calls with lookups by (service, source), source, and (source, destination).
#[derive(Debug, Clone, Default)]
pub struct KnownCalls {
    calls: Vec<Call>,
    by_service_source: ByPair,
    by_source: HashMap<String, Vec<String>>,
    kinds: ByPair,
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
    /// Every distinct call of `graphs`.
    pub fn of(graphs: &[CallGraph]) -> Self {
        let calls: BTreeSet<Call> = graphs
            .iter()
            .flat_map(|g| {
                g.edges.iter().map(|e| Call {
                    service: g.service.clone(),
                    source: e.source.clone(),
                    destination: e.destination.clone(),
                    kind: e.kind.clone(),
                })
            })
            .collect();
        Self::from_calls(calls.into_iter().collect())
    }

    /// The lookups over `calls` (as stored; duplicates and order do not matter).
    pub fn from_calls(calls: Vec<Call>) -> Self {
        let (mut by_service_source, mut kinds) = (ByPair::new(), ByPair::new());
        let mut by_source: HashMap<String, Vec<String>> = HashMap::new();
        for c in &calls {
            insert(&mut by_service_source, &c.service, &c.source, &c.destination);
            insert(&mut kinds, &c.source, &c.destination, &c.kind);
            let values = by_source.entry(c.source.clone()).or_default();
            if let Err(at) = values.binary_search(&c.destination) {
                values.insert(at, c.destination.clone());
            }
        }
        KnownCalls { calls, by_service_source, by_source, kinds }
    }

    /// The distinct calls, for storing.
    pub fn calls(&self) -> &[Call] {
        &self.calls
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
}
