//! A microservice call graph (Alibaba v2022 as the paper uses it) and its
//! decomposition into layers.
//!
//! Edge ids are dot-decimal paths: `0` is the root call from `USER`, `0.2` its
//! second child call, `0.2.1` that call's first child. A layer is the calls one
//! node makes (the children of one edge, or the root edges); its conditions
//! describe the subtree still to be generated from it (§4.2, Figure 8).

use std::collections::BTreeMap;

// The graph itself is what the Alibaba reader reads (`crate::io::alibaba`);
// here, its decomposition into layers.
pub use crate::io::alibaba::{CallGraph, Edge, EdgeId, format_id};

/// What a layer must satisfy, as the paper's `key:value` conditions. Fields are
/// optional because the paper drops conditions at random during training.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerConditions {
    pub id: Option<String>,
    pub start_node: Option<String>,
    /// The node that called `start_node` (absent for the first layer).
    pub caller: Option<String>,
    /// Edges of the whole subtree from this layer on, this layer's included.
    pub num_edges: Option<u64>,
    /// Edges in this layer.
    pub num_current_edges: Option<u64>,
    /// Subgraph blocks this layer produces.
    pub num_subgraphs: Option<u64>,
    /// Levels below this layer (0: its edges have no children).
    pub remaining_depth: Option<u64>,
    /// Id of the layer's first edge (0 for the first layer, then 1).
    pub start_edge_id: Option<u64>,
    /// Start of the layer's first edge, ms.
    pub start_communication_at: Option<u64>,
    /// Every edge of the layer finishes by this, ms.
    pub latency: Option<u64>,
}

/// One layer: its conditions, its edges, and the conditions of the subgraphs it
/// hands on (edge index within the layer, conditions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub conditions: LayerConditions,
    /// Local ids (the last component of the dot-decimal id).
    pub edges: Vec<Edge>,
    pub subgraphs: Vec<(u64, LayerConditions)>,
}

impl CallGraph {
    /// Levels of calls (a graph of one call has depth 1).
    pub fn depth(&self) -> u64 {
        self.edges.iter().map(|e| e.id.len() as u64).max().unwrap_or(0)
    }

    /// The graph's latency as the tabular encoding states it: how long the
    /// root call took (its finish minus its start), ms.
    pub fn latency(&self) -> u64 {
        let roots = self.edges.iter().filter(|e| e.id.len() == 1);
        let start = roots.clone().map(|e| e.start).min().unwrap_or(0);
        roots.map(|e| e.finish).max().unwrap_or(0).saturating_sub(start)
    }

    /// When the root call finished, ms: the first layer's `latency` condition
    /// (every edge of a layer finishes by its latency).
    pub fn end(&self) -> u64 {
        self.edges.iter().filter(|e| e.id.len() == 1).map(|e| e.finish).max().unwrap_or(0)
    }

    fn children(&self) -> BTreeMap<&[u32], Vec<usize>> {
        let mut children: BTreeMap<&[u32], Vec<usize>> = BTreeMap::new();
        for (i, e) in self.edges.iter().enumerate() {
            children.entry(&e.id[..e.id.len().saturating_sub(1)]).or_default().push(i);
        }
        children
    }

    /// The layers in the order the recursive encoding writes them: depth-first,
    /// each layer followed by the layers of its subgraphs.
    pub fn layers(&self) -> Vec<Layer> {
        let children = self.children();
        let subtree = |prefix: &[u32]| -> (u64, u64) {
            // (edges, levels) of everything below `prefix`.
            let below: Vec<&Edge> = self.edges.iter().filter(|e| e.id.len() > prefix.len() && e.id.starts_with(prefix)).collect();
            let levels = below.iter().map(|e| (e.id.len() - prefix.len()) as u64).max().unwrap_or(0);
            (below.len() as u64, levels)
        };
        let mut out = Vec::new();
        let root: &[u32] = &[];
        let (num_edges, depth) = subtree(root);
        let first = LayerConditions {
            id: Some(self.service.clone()),
            start_node: Some("USER".into()),
            caller: None,
            num_edges: Some(num_edges),
            num_current_edges: None,
            num_subgraphs: None,
            remaining_depth: Some(depth.saturating_sub(1)),
            start_edge_id: Some(0),
            start_communication_at: None,
            latency: Some(self.end()),
        };
        self.push_layer(root, first, &children, &subtree, &mut out);
        out
    }

    fn push_layer(
        &self,
        prefix: &[u32],
        mut conditions: LayerConditions,
        children: &BTreeMap<&[u32], Vec<usize>>,
        subtree: &dyn Fn(&[u32]) -> (u64, u64),
        out: &mut Vec<Layer>,
    ) {
        let kids = children.get(prefix).cloned().unwrap_or_default();
        let full: Vec<&Edge> = kids.iter().map(|&i| &self.edges[i]).collect();
        // Within a layer edges are numbered on from the layer's first id (0 for
        // the root layer, else 1), closing the gaps the dataset leaves where it
        // removed calls with missing fields, as the paper's examples do.
        let first = if prefix.is_empty() { 0 } else { 1 };
        let mut subgraphs = Vec::new();
        for (k, &e) in full.iter().enumerate() {
            if !children.contains_key(e.id.as_slice()) {
                continue;
            }
            let (num_edges, levels) = subtree(&e.id);
            let grandkids = &children[e.id.as_slice()];
            subgraphs.push((
                first + k as u64,
                LayerConditions {
                    id: Some(self.service.clone()),
                    start_node: Some(e.destination.clone()),
                    caller: conditions.start_node.clone(),
                    num_edges: Some(num_edges),
                    num_current_edges: Some(grandkids.len() as u64),
                    num_subgraphs: Some(
                        grandkids.iter().filter(|&&g| children.contains_key(self.edges[g].id.as_slice())).count() as u64,
                    ),
                    remaining_depth: Some(levels.saturating_sub(1)),
                    start_edge_id: Some(1),
                    start_communication_at: grandkids.first().map(|&g| self.edges[g].start),
                    latency: Some(e.finish),
                },
            ));
        }
        conditions.num_current_edges = Some(full.len() as u64);
        conditions.num_subgraphs = Some(subgraphs.len() as u64);
        if conditions.start_communication_at.is_none() {
            conditions.start_communication_at = full.first().map(|e| e.start);
        }
        let edges: Vec<Edge> =
            full.iter().enumerate().map(|(k, &e)| Edge { id: vec![first as u32 + k as u32], ..e.clone() }).collect();
        let next: Vec<(EdgeId, LayerConditions)> =
            subgraphs.iter().map(|(k, c)| (full[(*k - first) as usize].id.clone(), c.clone())).collect();
        out.push(Layer { conditions, edges, subgraphs });
        for (id, c) in next {
            self.push_layer(&id, c, children, subtree, out);
        }
    }
}
