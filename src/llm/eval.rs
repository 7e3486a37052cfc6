//! `gent llm eval`: how well generated call graphs follow requests and resemble
//! real ones (§5.1, §5.2).
//!
//! - Accuracy: over a grid of requests (num_edges × depth), the share of
//!   generated graphs that are valid and have exactly the requested edges and depth.
//! - Similarity to real graphs: each real graph's conditions (service, edges,
//!   depth, latency) are requested once; the (source, destination, type) calls of
//!   the generated graphs are compared with the real ones on the 100 most popular
//!   real calls and one bucket for all others (KL divergence of the real
//!   distribution from the generated one, add-½ smoothing) and by heavy hitters (the share of the real top-K calls
//!   among the generated top-K).

use std::collections::HashMap;

use super::generate::{Generator, NextToken, Outcome, Request};
use super::graph::CallGraph;

/// Accuracy of one grid cell.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cell {
    pub num_edges: u64,
    pub depth: u64,
    pub valid: usize,
    pub tried: usize,
}

/// Generates `count` graphs per cell of `edges` × `depths` (cells with fewer
/// edges than levels are skipped).
pub fn accuracy<M: NextToken>(
    g: &mut Generator<'_, M>,
    edges: std::ops::RangeInclusive<u64>,
    depths: std::ops::RangeInclusive<u64>,
    count: usize,
    constrained: bool,
    max_tokens: usize,
) -> Vec<Cell> {
    let mut cells = Vec::new();
    for num_edges in edges {
        for depth in depths.clone() {
            if depth > num_edges {
                continue;
            }
            let request = Request { service: "S_000034483".into(), num_edges, depth, latency: 100 };
            let valid = (0..count)
                .filter(|_| {
                    if constrained {
                        g.graph(&request).is_ok()
                    } else {
                        matches!(g.graph_free(&request, max_tokens), Outcome::Valid(_))
                    }
                })
                .count();
            cells.push(Cell { num_edges, depth, valid, tried: count });
        }
    }
    cells
}

type Call = (String, String, String);

fn calls(graphs: &[CallGraph]) -> HashMap<Call, u64> {
    let mut out = HashMap::new();
    for g in graphs {
        for e in &g.edges {
            *out.entry((e.source.clone(), e.destination.clone(), e.kind.clone())).or_insert(0) += 1;
        }
    }
    out
}

fn ranked(counts: &HashMap<Call, u64>) -> Vec<(Call, u64)> {
    let mut v: Vec<(Call, u64)> = counts.iter().map(|(k, &c)| (k.clone(), c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// KL(real ‖ generated) over the real data's `top` most popular calls plus one
/// bucket for every other call, so both sides are distributions over the same
/// `top + 1` outcomes; the generated side is smoothed by ½ per outcome.
pub fn kl_popular_calls(real: &[CallGraph], generated: &[CallGraph], top: usize) -> f64 {
    let (r, g) = (calls(real), calls(generated));
    let popular: Vec<(Call, u64)> = ranked(&r).into_iter().take(top).collect();
    let r_total = r.values().sum::<u64>() as f64;
    let g_total = g.values().sum::<u64>() as f64;
    if r_total == 0.0 {
        return 0.0;
    }
    let outcomes = popular.len() as f64 + 1.0;
    let q = |count: f64| (count + 0.5) / (g_total + 0.5 * outcomes);
    let mut kl = 0.0;
    let (mut r_popular, mut g_popular) = (0.0, 0.0);
    for (k, c) in &popular {
        let gc = g.get(k).copied().unwrap_or(0) as f64;
        let p = *c as f64 / r_total;
        kl += p * (p / q(gc)).ln();
        r_popular += *c as f64;
        g_popular += gc;
    }
    let p_other = (r_total - r_popular) / r_total;
    if p_other > 0.0 {
        kl += p_other * (p_other / q(g_total - g_popular)).ln();
    }
    kl
}

/// Share of the real top-`k` calls among the generated top-`k`.
pub fn heavy_hitters(real: &[CallGraph], generated: &[CallGraph], k: usize) -> f64 {
    let r: Vec<Call> = ranked(&calls(real)).into_iter().take(k).map(|(c, _)| c).collect();
    let g: std::collections::HashSet<Call> = ranked(&calls(generated)).into_iter().take(k).map(|(c, _)| c).collect();
    if r.is_empty() {
        return 0.0;
    }
    r.iter().filter(|c| g.contains(*c)).count() as f64 / r.len() as f64
}
