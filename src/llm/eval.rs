//! `gent llm eval`: how well generated call graphs follow requests and resemble
//! real ones (§5.1, §5.2).
//!
//! - Accuracy: over a grid of requests (num_edges × depth), the share of
//!   generated graphs that are valid and have exactly the requested edges and depth.
//! - Similarity to real graphs (held back from training): each real graph's
//!   conditions (service, edges, depth, latency) are requested once; the
//!   (source, destination, type) calls of the generated graphs are compared with
//!   the real ones on the 100 most popular real calls and one bucket for all
//!   others (KL divergence of the real distribution from the generated one,
//!   add-½ smoothing), and by heavy hitters as the paper defines them: the
//!   share of the real top-K microservices (by calls received) among the
//!   generated top-K.

use std::collections::{BTreeMap, HashMap};

use super::generate::{Decoding, Generator, NextToken, Outcome, Request, WritesGraphs};
use super::graph::CallGraph;
use super::instruct::{Facts, UserInstruction};

/// Accuracy of one grid cell.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cell {
    pub num_edges: u64,
    pub depth: u64,
    pub valid: usize,
    pub tried: usize,
}

/// Grid accuracy: every cell, and how many generated graphs each rule
/// rejected (what free decoding gets wrong, at a glance).
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub cells: Vec<Cell>,
    pub rejected: BTreeMap<&'static str, usize>,
}

/// Generates `count` graphs per cell of `edges` × `depths` (cells with fewer
/// edges than levels are skipped).
pub fn accuracy(
    g: &mut impl WritesGraphs,
    edges: std::ops::RangeInclusive<u64>,
    depths: std::ops::RangeInclusive<u64>,
    count: usize,
    decoding: Decoding,
    max_tokens: usize,
) -> Grid {
    let mut grid = Grid::default();
    for num_edges in edges {
        for depth in depths.clone() {
            if depth > num_edges {
                continue;
            }
            let request = Request { service: "S_000034483".into(), num_edges, depth, latency: 100 };
            let mut valid = 0;
            for _ in 0..count {
                match g.run(&request, decoding, max_tokens) {
                    Outcome::Valid(_) => valid += 1,
                    Outcome::Invalid { reason, .. } => *grid.rejected.entry(reason.rule()).or_default() += 1,
                }
            }
            grid.cells.push(Cell { num_edges, depth, valid, tried: count });
        }
    }
    grid
}

/// Requests met within one band of requested edge counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SizeBand {
    /// The band's requested edge counts: `1`, `2-4`, `5-10` or `11+`.
    pub edges: &'static str,
    pub met: usize,
    pub asked: usize,
}

/// Bands of requested edge counts, as (upper bound, name): free decoding
/// meets one-edge requests far more often than any other, which a single
/// share hides.
const BANDS: [(u64, &str); 4] = [(1, "1"), (4, "2-4"), (10, "5-10"), (u64::MAX, "11+")];

/// What a method made of the real graphs' requests.
#[derive(Debug, Clone, Default)]
pub struct Requested {
    /// The valid graphs, in request order.
    pub graphs: Vec<CallGraph>,
    /// Requests met, by band of requested edge count (bands asked only).
    pub by_size: Vec<SizeBand>,
}

/// The valid graphs generated for the conditions of each of `real`, and
/// how many requests each band of sizes met.
pub fn requested<'r>(
    g: &mut impl WritesGraphs,
    real: impl IntoIterator<Item = &'r CallGraph>,
    decoding: Decoding,
    max_tokens: usize,
) -> Requested {
    let mut out = Requested::default();
    let mut bands = BANDS.map(|(_, edges)| SizeBand { edges, met: 0, asked: 0 });
    for r in real {
        let num_edges = r.edges.len() as u64;
        let request = Request { service: r.service.clone(), num_edges, depth: r.depth(), latency: r.end() };
        let band = &mut bands[BANDS.iter().position(|&(hi, _)| num_edges <= hi).unwrap_or(BANDS.len() - 1)];
        band.asked += 1;
        if let Outcome::Valid(x) = g.run(&request, decoding, max_tokens) {
            band.met += 1;
            out.graphs.push(x.graph);
        }
    }
    out.by_size = bands.into_iter().filter(|b| b.asked > 0).collect();
    out
}

/// How close generated graphs come to real ones.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Similarity {
    pub kl_popular_calls: f64,
    /// (K, share of the real top-K microservices among the generated top-K).
    pub heavy_hitters: Vec<(usize, f64)>,
}

/// KL over the 100 most popular calls, heavy hitters at K = 10, 50, 100, 500.
pub fn similarity(real: &[CallGraph], generated: &[CallGraph]) -> Similarity {
    Similarity {
        kl_popular_calls: kl_popular_calls(real, generated, 100),
        heavy_hitters: [10, 50, 100, 500].iter().map(|&k| (k, heavy_hitters(real, generated, k))).collect(),
    }
}

/// Records split into (training, held back): `fraction` of them, chosen by a
/// seeded shuffle, are held back; both keep the input order.
pub fn hold_out<T>(records: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let held = ((records.len() as f64 * fraction).round() as usize).min(records.len());
    let mut keep = vec![true; records.len()];
    for &i in &order[..held] {
        keep[i] = false;
    }
    let (mut train, mut back) = (Vec::new(), Vec::new());
    for (r, k) in records.into_iter().zip(keep) {
        if k { train.push(r) } else { back.push(r) }
    }
    (train, back)
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

/// Microservices ranked by the calls they receive, most first (ties by name).
fn ranked_microservices(graphs: &[CallGraph]) -> Vec<String> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for g in graphs {
        for e in &g.edges {
            *counts.entry(e.destination.as_str()).or_insert(0) += 1;
        }
    }
    let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    v.into_iter().map(|(m, _)| m.to_string()).collect()
}

/// Share of the real top-`k` microservices (by calls received) among the
/// generated top-`k` (§5.2's heavy hitters).
pub fn heavy_hitters(real: &[CallGraph], generated: &[CallGraph], k: usize) -> f64 {
    let r: Vec<String> = ranked_microservices(real).into_iter().take(k).collect();
    let g: std::collections::HashSet<String> = ranked_microservices(generated).into_iter().take(k).collect();
    if r.is_empty() {
        return 0.0;
    }
    r.iter().filter(|c| g.contains(*c)).count() as f64 / r.len() as f64
}

/// Instruction following (§5.3): the share of requests whose result has the
/// asked-for feature, with the instruction and without it (the model's
/// unprompted rate), over `tried` requests each.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Following {
    pub tried: usize,
    pub with_instruction: f64,
    pub without_instruction: f64,
}

/// High latency: each real graph's conditions are requested (the latency
/// bound loosened to ten times the service's training p90) with "Build a call
/// graph with high latency" and with the distributions instruction; a result
/// follows when it is valid and its latency exceeds that p90.
pub fn high_latency<M: NextToken>(g: &mut Generator<'_, M>, real: &[CallGraph], facts: &Facts, max_tokens: usize) -> Following {
    let mut f = Following::default();
    let (mut with, mut without) = (0, 0);
    for r in real {
        let Some(p90) = facts.p90(&r.service) else { continue };
        let request = Request {
            service: r.service.clone(),
            num_edges: r.edges.len() as u64,
            depth: r.depth(),
            latency: p90.saturating_mul(10).max(r.end()).max(1),
        };
        let high = |o: Outcome| matches!(o, Outcome::Valid(x) if x.graph.latency() > p90);
        with += usize::from(high(g.graph_instructed(&request, &UserInstruction::HighLatency, max_tokens)));
        without += usize::from(high(g.graph_instructed(&request, &UserInstruction::Distributions, max_tokens)));
        f.tried += 1;
    }
    f.with_instruction = with as f64 / f.tried.max(1) as f64;
    f.without_instruction = without as f64 / f.tried.max(1) as f64;
    f
}

/// Uncommon communication: for each layer of the real graphs holding a call
/// that is uncommon in training, that layer's conditions are asked with
/// "Include an edge from A to B with T type" and without; a result follows
/// when it is a valid layer with that call.
pub fn uncommon_calls<M: NextToken>(g: &mut Generator<'_, M>, real: &[CallGraph], facts: &Facts, max_tokens: usize) -> Following {
    let mut f = Following::default();
    let (mut with, mut without) = (0, 0);
    for r in real {
        for (j, l) in r.layers().iter().enumerate() {
            let Some(u @ UserInstruction::IncludeEdge { .. }) = facts.instruction(r, j, l) else { continue };
            let follows = |x: Result<crate::llm::Layer, super::generate::Rejection>| x.is_ok_and(|l| u.included_in(&l.edges));
            with += usize::from(follows(g.layer_instructed(&l.conditions, Some(&u), max_tokens)));
            without += usize::from(follows(g.layer_instructed(&l.conditions, None, max_tokens)));
            f.tried += 1;
        }
    }
    f.with_instruction = with as f64 / f.tried.max(1) as f64;
    f.without_instruction = without as f64 / f.tried.max(1) as f64;
    f
}
