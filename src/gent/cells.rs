//! The timing of *every* trace of a window, binned per time bucket and
//! timing key, folded as traces complete (issue 20).
//!
//! A window larger than the share is fitted on a head sample of its traces,
//! which is enough for each key's sketch but not for what happens minute by
//! minute: time effects and bursts ([`super::timing`]) are read off a
//! (minute, key) cell, and a share of a third finds a third of each cell's
//! evidence (on TrainTicket hour 12 fitted on 100k of its 216k spans, the
//! latency alarm fell from 0.72 to 0.57, mean of 8 seeds). Their inputs, a
//! span's rank within its key, need the key's distribution, known only when
//! the window closes. So the fold keeps what the ranks are computed from:
//! per (bucket, key) a histogram of its spans' log durations, gaps to their
//! parent's end (leaves with siblings), tails after their last child
//! (parents) and leads, in bins of 1/8 of a log unit (13% of a duration).
//! The close ranks every bin within its key over the whole window
//! ([`super::timing`]). Per topology node it keeps only the sum, sum of
//! squares and count of the node's duration (leaves) or tail (parents),
//! from which the close approximates each node's rank location over every
//! trace.
//!
//! Keys are [`super::timing`]'s, read off the topology (a leaf's label and
//! its parent's, a parent's label and its children's), numbered here as
//! topologies first appear: their number is bounded by the labels the
//! window has, not by its traffic, and so are the bins (buckets × keys ×
//! the bins a key's values spread over). Binned per topology node instead,
//! hour 12 held 493k bins for its 216k spans. Past [`TimeCells::new`]'s
//! limit the fold gives up and frees them, and the window's time effects
//! come from its share as before. A window of one or two buckets gains
//! nothing over its share, so the compressor bins only windows of three
//! buckets or more.

use foldhash::HashMap;

use super::topology::{Label, Placement, Topology, TopologyHistogram};
use crate::trace::SpanView;

/// What a node's bin measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// A leaf's log duration.
    Own = 0,
    /// Signed-log gap from a leaf's end to its parent's (leaves with siblings).
    Gap = 1,
    /// Signed-log time from a parent's last child's end to its own end.
    Tail = 2,
    /// Signed-log start after the end of the siblings that started before
    /// (its parent's start, the trace's for roots), as if none spans its
    /// parent.
    Lead = 3,
}

/// Bins per natural-log unit.
pub const BINS_PER_UNIT: f64 = 8.0;
/// Bins are −512..=511: ±64 log units, beyond any duration (a day is 25).
const BIN_OFFSET: i64 = 512;

/// One bin of a (bucket, key) cell, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// Absolute time bucket (start / bucket width).
    pub bucket: u64,
    /// A node of the key: (topology, node).
    pub node: (u32, u32),
    pub quantity: Quantity,
    /// The bin's centre, in the quantity's log units.
    pub value: f64,
    pub count: u32,
}

/// A value key as the fold numbers it: a leaf's (entry label, parent label, label), a
/// parent's label and its children's labels, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ValueKey {
    Leaf(u32, u32, u32),
    Tail(u32, Vec<u32>),
}

/// Binned timing of every trace folded, per (time bucket, key).
#[derive(Debug, Default)]
pub struct TimeCells {
    bucket_ns: u64,
    limit: usize,
    /// (absolute bucket, key << 12 | quantity << 10 | bin): value keys for
    /// the own duration, gap and tail, lead keys for the lead.
    counts: HashMap<(u64, u64), u32>,
    overflowed: bool,
    /// Per topology, per node: its (value key, lead key) numbers.
    node_keys: Vec<Vec<(u32, u32)>>,
    values: HashMap<ValueKey, u32>,
    leads: HashMap<(u32, u32), u32>,
    /// Per value key, then per lead key: one of its nodes.
    value_nodes: Vec<(u32, u32)>,
    lead_nodes: Vec<(u32, u32)>,
    /// Per topology, per node: the sum, the sum of squares and the count of
    /// its leaf duration or parent tail (no bins: a window has too many
    /// nodes), from which the close approximates each node's rank location.
    moments: Vec<Vec<(f64, f64, u32)>>,
    /// Per node, scratch: the last end among its children and how many.
    children: Vec<(u64, u32)>,
    /// Scratch: (parent, start, node) of every node, for the leads.
    order: Vec<(u32, u64, u32)>,
}

impl TimeCells {
    /// Cells of `bucket_ns` wide buckets, within `limit` distinct bins.
    pub fn new(bucket_ns: u64, limit: usize) -> Self {
        TimeCells { bucket_ns: bucket_ns.max(1), limit, ..Default::default() }
    }

    pub fn bucket_ns(&self) -> u64 {
        self.bucket_ns
    }

    /// Whether the bins outgrew their limit (and were dropped).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Distinct bins held.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Folds one trace's spans (in either form), placed in `topology`, in.
    /// Topologies are numbered in order of first appearance, so a new one is
    /// the next number.
    pub fn add<S: SpanView>(&mut self, spans: &[S], placement: &Placement, histogram: &TopologyHistogram) {
        if self.overflowed {
            return;
        }
        let Some(topology) = histogram.topologies.get(placement.topology) else { return self.overflow() };
        if placement.topology == self.node_keys.len() {
            self.number(placement.topology as u32, topology, &histogram.labels);
        }
        let Some(held) = self.node_keys.get_mut(placement.topology) else { return self.overflow() };
        let node_keys = std::mem::take(held);
        let trace_start = crate::trace::start_of(spans);
        let bucket = trace_start / self.bucket_ns;
        let times = |k: usize| {
            let s = &spans[placement.spans[k]];
            (s.start_ns(), s.end_ns().max(s.start_ns()))
        };
        self.children.clear();
        self.children.resize(placement.spans.len(), (0, 0));
        for (k, parent) in topology.parents.iter().enumerate() {
            if let Some(p) = parent {
                let c = &mut self.children[*p as usize];
                *c = (c.0.max(times(k).1), c.1 + 1);
            }
        }
        let mut moments = std::mem::take(&mut self.moments[placement.topology]);
        for (k, &(value, _)) in node_keys.iter().enumerate() {
            let (start, end) = times(k);
            let (last, kids) = self.children[k];
            let x = if kids == 0 {
                ((end - start) as f64 / 1e3).ln_1p()
            } else {
                super::timing::signed_log((end as f64 - last as f64) / 1e3)
            };
            let m = &mut moments[k];
            *m = (m.0 + x, m.1 + x * x, m.2 + 1);
            if kids == 0 {
                self.bump(bucket, value, Quantity::Own, x);
            }
            if kids > 0 {
                self.bump(bucket, value, Quantity::Tail, x);
            } else if let Some(p) = topology.parents[k]
                && self.children[p as usize].1 > 1
            {
                let parent_end = times(p as usize).1;
                self.bump(bucket, value, Quantity::Gap, super::timing::signed_log((parent_end as f64 - end as f64) / 1e3));
            }
        }
        self.leads(bucket, trace_start, &node_keys, &times, topology);
        self.node_keys[placement.topology] = node_keys;
        self.moments[placement.topology] = moments;
        if self.counts.len() > self.limit {
            self.overflow();
        }
    }

    /// Numbers the keys of a new topology's nodes.
    fn number(&mut self, t: u32, topology: &Topology, labels: &[Label]) {
        let children = topology.children();
        let entries = topology.entries(labels);
        let keys = (0..topology.len())
            .map(|k| {
                let parent = topology.parents[k].map_or(u32::MAX, |p| topology.labels[p as usize]);
                let label = topology.labels[k];
                let value = if children[k].is_empty() {
                    ValueKey::Leaf(entries[k], parent, label)
                } else {
                    let mut kids: Vec<u32> = children[k].iter().map(|&c| topology.labels[c]).collect();
                    kids.sort_unstable();
                    ValueKey::Tail(label, kids)
                };
                let next = self.values.len() as u32;
                let value = *self.values.entry(value).or_insert_with(|| {
                    self.value_nodes.push((t, k as u32));
                    next
                });
                let next = self.leads.len() as u32;
                let lead = *self.leads.entry((parent, label)).or_insert_with(|| {
                    self.lead_nodes.push((t, k as u32));
                    next
                });
                (value, lead)
            })
            .collect();
        self.node_keys.push(keys);
        self.moments.push(vec![(0.0, 0.0, 0); topology.len()]);
    }

    /// Bins each node's lead: siblings in order of start, each counted from
    /// the latest end of those before it.
    fn leads(
        &mut self,
        bucket: u64,
        trace_start: u64,
        node_keys: &[(u32, u32)],
        times: &impl Fn(usize) -> (u64, u64),
        topology: &Topology,
    ) {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend((topology.parents.iter().enumerate()).map(|(k, p)| (p.unwrap_or(u32::MAX), times(k).0, k as u32)));
        order.sort_unstable();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let mut cursor = if group[0].0 == u32::MAX { trace_start } else { times(group[0].0 as usize).0 };
            for &(_, start, k) in group {
                let lead = super::timing::signed_log((start as f64 - cursor as f64) / 1e3);
                self.bump(bucket, node_keys[k as usize].1, Quantity::Lead, lead);
                cursor = cursor.max(times(k as usize).1);
            }
        }
        self.order = order;
    }

    fn bump(&mut self, bucket: u64, key: u32, quantity: Quantity, value: f64) {
        let bin = ((value * BINS_PER_UNIT).round() as i64).clamp(-BIN_OFFSET, BIN_OFFSET - 1) + BIN_OFFSET;
        let packed = u64::from(key) << 12 | (quantity as u64) << 10 | bin as u64;
        *self.counts.entry((bucket, packed)).or_default() += 1;
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.counts = HashMap::default();
        self.node_keys = Vec::new();
        self.moments = Vec::new();
        self.values = HashMap::default();
        self.leads = HashMap::default();
        self.children = Vec::new();
        self.order = Vec::new();
    }

    /// The (sum, sum of squares, count) of node `k` of topology `t`'s leaf
    /// duration or parent tail.
    pub fn moments(&self, t: usize, k: usize) -> Option<(f64, f64, u32)> {
        self.moments.get(t).and_then(|m| m.get(k)).copied()
    }

    /// Every bin held, in no particular order, each named by a node of its key.
    pub fn bins(&self) -> impl Iterator<Item = Bin> + '_ {
        self.counts.iter().map(|(&(bucket, packed), &count)| {
            let key = (packed >> 12) as usize;
            let (quantity, node) = match (packed >> 10) & 3 {
                0 => (Quantity::Own, self.value_nodes[key]),
                1 => (Quantity::Gap, self.value_nodes[key]),
                2 => (Quantity::Tail, self.value_nodes[key]),
                _ => (Quantity::Lead, self.lead_nodes[key]),
            };
            Bin { bucket, node, quantity, value: ((packed & 1023) as i64 - BIN_OFFSET) as f64 / BINS_PER_UNIT, count }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gent::TopologyHistogram;
    use crate::trace::{Trace, test_span};

    #[test]
    fn every_span_bins_its_duration_tail_or_gap_and_lead() {
        // A root of 10 ms calling two leaves: 1 ms at 1 ms, 4 ms ending at 9 ms.
        let spans = vec![
            test_span(0, 0, None, 60_000_000_000, 60_010_000_000),
            test_span(0, 1, Some(0), 60_001_000_000, 60_002_000_000),
            test_span(0, 2, Some(0), 60_005_000_000, 60_009_000_000),
        ];
        let trace = Trace { trace_id: [0; 16], spans };
        let (histogram, placements) = TopologyHistogram::build(std::slice::from_ref(&trace));
        let mut cells = TimeCells::new(60_000_000_000, 100);
        cells.add(&trace.spans, &placements[0], &histogram);
        assert!(cells.bins().all(|b| b.bucket == 1 && b.node.0 == 0));
        let mut got: Vec<(u8, i64, u32)> =
            cells.bins().map(|b| (b.quantity as u8, (b.value * BINS_PER_UNIT).round() as i64, b.count)).collect();
        got.sort_unstable();
        let bin = |us: f64| (us.ln_1p() * BINS_PER_UNIT).round() as i64;
        let mut want = vec![
            // Leaves' durations: 1 ms and 4 ms.
            (Quantity::Own as u8, bin(1_000.0), 1),
            (Quantity::Own as u8, bin(4_000.0), 1),
            // Gaps to the root's end: 8 ms and 1 ms.
            (Quantity::Gap as u8, bin(8_000.0), 1),
            (Quantity::Gap as u8, bin(1_000.0), 1),
            // The root's tail after the 9 ms end.
            (Quantity::Tail as u8, bin(1_000.0), 1),
            // Leads: the root at the trace's start, the first call 1 ms
            // after it, the second 3 ms after the first ended.
            (Quantity::Lead as u8, 0, 1),
            (Quantity::Lead as u8, bin(1_000.0), 1),
            (Quantity::Lead as u8, bin(3_000.0), 1),
        ];
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn past_the_limit_the_bins_are_dropped() {
        let mut cells = TimeCells::new(1_000, 5);
        for i in 0..10u64 {
            let trace = Trace { trace_id: [i as u8; 16], spans: vec![test_span(0, 0, None, i * 1_000, i * 1_000 + 7)] };
            let (histogram, placements) = TopologyHistogram::build(std::slice::from_ref(&trace));
            cells.add(&trace.spans, &placements[0], &histogram);
        }
        assert!(cells.overflowed() && cells.is_empty());
    }
}
