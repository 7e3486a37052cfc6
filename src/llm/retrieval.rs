//! The retrieval baseline: answer a request by copying a real training
//! graph. For each request it takes a graph of the same service id whose
//! size is nearest the request's (the same num_edges and depth when one
//! exists), and any training graph of that size when the service was never
//! seen. It is the floor a generator must beat: a language model that scores
//! worse than copying real graphs has not yet learned the traffic.

use std::collections::HashMap;

use rand::Rng;

use super::graph::CallGraph;

/// The training graphs, indexed by service id.
pub struct Retrieval<'a> {
    by_service: HashMap<&'a str, Vec<&'a CallGraph>>,
    all: Vec<&'a CallGraph>,
}

impl<'a> Retrieval<'a> {
    /// `None` without training graphs: there is nothing to copy.
    pub fn new(training: &'a [CallGraph]) -> Option<Self> {
        if training.is_empty() {
            return None;
        }
        let mut by_service: HashMap<&str, Vec<&CallGraph>> = HashMap::new();
        for g in training {
            by_service.entry(g.service.as_str()).or_default().push(g);
        }
        Some(Retrieval { by_service, all: training.iter().collect() })
    }

    /// A copy of the training graph nearest the request: of `service` when it
    /// was seen, of the nearest (num_edges, depth) among those, ties drawn
    /// uniformly with `rng`. The copy is renamed to `service`.
    pub fn graph(&self, service: &str, num_edges: u64, depth: u64, rng: &mut impl Rng) -> CallGraph {
        let pool = self.by_service.get(service).unwrap_or(&self.all);
        let distance = |g: &CallGraph| ((g.edges.len() as u64).abs_diff(num_edges), g.depth().abs_diff(depth));
        let best = pool.iter().map(|g| distance(g)).min().unwrap_or_default();
        let nearest: Vec<&CallGraph> = pool.iter().copied().filter(|g| distance(g) == best).collect();
        let mut copy = nearest[rng.random_range(0..nearest.len())].clone();
        copy.service = service.to_string();
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::alibaba::Edge;
    use rand::SeedableRng;

    fn graph(service: &str, destinations: &[&str]) -> CallGraph {
        let edges = destinations
            .iter()
            .enumerate()
            .map(|(i, d)| Edge {
                id: vec![i as u32],
                source: "USER".into(),
                destination: (*d).into(),
                kind: "rpc".into(),
                start: 0,
                finish: 1,
            })
            .collect();
        CallGraph { service: service.into(), edges }
    }

    #[test]
    fn copies_a_graph_of_the_service_nearest_the_requested_size() {
        let training = vec![graph("S_1", &["MS_1"]), graph("S_1", &["MS_2", "MS_3"]), graph("S_2", &["MS_9", "MS_8", "MS_7"])];
        let r = Retrieval::new(&training).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let g = r.graph("S_1", 2, 1, &mut rng);
        assert_eq!((g.service.as_str(), g.edges[0].destination.as_str()), ("S_1", "MS_2"));
        // Nearest size within the service, not the size match of another service.
        assert_eq!(r.graph("S_1", 3, 1, &mut rng).edges.len(), 2);
        // An unseen service copies from every graph, renamed.
        let g = r.graph("S_7", 3, 1, &mut rng);
        assert_eq!((g.service.as_str(), g.edges.len()), ("S_7", 3));
        assert!(Retrieval::new(&[]).is_none());
    }
}
