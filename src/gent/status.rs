//! Calibrated status: which spans fail, counted, not learned.
//!
//! With calibrated timing, R_G and C_G carry status, kind and attributes
//! given the timing. On a window where some spans fail, a CTGAN of any width
//! learns little of which: on TrainTicket hour 16 with 475 failed spans
//! (2.5%) it regenerated 1,955, 235 of them on the gateway, which never
//! failed (BENCHMARKS.md "Session 56"), and the RED error rates and error
//! alarms an SRE reads scored 0.09 and 0.28.
//!
//! So the packet carries, per label (service, span name) that failed, how
//! many of its spans failed in each time bucket of the trace starts (the
//! topology bucket, whose topology counts are exact, so every bucket
//! regenerates as many spans of the label as it had), and where its failed
//! spans lay among the label's spans by duration (quartile shares: a
//! timeout is slow, a refused call fast). After the traces are timed and
//! the generators have filled status, kind and attributes, exactly that
//! many spans of each (label, bucket) fail, drawn by their duration
//! quartile; spans fail nowhere else. A span that changes status takes the
//! status, kind and attributes the generators gave a span of its label that
//! changes the other way (or a copy of one that kept it), so an error keeps
//! the attributes that come with one (an HTTP status code of 500). A window
//! regenerated in parts fails exactly as often: each part takes its share of
//! every cell, rounded at a phase all parts share.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::topology::{Placement, Topology, TopologyHistogram};
use crate::trace::{SpanView, Trace};

/// Duration bins a label's failed spans are spread over.
pub const RANK_BINS: usize = 4;

/// Most (label, bucket) cells counted while a window folds: past it, only
/// per label totals (a day of minutes for 45 failing labels).
const MAX_CELLS: usize = 1 << 16;

/// Most buckets a model spans (a week of seconds): a stored model beyond it
/// is refused.
const MAX_BUCKETS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatusError {
    #[error("status counts: {0}")]
    Inconsistent(String),
}

/// Failed spans counted as a window folds, per (label, absolute time bucket
/// of the trace's start).
#[derive(Debug, Clone, Default)]
pub struct ErrorCounts {
    bucket_ns: u64,
    cells: HashMap<(u32, u64), u32>,
    totals: HashMap<u32, u32>,
    overflowed: bool,
}

impl ErrorCounts {
    pub fn new(bucket_ns: u64) -> Self {
        ErrorCounts { bucket_ns: bucket_ns.max(1), ..Default::default() }
    }

    /// Counts the failed spans of a trace starting at `start`.
    pub fn add<S: SpanView>(&mut self, spans: &[S], placement: &Placement, topology: &Topology, start: u64) {
        let bucket = start / self.bucket_ns;
        for (k, &i) in placement.spans.iter().enumerate() {
            if !spans.get(i).is_some_and(SpanView::failed) {
                continue;
            }
            let label = topology.labels[k];
            *self.totals.entry(label).or_default() += 1;
            if self.overflowed {
                continue;
            }
            *self.cells.entry((label, bucket)).or_default() += 1;
            if self.cells.len() > MAX_CELLS {
                self.overflowed = true;
                self.cells = HashMap::new();
            }
        }
    }

    /// The failed spans of `traces` (a whole window).
    pub fn of(traces: &[Trace], placements: &[Placement], histogram: &TopologyHistogram, bucket_ns: u64) -> Self {
        let mut counts = ErrorCounts::new(bucket_ns);
        for (trace, placement) in traces.iter().zip(placements) {
            counts.add(&trace.spans, placement, &histogram.topologies[placement.topology], trace.start());
        }
        counts
    }
}

/// One label's failed spans.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelErrors {
    pub label: u32,
    /// Of its failed spans, the share (of 255) in each quartile of the
    /// label's durations, fastest first.
    pub ranks: [u8; RANK_BINS],
    /// Per bucket with failed spans: the buckets since the previous such
    /// bucket (since the model's first for the first), and how many. One
    /// cell of the whole window when the model has no buckets.
    pub cells: Vec<(u32, u32)>,
}

/// What a window's failed spans keep ([`StatusModel::fit`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusModel {
    /// Width of the buckets in ns; 0: counts of the whole window.
    pub bucket_ns: u64,
    /// The window's first bucket (its start over `bucket_ns`).
    pub first_bucket: u64,
    /// The labels that failed, ascending.
    pub labels: Vec<LabelErrors>,
}

impl StatusModel {
    /// The model of `counts` for a window starting at `window_start`, with
    /// duration ranks read off the fitted traces.
    pub fn fit(
        counts: &ErrorCounts,
        window_start: u64,
        (traces, placements): (&[Trace], &[Placement]),
        histogram: &TopologyHistogram,
    ) -> Self {
        let ranks = rank_shares(traces, placements, histogram, &counts.totals);
        let first_bucket = window_start / counts.bucket_ns;
        let mut by_label: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
        if counts.overflowed {
            for (&label, &n) in &counts.totals {
                by_label.entry(label).or_default().push((0, n));
            }
        } else {
            for (&(label, bucket), &n) in &counts.cells {
                by_label.entry(label).or_default().push((bucket.saturating_sub(first_bucket), n));
            }
        }
        let mut labels: Vec<LabelErrors> = by_label
            .into_iter()
            .map(|(label, mut cells)| {
                cells.sort_unstable();
                let mut previous = 0;
                let cells = cells
                    .into_iter()
                    .map(|(bucket, n)| {
                        let delta = (bucket - previous).min(u64::from(u32::MAX)) as u32;
                        previous = bucket;
                        (delta, n)
                    })
                    .collect();
                let ranks = ranks.get(&label).copied().unwrap_or([64; RANK_BINS]);
                LabelErrors { label, ranks, cells }
            })
            .collect();
        labels.sort_unstable_by_key(|l| l.label);
        let bucket_ns = if counts.overflowed { 0 } else { counts.bucket_ns };
        StatusModel { bucket_ns, first_bucket: if bucket_ns == 0 { 0 } else { first_bucket }, labels }
    }

    /// The same counts over the whole window: fewer bytes.
    pub fn coarsened(&self) -> Self {
        let labels = (self.labels.iter())
            .map(|l| LabelErrors { cells: vec![(0, l.cells.iter().map(|c| c.1).sum())], ..l.clone() })
            .collect();
        StatusModel { bucket_ns: 0, first_bucket: 0, labels }
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Checks a stored model against its histogram.
    pub fn validate(&self, histogram: &TopologyHistogram) -> Result<(), StatusError> {
        let bad = |what: String| Err(StatusError::Inconsistent(what));
        let mut previous = None;
        for l in &self.labels {
            if l.label as usize >= histogram.labels.len() || previous.is_some_and(|p| p >= l.label) {
                return bad(format!("label {} out of range or out of order", l.label));
            }
            previous = Some(l.label);
            let span: u64 = l.cells.iter().map(|c| u64::from(c.0)).sum();
            if span > MAX_BUCKETS || (self.bucket_ns == 0 && l.cells.len() > 1) {
                return bad(format!("label {} has cells beyond the window", l.label));
            }
            // Buckets ascend and every cell counts a failure.
            if l.cells.iter().skip(1).any(|c| c.0 == 0) || l.cells.iter().any(|c| c.1 == 0) {
                return bad(format!("label {} has a repeated or empty cell", l.label));
            }
        }
        Ok(())
    }

    fn bucket_of(&self, start: u64) -> u64 {
        if self.bucket_ns == 0 { 0 } else { (start / self.bucket_ns).saturating_sub(self.first_bucket) }
    }

    /// Spans per (label, bucket) of the labels that failed, over the traces of
    /// a whole regenerated window (topologies `order` starting at `starts`):
    /// what a part's failed spans are scaled by. `seed` sets each cell's
    /// rounding phase, shared by the window's parts.
    pub fn totals(&self, histogram: &TopologyHistogram, (order, starts): (&[usize], &[u64]), seed: u64) -> StatusTotals {
        let mut out = StatusTotals { phase_seed: seed, ..StatusTotals::default() };
        self.count_into(histogram, order.iter().copied().zip(starts.iter().copied()), &mut out.whole);
        out
    }

    /// Counts the spans of the labels that failed per (label, bucket) of the
    /// traces `order` starting at `starts` into `into`.
    fn count_into(
        &self,
        histogram: &TopologyHistogram,
        traces: impl Iterator<Item = (usize, u64)>,
        into: &mut HashMap<(u32, u64), u32>,
    ) {
        if self.labels.is_empty() {
            return;
        }
        let per_topology = self.labels_per_topology(histogram);
        for (t, s) in traces {
            let bucket = self.bucket_of(s);
            for &(label, n) in per_topology.get(t).map_or(&[][..], Vec::as_slice) {
                *into.entry((label, bucket)).or_default() += n;
            }
        }
    }

    /// Records that the traces `order` starting at `starts` (a part) were
    /// regenerated: the next part's failures continue from them.
    pub fn advance(&self, histogram: &TopologyHistogram, part: impl Iterator<Item = (usize, u64)>, totals: &mut StatusTotals) {
        self.count_into(histogram, part, &mut totals.before);
    }

    /// Per topology, how many nodes of each failing label it has.
    fn labels_per_topology(&self, histogram: &TopologyHistogram) -> Vec<Vec<(u32, u32)>> {
        let failing: std::collections::HashSet<u32> = self.labels.iter().map(|l| l.label).collect();
        (histogram.topologies.iter())
            .map(|t| {
                let mut counts: Vec<(u32, u32)> = Vec::new();
                for &label in t.labels.iter().filter(|l| failing.contains(l)) {
                    match counts.iter_mut().find(|c| c.0 == label) {
                        Some(c) => c.1 += 1,
                        None => counts.push((label, 1)),
                    }
                }
                counts
            })
            .collect()
    }

    /// Which spans of the traces `order` (starting at `starts`, timed as
    /// `times`) change status, given which the generators made fail:
    /// [`Change`]s to apply in order. `totals` are the whole window's
    /// ([`Self::totals`]), of which these traces may be a part.
    pub fn changes(
        &self,
        histogram: &TopologyHistogram,
        (order, starts, times): (&[usize], &[u64], &[Vec<(u64, u64)>]),
        generated: impl Fn(usize, usize) -> bool,
        totals: &StatusTotals,
        seed: u64,
    ) -> Vec<Change> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5e55_e7a7_05);
        let failing: HashMap<u32, usize> = self.labels.iter().enumerate().map(|(j, l)| (l.label, j)).collect();
        // Every node of a failing label, and every node generated failed.
        let mut slots: HashMap<u32, Vec<Slot>> = HashMap::new();
        for (i, &t) in order.iter().enumerate() {
            let topology = &histogram.topologies[t];
            for (k, &label) in topology.labels.iter().enumerate() {
                let failed = generated(i, k);
                if failed || failing.contains_key(&label) {
                    let (start, end) = times[i].get(k).copied().unwrap_or((0, 0));
                    let slot =
                        Slot { at: (i, k), bucket: self.bucket_of(starts[i]), duration: end.saturating_sub(start), failed };
                    slots.entry(label).or_default().push(slot);
                }
            }
        }
        let mut labels: Vec<u32> = slots.keys().copied().collect();
        labels.sort_unstable();
        let mut out = Vec::new();
        for label in labels {
            let group = &slots[&label];
            let chosen = match failing.get(&label) {
                Some(&j) => self.choose(&self.labels[j], group, totals, &mut rng),
                None => vec![false; group.len()],
            };
            exchange(group, &chosen, &mut rng, &mut out);
        }
        out
    }

    /// Which of a label's `group` fail: per bucket its count (scaled to the
    /// part), drawn weighted by duration quartile.
    fn choose(&self, errors: &LabelErrors, group: &[Slot], totals: &StatusTotals, rng: &mut StdRng) -> Vec<bool> {
        let quartiles = quartiles(group);
        let mut chosen = vec![false; group.len()];
        let mut bucket = 0u64;
        let mut by_bucket: HashMap<u64, Vec<usize>> = HashMap::new();
        for (s, slot) in group.iter().enumerate() {
            by_bucket.entry(slot.bucket).or_default().push(s);
        }
        for &(delta, count) in &errors.cells {
            bucket += u64::from(delta);
            let Some(candidates) = by_bucket.get(&bucket) else { continue };
            // This part's share of the cell's failures, rounded at a phase
            // the window's parts share: together they fail `count` times.
            let key = (errors.label, bucket);
            let before = totals.before.get(&key).copied().unwrap_or(0);
            let here = candidates.len() as u32;
            let whole = totals.whole.get(&key).copied().unwrap_or(0).max(before + here);
            let phase = (xxhash_rust::xxh3::xxh3_64_with_seed(
                &[u64::from(errors.label), bucket].map(u64::to_le_bytes).concat(),
                totals.phase_seed,
            ) >> 11) as f64
                / (1u64 << 53) as f64;
            let share = |n: u32| (f64::from(count) * f64::from(n) / f64::from(whole) + phase).floor();
            let want = ((share(before + here) - share(before)).max(0.0) as usize).min(candidates.len());
            // Weighted sampling without replacement (Efraimidis–Spirakis):
            // the `want` smallest exponential keys over the weights.
            let mut keyed: Vec<(f64, usize)> = (candidates.iter())
                .map(|&s| {
                    let weight = f64::from(errors.ranks[quartiles[s]]) + 0.5;
                    (-(1.0 - rng.random::<f64>()).ln() / weight, s)
                })
                .collect();
            if want < keyed.len() {
                keyed.select_nth_unstable_by(want, |a, b| a.0.total_cmp(&b.0));
            }
            for &(_, s) in &keyed[..want] {
                chosen[s] = true;
            }
        }
        chosen
    }
}

/// Spans per (label, bucket) of a whole regenerated window, and of the
/// parts of it regenerated before this one.
#[derive(Debug, Clone, Default)]
pub struct StatusTotals {
    whole: HashMap<(u32, u64), u32>,
    before: HashMap<(u32, u64), u32>,
    phase_seed: u64,
}

/// A node of a trace being regenerated, of one label.
struct Slot {
    /// (trace, node).
    at: (usize, usize),
    bucket: u64,
    duration: u64,
    /// Whether the generators made it fail.
    failed: bool,
}

/// One status change: node `to` takes the status, kind and attributes node
/// `from` had before any change was applied (`Failed`/`Cleared` alone when
/// its label has no span to take them from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// (to, from): both (trace, node).
    Take((usize, usize), (usize, usize)),
    /// The node fails, with what else the generators gave it.
    Failed((usize, usize)),
    /// The node does not fail (status unset), with what else it had.
    Cleared((usize, usize)),
}

/// Each slot's duration quartile within its group (ties broken by position).
fn quartiles(group: &[Slot]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..group.len()).collect();
    order.sort_by_key(|&s| group[s].duration);
    let mut out = vec![0; group.len()];
    for (rank, &s) in order.iter().enumerate() {
        out[s] = (rank * RANK_BINS / group.len().max(1)).min(RANK_BINS - 1);
    }
    out
}

/// The changes that make exactly the `chosen` of `group` fail: spans that
/// must fail and spans that must not exchange what the generators gave them
/// (shuffled pairs); the rest copy a span of the label that already has the
/// status they need, or change the status alone when none has.
fn exchange(group: &[Slot], chosen: &[bool], rng: &mut StdRng, out: &mut Vec<Change>) {
    let mut to_fail: Vec<usize> = (0..group.len()).filter(|&s| chosen[s] && !group[s].failed).collect();
    let mut to_clear: Vec<usize> = (0..group.len()).filter(|&s| !chosen[s] && group[s].failed).collect();
    if to_fail.is_empty() && to_clear.is_empty() {
        return;
    }
    shuffle(&mut to_fail, rng);
    shuffle(&mut to_clear, rng);
    let paired = to_fail.len().min(to_clear.len());
    for (&f, &c) in to_fail.iter().zip(&to_clear) {
        out.push(Change::Take(group[f].at, group[c].at));
        out.push(Change::Take(group[c].at, group[f].at));
    }
    // Donors keep what they had: spans whose status stays.
    let failed_donors: Vec<usize> = (0..group.len()).filter(|&s| chosen[s] && group[s].failed).collect();
    let clear_donors: Vec<usize> = (0..group.len()).filter(|&s| !chosen[s] && !group[s].failed).collect();
    for &f in &to_fail[paired..] {
        out.push(match pick(&failed_donors, rng) {
            Some(d) => Change::Take(group[f].at, group[d].at),
            None => Change::Failed(group[f].at),
        });
    }
    for &c in &to_clear[paired..] {
        out.push(match pick(&clear_donors, rng) {
            Some(d) => Change::Take(group[c].at, group[d].at),
            None => Change::Cleared(group[c].at),
        });
    }
}

fn shuffle(v: &mut [usize], rng: &mut StdRng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

fn pick(v: &[usize], rng: &mut StdRng) -> Option<usize> {
    (!v.is_empty()).then(|| v[rng.random_range(0..v.len())])
}

/// Per failing label, the share (of 255) of its failed spans in each
/// quartile of its durations, read off `traces`.
fn rank_shares(
    traces: &[Trace],
    placements: &[Placement],
    histogram: &TopologyHistogram,
    failing: &HashMap<u32, u32>,
) -> HashMap<u32, [u8; RANK_BINS]> {
    let mut spans: HashMap<u32, Vec<(u64, bool)>> = HashMap::new();
    for (trace, placement) in traces.iter().zip(placements) {
        let topology = &histogram.topologies[placement.topology];
        for (k, &i) in placement.spans.iter().enumerate() {
            let label = topology.labels[k];
            if failing.contains_key(&label)
                && let Some(s) = trace.spans.get(i)
            {
                spans.entry(label).or_default().push((s.duration(), s.failed()));
            }
        }
    }
    spans
        .into_iter()
        .filter_map(|(label, mut v)| {
            v.sort_unstable_by_key(|s| s.0);
            let mut bins = [0u32; RANK_BINS];
            for (rank, _) in v.iter().enumerate().filter(|(_, s)| s.1) {
                bins[(rank * RANK_BINS / v.len()).min(RANK_BINS - 1)] += 1;
            }
            let total: u32 = bins.iter().sum();
            (total > 0).then(|| (label, bins.map(|b| (u64::from(b) * 255 / u64::from(total)) as u8)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gent::topology::{Label, Topology};

    fn histogram() -> TopologyHistogram {
        TopologyHistogram {
            labels: vec![Label { service: "a".into(), name: "GET /".into() }],
            topologies: vec![Topology { labels: vec![0], parents: vec![None] }],
            counts: vec![1],
        }
    }

    #[test]
    fn stored_counts_out_of_order_repeated_or_empty_are_refused() {
        let model = |label: u32, cells: Vec<(u32, u32)>| StatusModel {
            bucket_ns: 60_000_000_000,
            first_bucket: 0,
            labels: vec![LabelErrors { label, ranks: [64; RANK_BINS], cells }],
        };
        assert!(model(0, vec![(0, 2), (3, 1)]).validate(&histogram()).is_ok());
        for bad in [model(1, vec![(0, 1)]), model(0, vec![(0, 1), (0, 1)]), model(0, vec![(2, 0)]), model(0, vec![(u32::MAX, 1)])]
        {
            assert!(bad.validate(&histogram()).is_err(), "{bad:?}");
        }
    }
}
