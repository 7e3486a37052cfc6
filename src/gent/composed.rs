//! Composed durations, label by label: the spans that make calls, moved
//! towards their own label's durations rank for rank.
//!
//! A span with calls is composed from its calls, their leads and its own
//! tail, each drawn from its sketch and tied by the copula. Every part comes
//! back with its distribution, but their sum is only as right as the joint
//! the copula gives, and the tenth slowest of a hundred sums moves with a
//! few draws: on TrainTicket hour 12, `OrderController.saveOrderInfo` (two
//! calls of six parts each) and `SELECT Station` (a wait for a connection,
//! then the query, 1,388 spans) came back 5-7% off at p90 from seed to seed.
//! So the packet also keeps, per label, a sketch of the durations of its
//! spans that are composed (neither roots, whose durations the latency
//! bands arrange, nor spans kept at their own duration, nor rare calls'
//! callers, kept at their stored length), every value of a label with at
//! most as many spans as a sketch has points. After composition each label's
//! composed spans take its quantiles, shortest first, in the order of their
//! composed durations among the spans whose calls fit in the quantile; a
//! span within [`TOLERANCE`] of its quantile stays as composed, one beyond
//! moves to the tolerance's edge. Mapped all the way, every wrapper's tail
//! (a few µs) became the mapping's noise and self time fell from 0.969 to
//! 0.686 on hour 12.
//!
//! The span's tail takes the difference: its calls keep their durations
//! and leads, and the calls after it move with its end. A span mapped
//! shorter than its calls reach first waits less between them (the heavy
//! wait for a connection meets a slow query in fewer spans than the copula
//! gives), and is held by the calls that lay inside it when no wait is
//! left; both are counted. A span that a call outlived (async work) is not
//! shortened, nor is a span that outlived its parent moved: either would
//! make a call longer against its parent than the window ever had one. A
//! span not mapped (a root, whose duration the latency bands set) keeps its
//! duration unless its calls now need more.

use foldhash::HashMap;
use std::hash::BuildHasher;

use super::cores::{on_cores, on_cores_mut};
use super::times::NodeTimes;
use super::topology::{Topology, TopologyHistogram};
use crate::tabular::sketch::{QuantileSketch, Quantiles, SketchColumns, SketchError};

/// Sketches of composed durations, one per label that has composed spans.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ComposedDurations {
    /// Labels with composed spans in the window, increasing.
    pub labels: Vec<u32>,
    /// Per label, its composed spans' ln(1 + µs) durations.
    pub sketches: SketchColumns,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComposedError {
    #[error("composed durations: {0}")]
    Inconsistent(String),
    #[error("composed durations: {0}")]
    Sketch(#[from] SketchError),
}

/// How a sketch is sized: (resolution, most points, points per square root).
pub type SketchSize = (f64, usize, f64);

impl ComposedDurations {
    /// The composed durations of `traces` (the window's, or a sample of them)
    /// placed in `histogram`; `composed(topology, node)` says which nodes are.
    pub fn fit(
        traces: &[NodeTimes],
        histogram: &TopologyHistogram,
        composed: impl Fn(usize, usize) -> bool,
        (resolution, most, per_root): SketchSize,
    ) -> Self {
        let mut by_label: HashMap<u32, Vec<f64>> = HashMap::default();
        for trace in traces {
            let t = trace.topology as usize;
            let Some(topology) = histogram.topologies.get(t).filter(|t| t.len() == trace.times.len()) else {
                continue;
            };
            for (k, &(start, end)) in trace.times.iter().enumerate() {
                if composed(t, k) {
                    let duration = (end.saturating_sub(start) as f64 / 1e3).ln_1p();
                    by_label.entry(topology.labels[k]).or_default().push(duration);
                }
            }
        }
        let mut labels: Vec<u32> = by_label.keys().copied().collect();
        labels.sort_unstable();
        let sketches: Vec<QuantileSketch> = labels
            .iter()
            .filter_map(|l| {
                let values = by_label.get_mut(l)?;
                // A label of at most `most` spans keeps every value (as many
                // points per square root as it has values): a few hundred
                // bytes a window. Fewer points smooth a jump between two
                // of its values, and the quantiles at the jump then fall
                // within the tolerance of spans that stay where they are:
                // `OrderController.saveOrderInfo` (100 spans, 89 up to 9.68
                // ln µs, 11 from 10.33) came back with p90 6.1% short at one
                // seed of four (BENCHMARKS.md "Session 60").
                let per_root = if values.len() <= most { values.len() as f64 } else { per_root };
                QuantileSketch::of(values, resolution, most, per_root)
            })
            .collect();
        ComposedDurations { labels, sketches: SketchColumns::of(&sketches) }
    }

    pub fn validate(&self, histogram: &TopologyHistogram) -> Result<(), ComposedError> {
        if self.labels.windows(2).any(|w| w[0] >= w[1])
            || self.labels.last().is_some_and(|&l| l as usize >= histogram.labels.len())
        {
            return Err(ComposedError::Inconsistent("labels out of order or range".into()));
        }
        if self.sketches.len() != self.labels.len() {
            return Err(ComposedError::Inconsistent(format!(
                "{} sketches for {} labels",
                self.sketches.len(),
                self.labels.len()
            )));
        }
        self.sketches.clone().into_sketches()?;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// [`ComposedDurations`] decoded, ready to map a regenerated window.
pub struct Mapping {
    /// Per label, its sketch's index.
    index: Vec<Option<u32>>,
    quantiles: Vec<Quantiles>,
}

/// One trace's shape, for [`Mapping::apply`].
pub struct Family<'a> {
    pub topology: &'a Topology,
    /// Per node, its children.
    pub children: &'a [Vec<usize>],
    /// Per node: whether it is composed (see [`ComposedDurations::fit`]).
    pub composed: &'a [bool],
    /// Per node: whether its end keeps its gap before its parent's end.
    pub spanning: &'a [bool],
    /// Per node: how much longer than it its longest call may be, as a log
    /// ratio (the window's largest; infinite for no bound).
    pub reach: &'a [f64],
}

/// What mapping a window changed beyond the durations it set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// Spans whose calls reached past their quantile: the waits between
    /// their calls shortened.
    pub waits_shortened: u64,
    /// Of those, spans held longer than their quantile by the calls that lay
    /// inside them, with no wait left.
    pub held: u64,
    /// Spans cut at the window's end.
    pub clamped: u64,
}

impl Fitted {
    fn add(&mut self, other: &Fitted) {
        self.waits_shortened += other.waits_shortened;
        self.held += other.held;
        self.clamped += other.clamped;
    }
}

/// Reused per trace.
#[derive(Default)]
struct Scratch {
    /// Per node: start relative to the parent's (roots: absolute), duration, in ns.
    offset: Vec<i64>,
    duration: Vec<i64>,
    kids: Vec<usize>,
    /// Per node: whether its duration changed.
    changed: Vec<bool>,
}

impl Mapping {
    pub fn new(composed: &ComposedDurations, labels: usize, resolution: f64) -> Result<Self, ComposedError> {
        let mut index = vec![None; labels];
        for (i, &l) in composed.labels.iter().enumerate() {
            *index.get_mut(l as usize).ok_or_else(|| ComposedError::Inconsistent("label out of range".into()))? = Some(i as u32);
        }
        let sketches = composed.sketches.clone().into_sketches()?;
        Ok(Mapping { index, quantiles: sketches.iter().map(|s| Quantiles::new(s, resolution)).collect() })
    }

    /// Maps the composed spans of every trace (`times`: per trace, per node,
    /// absolute (start, end) in ns; `family(i)`: trace `i`'s shape) onto
    /// their labels' sketches, ties broken by `seed`, and ends every span
    /// by `window_end`.
    pub fn apply<'f>(
        &self,
        times: &mut [Vec<(u64, u64)>],
        family: impl Fn(usize) -> Family<'f> + Sync,
        seed: u64,
        window_end: u64,
    ) -> Fitted {
        // Where each trace's nodes start among the window's.
        let mut firsts = Vec::with_capacity(times.len() + 1);
        firsts.push(0usize);
        for trace in times.iter() {
            firsts.push(firsts[firsts.len() - 1] + trace.len());
        }
        // A span's quantile is chosen among its label's spans as composed,
        // of calls not yet mapped themselves (a second round over the calls
        // as mapped changed no label's quantiles by more than noise).
        let targets = self.targets(times, (&family, &firsts), seed);
        let parts = on_cores_mut(times, |from, part| {
            let (mut scratch, mut fitted) = (Scratch::default(), Fitted::default());
            for (i, trace) in (from..).zip(part.iter_mut()) {
                refit(trace, &family(i), &targets[firsts[i]..firsts[i + 1]], window_end, &mut scratch, &mut fitted);
            }
            fitted
        });
        let mut fitted = Fitted::default();
        for part in parts {
            fitted.add(&part);
        }
        fitted
    }

    /// Per node of every trace, in order, its new duration in ns (−1: not
    /// mapped): each label's composed spans take its quantiles at evenly
    /// spaced probabilities, shortest first, in order of their composed
    /// durations (ties by a seeded draw) among the spans whose calls fit in
    /// the quantile with no wait between them ([`assigned`]).
    fn targets<'f>(
        &self,
        times: &[Vec<(u64, u64)>],
        (family, firsts): (&(impl Fn(usize) -> Family<'f> + Sync), &[usize]),
        seed: u64,
    ) -> Vec<i64> {
        let parts = on_cores(times.len(), |range| {
            let (mut members, mut scratch) = (Vec::new(), Scratch::default());
            for i in range {
                self.members(&times[i], &family(i), (firsts[i], seed), &mut scratch, &mut members);
            }
            members
        });
        let mut members: Vec<Member> = parts.into_iter().flatten().collect();
        members.sort_unstable_by_key(|m| (m.sketch, m.order));
        let runs: Vec<&[Member]> = members.chunk_by(|a, b| a.sketch == b.sketch).collect();
        // Labels apart, on the cores.
        let parts = on_cores(runs.len(), |range| {
            let mut out = Vec::new();
            for run in &runs[range] {
                let q = &self.quantiles[run[0].sketch as usize];
                let n = run.len() as f64;
                let quantile = |j: usize| ((q.at((j as f64 + 0.5) / n).min(25.0).exp_m1().max(0.0)) * 1e3).round() as i64;
                out.extend(
                    assigned(run, quantile).into_iter().map(|(target, m)| (run[m].at, beyond_tolerance(run[m].order.0, target))),
                );
            }
            out
        });
        let mut targets = vec![-1i64; firsts[firsts.len() - 1]];
        for (at, target) in parts.into_iter().flatten() {
            targets[at as usize] = target;
        }
        targets
    }

    /// The composed spans of one trace, its first node at `first` among the
    /// window's, to `members`.
    fn members(
        &self,
        trace: &[(u64, u64)],
        f: &Family,
        (first, seed): (usize, u64),
        scratch: &mut Scratch,
        members: &mut Vec<Member>,
    ) {
        let ties = foldhash::fast::FixedState::with_seed(seed);
        let Scratch { offset, duration, kids, .. } = scratch;
        offset.clear();
        offset.resize(trace.len(), 0);
        duration.clear();
        duration.extend(trace.iter().map(|&(s, e)| e.saturating_sub(s) as i64));
        for (k, &(s, e)) in trace.iter().enumerate() {
            let sketch = self.index.get(f.topology.labels[k] as usize).copied().flatten();
            let Some(sketch) = sketch.filter(|_| f.composed[k]) else {
                continue;
            };
            // Nor is a span that outlived its parent moved: it would come
            // back longer against it than the window ever had one.
            if f.topology.parents[k].is_some_and(|p| e > trace[p as usize].1) {
                continue;
            }
            sorted_calls(kids, f, trace, k);
            let floor = if outlived(kids, trace, k) {
                duration[k]
            } else {
                let held = lay_out(kids, trace, (s, duration[k]), 0.0, (offset, duration)).0;
                held.max(reach_floor(kids, duration, f.reach[k]))
            };
            let at = (first + k) as u32;
            // A draw per node of the seed and its place: the same whatever
            // the number of cores.
            let tie = (ties.hash_one(at) >> 32) as u32;
            members.push(Member { sketch, order: (e.saturating_sub(s), tie), floor: floor.max(0) as u64, at });
        }
    }
}

/// How far, as a share of its quantile's ln(1 + µs), a composed span may
/// stay from it: a span is moved only as far as that. Most labels come back
/// within it as composed, and the tail of a span that wraps its calls is a
/// few µs, less than any mapping's noise: mapped all the way, wrappers'
/// self time came back as that noise (TrainTicket hour 12: self time 0.969
/// → 0.686, BENCHMARKS.md "Session 59").
const TOLERANCE: f64 = 0.04;

/// The duration (ns) a span composed `natural` long is given towards its
/// quantile `target`, or −1 when it is within [`TOLERANCE`] of it.
fn beyond_tolerance(natural: u64, target: i64) -> i64 {
    let (from, to) = ((natural as f64 / 1e3).ln_1p(), (target as f64 / 1e3).ln_1p());
    let tolerance = TOLERANCE * to.abs();
    if (to - from).abs() <= tolerance {
        return -1;
    }
    let moved = to - tolerance.copysign(to - from);
    (moved.min(25.0).exp_m1().max(0.0) * 1e3).round() as i64
}

/// A composed span of the regenerated window.
struct Member {
    sketch: u32,
    /// Its composed duration (ns) and a seeded draw that breaks ties.
    order: (u64, u32),
    /// Where its calls would end with no wait between them (ns).
    floor: u64,
    /// Its position among every node of the window.
    at: u32,
}

/// Which member of `run` (sorted by order) takes which quantile: quantiles
/// shortest first, each to the member first in order among those whose
/// floor it holds (or, when none does, to the lowest floor left), so that
/// as few spans as the window allows end up longer than their quantile.
fn assigned(run: &[Member], quantile: impl Fn(usize) -> i64) -> Vec<(i64, usize)> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut by_floor: Vec<usize> = (0..run.len()).collect();
    by_floor.sort_unstable_by_key(|&m| (run[m].floor, m));
    let (mut eligible, mut taken) = (BinaryHeap::new(), vec![false; run.len()]);
    let (mut next, mut out) = (0usize, Vec::with_capacity(run.len()));
    for j in 0..run.len() {
        let q = quantile(j);
        while next < by_floor.len() && run[by_floor[next]].floor as i64 <= q {
            eligible.push(Reverse(by_floor[next]));
            next += 1;
        }
        let m = match eligible.pop() {
            Some(Reverse(m)) => m,
            None => {
                // None fits: the lowest floor left.
                while taken[by_floor[next]] {
                    next += 1;
                }
                next += 1;
                by_floor[next - 1]
            }
        };
        taken[m] = true;
        out.push((q, m));
    }
    out
}

/// The shortest (ns) a span may be against the longest of its `kids` (their
/// durations as they now are), given its `reach`.
fn reach_floor(kids: &[usize], duration: &[i64], reach: f64) -> i64 {
    if !reach.is_finite() {
        return 0;
    }
    let longest = kids.iter().map(|&c| duration[c]).max().unwrap_or(0) as f64 / 1e3;
    ((longest.ln_1p() - reach).min(25.0).exp_m1().max(0.0) * 1e3).round() as i64
}

/// Whether one of `kids` ended after node `p` as composed (an async call).
fn outlived(kids: &[usize], trace: &[(u64, u64)], p: usize) -> bool {
    kids.iter().any(|&c| trace[c].1 > trace[p].1)
}

/// `kids`: the calls of node `p` that are laid out one after another
/// (spanning ones aside), by start.
fn sorted_calls(kids: &mut Vec<usize>, f: &Family, trace: &[(u64, u64)], p: usize) {
    kids.clear();
    kids.extend(f.children[p].iter().copied().filter(|&c| !f.spanning[c]));
    kids.sort_by_key(|&c| trace[c].0);
}

/// One trace's composed spans set to their `targets` (see the module docs),
/// children before parents.
fn refit(trace: &mut [(u64, u64)], f: &Family, targets: &[i64], window_end: u64, scratch: &mut Scratch, fitted: &mut Fitted) {
    if targets.iter().all(|&t| t < 0) {
        return;
    }
    let n = trace.len();
    let Scratch { offset, duration, kids, changed } = scratch;
    offset.clear();
    duration.clear();
    changed.clear();
    changed.resize(n, false);
    for (k, &(s, e)) in trace.iter().enumerate() {
        let parent_start = f.topology.parents[k].map_or(0, |p| trace[p as usize].0);
        offset.push(s as i64 - parent_start as i64);
        duration.push(e.saturating_sub(s) as i64);
    }
    // Canonical order puts parents first.
    for p in (0..n).rev() {
        // Only where a span is mapped or a call's duration changed.
        if f.children[p].is_empty() || targets[p] < 0 && !f.children[p].iter().any(|&c| changed[c]) {
            continue;
        }
        // The calls after one that moved move with it: each keeps its lead
        // after the end of the calls that started before it. A span mapped
        // shorter than its calls reach waits less between them first.
        sorted_calls(kids, f, trace, p);
        let old = (trace[p].1 - trace[p].0) as i64;
        let (mut must_hold, waits) = lay_out(kids, trace, (trace[p].0, old), 1.0, (offset, duration));
        // A span a call outlived is not shortened: it would come back shorter
        // against that call than the window ever had it.
        let target = if targets[p] >= 0 && outlived(kids, trace, p) { targets[p].max(old) } else { targets[p] };
        // Nor shorter against its longest call than the window ever had one.
        let least = reach_floor(kids, duration, f.reach[p]);
        let target = if target >= 0 { target.max(least) } else { target };
        if target >= 0 && must_hold > target && waits > 0 {
            let factor = (1.0 - (must_hold - target) as f64 / waits as f64).max(0.0);
            must_hold = lay_out(kids, trace, (trace[p].0, old), factor, (offset, duration)).0;
            fitted.waits_shortened += 1;
        }
        duration[p] = if target >= 0 {
            fitted.held += u64::from(must_hold > target);
            target.max(must_hold)
        } else {
            // Not mapped (a root, whose duration the latency bands set; a
            // span kept at its own or its stored length): as long as it
            // was, or as its calls now need.
            // Roots keep their latency bands' arrangement: not held to reach.
            let least = if f.topology.parents[p].is_some() { least } else { 0 };
            old.max(must_hold).max(least)
        };
        changed[p] = duration[p] != old;
        // A spanning call keeps its gap before its parent's end.
        for &c in f.children[p].iter().filter(|&&c| f.spanning[c]) {
            let end = offset[c] + duration[c] + (duration[p] - old);
            duration[c] = (end - offset[c]).max(0);
        }
    }
    for k in 0..n {
        let start = match f.topology.parents[k] {
            Some(p) => (trace[p as usize].0 as i64 + offset[k]).max(trace[p as usize].0 as i64) as u64,
            None => trace[k].0,
        };
        let wanted = start.saturating_add(duration[k] as u64);
        let end = wanted.min(window_end).max(start);
        if end < wanted {
            fitted.clamped += 1;
        }
        trace[k] = (start.min(end), end);
    }
}

/// Lays a parent's `kids` (sorted by start) out again after their durations
/// changed, each its lead after the calls that started before it (a
/// positive lead scaled by `factor`); `parent`: the parent's (start,
/// duration) as composed. Returns where the calls that lay inside the
/// parent now end, and the sum of the positive leads.
fn lay_out(
    kids: &[usize],
    trace: &[(u64, u64)],
    (origin, old): (u64, i64),
    factor: f64,
    (offset, duration): (&mut [i64], &[i64]),
) -> (i64, i64) {
    let (mut old_cursor, mut new_cursor, mut must_hold, mut waits) = (0i64, 0i64, 0i64, 0i64);
    for &c in kids {
        let old_start = trace[c].0 as i64 - origin as i64;
        let old_end = old_start + (trace[c].1 - trace[c].0) as i64;
        let mut lead = old_start - old_cursor;
        if lead > 0 {
            waits += lead;
            lead = (lead as f64 * factor).round() as i64;
        }
        offset[c] = (new_cursor + lead).max(0);
        let new_end = offset[c] + duration[c];
        old_cursor = old_cursor.max(old_end);
        new_cursor = new_cursor.max(new_end);
        if old_end <= old {
            must_hold = must_hold.max(new_end);
        }
    }
    (must_hold, waits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(duration: u64, floor: u64) -> Member {
        Member { sketch: 0, order: (duration, 0), floor, at: 0 }
    }

    #[test]
    fn quantiles_go_in_order_to_the_spans_whose_calls_fit_in_them() {
        // Sorted by composed duration; the second's calls alone reach 50.
        let run = [member(10, 5), member(20, 50), member(30, 5), member(40, 5)];
        let quantiles = [12, 25, 35, 60];
        let got = assigned(&run, |j| quantiles[j]);
        // 25 goes to the third, not the second, which fits in 60 alone.
        assert_eq!(got, [(12, 0), (25, 2), (35, 3), (60, 1)]);
        // When nothing fits, the lowest floor left takes the quantile.
        let got = assigned(&[member(10, 100), member(20, 90)], |j| [1, 2][j]);
        assert_eq!(got, [(1, 1), (2, 0)]);
    }

    #[test]
    fn spans_move_only_beyond_the_tolerance_and_then_to_its_edge() {
        let us = |ln: f64| (ln.exp_m1() * 1e3).round() as u64;
        assert_eq!(beyond_tolerance(us(7.3), us(7.4) as i64), -1);
        let moved = beyond_tolerance(us(6.0), us(7.4) as i64);
        assert!(((moved as f64 / 1e3).ln_1p() - 7.4 * (1.0 - TOLERANCE)).abs() < 1e-3);
        let moved = beyond_tolerance(us(9.0), us(7.4) as i64);
        assert!(((moved as f64 / 1e3).ln_1p() - 7.4 * (1.0 + TOLERANCE)).abs() < 1e-3);
    }

    /// A root (0) over a span (1) that makes two calls one after the other
    /// (2, then 3 after a wait of 10), and a last call of the root's (4).
    fn trace() -> (Topology, Vec<Vec<usize>>, Vec<(u64, u64)>) {
        let topology = Topology { labels: vec![0, 1, 2, 3, 4], parents: vec![None, Some(0), Some(1), Some(1), Some(0)] };
        let children = topology.children();
        let times = vec![(0, 200), (10, 110), (20, 50), (60, 100), (120, 190)];
        (topology, children, times)
    }

    fn refit_to(span: i64) -> (Vec<(u64, u64)>, Fitted) {
        let (topology, children, mut times) = trace();
        let (composed, spanning, reach) = ([false, true, false, false, false], [false; 5], [f64::INFINITY; 5]);
        let f = Family { topology: &topology, children: &children, composed: &composed, spanning: &spanning, reach: &reach };
        let mut targets = vec![-1; 5];
        targets[1] = span;
        let (mut scratch, mut fitted) = (Scratch::default(), Fitted::default());
        refit(&mut times, &f, &targets, 1_000, &mut scratch, &mut fitted);
        (times, fitted)
    }

    #[test]
    fn a_longer_span_keeps_its_calls_and_the_call_after_it_moves_with_its_end() {
        let (times, fitted) = refit_to(150);
        // Its calls as they were, its tail longer; the root's last call keeps
        // its wait of 10 after it, and the root grows to hold that call.
        assert_eq!(times, [(0, 240), (10, 160), (20, 50), (60, 100), (170, 240)]);
        assert_eq!(fitted, Fitted::default());
    }

    #[test]
    fn a_shorter_span_waits_less_between_its_calls_before_it_holds_them() {
        // 80 fits once the calls' waits (10 before the first, 10 between)
        // shrink by 10 of their 20: to 5 each.
        let (times, fitted) = refit_to(80);
        assert_eq!(times[1], (10, 90));
        assert_eq!((times[2], times[3]), ((15, 45), (50, 90)));
        assert_eq!(fitted, Fitted { waits_shortened: 1, held: 0, clamped: 0 });
        // 50 does not: no wait is left and the calls hold it at 70.
        let (times, fitted) = refit_to(50);
        assert_eq!((times[1], times[2], times[3]), ((10, 80), (10, 40), (40, 80)));
        assert_eq!(fitted, Fitted { waits_shortened: 1, held: 1, clamped: 0 });
        // The root's last call keeps its wait after the span; the root, not
        // mapped, its duration.
        assert_eq!((times[0], times[4]), ((0, 200), (90, 160)));
    }
}
