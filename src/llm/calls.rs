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

/// Distinct calls with lookups by (service, source), source, and (source, destination).
#[derive(Debug, Clone, Default)]
pub struct KnownCalls {
    calls: Vec<Call>,
    by_service_source: HashMap<(String, String), Vec<String>>,
    by_source: HashMap<String, Vec<String>>,
    kinds: HashMap<(String, String), Vec<String>>,
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
        let mut by_service_source: HashMap<(String, String), BTreeSet<&str>> = HashMap::new();
        let mut by_source: HashMap<String, BTreeSet<&str>> = HashMap::new();
        let mut kinds: HashMap<(String, String), BTreeSet<&str>> = HashMap::new();
        for c in &calls {
            by_service_source.entry((c.service.clone(), c.source.clone())).or_default().insert(&c.destination);
            by_source.entry(c.source.clone()).or_default().insert(&c.destination);
            kinds.entry((c.source.clone(), c.destination.clone())).or_default().insert(&c.kind);
        }
        let owned = |set: BTreeSet<&str>| set.into_iter().map(str::to_string).collect();
        let by_service_source = by_service_source.into_iter().map(|(k, v)| (k, owned(v))).collect();
        let by_source = by_source.into_iter().map(|(k, v)| (k, owned(v))).collect();
        let kinds = kinds.into_iter().map(|(k, v)| (k, owned(v))).collect();
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
        self.by_service_source
            .get(&(service.to_string(), source.to_string()))
            .or_else(|| self.by_source.get(source))
            .map_or(&[], Vec::as_slice)
    }

    /// The types `source` called `destination` with; empty when never. Sorted.
    pub fn kinds(&self, source: &str, destination: &str) -> &[String] {
        self.kinds.get(&(source.to_string(), destination.to_string())).map_or(&[], Vec::as_slice)
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
