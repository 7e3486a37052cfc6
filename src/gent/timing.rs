//! Calibrated timing: how long spans take
//! and where they sit in their parent, from quantile sketches composed
//! bottom-up along the trace tree.
//!
//! A trace's time is spent in its leaves; a parent lasts as long as the calls
//! it makes, laid out one after the other, plus its own work around them. So
//! the packet carries quantile sketches of
//! * a leaf's log duration, per label, its parent's label and the span
//!   through which the trace entered its service (one query runs slower
//!   for one endpoint than for another);
//! * a parent's *tail*, the time from its last child's end to its own end
//!   (signed: async children may end later), per label and children's labels
//!   (a client span's overhead depends on whom it calls);
//! * a span's *lead*, its start after the end of the siblings that started
//!   before it (its parent's start for the first; negative when calls
//!   overlap), per parent label and label;
//!
//! every sketch cut into time segments where the timing changes within the
//! window (a fault from minute 12 on); and per label where in its parent it
//! usually starts (the siblings' order). Spans whose children often outlive
//! them (async work) keep their own duration instead of a tail. Per topology
//! node a location and spread of ranks (a node of a checkout trace is slower
//! than the same label in a browse trace), per tail key couplings of its
//! tail and its whole length to the children's durations (a span and the
//! calls it makes are slow together), and per lead key couplings to the
//! parent's rank and the span's own duration (a call queues before a slow
//! server span), shape a Gaussian copula.
//!
//! Regeneration draws each node's latent rank from that copula (its noise
//! seeded, or the ranks a CTGAN generated), replaces the latents of each
//! sketch rank for rank by the sketch's quantiles (quantile mapping: every
//! sketch's values come back with its distribution), and composes parents
//! from their children. Children lie inside their parents by construction,
//! self time (lead and tail) follows its measured distribution, and nothing
//! has to be shortened to fit.
//!
//! Measured against the alternatives on the shared data (BENCHMARKS.md
//! "Calibrated timing"): per-label quantile mapping of absolute durations
//! breaks nesting and self time; durations as ratios to the parent, top-down,
//! multiply their errors along deep traces.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::cells::{Quantity, TimeCells};
use super::composed::{ComposedDurations, ComposedError, Family, Mapping};
use super::latency::{self, LatencyBands, LatencyError};
use super::shares::{self, RareShares, SharesError};
use super::times::NodeTimes;
use super::topology::{Topology, TopologyHistogram};
use crate::tabular::sketch::{
    QuantileSketch, Quantiles, SketchError, normal_cdf, normal_quantile, quantile_of_sorted, rough_normal_quantile,
};

/// The fewest times seen below which a budget keeps a pair's rare calls
/// before it drops the couplings: on TrainTicket hour 16 (bar 0.8), pairs
/// seen at most 4 times with couplings score 0.824 on bottlenecks and 0.946
/// overall, at most 8 times without couplings 0.838 and 0.941.
const RARE_CALLS_KEPT: u32 = 4;

/// Calibrated timing settings (`calibration` in config/model.yaml).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrationConfig {
    /// Calibrated timing and exact start counts; `false` is Gen-T's CTGAN
    /// timing alone (T_G, R_G and C_G), kept for comparison.
    pub enabled: bool,
    /// Grid of the sketches, in natural-log units of microseconds.
    pub resolution: f64,
    /// Most quantiles per sketch.
    pub max_quantiles: usize,
    /// Quantiles per square root of the values sketched.
    pub quantiles_per_root: f64,
    /// Per topology node location and spread of ranks, and per key the
    /// couplings of a span's time to its children's, its caller's and its
    /// trace's ([`TimingModel::couplings`]).
    pub node_effects: bool,
    /// With node effects, where the rank locations and spreads of values and
    /// leads are kept: per topology node, per path (the labels from the root
    /// down), or not at all (the per key couplings alone).
    pub node_locations: NodeLocations,
    /// Per topology bucket and service a location of ranks: the minutes in
    /// which a service ran slow (load, contention) come back slow.
    pub time_effects: bool,
    /// With time effects, per topology bucket and key where its timing
    /// departed significantly from the rest of the window (a retry storm
    /// behind one call for a few minutes), that cell's own distribution.
    pub bursts: bool,
    /// Per entry service and topology bucket, how many traces' root
    /// durations exceed its p50, p90 and p99 ([`super::latency`]): whole-trace
    /// timings are arranged so that each minute holds its slow traces.
    pub latency_bands: bool,
    /// Cut sketches into time segments where a label's timing changes.
    pub segments: bool,
    /// Calls of a (caller service, callee service) pair seen at most this
    /// many times in the window keep their share of their caller's duration,
    /// call by call ([`super::shares`]); 0: none.
    pub rare_calls: u32,
    /// Per label, the durations of its spans composed of calls: after
    /// composition they are mapped rank for rank onto them, the span's own
    /// tail taking the difference ([`super::composed`]).
    pub composed: bool,
    /// Per label that failed, how many of its spans failed in each topology
    /// bucket and at which durations ([`super::status`]): exactly that many
    /// fail again, and no other label's spans.
    pub status: bool,
    /// Exact trace start counts per this bucket.
    #[serde(with = "humantime_serde")]
    pub start_bucket: std::time::Duration,
    /// Exact topology counts per this bucket; also the time unit of segments.
    #[serde(with = "humantime_serde")]
    pub topology_bucket: std::time::Duration,
    /// Head sampling rate N (1 trace in N) whose gzip OTLP bytes on the same
    /// window the packet must not exceed (estimated over seeded samples, less
    /// a 5% margin); sketches get fewer quantiles, then lose time and node
    /// effects and segments, until the packet fits. When nothing fits (the
    /// topologies and generators alone exceed it), the configured timing is
    /// kept and the budget reported unmet. Generators get an eighth each
    /// (`ctgan.max_generator_bytes`). `null`: no budget.
    pub budget: Option<u64>,
}

/// Where node effects keep rank locations and spreads, most bytes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeLocations {
    /// Per topology node: a byte per node for values and one for leads.
    Nodes,
    /// Per path, the labels from the trace's root down to the node, pooled
    /// over every topology that has it: a window's topologies share most
    /// paths (TrainTicket hour 12: 620 paths in 4,340 nodes), so the packet
    /// repeats them and compresses them to a quarter.
    Paths,
    /// None: the per key couplings alone, a byte per key.
    None,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            enabled: true,
            resolution: 1.0 / 64.0,
            max_quantiles: 128,
            quantiles_per_root: 3.0,
            node_effects: true,
            node_locations: NodeLocations::Nodes,
            time_effects: true,
            bursts: true,
            latency_bands: true,
            segments: true,
            rare_calls: 16,
            composed: true,
            status: true,
            start_bucket: std::time::Duration::from_secs(10),
            topology_bucket: std::time::Duration::from_secs(60),
            budget: Some(100),
        }
    }
}

impl CalibrationConfig {
    /// The first setting out of range, named.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.resolution.is_finite() && self.resolution >= 1e-4 && self.resolution <= 1.0) {
            return Err(format!("calibration.resolution must be in [0.0001, 1], got {}", self.resolution));
        }
        if !(2..=crate::tabular::sketch::MAX_POINTS).contains(&self.max_quantiles) {
            return Err(format!("calibration.max_quantiles must be in 2..=4096, got {}", self.max_quantiles));
        }
        if !(self.quantiles_per_root.is_finite() && self.quantiles_per_root > 0.0) {
            return Err(format!("calibration.quantiles_per_root must be positive, got {}", self.quantiles_per_root));
        }
        if self.budget == Some(0) {
            return Err("calibration.budget must be a head sampling rate N of at least 1 (1:N), or null".into());
        }
        super::starts::StartBuckets { start: self.start_bucket, topology: self.topology_bucket }.validate()
    }
}

/// Quantiles per square root a budget goes down to before it drops the
/// couplings: a few hundred bytes on a small window, where the couplings
/// cost 430 (TrainTicket hour 16 with composed durations off missed its
/// budget by 2 bytes and lost its couplings: bottlenecks 0.828 → 0.807).
const QUANTILES_BEFORE_COUPLINGS: f64 = 1.2;

/// The steps by which a model is made smaller to fit its budget, in order
/// (measured on TrainTicket hour 16, where the budget bites, to cost the
/// least fidelity per byte): no composed durations (they cost a sketch per
/// label with calls and a little self time, BENCHMARKS.md "Session 59"),
/// fewer quantiles per sketch down to 1.5 per
/// square root of the values, start counts per topology bucket instead of per
/// start bucket, no bursts, no time effects, node locations per path and
/// then none, rare calls kept down to pairs seen at most
/// [`RARE_CALLS_KEPT`] times, fewer quantiles down to
/// [`QUANTILES_BEFORE_COUPLINGS`], no node effects, no latency bands, fewer
/// quantiles still, no time segments, and then the rare calls left, halving
/// the times seen.
pub fn smaller(config: &CalibrationConfig) -> Option<CalibrationConfig> {
    let mut next = config.clone();
    if config.composed {
        next.composed = false;
    } else if config.quantiles_per_root > 1.5 {
        next.quantiles_per_root = (config.quantiles_per_root * 0.8).max(1.5);
    } else if config.start_bucket < config.topology_bucket {
        next.start_bucket = config.topology_bucket;
    } else if config.time_effects && config.bursts {
        next.bursts = false;
    } else if config.time_effects {
        next.time_effects = false;
    } else if config.node_effects && config.node_locations == NodeLocations::Nodes {
        next.node_locations = NodeLocations::Paths;
    } else if config.node_effects && config.node_locations == NodeLocations::Paths {
        next.node_locations = NodeLocations::None;
    } else if config.node_effects && config.rare_calls > RARE_CALLS_KEPT {
        next.rare_calls = (config.rare_calls / 2).max(RARE_CALLS_KEPT);
    } else if config.node_effects && config.quantiles_per_root > QUANTILES_BEFORE_COUPLINGS {
        next.quantiles_per_root = (config.quantiles_per_root * 0.9).max(QUANTILES_BEFORE_COUPLINGS);
    } else if config.node_effects {
        next.node_effects = false;
    } else if config.latency_bands {
        next.latency_bands = false;
    } else if config.quantiles_per_root > 0.05 {
        next.quantiles_per_root *= 0.7;
    } else if config.segments {
        next.segments = false;
    } else if config.rare_calls > 0 {
        next.rare_calls /= 2;
    } else {
        return None;
    }
    Some(next)
}

/// A sketch cut into time segments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segmented {
    /// Time buckets (since the window's first) where the second, third, ...
    /// segment begins, increasing.
    pub starts: Vec<u32>,
    pub sketches: Vec<QuantileSketch>,
}

/// A list of [`Segmented`] sketches as a packet holds it: per entry its
/// number of segment starts, then every start, then every sketch column by
/// column ([`SketchColumns`]). Sketches are most of a small window's packet,
/// and like numbers side by side compress to less than entry after entry.
mod columns {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Segmented;
    use crate::tabular::sketch::SketchColumns;

    #[derive(Serialize, Deserialize)]
    struct Columns {
        cuts: Vec<u32>,
        starts: Vec<u32>,
        sketches: SketchColumns,
    }

    pub fn serialize<S: Serializer>(list: &[Segmented], serializer: S) -> Result<S::Ok, S::Error> {
        Columns {
            cuts: list.iter().map(|s| s.starts.len() as u32).collect(),
            starts: list.iter().flat_map(|s| s.starts.iter().copied()).collect(),
            sketches: SketchColumns::of(list.iter().flat_map(|s| &s.sketches)),
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Segmented>, D::Error> {
        use serde::de::Error;
        let c = Columns::deserialize(deserializer)?;
        let total: u64 = c.cuts.iter().map(|&n| u64::from(n)).sum();
        if total != c.starts.len() as u64 || total + c.cuts.len() as u64 != c.sketches.len() as u64 {
            return Err(D::Error::custom("segmented sketches: cuts, starts and sketches disagree"));
        }
        let mut sketches = c.sketches.into_sketches().map_err(D::Error::custom)?.into_iter();
        let mut starts = c.starts.into_iter();
        Ok(c.cuts
            .iter()
            .map(|&n| Segmented {
                starts: starts.by_ref().take(n as usize).collect(),
                sketches: sketches.by_ref().take(n as usize + 1).collect(),
            })
            .collect())
    }
}

/// What a node's timing is sketched under, read off the topology alone, so
/// a decoder derives every node's keys itself and the packet carries none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ValueKey {
    /// A leaf's duration, by its service's entry, its parent's label and
    /// its label (see [`super::topology::Topology::entries`]).
    Leaf(u32, u32, u32),
    /// A tail, by the span's label and its children's labels (sorted): a
    /// client span's overhead depends on whom it calls, and TrainTicket's
    /// `HTTP POST` spans call a dozen services.
    Tail(u32, Vec<u32>),
}

/// Every key of a histogram in one order, and each node's keys.
pub struct Keys {
    /// Per topology, per node: (value key, lead key) indices.
    nodes: Vec<Vec<(u32, u32)>>,
    values: usize,
    leads: usize,
    /// Per label, its service's index among the histogram's services (sorted).
    service_of: Vec<u32>,
    services: usize,
    /// Per value key: whether it is a leaf's.
    leaf: Vec<bool>,
}

impl Keys {
    /// The keys of `histogram`'s nodes, numbered in sorted order.
    pub fn of(histogram: &TopologyHistogram) -> Self {
        let mut values: HashMap<ValueKey, u32> = HashMap::new();
        let mut leads: HashMap<(u32, u32), u32> = HashMap::new();
        let mut raw: Vec<Vec<(ValueKey, (u32, u32))>> = Vec::with_capacity(histogram.topologies.len());
        for t in &histogram.topologies {
            let children = t.children();
            let entries = t.entries(&histogram.labels);
            let nodes: Vec<(ValueKey, (u32, u32))> = (0..t.len())
                .map(|k| {
                    let value = if children[k].is_empty() {
                        ValueKey::Leaf(entries[k], t.parents[k].map_or(u32::MAX, |p| t.labels[p as usize]), t.labels[k])
                    } else {
                        let mut kids: Vec<u32> = children[k].iter().map(|&c| t.labels[c]).collect();
                        kids.sort_unstable();
                        ValueKey::Tail(t.labels[k], kids)
                    };
                    // Roots lead within the trace: parent label u32::MAX.
                    let lead = (t.parents[k].map_or(u32::MAX, |p| t.labels[p as usize]), t.labels[k]);
                    values.insert(value.clone(), 0);
                    leads.insert(lead, 0);
                    (value, lead)
                })
                .collect();
            raw.push(nodes);
        }
        let mut sorted_values: Vec<ValueKey> = values.into_keys().collect();
        sorted_values.sort_unstable();
        let mut sorted_leads: Vec<(u32, u32)> = leads.into_keys().collect();
        sorted_leads.sort_unstable();
        let (value_count, lead_count) = (sorted_values.len(), sorted_leads.len());
        let leaf = sorted_values.iter().map(|v| matches!(v, ValueKey::Leaf(..))).collect();
        let (values, leads) = (numbered(sorted_values), numbered(sorted_leads));
        let nodes = raw.into_iter().map(|t| t.into_iter().map(|(v, l)| (values[&v], leads[&l])).collect()).collect();
        let mut services: Vec<&str> = histogram.labels.iter().map(|l| l.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        let service_of =
            histogram.labels.iter().map(|l| services.binary_search(&l.service.as_str()).unwrap_or(0) as u32).collect();
        Keys { nodes, values: value_count, leads: lead_count, service_of, services: services.len(), leaf }
    }
}

/// Each key mapped to its position.
fn numbered<K: std::hash::Hash + Eq>(keys: Vec<K>) -> HashMap<K, u32> {
    keys.into_iter().enumerate().map(|(i, k)| (k, i as u32)).collect()
}

/// The calibrated timing model of a window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimingModel {
    pub resolution: f64,
    pub bucket_ns: u64,
    /// Time bucket index of the window's start.
    pub first_bucket: u64,
    /// Leaf durations and tails, one per value key in [`Keys`] order.
    #[serde(with = "columns")]
    pub values: Vec<Segmented>,
    /// Leads, one per lead key in [`Keys`] order.
    #[serde(with = "columns")]
    pub leads: Vec<Segmented>,
    /// Value keys of spans whose children often outlive them (async calls,
    /// clock skew): their sketch holds the span's own log duration, and its
    /// children are laid out without setting it. Increasing.
    pub detached: Vec<u32>,
    /// Value keys of leaves that last as long as their parent, beside its
    /// other calls (a gateway's filter chain around the request it
    /// forwards): their sketch holds the gap from the leaf's end to its
    /// parent's (signed log), their lead counts from the parent's start, and
    /// they are laid out over the parent once its other children have set
    /// its duration. Increasing.
    pub spanning: Vec<u32>,
    /// Per value key: how much longer than its span its longest call ever
    /// was in the window, as a log ratio (see [`reach_code`]); 0 for leaves.
    /// A parent is composed at least that long against its calls: drawn
    /// apart, a long call under a short parent with a negative tail (async
    /// work) made a child 37 times its parent's length where the window's
    /// largest was twice (TrainTicket hour 12, food → station-food).
    pub reaches: Vec<u8>,
    /// Per label: its usual start within its parent, 0 (the parent's start)
    /// to 255 (its end), which lays siblings out in their usual order.
    pub orders: Vec<u8>,
    /// Per topology, per node: rank location (high nibble) and spread (low
    /// nibble); empty when node effects are off.
    pub nodes: Vec<Vec<u8>>,
    /// Per topology, per node: its lead's rank location and spread, packed
    /// as `nodes`; empty when node effects are off. The work a span does
    /// between two calls depends on where it runs: TrainTicket's seat service
    /// takes 24 ms (median) between its two calls in a booking, over the
    /// tickets it was sent, and 1 ms in a browse.
    pub lead_nodes: Vec<Vec<u8>>,
    /// Per value key, two couplings to its children's duration ranks, −1 to
    /// 1 in 4 bits each (0 for leaves); empty when node effects are off.
    /// Low nibble, its tail's: a span and the calls it makes are slow
    /// together (on TrainTicket, a query's tail and its JDBC child correlate
    /// at 0.97: both fast, or both slow under contention), which independent
    /// ranks would average away. High nibble, its own duration's: how much
    /// of its length its calls decide, which carries a slow query up a chain
    /// of wrapping spans to the client that waits for it.
    pub couplings: Vec<u8>,
    /// Per value key: how strongly its spans' ranks follow a rank shared by
    /// the whole trace (high nibble) and one shared with their siblings (low
    /// nibble), 0 to 1 in 4 bits each; empty when node effects are off. The
    /// calls of a trace, and more so the calls one span makes, are slow
    /// together (a loaded node, a busy connection pool, a large request), so
    /// a parent composed of independently drawn calls is too rarely very fast
    /// or very slow, and too often a little slow.
    pub loadings: Vec<u8>,
    /// Per lead key, two couplings, −1 to 1 in 4 bits each, fitted jointly
    /// (regression weights, since packet format 14); empty when node
    /// effects are off. Low nibble, to its parent's rank: a call that waited
    /// a second to start (a retry, a timeout) sits in a parent that also
    /// waited after it. High nibble, to its own span's duration rank: a
    /// request queues before its server span starts when the service is
    /// loaded, and then runs slow (the lead of TrainTicket's server spans
    /// correlates with their duration at 0.5–0.7 in normal scores). Drawn
    /// apart, a call's share of its caller spreads far wider than it does.
    pub lead_couplings: Vec<u8>,
    /// Per lead key: the share of calls, 0 to 1 in 4 bits, whose lead is as
    /// extreme as their parent's rank when that rank is in its top decile;
    /// empty when node effects are off. A retried call waits before its
    /// server span and its caller waits after it, in the same calls (on
    /// TrainTicket hour 12, 22 of the 24 auth → verification calls whose
    /// lead exceeds half a second also have a tail that does): drawn apart,
    /// as a Gaussian copula does whatever its correlation, a second of
    /// waiting lands in half as many calls again, and too many traces are
    /// slow.
    pub lead_tails: Vec<u8>,
    /// Per lead key: the share of calls without calls of their own, 0 to 1
    /// in 4 bits, whose lead is as extreme as their own duration when that
    /// is in its top decile; empty when node effects are off. A slow query
    /// and a long wait for its connection come together: on hour 12, of the
    /// `SELECT Station` spans whose lead is in its top decile, 43% have their
    /// call in its top decile too, and a Gaussian copula of the same rank
    /// correlation puts 30% there; the heavy lead (p50 73 µs, p90 641 µs)
    /// then lands in more spans, and the span's p90 came back 0.53 ln-units
    /// long (BENCHMARKS.md "Session 57").
    pub lead_own_tails: Vec<u8>,
    /// The distribution of the rank the whole trace shares ([`loadings`]):
    /// its standardised quantiles at [`SHAPE_PROBS`], a byte each (see
    /// [`shape_code`]); empty for the standard normal (too few traces, or
    /// node effects off). Traces are not slow a little at a time: on
    /// TrainTicket hour 12 one in twenty runs slow in every service at once
    /// (the trace's mean normal score at p97.5 and p99 is 2.28 and 2.70
    /// standard deviations, a normal's 1.96 and 2.33), so every part of a
    /// span composed of several calls is slow together; a normal shared rank
    /// of the same correlation made them slow together too rarely, and
    /// `OrderController.saveOrderInfo`, two calls of six parts each, came
    /// back 7% short at p90.
    pub trace_shape: Vec<u8>,
    /// Per time bucket (since the first), per service (in [`Keys`] order):
    /// the shift of its spans' ranks in that bucket, two 4-bit codes a byte
    /// (see [`TimeEffects`]); empty when time effects are off.
    pub times: Vec<u8>,
    /// Where one key's timing departed from its service's in one time
    /// bucket (a retry storm behind one call, a slow dependency for a few
    /// minutes): a shift of that key's ranks in that bucket, beyond the
    /// service's. Only cells whose departure is significant are kept, so a
    /// calm window carries none. Sorted by (bucket, key); empty when time
    /// effects are off.
    pub bursts: Vec<Burst>,
    /// Per entry service, its traces above its root-duration p50, p90 and
    /// p99 per time bucket ([`super::latency`]); empty when off.
    pub bands: LatencyBands,
    /// Rare calls' shares of their callers, call by call ([`super::shares`]).
    pub shares: RareShares,
    /// Per label, the durations of its spans composed of calls
    /// ([`super::composed`]); `None` when off (a byte, where empty columns
    /// took five: TrainTicket hour 16 fits its budget to the byte).
    pub composed: Option<ComposedDurations>,
}

/// One (time bucket, key) cell's own distribution of normal scores (see
/// [`TimingModel::bursts`]), as its distribution function at
/// [`BURST_POINTS`]: tail shares come back as they were (a quarter of the
/// calls timing out after a second in a minute when 2% do over the window),
/// which a shift of every score cannot give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Burst {
    /// Time bucket since the window's first.
    pub bucket: u32,
    /// A value key, or a lead key offset by the number of value keys.
    pub key: u32,
    /// Share of the cell's scores below each of [`BURST_POINTS`], in 255ths
    /// (non-decreasing).
    pub below: [u8; BURST_POINTS.len()],
}

impl Burst {
    /// The cell's normal score at probability `u`: linear between the
    /// stored points, a normal tail beyond them.
    fn score(&self, u: f64) -> f64 {
        let f = self.below.map(|b| f64::from(b) / 255.0);
        let last = BURST_POINTS.len() - 1;
        match f.iter().position(|&f| u < f) {
            Some(0) => normal_quantile((u / f[0] * normal_cdf(BURST_POINTS[0])).max(1e-12)),
            Some(i) => {
                let (f0, f1) = (f[i - 1], f[i]);
                BURST_POINTS[i - 1] + (u - f0) / (f1 - f0) * (BURST_POINTS[i] - BURST_POINTS[i - 1])
            }
            None => {
                let above = normal_cdf(BURST_POINTS[last]);
                let share = if f[last] < 1.0 { (u - f[last]) / (1.0 - f[last]) } else { 0.5 };
                normal_quantile((above + share * (1.0 - above)).min(1.0 - 1e-12))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimingError {
    #[error("timing model: {0}")]
    Inconsistent(String),
    #[error("timing model: {0}")]
    Sketch(#[from] SketchError),
    #[error("timing model: {0}")]
    Latency(#[from] LatencyError),
    #[error("timing model: {0}")]
    Shares(#[from] SharesError),
    #[error("timing model: {0}")]
    Composed(#[from] ComposedError),
}

fn bad(what: impl Into<String>) -> TimingError {
    TimingError::Inconsistent(what.into())
}

/// Most segments per sketch.
const MAX_SEGMENTS: usize = 16;
/// Fewest values on each side of a segment boundary.
const MIN_SEGMENT: usize = 30;
/// How far apart two segments' medians must be, in mean absolute deviations
/// scaled by the square root of the harmonic sample size, to be cut.
const SEGMENT_THRESHOLD: f64 = 4.0;
/// Values a segmentation decision looks at, at most (an even sample in time).
const SEGMENT_SAMPLE: usize = 4096;
/// Candidate cuts tried per split, at most.
const MAX_CANDIDATES: usize = 64;
/// Share of spans outlived by a child above which a span keeps its own duration.
const DETACHED_SHARE: f64 = 0.05;
/// A leaf spans its parent when the spread of its gap to the parent's end is
/// below this share of the spread of its own duration (log µs both).
const SPANNING_SPREAD: f64 = 0.5;
/// Least median share of its parent a spanning leaf covers.
const SPANNING_COVER: f64 = 0.5;
/// Fewest instances a spanning leaf is measured on.
const SPANNING_MIN: usize = 10;
/// Node effects are shrunk towards none by count / (count + this).
const NODE_PRIOR: f64 = 5.0;
const LOCATION_RANGE: f64 = 2.5;
const SPREAD_MIN: f64 = 0.05;
const SPREAD_MAX: f64 = 1.5;
/// Marks a latent's group as a lead sketch's, apart from the value sketches'.
const LEAD_GROUP: u64 = 1 << 62;
/// Most time buckets time effects cover (a week of minutes); a longer
/// window goes without them.
const MAX_TIME_BUCKETS: usize = 10_080;
/// Time effects are shrunk towards none by count / (count + this). The
/// packet reproduces this window's own minutes, so a minute's observed shift
/// is what its dashboards showed and is kept nearly whole; the prior only
/// keeps a lone span from setting its minute's shift alone (10 shrank a
/// service with 10 spans a minute to half its shift: BENCHMARKS.md,
/// "Stratified ranks").
const TIME_PRIOR: f64 = 1.0;
/// A time effect's code step in normal scores: codes 1..=15 are −7..=7 steps.
const TIME_STEP: f64 = 0.15;
/// Normal scores at which a burst keeps its cell's distribution function:
/// the 2.5, 10, 25, 50, 75, 90 and 97.5th percentiles of a calm cell.
pub const BURST_POINTS: [f64; 7] = [-1.96, -1.2816, -0.6745, 0.0, 0.6745, 1.2816, 1.96];
/// A (bucket, key) cell is a burst when a calm cell would show its mean, or
/// its share of scores beyond ±1.28 or ±1.96, with probability below
/// e^−this (a Chernoff bound; 6.9: 1 in 1,000, and far rarer in fact;
/// measured against 4.6, 5.5, 9.2 and 13.8 on the shared windows)...
const BURST_EVIDENCE: f64 = 6.9;
/// ... over at least this many spans.
const BURST_MIN: usize = 5;
/// Most bursts a model keeps (the most significant).
const MAX_BURSTS: usize = 4096;

/// `x` microseconds (any sign) as a signed log: sign(x)·ln(1 + |x|).
pub(super) fn signed_log(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

/// `fitted`, counted as a parent lengthened when it is longer than `natural`.
fn extended(natural: f64, fitted: f64, repairs: &mut TimingRepairs) -> f64 {
    if fitted > natural {
        repairs.parent_extended += 1;
        if fitted > natural * 1.1 {
            repairs.changed_over_10pct += 1;
        }
    }
    fitted
}

fn signed_exp(y: f64) -> f64 {
    // A day at most: sketches decoded from a packet cannot overflow times.
    y.signum() * y.abs().min(25.0).exp_m1()
}

/// One node instance's measurements, gathered at fitting.
struct Observation {
    label: u32,
    /// Value and lead key indices.
    keys: (u32, u32),
    bucket: u32,
    /// Leaf: log duration; with children: signed-log tail.
    value: f64,
    /// With children: the span's own log duration.
    duration: Option<f64>,
    /// Every node: its own log duration.
    log_duration: f64,
    /// With children: its longest child's log duration less its own (the
    /// spanning children aside); 0 for leaves.
    reach: f32,
    /// A child ended after the span by more than half the span's duration:
    /// the child is not part of the span's time (async work, skewed clocks).
    outlived: bool,
    /// Signed-log lead.
    lead: f64,
    /// Start within the parent, 0..1.
    position: f64,
    /// (topology, node) of the instance.
    node: (u32, u32),
}

/// A trace's topology (its number and itself) and its nodes' times.
type Placed<'a> = (usize, &'a Topology, &'a [(u64, u64)]);

/// The topology of `trace` and its nodes' times, when they fit `histogram`.
fn placed<'a>(trace: &'a NodeTimes, histogram: &'a TopologyHistogram) -> Option<Placed<'a>> {
    let t = trace.topology as usize;
    let topology = histogram.topologies.get(t).filter(|topology| topology.len() == trace.times.len())?;
    Some((t, topology, &trace.times))
}

/// Each node's lead and position within its parent (roots: within the
/// trace); a spanning node's lead counts from its parent's start and does not
/// move the others'.
fn layout(
    times: &[(u64, u64)],
    children: &[Vec<usize>],
    roots: &[usize],
    trace_start: u64,
    spanning: impl Fn(usize) -> bool,
) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0); times.len()];
    let mut place = |kids: &[usize], start: u64, end: u64| {
        let mut kids = kids.to_vec();
        kids.sort_by_key(|&k| times[k].0);
        let mut cursor = start;
        let span = end.saturating_sub(start).max(1) as f64;
        for k in kids {
            let position = ((times[k].0.saturating_sub(start)) as f64 / span).clamp(0.0, 1.0);
            if spanning(k) {
                out[k] = (signed_log((times[k].0 as f64 - start as f64) / 1e3), position);
                continue;
            }
            let lead = (times[k].0 as f64 - cursor as f64) / 1e3;
            out[k] = (signed_log(lead), position);
            cursor = cursor.max(times[k].1);
        }
    };
    place(roots, trace_start, times.iter().map(|t| t.1).max().unwrap_or(trace_start));
    for (p, kids) in children.iter().enumerate() {
        if !kids.is_empty() {
            place(kids, times[p].0, times[p].1);
        }
    }
    out
}

/// Per value key, whether its spans span their parent ([`TimingModel::spanning`]):
/// leaves, never a root nor an only child (whose parent's tail already
/// says how much longer it lasts), that usually cover most of their parent
/// and whose gap to their parent's end varies much less than their own
/// duration.
fn spanning_keys(traces: &[NodeTimes], histogram: &TopologyHistogram, keys: &Keys) -> Vec<bool> {
    // Per leaf key: its log durations, log gaps and shares of its parent,
    // or None once it was a root or an only child.
    #[derive(Default)]
    struct Sample {
        durations: Vec<f64>,
        gaps: Vec<f64>,
        cover: Vec<f64>,
    }
    let mut samples: Vec<Option<Sample>> = keys.leaf.iter().map(|&l| l.then(Sample::default)).collect();
    let families: Vec<Vec<usize>> = histogram.topologies.iter().map(|t| t.children().iter().map(Vec::len).collect()).collect();
    for (t, topology, times) in traces.iter().filter_map(|trace| placed(trace, histogram)) {
        let family = &families[t];
        for (k, &(start, end)) in times.iter().enumerate() {
            let v = keys.nodes[t][k].0 as usize;
            match (&mut samples[v], topology.parents[k]) {
                (None, _) => {}
                (Some(Sample { durations, gaps, cover }), Some(p)) if family[p as usize] > 1 => {
                    let (parent_start, parent_end) = times[p as usize];
                    durations.push(((end - start) as f64 / 1e3).ln_1p());
                    gaps.push(signed_log((parent_end as f64 - end as f64) / 1e3));
                    cover.push((end - start) as f64 / parent_end.saturating_sub(parent_start).max(1) as f64);
                }
                (sample, _) => *sample = None,
            }
        }
    }
    samples
        .into_iter()
        .map(|s| {
            s.is_some_and(|Sample { mut durations, mut gaps, mut cover }| {
                cover.sort_by(f64::total_cmp);
                durations.len() >= SPANNING_MIN
                    && cover[cover.len() / 2] >= SPANNING_COVER
                    && spread(&mut gaps) < SPANNING_SPREAD * spread(&mut durations)
            })
        })
        .collect()
}

/// Mean absolute deviation of `values` from their median.
fn spread(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    values.iter().map(|v| (v - median).abs()).sum::<f64>() / values.len() as f64
}

/// Binary segmentation of `(bucket, value)` pairs sorted by bucket: the
/// buckets where a new segment begins.
fn segment(values: &[(u32, f64)]) -> Vec<u32> {
    if values.len() < 2 * MIN_SEGMENT {
        return Vec::new();
    }
    let step = values.len().div_ceil(SEGMENT_SAMPLE);
    let sample: Vec<(u32, f64)> = values.iter().step_by(step).copied().collect();
    let scale = step as f64;
    let mut sorted: Vec<f64> = sample.iter().map(|v| v.1).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let spread = sorted.iter().map(|v| (v - median).abs()).sum::<f64>() / sorted.len() as f64 + 1e-9;
    // The middle order statistic by selection, not a sort: this runs twice for
    // every candidate cut, and was most of the training time of large windows.
    let mut scratch = Vec::with_capacity(sample.len());
    let mut med = |s: &[(u32, f64)]| {
        scratch.clear();
        scratch.extend(s.iter().map(|x| x.1));
        let middle = scratch.len() / 2;
        *scratch.select_nth_unstable_by(middle, f64::total_cmp).1
    };
    let mut cuts = Vec::new();
    let mut stack = vec![(0usize, sample.len())];
    while let Some((a, b)) = stack.pop() {
        if cuts.len() + 1 >= MAX_SEGMENTS {
            break;
        }
        let part = &sample[a..b];
        // Candidate cuts: where the bucket changes, at most MAX_CANDIDATES of them evenly spread.
        let changes: Vec<usize> = (1..part.len()).filter(|&i| part[i].0 != part[i - 1].0).collect();
        let every = changes.len().div_ceil(MAX_CANDIDATES).max(1);
        let mut best: Option<(f64, usize)> = None;
        for &i in changes.iter().step_by(every) {
            let (l, r) = (i as f64 * scale, (part.len() - i) as f64 * scale);
            if l < MIN_SEGMENT as f64 || r < MIN_SEGMENT as f64 {
                continue;
            }
            let stat = (med(&part[..i]) - med(&part[i..])).abs() / spread * (l * r / (l + r)).sqrt();
            if best.is_none_or(|(s, _)| stat > s) {
                best = Some((stat, i));
            }
        }
        if let Some((_, i)) = best.filter(|(s, _)| *s > SEGMENT_THRESHOLD) {
            cuts.push(part[i].0);
            stack.push((a, a + i));
            stack.push((a + i, b));
        }
    }
    cuts.sort_unstable();
    cuts
}

/// Sketches of `values` (bucket, value), cut into segments when asked; also
/// each value's segment index.
fn segmented(values: &mut [(u32, f64)], config: &CalibrationConfig) -> (Segmented, Vec<u32>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&i| values[i].0);
    let sorted: Vec<(u32, f64)> = order.iter().map(|&i| values[i]).collect();
    let starts = if config.segments { segment(&sorted) } else { Vec::new() };
    let which: Vec<u32> = values.iter().map(|v| starts.partition_point(|&s| s <= v.0) as u32).collect();
    let mut sketches = Vec::with_capacity(starts.len() + 1);
    for s in 0..=starts.len() as u32 {
        let mut part: Vec<f64> = values.iter().zip(&which).filter(|(_, w)| **w == s).map(|(v, _)| v.1).collect();
        let sketch = QuantileSketch::of(&mut part, config.resolution, config.max_quantiles, config.quantiles_per_root)
            .unwrap_or_else(|| QuantileSketch::of(&mut [0.0], config.resolution, 2, 1.0).expect("one value"));
        sketches.push(sketch);
    }
    (Segmented { starts, sketches }, which)
}

/// The segmented sketch of the `value`s of the observations `members`; each
/// member's normal score within its segment goes to `scores`.
fn sketch_scored(
    members: &[usize],
    value: impl Fn(usize) -> f64,
    observations: &[Observation],
    scores: &mut [f64],
    config: &CalibrationConfig,
) -> Segmented {
    let mut values: Vec<(u32, f64)> = members.iter().map(|&i| (observations[i].bucket, value(i))).collect();
    let (sketch, which) = segmented(&mut values, config);
    for s in 0..sketch.sketches.len() as u32 {
        let part: Vec<usize> = members.iter().zip(&which).filter(|(_, w)| **w == s).map(|(&i, _)| i).collect();
        let values: Vec<f64> = part.iter().map(|&i| value(i)).collect();
        for (&i, u) in part.iter().zip(ranks(&values)) {
            scores[i] = normal_quantile(u);
        }
    }
    sketch
}

/// Mid-ranks of `values` as probabilities in (0, 1).
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let n = values.len() as f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0;
        for &k in &order[i..=j] {
            out[k] = (mid + 0.5) / n;
        }
        i = j + 1;
    }
    out
}

fn quantize(x: f64, lo: f64, hi: f64) -> u8 {
    ((x.clamp(lo, hi) - lo) / (hi - lo) * 15.0).round() as u8
}

fn dequantize(q: u8, lo: f64, hi: f64) -> f64 {
    lo + f64::from(q & 15) / 15.0 * (hi - lo)
}

/// A weight in [−1, 1] (a correlation, a regression weight) as 4 bits,
/// uniform in its angle `asin(w)` over 15 levels: 0 and ±1 are exact, and
/// both the weight and a copula's leftover spread `√(1 − w²)` come back
/// within 0.112 (near ±1 the levels are 0.975, 0.901, …). Uniform in `w`
/// the top levels were 0.867 and 1, and a coupling of 0.94 came back as 1:
/// its leftover spread of 0.34 as none.
fn quantize_weight(w: f64) -> u8 {
    (w.clamp(-1.0, 1.0).asin() / std::f64::consts::FRAC_PI_2 * 7.0 + 7.0).round() as u8
}

fn dequantize_weight(q: u8) -> f64 {
    ((f64::from((q & 15).min(14)) - 7.0) / 7.0 * std::f64::consts::FRAC_PI_2).sin()
}

/// A loading in [0, 1] as 4 bits, uniform in its angle as
/// [`quantize_weight`] is.
fn quantize_loading(l: f64) -> u8 {
    (l.clamp(0.0, 1.0).asin() / std::f64::consts::FRAC_PI_2 * 15.0).round() as u8
}

fn dequantize_loading(q: u8) -> f64 {
    (f64::from(q & 15) / 15.0 * std::f64::consts::FRAC_PI_2).sin()
}

/// A log ratio as a byte: 1/16 of a log unit (6%) from −4 (a call at least
/// 2% of its parent) up, rounded up so that the bound never cuts below the
/// window's largest; 255 (and a key without calls) leaves it unbounded.
fn reach_code(reach: f32) -> u8 {
    if reach.is_finite() { ((reach + 4.0) * 16.0).ceil().clamp(0.0, 254.0) as u8 } else { 255 }
}

/// The longest a parent's calls may be against it, as a log ratio; `None` for no bound.
fn reach_of(code: u8) -> Option<f64> {
    (code < 255).then(|| f64::from(code) / 16.0 - 4.0)
}

/// `keys` (value key indices) as flags, `n` of them.
fn flags(keys: &[u32], n: usize) -> Vec<bool> {
    let mut out = vec![false; n];
    for &v in keys {
        out[v as usize] = true;
    }
    out
}

/// Per topology, per node: whether its duration is composed of its calls
/// and mapped onto its label's ([`super::composed`]): not a root (the
/// latency bands arrange those), not kept at its own duration, and not a
/// rare call's caller (which keeps its stored length).
fn composed_nodes(histogram: &TopologyHistogram, keys: &Keys, detached: &[bool], shares: &RareShares) -> Vec<Vec<bool>> {
    let pins = shares.by_topology(histogram);
    histogram
        .topologies
        .iter()
        .enumerate()
        .map(|(t, topology)| {
            let mut calls = vec![false; topology.len()];
            for p in topology.parents.iter().flatten() {
                calls[*p as usize] = true;
            }
            (0..topology.len())
                .map(|k| {
                    calls[k]
                        && topology.parents[k].is_some()
                        && !detached[keys.nodes[t][k].0 as usize]
                        && !pins[t].iter().any(|f| f.parent as usize == k)
                })
                .collect()
        })
        .collect()
}

impl TimingModel {
    /// Learns the timing of `traces` (one window's, or a sample of them)
    /// placed in `histogram`; `cells` bins every trace of the window.
    pub fn fit(
        traces: &[NodeTimes],
        histogram: &TopologyHistogram,
        window_start: u64,
        config: &CalibrationConfig,
        cells: Option<&TimeCells>,
    ) -> Self {
        let bucket_ns = config.topology_bucket.as_nanos() as u64;
        let first_bucket = window_start / bucket_ns;
        let keys = Keys::of(histogram);
        let spanning_flags = spanning_keys(traces, histogram, &keys);
        let spanning: Vec<u32> = (0..keys.values as u32).filter(|&v| spanning_flags[v as usize]).collect();
        let mut observations = observe(traces, histogram, &keys, &spanning_flags, bucket_ns, first_bucket);
        let mut by_value: Vec<Vec<usize>> = vec![Vec::new(); keys.values];
        let mut by_lead: Vec<Vec<usize>> = vec![Vec::new(); keys.leads];
        let mut positions = vec![(0.0f64, 0.0f64); histogram.labels.len()];
        for (i, o) in observations.iter().enumerate() {
            by_value[o.keys.0 as usize].push(i);
            by_lead[o.keys.1 as usize].push(i);
            let p = &mut positions[o.label as usize];
            *p = (p.0 + o.position, p.1 + 1.0);
        }
        // Spans whose children often end after them keep their own duration.
        let detached: Vec<u32> = (0..keys.values as u32)
            .filter(|&v| {
                let members = &by_value[v as usize];
                let outlived = members.iter().filter(|&&i| observations[i].outlived).count();
                outlived as f64 > DETACHED_SHARE * members.len() as f64
            })
            .collect();
        for &v in &detached {
            for &i in &by_value[v as usize] {
                let o = &mut observations[i];
                o.value = o.duration.unwrap_or(o.value);
            }
        }
        // Each observation's normal score within its sketches (key and segment).
        let mut scores = vec![0.0f64; observations.len()];
        let mut values: Vec<Segmented> =
            by_value.iter().map(|m| sketch_scored(m, |i| observations[i].value, &observations, &mut scores, config)).collect();
        let mut lead_scores = vec![0.0f64; observations.len()];
        let leads: Vec<Segmented> =
            by_lead.iter().map(|m| sketch_scored(m, |i| observations[i].lead, &observations, &mut lead_scores, config)).collect();
        let mut reach = vec![f32::NEG_INFINITY; keys.values];
        for o in observations.iter().filter(|o| o.duration.is_some()) {
            let r = &mut reach[o.keys.0 as usize];
            *r = r.max(o.reach);
        }
        let reaches = reach.into_iter().map(reach_code).collect();
        let orders = positions.iter().map(|&(sum, n)| ((sum / n.max(1.0)).clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        // Every trace's scores where the window folded them ([`TimeCells`]):
        // what happens minute by minute and the sketches of rare keys are
        // read off them, off the share's elsewhere.
        let whole = cells.filter(|c| c.bucket_ns() == bucket_ns && config.time_effects).map(|c| {
            let flags = WholeFlags { spanning: &spanning_flags, detached: &detached };
            let counts: Vec<usize> = by_value.iter().map(Vec::len).collect();
            WholeScores::of(c, first_bucket, &keys, histogram, flags, (&values, &leads), (&counts, config))
        });
        let mut whole = whole.unwrap_or_default();
        for (v, sketch) in std::mem::take(&mut whole.rare) {
            values[v as usize] = Segmented { starts: Vec::new(), sketches: vec![sketch] };
        }
        let durations = if config.node_effects { duration_scores(&observations, &by_value) } else { Vec::new() };
        let paths = node_paths(histogram);
        let (nodes, couplings) = if config.node_effects {
            let children = children_scores(&observations, &durations, histogram);
            (
                node_effects(&observations, &scores, (histogram, &paths), &whole.locations, config.node_locations),
                couplings(&observations, (&scores, &durations), &children, keys.values),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let lead_nodes = if config.node_effects {
            node_effects(&observations, &lead_scores, (histogram, &paths), &[], config.node_locations)
        } else {
            Vec::new()
        };
        let loadings =
            if config.node_effects { loadings(&observations, &scores, histogram, &nodes, keys.values) } else { Vec::new() };
        let trace_shape =
            if loadings.is_empty() { Vec::new() } else { trace_shape(&observations, &scores, histogram, &nodes, &loadings) };
        let lead_couplings = if config.node_effects {
            lead_couplings(&observations, &lead_scores, (&scores, &durations), histogram, keys.leads)
        } else {
            Vec::new()
        };
        let (lead_tails, lead_own_tails) = if config.node_effects {
            let parent = |i: usize, o: &Observation, parent: u32| Some(scores[i - o.node.1 as usize + parent as usize]);
            let leaves: Vec<Vec<bool>> = histogram.topologies.iter().map(leaves).collect();
            let own = |i: usize, o: &Observation, _| leaves[o.node.0 as usize][o.node.1 as usize].then(|| durations[i]);
            (lead_tails(&observations, &lead_scores, parent, histogram, keys.leads), {
                lead_tails(&observations, &lead_scores, own, histogram, keys.leads)
            })
        } else {
            (Vec::new(), Vec::new())
        };
        let whole = whole.into_cells(&nodes, &keys, histogram);
        let times = if config.time_effects { time_effects(&observations, &scores, &nodes, &keys, &whole) } else { Vec::new() };
        let bursts = if config.bursts && !times.is_empty() {
            bursts(&observations, (&scores, &lead_scores), &nodes, &keys, whole)
        } else {
            Vec::new()
        };
        let shares = RareShares::fit(traces, histogram, config.rare_calls);
        let composed = if config.composed {
            let detached = flags(&detached, keys.values);
            let nodes = composed_nodes(histogram, &keys, &detached, &shares);
            let size = (config.resolution, config.max_quantiles, config.quantiles_per_root);
            Some(ComposedDurations::fit(traces, histogram, |t, k| nodes[t][k], size))
        } else {
            None
        };
        TimingModel {
            resolution: config.resolution,
            bucket_ns,
            first_bucket,
            values,
            leads,
            detached,
            spanning,
            reaches,
            orders,
            nodes,
            lead_nodes,
            couplings,
            loadings,
            lead_couplings,
            lead_tails,
            lead_own_tails,
            trace_shape,
            times,
            bursts,
            bands: LatencyBands::default(),
            shares,
            composed,
        }
    }

    fn any_negative(&self, s: &Segmented) -> bool {
        // (a detached key's sketch holds durations, never negative)
        s.sketches.iter().any(|q| q.points(self.resolution).first().is_some_and(|&v| v < 0.0))
    }

    /// The labels whose spans with children may end before their last child
    /// (a negative tail, or a span that keeps its own duration).
    pub fn labels_with_negative_tails(&self, histogram: &TopologyHistogram) -> std::collections::HashSet<u32> {
        let keys = Keys::of(histogram);
        let negative: Vec<bool> = (0..self.values.len())
            .map(|v| self.detached.binary_search(&(v as u32)).is_ok() || self.any_negative(&self.values[v]))
            .collect();
        let mut out = std::collections::HashSet::new();
        for (t, nodes) in histogram.topologies.iter().zip(&keys.nodes) {
            for (&label, &(v, _)) in t.labels.iter().zip(nodes) {
                if negative.get(v as usize).copied().unwrap_or(false) {
                    out.insert(label);
                }
            }
        }
        out
    }

    /// Checks a decoded model against its histogram before use.
    pub fn validate(&self, histogram: &TopologyHistogram) -> Result<(), TimingError> {
        if !(self.resolution.is_finite() && (1e-4..=1.0).contains(&self.resolution)) || self.bucket_ns == 0 {
            return Err(bad("resolution or bucket out of range"));
        }
        let keys = Keys::of(histogram);
        if self.values.len() != keys.values || self.leads.len() != keys.leads || self.orders.len() != histogram.labels.len() {
            return Err(bad(format!(
                "{} value, {} lead and {} order entries for {} value keys, {} lead keys and {} labels",
                self.values.len(),
                self.leads.len(),
                self.orders.len(),
                keys.values,
                keys.leads,
                histogram.labels.len()
            )));
        }
        if self.detached.windows(2).any(|w| w[0] >= w[1]) || self.detached.last().is_some_and(|&v| v as usize >= keys.values) {
            return Err(bad("detached keys out of order or range"));
        }
        if self.spanning.windows(2).any(|w| w[0] >= w[1])
            || self.spanning.iter().any(|&v| !keys.leaf.get(v as usize).copied().unwrap_or(false))
        {
            return Err(bad("spanning keys out of order, out of range or not leaves"));
        }
        for s in self.values.iter().chain(&self.leads) {
            if s.sketches.len() != s.starts.len() + 1 || s.sketches.len() > MAX_SEGMENTS {
                return Err(bad("a segmented sketch's starts and sketches disagree"));
            }
            if s.starts.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad("segment starts out of order"));
            }
            s.sketches.iter().try_for_each(QuantileSketch::validate)?;
        }
        if !self.times.is_empty() && (keys.services == 0 || self.times.len() > (MAX_TIME_BUCKETS * keys.services).div_ceil(2)) {
            return Err(bad(format!("{} time effect bytes for {} services", self.times.len(), keys.services)));
        }
        if self.bursts.len() > MAX_BURSTS
            || self.times.is_empty() && !self.bursts.is_empty()
            || self.bursts.windows(2).any(|w| (w[0].bucket, w[0].key) >= (w[1].bucket, w[1].key))
            || self.bursts.iter().any(|b| {
                b.bucket as usize >= MAX_TIME_BUCKETS
                    || b.key as usize >= keys.values + keys.leads
                    || b.below.windows(2).any(|w| w[0] > w[1])
            })
        {
            return Err(bad("bursts out of order or range, too many, or without time effects"));
        }
        if self.reaches.len() != keys.values {
            return Err(bad("reaches for another number of value keys"));
        }
        if !self.lead_couplings.is_empty() && self.lead_couplings.len() != keys.leads {
            return Err(bad("lead couplings for another number of lead keys"));
        }
        if !self.lead_tails.is_empty() && self.lead_tails.len() != keys.leads {
            return Err(bad("lead tails for another number of lead keys"));
        }
        if !self.lead_own_tails.is_empty() && self.lead_own_tails.len() != keys.leads {
            return Err(bad("lead own tails for another number of lead keys"));
        }
        if !self.trace_shape.is_empty() && (self.trace_shape.len() != SHAPE_PROBS.len() || !self.trace_shape.is_sorted()) {
            return Err(bad("the trace rank's quantiles are not as many as their probabilities, or out of order"));
        }
        if !self.loadings.is_empty() && self.loadings.len() != keys.values {
            return Err(bad("trace loadings for another number of value keys"));
        }
        if !self.couplings.is_empty() && self.couplings.len() != keys.values {
            return Err(bad("couplings for another number of value keys"));
        }
        for nodes in [&self.nodes, &self.lead_nodes] {
            if nodes.is_empty() {
                continue;
            }
            if nodes.len() != histogram.topologies.len() {
                return Err(bad("node effects for another number of topologies"));
            }
            if nodes.iter().zip(&histogram.topologies).any(|(n, t)| n.len() != t.len()) {
                return Err(bad("node effects for another number of nodes"));
            }
        }
        latency::validate(&self.bands, histogram)?;
        self.shares.validate(histogram)?;
        if let Some(composed) = &self.composed {
            composed.validate(histogram)?;
        }
        Ok(())
    }
}

/// Every node of every trace measured: its keys, time bucket, value, lead
/// and position within its parent.
fn observe(
    traces: &[NodeTimes],
    histogram: &TopologyHistogram,
    keys: &Keys,
    spanning: &[bool],
    bucket_ns: u64,
    first_bucket: u64,
) -> Vec<Observation> {
    let structure: Vec<(Vec<Vec<usize>>, Vec<usize>)> =
        histogram.topologies.iter().map(|t| (t.children(), t.roots().collect())).collect();
    let mut observations = Vec::with_capacity(traces.iter().map(|t| t.times.len()).sum());
    for (t, topology, times) in traces.iter().filter_map(|trace| placed(trace, histogram)) {
        let (children, roots) = &structure[t];
        let trace_start = times.iter().map(|x| x.0).min().unwrap_or(0);
        let bucket = (trace_start / bucket_ns).saturating_sub(first_bucket) as u32;
        let node_keys = &keys.nodes[t];
        let spans = |k: usize| spanning[node_keys[k].0 as usize] && topology.parents[k].is_some();
        let leads = layout(times, children, roots, trace_start, spans);
        for (k, &(start, end)) in times.iter().enumerate() {
            let own = ((end - start) as f64 / 1e3).ln_1p();
            let (value, duration, outlived) = match topology.parents[k] {
                Some(p) if spans(k) => (signed_log((times[p as usize].1 as f64 - end as f64) / 1e3), None, false),
                _ if children[k].is_empty() => (own, None, false),
                _ => {
                    // The tail after the last call the parent waits for (its
                    // start when every call spans it).
                    let last = children[k].iter().filter(|&&c| !spans(c)).map(|&c| times[c].1).max().unwrap_or(start);
                    let over = last.saturating_sub(end);
                    (signed_log((end as f64 - last as f64) / 1e3), Some(own), 2 * over > end - start)
                }
            };
            let longest = (children[k].iter().filter(|&&c| !spans(c)))
                .map(|&c| ((times[c].1 - times[c].0) as f64 / 1e3).ln_1p())
                .fold(f64::NEG_INFINITY, f64::max);
            let reach = if longest.is_finite() { (longest - own) as f32 } else { 0.0 };
            observations.push(Observation {
                label: topology.labels[k],
                keys: node_keys[k],
                bucket,
                value,
                duration,
                log_duration: own,
                reach,
                outlived,
                lead: leads[k].0,
                position: leads[k].1,
                node: (t as u32, k as u32),
            });
        }
    }
    observations
}

/// For every observation with children, its children's normal scores
/// summed and scaled back to unit variance (0 for leaves). Observations come
/// trace by trace, each trace's nodes in canonical order.
fn children_scores(observations: &[Observation], scores: &[f64], histogram: &TopologyHistogram) -> Vec<f64> {
    let mut out = vec![0.0; observations.len()];
    let mut first = 0;
    while first < observations.len() {
        let topology = &histogram.topologies[observations[first].node.0 as usize];
        let n = topology.len();
        let (mut sum, mut count) = (vec![0.0f64; n], vec![0u32; n]);
        for (k, p) in topology.parents.iter().enumerate() {
            if let Some(p) = p {
                sum[*p as usize] += scores[first + k];
                count[*p as usize] += 1;
            }
        }
        for k in 0..n {
            if count[k] > 0 {
                out[first + k] = sum[k] / f64::from(count[k]).sqrt();
            }
        }
        first += n;
    }
    out
}

/// Every observation's normal score of its own log duration among its value
/// key's (a parent's composed length, where its value is its tail).
fn duration_scores(observations: &[Observation], by_value: &[Vec<usize>]) -> Vec<f64> {
    let mut out = vec![0.0; observations.len()];
    for members in by_value {
        let values: Vec<f64> = members.iter().map(|&i| observations[i].log_duration).collect();
        for (&i, u) in members.iter().zip(ranks(&values)) {
            out[i] = normal_quantile(u);
        }
    }
    out
}

/// Per value key, two shrunk correlations with its children's duration
/// scores, 4 bits each: its tail's normal score (low nibble; a client's
/// overhead grows with the server span it waits for) and its own duration's
/// (high nibble; how much of a parent's length its calls decide, which
/// carries a slow query up a chain of wrappers to the client that waits).
fn couplings(observations: &[Observation], (scores, durations): (&[f64], &[f64]), children: &[f64], keys: usize) -> Vec<u8> {
    // Per key: tail·children, tail², children², duration·children, duration², count.
    let mut sums = vec![[0.0f64; 6]; keys];
    for (((o, &z), &d), &c) in observations.iter().zip(scores).zip(durations).zip(children) {
        let s = &mut sums[o.keys.0 as usize];
        for (a, x) in s.iter_mut().zip([z * c, z * z, c * c, d * c, d * d, 1.0]) {
            *a += x;
        }
    }
    sums.iter()
        .map(|&[zc, zz, cc, dc, dd, n]| {
            let shrink = n / (n + NODE_PRIOR);
            let tail = quantize_weight(correlation(zc, zz, cc) * shrink);
            let duration = quantize_weight(correlation(dc, dd, cc) * shrink);
            duration << 4 | tail
        })
        .collect()
}

/// Per value key, its spans' loadings on their trace's shared rank and on
/// their family's (siblings'), shrunk, packed in 4 bits each: from the
/// correlation of a span's normal score (beyond its node's location) with
/// the mean of the rest of its trace, and from the mean product of the
/// scores of siblings (the square of a shared loading).
fn loadings(
    observations: &[Observation],
    scores: &[f64],
    histogram: &TopologyHistogram,
    nodes: &[Vec<u8>],
    keys: usize,
) -> Vec<u8> {
    let residual: Vec<f64> = observations.iter().zip(scores).map(|(o, &z)| z - node_location(nodes, o.node)).collect();
    // Per key: trace (product, own square, others' square, count), family (product sum, pairs, own square, count).
    let mut trace = vec![(0.0f64, 0.0f64, 0.0f64, 0.0f64); keys];
    let mut family = vec![(0.0f64, 0.0f64, 0.0f64, 0.0f64); keys];
    let mut sums: Vec<(f64, u32)> = Vec::new();
    // Observations come trace by trace, in canonical order.
    let mut first = 0;
    while first < observations.len() {
        let topology = &histogram.topologies[observations[first].node.0 as usize];
        let end = first + topology.len();
        let e = &residual[first..end];
        let n = e.len() as f64;
        let total: f64 = e.iter().sum();
        sums.clear();
        sums.resize(e.len(), (0.0, 0));
        for (k, p) in topology.parents.iter().enumerate() {
            if let Some(p) = p {
                let s = &mut sums[*p as usize];
                *s = (s.0 + e[k], s.1 + 1);
            }
        }
        for (k, &ek) in e.iter().enumerate() {
            let key = observations[first + k].keys.0 as usize;
            if n > 1.0 {
                let others = (total - ek) / (n - 1.0);
                let s = &mut trace[key];
                *s = (s.0 + ek * others, s.1 + ek * ek, s.2 + others * others, s.3 + 1.0);
            }
            if let Some(p) = topology.parents[k] {
                let (sum, m) = sums[p as usize];
                let f = &mut family[key];
                *f = (f.0 + ek * (sum - ek), f.1 + f64::from(m - 1), f.2 + ek * ek, f.3 + 1.0);
            }
        }
        first = end;
    }
    trace
        .iter()
        .zip(&family)
        .map(|(&(zo, zz, oo, n), &(products, pairs, squares, m))| {
            let t = if zz > 0.0 && oo > 0.0 { (zo / (zz * oo).sqrt()).max(0.0) } else { 0.0 };
            let f = if pairs > 0.0 && squares > 0.0 { (products / pairs / (squares / m)).clamp(0.0, 1.0).sqrt() } else { 0.0 };
            quantize_loading(t * n / (n + NODE_PRIOR)) << 4 | quantize_loading(f * pairs / (pairs + NODE_PRIOR))
        })
        .collect()
}

/// Probabilities at which [`TimingModel::trace_shape`] keeps the trace
/// rank's quantiles: the tails finer than the middle, where slow traces are.
const SHAPE_PROBS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.99];
/// Trace rank quantiles are kept within ± this many standard deviations.
const SHAPE_RANGE: f64 = 4.0;
/// Fewest traces whose shared rank is measured well enough for a shape.
const SHAPE_MIN_TRACES: usize = 200;
/// Least information (sum of its spans' squared loadings) a trace's shared
/// rank is measured from: its error's variance is then at most half the
/// rank's own, and smaller traces would blur the shape into their noise.
const SHAPE_INFORMATION: f64 = 2.0;

fn shape_code(q: f64) -> u8 {
    ((q.clamp(-SHAPE_RANGE, SHAPE_RANGE) + SHAPE_RANGE) / (2.0 * SHAPE_RANGE) * 255.0).round() as u8
}

fn shape_value(code: u8) -> f64 {
    f64::from(code) / 255.0 * 2.0 * SHAPE_RANGE - SHAPE_RANGE
}

/// The standardised distribution of the rank each trace shares, as
/// [`TimingModel::trace_shape`] keeps it: every trace's rank estimated by
/// least squares from its spans' residual scores and trace loadings, over
/// the traces measured from enough spans.
fn trace_shape(
    observations: &[Observation],
    scores: &[f64],
    histogram: &TopologyHistogram,
    nodes: &[Vec<u8>],
    loadings: &[u8],
) -> Vec<u8> {
    let trace_loadings: Vec<f64> = loadings.iter().map(|&c| dequantize_loading(c >> 4)).collect();
    let mut ranks: Vec<f64> = Vec::new();
    // Observations come trace by trace, in canonical order.
    let mut first = 0;
    while first < observations.len() {
        let end = first + histogram.topologies[observations[first].node.0 as usize].len();
        let (mut weighted, mut information) = (0.0f64, 0.0f64);
        for (o, &z) in observations[first..end].iter().zip(&scores[first..end]) {
            let t = trace_loadings[o.keys.0 as usize];
            weighted += t * (z - node_location(nodes, o.node));
            information += t * t;
        }
        if information >= SHAPE_INFORMATION {
            ranks.push(weighted / information);
        }
        first = end;
    }
    if ranks.len() < SHAPE_MIN_TRACES {
        return Vec::new();
    }
    let n = ranks.len() as f64;
    let mean = ranks.iter().sum::<f64>() / n;
    let sd = (ranks.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / n).sqrt();
    if sd <= 0.0 {
        return Vec::new();
    }
    ranks.sort_unstable_by(f64::total_cmp);
    SHAPE_PROBS.iter().map(|&p| shape_code((quantile_of_sorted(&ranks, p) - mean) / sd)).collect()
}

/// The trace rank at probability `u` from its stored shape: linear between
/// the kept quantiles, a normal tail beyond them.
fn shaped(shape: &[u8], u: f64) -> f64 {
    let last = SHAPE_PROBS.len() - 1;
    match SHAPE_PROBS.iter().position(|&p| u < p) {
        Some(0) => shape_value(shape[0]) + normal_quantile(u.max(1e-12)) - normal_quantile(SHAPE_PROBS[0]),
        Some(i) => {
            let (p0, p1) = (SHAPE_PROBS[i - 1], SHAPE_PROBS[i]);
            let (q0, q1) = (shape_value(shape[i - 1]), shape_value(shape[i]));
            q0 + (u - p0) / (p1 - p0) * (q1 - q0)
        }
        None => shape_value(shape[last]) + normal_quantile(u.min(1.0 - 1e-12)) - normal_quantile(SHAPE_PROBS[last]),
    }
}

/// Per lead key, the shrunk weights of its leads' normal scores on their
/// parent's value score (low nibble) and on their own span's duration score
/// (high nibble; a call queued before it starts when the service is loaded,
/// and then runs slow), 4 bits each. The two are fitted jointly (regression
/// on both), not each alone: a parent's score and its call's duration move
/// together (the parent waits for the call), so the two correlations each
/// count the shared part, and a lead drawn from both took it twice.
fn lead_couplings(
    observations: &[Observation],
    leads: &[f64],
    (scores, durations): (&[f64], &[f64]),
    histogram: &TopologyHistogram,
    keys: usize,
) -> Vec<u8> {
    // Per key: lead·parent, lead², parent², lead·duration, duration², parent·duration, count.
    let mut sums = vec![[0.0f64; 7]; keys];
    for (i, o) in observations.iter().enumerate() {
        // Observations come trace by trace in canonical order: the parent of
        // node k of the trace starting at i − k is at (i − k) + parent.
        let Some(p) = histogram.topologies[o.node.0 as usize].parents[o.node.1 as usize] else { continue };
        let (l, z, d) = (leads[i], scores[i - o.node.1 as usize + p as usize], durations[i]);
        let s = &mut sums[o.keys.1 as usize];
        for (a, x) in s.iter_mut().zip([l * z, l * l, z * z, l * d, d * d, z * d, 1.0]) {
            *a += x;
        }
    }
    sums.iter()
        .map(|&[lz, ll, zz, ld, dd, zd, n]| {
            let shrink = n / (n + NODE_PRIOR);
            let (parent, own) = joint_weights(correlation(lz, ll, zz), correlation(ld, ll, dd), correlation(zd, zz, dd));
            quantize_weight(own * shrink) << 4 | quantize_weight(parent * shrink)
        })
        .collect()
}

/// The weights of y on two standardised scores a and b from the correlations
/// y–a, y–b and a–b (least squares), scaled down if need be so that they
/// explain at most all of y's variance when drawn as independent parts.
fn joint_weights(ya: f64, yb: f64, ab: f64) -> (f64, f64) {
    let det = 1.0 - ab * ab;
    // Nearly the same score twice: it carries its correlation alone.
    if det < 0.05 {
        return if ya.abs() >= yb.abs() { (ya, 0.0) } else { (0.0, yb) };
    }
    let (a, b) = ((ya - ab * yb) / det, (yb - ab * ya) / det);
    let total = a * a + b * b;
    if total > 1.0 { (a / total.sqrt(), b / total.sqrt()) } else { (a, b) }
}

/// Normal score above which a rank is in its top decile.
const TOP_DECILE: f64 = 1.281_551_565_544_600_5;

/// Added to a latent to rank it above every latent a copula draws.
const ABOVE_DRAWN: f64 = 16.0;

/// Per lead key, the shrunk share π of calls whose lead follows a score
/// `leader` gives (their parent's rank, [`TimingModel::lead_tails`], or
/// their own duration's, [`TimingModel::lead_own_tails`]) in its top
/// decile, in 4 bits: of the calls whose leader is in its top decile, a
/// share `c` has its lead in its own top decile against `q` of all calls,
/// so π = (c − q) / (1 − q).
fn lead_tails(
    observations: &[Observation],
    leads: &[f64],
    leader: impl Fn(usize, &Observation, u32) -> Option<f64>,
    histogram: &TopologyHistogram,
    keys: usize,
) -> Vec<u8> {
    // Per key: leaders in their top decile, those whose lead is too, leads in theirs, count.
    let mut counts = vec![[0u32; 4]; keys];
    for (i, o) in observations.iter().enumerate() {
        let Some(p) = histogram.topologies[o.node.0 as usize].parents[o.node.1 as usize] else { continue };
        let Some(leader) = leader(i, o, p) else { continue };
        let (lead_top, parent_top) = (leads[i] > TOP_DECILE, leader > TOP_DECILE);
        let c = &mut counts[o.keys.1 as usize];
        c[0] += u32::from(parent_top);
        c[1] += u32::from(parent_top && lead_top);
        c[2] += u32::from(lead_top);
        c[3] += 1;
    }
    counts
        .iter()
        .map(|&[parents, both, tops, n]| {
            if parents == 0 || n == 0 {
                return 0;
            }
            let (c, q) = (f64::from(both) / f64::from(parents), f64::from(tops) / f64::from(n));
            let share = if q < 1.0 { ((c - q) / (1.0 - q)).clamp(0.0, 1.0) } else { 0.0 };
            let parents = f64::from(parents);
            quantize(share * parents / (parents + NODE_PRIOR), 0.0, 1.0)
        })
        .collect()
}

/// Per node of `topology`, whether it has no children.
fn leaves(topology: &super::topology::Topology) -> Vec<bool> {
    let mut leaf = vec![true; topology.len()];
    for p in topology.parents.iter().flatten() {
        leaf[*p as usize] = false;
    }
    leaf
}

/// The correlation of x and y from the sums of xy, x² and y² (0 when either is constant).
fn correlation(xy: f64, xx: f64, yy: f64) -> f64 {
    if xx > 0.0 && yy > 0.0 { xy / (xx * yy).sqrt() } else { 0.0 }
}

/// Per topology node, the shrunk mean and spread of its normal scores
/// (values' or leads'), packed; empty with [`NodeLocations::None`].
///
/// A node is shrunk towards its *path* (the labels from its trace's root
/// down to it, numbered by [`node_paths`]) pooled over every topology that
/// has it, and the path towards its key's whole distribution: a booking
/// trace comes in dozens of topologies, each with a few calls of every node,
/// and each of them runs as a booking does. With [`NodeLocations::Paths`]
/// every node takes its path's.
fn node_effects(
    observations: &[Observation],
    scores: &[f64],
    (histogram, paths): (&TopologyHistogram, &[Vec<u32>]),
    whole: &[Vec<Option<(f64, f64)>>],
    locations: NodeLocations,
) -> Vec<Vec<u8>> {
    if locations == NodeLocations::None {
        return Vec::new();
    }
    let mut sums: Vec<Vec<Moments>> = histogram.topologies.iter().map(|t| vec![(0.0, 0.0, 0.0); t.len()]).collect();
    for (o, &z) in observations.iter().zip(scores) {
        let s = &mut sums[o.node.0 as usize][o.node.1 as usize];
        *s = (s.0 + z, s.1 + z * z, s.2 + 1.0);
    }
    let mut pooled: HashMap<u32, Moments> = HashMap::new();
    for (nodes, ids) in sums.iter().zip(paths) {
        for (&(sum, squares, n), id) in nodes.iter().zip(ids) {
            let p = pooled.entry(*id).or_default();
            *p = (p.0 + sum, p.1 + squares, p.2 + n);
        }
    }
    // Per path: its location and spread, shrunk towards the key's (0 and 1).
    let prior: HashMap<u32, (f64, f64)> = pooled.iter().map(|(&id, m)| (id, shrunk(m, (0.0, 1.0)))).collect();
    (sums.iter().zip(paths).enumerate())
        .map(|(t, (nodes, ids))| {
            (nodes.iter().zip(ids).enumerate())
                .map(|(k, (m, id))| {
                    let path = prior.get(id).copied().unwrap_or((0.0, 1.0));
                    // A node the share never saw takes its path's.
                    if locations == NodeLocations::Paths || m.2 == 0.0 {
                        return pack_location(path);
                    }
                    let (location, spread) = shrunk(m, path);
                    // The location from every trace where the window folded
                    // them; the spread from the share (its approximation
                    // from the moments scored worse: bottlenecks 0.692
                    // against 0.700).
                    let location = match whole.get(t).and_then(|w| w[k]) {
                        Some((z, count)) => {
                            let w = count / (count + NODE_PRIOR);
                            z * w + path.0 * (1.0 - w)
                        }
                        None => location,
                    };
                    pack_location((location, spread))
                })
                .collect()
        })
        .collect()
}

/// Sum, sum of squares and count of normal scores.
type Moments = (f64, f64, f64);

/// The mean and standard deviation of `moments`, shrunk towards `prior`
/// (location, spread) by [`NODE_PRIOR`] pseudo-observations; `prior` itself
/// when there are none.
fn shrunk(&(sum, squares, n): &Moments, prior: (f64, f64)) -> (f64, f64) {
    if n == 0.0 {
        return prior;
    }
    let mean = sum / n;
    let sd = (squares / n - mean * mean).max(0.0).sqrt();
    let weight = n / (n + NODE_PRIOR);
    (mean * weight + prior.0 * (1.0 - weight), sd * weight + prior.1 * (1.0 - weight))
}

/// A rank location (high nibble) and spread (low nibble) in one byte.
fn pack_location((location, spread): (f64, f64)) -> u8 {
    quantize(location, -LOCATION_RANGE, LOCATION_RANGE) << 4 | quantize(spread, SPREAD_MIN, SPREAD_MAX)
}

/// A normal score placed at a node's packed location and spread.
fn located(packed: u8, z: f64) -> f64 {
    dequantize(packed >> 4, -LOCATION_RANGE, LOCATION_RANGE) + dequantize(packed, SPREAD_MIN, SPREAD_MAX) * z
}

/// Per topology, per node: a number for its path, the labels from its root
/// down to it, the same for the same path in every topology. Parents precede
/// their children, so one pass numbers every path.
fn node_paths(histogram: &TopologyHistogram) -> Vec<Vec<u32>> {
    let mut ids: HashMap<(u32, u32), u32> = HashMap::new();
    (histogram.topologies.iter())
        .map(|topology| {
            let mut out: Vec<u32> = Vec::with_capacity(topology.len());
            for (k, &label) in topology.labels.iter().enumerate() {
                // u32::MAX: the path above a root, which no node has.
                let above = topology.parents[k].and_then(|p| out.get(p as usize).copied()).unwrap_or(u32::MAX);
                let next = ids.len() as u32;
                out.push(*ids.entry((above, label)).or_insert(next));
            }
            out
        })
        .collect()
}

/// Per time bucket and service, the shrunk mean of its spans' normal scores
/// beyond their node's location, coded in 4 bits two a byte; keys `whole`
/// covers count every trace's spans, the others the share's.
fn time_effects(observations: &[Observation], scores: &[f64], nodes: &[Vec<u8>], keys: &Keys, whole: &WholeCells) -> Vec<u8> {
    let buckets = (observations.iter().map(|o| o.bucket as usize + 1).max().unwrap_or(0))
        .max(whole.services.keys().map(|&(b, _)| b as usize + 1).max().unwrap_or(0));
    if buckets > MAX_TIME_BUCKETS || keys.services == 0 {
        return Vec::new();
    }
    let mut sums = vec![(0.0f64, 0.0f64); buckets * keys.services];
    for (o, &z) in observations.iter().zip(scores) {
        if whole.covers(o.keys.0) {
            continue;
        }
        let location = node_location(nodes, o.node);
        let s = &mut sums[o.bucket as usize * keys.services + keys.service_of[o.label as usize] as usize];
        *s = (s.0 + z - location, s.1 + 1.0);
    }
    for (&(bucket, service), &(sum, n)) in &whole.services {
        let s = &mut sums[bucket as usize * keys.services + service as usize];
        *s = (s.0 + sum, s.1 + n);
    }
    let code = |&(sum, n): &(f64, f64)| {
        let shift = if n > 0.0 { sum / (n + TIME_PRIOR) } else { 0.0 };
        (8.0 + (shift / TIME_STEP).round().clamp(-7.0, 7.0)) as u8
    };
    sums.chunks(2).map(|pair| code(&pair[0]) << 4 | pair.get(1).map_or(8, code)).collect()
}

/// What decides a node's value at fitting: the value keys that span their
/// parent and those that keep their own duration.
struct WholeFlags<'a> {
    spanning: &'a [bool],
    detached: &'a [u32],
}

/// Every trace's scores, from the bins a window folded ([`TimeCells`]):
/// each bin ranked within its key's segment over the whole window, as
/// [`sketch_scored`] ranks the share's values.
#[derive(Default)]
struct WholeScores {
    /// Value keys: keys below this are value keys, the rest lead keys
    /// (offset as in [`Burst::key`]).
    values: usize,
    /// Per value key, then per lead key: whether every node of it has its
    /// value (lead) binned. A parent with a spanning child has not: its tail
    /// counts from its last other child, and its children's leads skip the
    /// spanning one, which the fold cannot tell; nor has a detached parent.
    covered: Vec<bool>,
    scored: Vec<Scored>,
    /// Per topology, per node: the mean normal score of its value over every
    /// trace and how many ([`node_locations`]), where the bins can tell.
    locations: Vec<Vec<Option<(f64, f64)>>>,
    /// Sketches of value keys the share holds too few values of, from the
    /// bins (see [`RARE_KEY`]).
    rare: Vec<(u32, QuantileSketch)>,
}

/// A value key with fewer values than this in the share, not cut into
/// segments, whose bins hold at least twice as many, is sketched from its
/// bins: a rare call (a few a minute over an hour) otherwise comes back
/// with the few values of the traces the share happened to keep.
const RARE_KEY: usize = 64;
/// Most values a rare key's sketch is drawn from (its bins spread evenly
/// within each bin).
const RARE_VALUES: usize = 1 << 14;

/// One ranked bin: (bucket, key, a node of the key, normal score, spans).
type Scored = (u32, u32, (u32, u32), f32, u32);

/// One bin ready to rank: (segment, value, spans, bucket, node).
type Ranked = (u32, f64, u32, u32, (u32, u32));

impl WholeScores {
    fn of(
        cells: &TimeCells,
        first_bucket: u64,
        keys: &Keys,
        histogram: &TopologyHistogram,
        flags: WholeFlags,
        (values, leads): (&[Segmented], &[Segmented]),
        (share_counts, config): (&[usize], &CalibrationConfig),
    ) -> Self {
        let quantities = node_quantities(keys, histogram, &flags);
        let mut covered = vec![true; keys.values + keys.leads];
        for (t, q) in quantities.iter().enumerate() {
            for (k, &(value, lead)) in q.iter().enumerate() {
                let (v, l) = keys.nodes[t][k];
                covered[v as usize] &= value.is_some();
                covered[keys.values + l as usize] &= lead;
            }
        }
        // Per key (value keys, then lead keys): its bins.
        let mut bins: Vec<Vec<Ranked>> = vec![Vec::new(); covered.len()];
        for bin in cells.bins() {
            let (t, k) = (bin.node.0 as usize, bin.node.1 as usize);
            let Some(&(value, _)) = quantities.get(t).and_then(|q| q.get(k)) else { continue };
            let Some(bucket) = bin.bucket.checked_sub(first_bucket).and_then(|b| u32::try_from(b).ok()) else { continue };
            let (v, l) = keys.nodes[t][k];
            let (key, sketch) = if bin.quantity == Quantity::Lead {
                (keys.values + l as usize, &leads[l as usize])
            } else if value == Some(bin.quantity) {
                (v as usize, &values[v as usize])
            } else {
                continue;
            };
            if covered[key] {
                let segment = sketch.starts.partition_point(|&s| s <= bucket) as u32;
                bins[key].push((segment, bin.value, bin.count, bucket, (t as u32, k as u32)));
            }
        }
        let rare = (bins.iter().enumerate().take(keys.values))
            .filter(|&(v, _)| values[v].starts.is_empty() && share_counts[v] < RARE_KEY && covered[v])
            .filter_map(|(v, b)| rare_sketch(b, share_counts[v], config).map(|s| (v as u32, s)))
            .collect();
        let locations = node_locations(cells, keys, histogram, &quantities, (&bins[..keys.values], values));
        let mut out = WholeScores { values: keys.values, covered, scored: Vec::with_capacity(cells.len()), locations, rare };
        for (key, members) in bins.into_iter().enumerate() {
            out.rank(key as u32, members);
        }
        out
    }

    /// Ranks one key's bins within each segment (mid-ranks, a bin's spans
    /// tied).
    fn rank(&mut self, key: u32, mut members: Vec<Ranked>) {
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for segment in members.chunk_by(|a, b| a.0 == b.0) {
            let n: f64 = segment.iter().map(|m| f64::from(m.2)).sum();
            let mut before = 0.0;
            for tied in segment.chunk_by(|a, b| a.1 == b.1) {
                let count: f64 = tied.iter().map(|m| f64::from(m.2)).sum();
                let z = normal_quantile((before + (count - 1.0) / 2.0 + 0.5) / n) as f32;
                before += count;
                self.scored.extend(tied.iter().map(|&(_, _, spans, bucket, node)| (bucket, key, node, z, spans)));
            }
        }
    }

    /// The scores per cell, value scores beyond their key's mean node
    /// location (the bins do not say which node a span was: a key whose
    /// nodes differ in speed mixes them).
    fn into_cells(self, nodes: &[Vec<u8>], keys: &Keys, histogram: &TopologyHistogram) -> WholeCells {
        let mut locations = vec![(0.0f64, 0.0f64); keys.values];
        for (t, topology_keys) in keys.nodes.iter().enumerate() {
            let n = f64::from(histogram.counts[t]);
            for (k, &(v, _)) in topology_keys.iter().enumerate() {
                let l = &mut locations[v as usize];
                *l = (l.0 + n * node_location(nodes, (t as u32, k as u32)), l.1 + n);
            }
        }
        let mut out = WholeCells { covered: self.covered, ..Default::default() };
        for (bucket, key, node, z, spans) in self.scored {
            let (z, w) = (f64::from(z), f64::from(spans));
            if (key as usize) < self.values {
                let (sum, n) = locations[key as usize];
                let score = z - sum / n.max(1.0);
                out.cells.entry((bucket, key)).or_default().push((score, w));
                let label = histogram.topologies[node.0 as usize].labels[node.1 as usize];
                let s = out.services.entry((bucket, keys.service_of[label as usize])).or_default();
                *s = (s.0 + score * w, s.1 + w);
            } else {
                out.cells.entry((bucket, key)).or_default().push((z, w));
            }
        }
        out
    }
}

/// Gauss–Hermite nodes and weights (8 points, the positive half).
const HERMITE: [(f64, f64); 4] = [
    (0.381_186_990_2, 0.661_147_012_6),
    (1.157_193_712_4, 0.207_802_325_8),
    (1.981_656_756_7, 0.017_077_983_0),
    (2.930_637_420_3, 0.000_199_604_1),
];

/// Per node of a key whose values the bins hold whole (one segment), the
/// mean normal score of its values within the key over every trace,
/// approximated from the node's moments (its values taken as normal in log
/// units, the score's mean by Gauss–Hermite quadrature through the key's
/// binned distribution), centred on the key; and its count.
fn node_locations(
    cells: &TimeCells,
    keys: &Keys,
    histogram: &TopologyHistogram,
    quantities: &[Vec<(Option<Quantity>, bool)>],
    (bins, values): (&[Vec<Ranked>], &[Segmented]),
) -> Vec<Vec<Option<(f64, f64)>>> {
    // Per value key: its bins over the window, (value, cumulative count before).
    let cdfs: Vec<Option<(Vec<(f64, f64)>, f64)>> = (bins.iter().zip(values))
        .map(|(b, s)| {
            if !s.starts.is_empty() || b.is_empty() {
                return None;
            }
            let mut sorted: Vec<(f64, f64)> = b.iter().map(|m| (m.1, f64::from(m.2))).collect();
            sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let mut before = 0.0;
            let cdf: Vec<(f64, f64)> = sorted
                .chunk_by(|a, b| a.0 == b.0)
                .map(|same| {
                    let at = before;
                    before += same.iter().map(|x| x.1).sum::<f64>();
                    (same[0].0, at)
                })
                .collect();
            Some((cdf, before))
        })
        .collect();
    let half = 0.5 / super::cells::BINS_PER_UNIT;
    let score = |(cdf, n): &(Vec<(f64, f64)>, f64), x: f64| {
        // Counts below x, spread evenly within each bin.
        let i = cdf.partition_point(|b| b.0 - half <= x);
        let below = match i {
            0 => 0.0,
            _ => {
                let (centre, at) = cdf[i - 1];
                let next = cdf.get(i).map_or(*n, |b| b.1);
                at + (next - at) * ((x - (centre - half)) / (2.0 * half)).clamp(0.0, 1.0)
            }
        };
        normal_quantile((below / n).clamp(0.5 / n, 1.0 - 0.5 / n))
    };
    let mut out: Vec<Vec<Option<(f64, f64)>>> = histogram.topologies.iter().map(|t| vec![None; t.len()]).collect();
    let mut centres = vec![(0.0f64, 0.0f64); keys.values];
    for (t, nodes) in out.iter_mut().enumerate() {
        for (k, slot) in nodes.iter_mut().enumerate() {
            let v = keys.nodes[t][k].0 as usize;
            let binned = matches!(quantities[t][k].0, Some(Quantity::Own | Quantity::Tail));
            let (Some(cdf), true, Some((sum, squares, count))) = (&cdfs[v], binned, cells.moments(t, k)) else { continue };
            if count == 0 {
                continue;
            }
            let n = f64::from(count);
            let mean = sum / n;
            let sd = (squares / n - mean * mean).max(0.0).sqrt();
            let z = (HERMITE.iter())
                .map(|&(x, w)| {
                    let at = |x: f64| score(cdf, mean + sd * x * std::f64::consts::SQRT_2);
                    w * (at(x) + at(-x))
                })
                .sum::<f64>()
                / std::f64::consts::PI.sqrt();
            *slot = Some((z, n));
            centres[v] = (centres[v].0 + z * n, centres[v].1 + n);
        }
    }
    for (t, nodes) in out.iter_mut().enumerate() {
        for (k, slot) in nodes.iter_mut().enumerate() {
            if let Some((z, _)) = slot {
                let (sum, n) = centres[keys.nodes[t][k].0 as usize];
                *z -= sum / n;
            }
        }
    }
    out
}

/// The sketch of a rare key's bins, when they hold at least twice the
/// share's `share_count` values and at most [`RARE_VALUES`].
fn rare_sketch(bins: &[Ranked], share_count: usize, config: &CalibrationConfig) -> Option<QuantileSketch> {
    let n: usize = bins.iter().map(|b| b.2 as usize).sum();
    if n < 2 * share_count.max(1) || n > RARE_VALUES {
        return None;
    }
    let width = 1.0 / super::cells::BINS_PER_UNIT;
    let mut spread: Vec<f64> = Vec::with_capacity(n);
    for &(_, value, count, _, _) in bins {
        let c = f64::from(count);
        spread.extend((0..count).map(|j| value + ((f64::from(j) + 0.5) / c - 0.5) * width));
    }
    QuantileSketch::of(&mut spread, config.resolution, config.max_quantiles, config.quantiles_per_root)
}

/// Every trace's scores per (time bucket, key), where [`WholeScores`] has
/// them.
#[derive(Default)]
struct WholeCells {
    /// As [`WholeScores::covered`].
    covered: Vec<bool>,
    /// (bucket, key as in [`Burst::key`]) → (normal score, beyond the node's
    /// location for value keys; spans).
    cells: HashMap<(u32, u32), Vec<(f64, f64)>>,
    /// (bucket, service) → (sum of value scores, spans).
    services: HashMap<(u32, u32), (f64, f64)>,
}

impl WholeCells {
    fn covers(&self, key: u32) -> bool {
        self.covered.get(key as usize).copied().unwrap_or(false)
    }
}

/// Per topology, per node: the quantity its value is (as [`observe`] sets
/// it) or None where the bins cannot give it, and whether its lead is as
/// binned (no sibling spans their parent).
fn node_quantities(keys: &Keys, histogram: &TopologyHistogram, flags: &WholeFlags) -> Vec<Vec<(Option<Quantity>, bool)>> {
    let mut detached = vec![false; keys.values];
    for &v in flags.detached {
        detached[v as usize] = true;
    }
    let spanning = |t: usize, k: usize| flags.spanning[keys.nodes[t][k].0 as usize];
    (histogram.topologies.iter().enumerate())
        .map(|(t, topology)| {
            let children = topology.children();
            let any_spanning = |kids: &[usize]| kids.iter().any(|&c| spanning(t, c));
            (0..topology.len())
                .map(|k| {
                    let value = match topology.parents[k] {
                        Some(p) if spanning(t, k) => (children[p as usize].len() > 1).then_some(Quantity::Gap),
                        _ if children[k].is_empty() => Some(Quantity::Own),
                        // A parent's own duration is not binned (its
                        // children outliving it is rare).
                        _ if detached[keys.nodes[t][k].0 as usize] || any_spanning(&children[k]) => None,
                        _ => Some(Quantity::Tail),
                    };
                    let lead = topology.parents[k].is_none_or(|p| !any_spanning(&children[p as usize]));
                    (value, lead)
                })
                .collect()
        })
        .collect()
}

/// The (bucket, key) cells whose timing departed from their key's over the
/// window (see [`TimingModel::bursts`]): each cell's normal scores within its
/// sketch beyond its node's location (value keys: one key serves callers
/// of different speeds, which node effects tell apart) or lead sketch (lead
/// keys), tested against the standard normal they follow when the key
/// behaves alike all window.
fn bursts(
    observations: &[Observation],
    (scores, lead_scores): (&[f64], &[f64]),
    nodes: &[Vec<u8>],
    keys: &Keys,
    mut whole: WholeCells,
) -> Vec<Burst> {
    let mut cells = std::mem::take(&mut whole.cells);
    for ((o, &z), &l) in observations.iter().zip(scores).zip(lead_scores) {
        if !whole.covers(o.keys.0) {
            let location = node_location(nodes, o.node);
            cells.entry((o.bucket, o.keys.0)).or_default().push((z - location, 1.0));
        }
        let lead = keys.values as u32 + o.keys.1;
        if !whole.covers(lead) {
            cells.entry((o.bucket, lead)).or_default().push((l, 1.0));
        }
    }
    let mut found: Vec<(f64, Burst)> = cells
        .into_iter()
        .filter_map(|((bucket, key), members)| {
            let n: f64 = members.iter().map(|m| m.1).sum();
            if n < BURST_MIN as f64 {
                return None;
            }
            let evidence = burst_evidence(&members);
            let below = BURST_POINTS.map(|x| {
                let share = members.iter().filter(|m| m.0 < x).map(|m| m.1).sum::<f64>() / n;
                (share * 255.0).round() as u8
            });
            (evidence >= BURST_EVIDENCE).then_some((evidence, Burst { bucket, key, below }))
        })
        .collect();
    found.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then((a.1.bucket, a.1.key).cmp(&(b.1.bucket, b.1.key))));
    found.truncate(MAX_BURSTS);
    let mut out: Vec<Burst> = found.into_iter().map(|(_, b)| b).collect();
    out.sort_unstable_by_key(|b| (b.bucket, b.key));
    out
}

/// The rank location of a topology node (0 without node effects).
fn node_location(nodes: &[Vec<u8>], (topology, node): (u32, u32)) -> f64 {
    nodes.get(topology as usize).map_or(0.0, |n| dequantize(n[node as usize] >> 4, -LOCATION_RANGE, LOCATION_RANGE))
}

/// How unlikely a cell's normal scores are for a calm cell, as −ln of a
/// Chernoff bound: the larger of its mean's and of its shares' beyond ±1.28
/// and ±1.96.
fn burst_evidence(scores: &[(f64, f64)]) -> f64 {
    let n: f64 = scores.iter().map(|s| s.1).sum();
    let mean = scores.iter().map(|s| s.0 * s.1).sum::<f64>() / n;
    let mut evidence = n * mean * mean / 2.0;
    for x in [1.2816, 1.96] {
        let tail = 1.0 - normal_cdf(x);
        let above = scores.iter().filter(|s| s.0 > x).map(|s| s.1).sum::<f64>() / n;
        let below = scores.iter().filter(|s| s.0 < -x).map(|s| s.1).sum::<f64>() / n;
        for share in [above, below] {
            if share > tail {
                evidence = evidence.max(n * bernoulli_divergence(share, tail));
            }
        }
    }
    evidence
}

/// KL(Bernoulli(a) ‖ Bernoulli(b)), for 0 < b < 1.
fn bernoulli_divergence(a: f64, b: f64) -> f64 {
    let term = |x: f64, y: f64| if x > 0.0 { x * (x / y).ln() } else { 0.0 };
    term(a, b) + term(1.0 - a, 1.0 - b)
}

/// The time effect of `service` in `bucket`: 0 where the model has none.
fn time_effect(times: &[u8], services: usize, bucket: u32, service: u32) -> f64 {
    let i = bucket as usize * services + service as usize;
    match times.get(i / 2) {
        Some(&b) if (service as usize) < services => {
            let code = if i.is_multiple_of(2) { b >> 4 } else { b & 15 };
            (f64::from(code) - 8.0) * TIME_STEP
        }
        _ => 0.0,
    }
}

/// Sketches decoded once, ready to read.
pub struct TimingTables<'a> {
    model: &'a TimingModel,
    keys: Keys,
    values: Vec<(Vec<u32>, Vec<Quantiles>)>,
    leads: Vec<(Vec<u32>, Vec<Quantiles>)>,
    detached: Vec<bool>,
    spanning: Vec<bool>,
    /// Per topology: children of every node sorted by their labels' order, and the roots.
    layout: Vec<(Vec<Vec<usize>>, Vec<usize>)>,
    /// Bursts by (bucket, key).
    /// Looked up twice a node: foldhash, not SipHash.
    bursts: foldhash::HashMap<(u32, u32), Burst>,
    /// Per topology, its nodes that keep their shares, with the shares.
    pins: Vec<Vec<&'a shares::Family>>,
    /// The model's 4-bit weights, decoded once: decoded node by node, their
    /// sines were 3% of generation.
    weights: Weights,
    /// Composed durations decoded, with each topology's [`NodeFlags`]; none
    /// when off.
    mapping: Option<(Mapping, Vec<NodeFlags>)>,
}

/// Per node of a topology: whether it is composed, whether it spans its
/// parent, and its reach ([`super::composed::Family`]).
type NodeFlags = (Vec<bool>, Vec<bool>, Vec<f64>);

/// [`TimingModel`]'s packed weights as numbers.
struct Weights {
    /// Per value key: (trace, family) loadings.
    loadings: Vec<(f64, f64)>,
    /// Per value key: (tail, whole duration) couplings.
    couplings: Vec<(f64, f64)>,
    /// Per lead key: (parent, own duration) couplings.
    lead_couplings: Vec<(f64, f64)>,
}

impl Weights {
    fn of(model: &TimingModel) -> Self {
        let pairs = |packed: &[u8], decode: fn(u8) -> f64| packed.iter().map(|&c| (decode(c >> 4), decode(c))).collect();
        let swapped = |packed: &[u8]| packed.iter().map(|&c| (dequantize_weight(c), dequantize_weight(c >> 4))).collect();
        Weights {
            loadings: pairs(&model.loadings, dequantize_loading),
            couplings: swapped(&model.couplings),
            lead_couplings: swapped(&model.lead_couplings),
        }
    }
}

/// Buffers [`TimingTables::compose`] reuses from trace to trace; `out` holds
/// the last trace's (start, end) per node.
#[derive(Debug, Default)]
pub struct Scratch {
    offset: Vec<f64>,
    duration: Vec<f64>,
    lead: Vec<f64>,
    /// Nodes of a subtree being scaled.
    stack: Vec<usize>,
    pub out: Vec<(u64, u64)>,
}

/// Repairs made while composing, reported with the model's others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimingRepairs {
    /// Traces moved earlier so that they end inside the window.
    pub start_shifted: u64,
    /// Spans cut at the window's end (a trace longer than the window).
    pub end_clamped: u64,
    /// Parents lengthened to hold a child that always lay inside them.
    pub parent_extended: u64,
    /// Spans whose duration a repair changed by more than 10%.
    pub changed_over_10pct: u64,
    /// Composed spans mapped shorter than their calls reached: the waits
    /// between the calls shortened ([`super::composed`]).
    pub waits_shortened: u64,
    /// Of those, spans held longer than their quantile by the calls that
    /// lay inside them.
    pub composed_held: u64,
}

impl TimingRepairs {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &TimingRepairs) {
        self.start_shifted += other.start_shifted;
        self.end_clamped += other.end_clamped;
        self.parent_extended += other.parent_extended;
        self.changed_over_10pct += other.changed_over_10pct;
        self.waits_shortened += other.waits_shortened;
        self.composed_held += other.composed_held;
    }
}

impl<'a> TimingTables<'a> {
    /// Call [`TimingModel::validate`] first.
    pub fn new(model: &'a TimingModel, histogram: &TopologyHistogram) -> Self {
        let r = model.resolution;
        let read = |s: &Segmented| (s.starts.clone(), s.sketches.iter().map(|q| Quantiles::new(q, r)).collect());
        let values = model.values.iter().map(read).collect();
        let leads = model.leads.iter().map(read).collect();
        let (detached, spanning) = (flags(&model.detached, model.values.len()), flags(&model.spanning, model.values.len()));
        let layout = histogram
            .topologies
            .iter()
            .map(|t| {
                let mut children = t.children();
                let order = |k: &usize| model.orders[t.labels[*k] as usize];
                for kids in &mut children {
                    kids.sort_by_key(order);
                }
                let mut roots: Vec<usize> = t.roots().collect();
                roots.sort_by_key(order);
                (children, roots)
            })
            .collect();
        let bursts = model.bursts.iter().map(|b| ((b.bucket, b.key), *b)).collect();
        let pins = model.shares.by_topology(histogram);
        let weights = Weights::of(model);
        let keys = Keys::of(histogram);
        // Validated with the model: a mapping that does not decode is none.
        let mapping = (model.composed.as_ref())
            .filter(|c| !c.is_empty())
            .and_then(|c| Mapping::new(c, histogram.labels.len(), r).ok())
            .map(|m| {
                let composed = composed_nodes(histogram, &keys, &detached, &model.shares);
                let per_node = histogram.topologies.iter().zip(&keys.nodes).map(|(t, keys)| {
                    let spans = keys.iter().zip(&t.parents).map(|(k, p)| spanning[k.0 as usize] && p.is_some()).collect();
                    let reach = keys.iter().map(|k| reach_of(model.reaches[k.0 as usize]).unwrap_or(f64::INFINITY)).collect();
                    (spans, reach)
                });
                (m, composed.into_iter().zip(per_node).map(|(c, (s, r))| (c, s, r)).collect())
            });
        TimingTables { model, keys, values, leads, detached, spanning, layout, bursts, pins, weights, mapping }
    }

    /// Maps every trace's composed spans onto their labels' durations
    /// ([`super::composed`]): `times` per trace of `order`, per node,
    /// (start, end) as composed and placed.
    pub fn map_composed(
        &self,
        histogram: &TopologyHistogram,
        order: &[usize],
        times: &mut [Vec<(u64, u64)>],
        (seed, window_end): (u64, u64),
        repairs: &mut TimingRepairs,
    ) {
        let Some((mapping, flags)) = &self.mapping else {
            return;
        };
        let family = |i: usize| {
            let t = order[i];
            let (composed, spanning, reach) = &flags[t];
            Family { topology: &histogram.topologies[t], children: &self.layout[t].0, composed, spanning, reach }
        };
        let fitted = mapping.apply(times, family, seed, window_end);
        repairs.waits_shortened += fitted.waits_shortened;
        repairs.composed_held += fitted.held;
        repairs.end_clamped += fitted.clamped;
    }

    /// Every node's rank within its value sketch (key and time segment), then
    /// every node's within its lead sketch, per trace of a window (`order`:
    /// topologies, `starts`: start times): each
    /// node's latent normal score is its node effect applied to its noise (from
    /// `noise`, a CTGAN's ranks, or drawn from `rng`; stratified within its
    /// label and minute by [`stratify`]), and the latents of a
    /// sketch are replaced rank for rank by evenly spaced probabilities. So
    /// the node effects and the noise decide which node gets which value, and
    /// the values a sketch hands out follow its distribution exactly: quantile
    /// mapping.
    pub fn ranks(
        &self,
        histogram: &TopologyHistogram,
        order: &[usize],
        starts: &[u64],
        noise: Option<&[Vec<f64>]>,
        rng: &mut StdRng,
    ) -> Vec<Vec<f64>> {
        let mut latents: Vec<(u64, f64, u64)> = Vec::with_capacity(order.iter().map(|&t| histogram.topologies[t].len()).sum());
        // Whether a latent is a burst's, which claims its own rank.
        let mut claims: Vec<bool> = Vec::with_capacity(latents.capacity());
        let (mut own, mut families): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        // (lead latent, its parent's value latent) of calls that may follow
        // their parent into its top decile.
        let mut followers: Vec<(u32, u32)> = Vec::new();
        // Every node's own latent and duration latent, and its stratum (label
        // and bucket), trace after trace.
        let (mut owns, mut durs, mut strata) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (&t, &start)) in order.iter().zip(starts).enumerate() {
            let bucket = self.bucket(start);
            let topology = &histogram.topologies[t];
            let keys = &self.keys.nodes[t];
            // Latents bottom-up: a tail follows its children's durations by its coupling.
            own.clear();
            own.extend((0..topology.len()).map(|k| noise.map_or_else(|| StandardNormal.sample(rng), |n: &[Vec<f64>]| n[i][k])));
            if noise.is_none() && !self.model.loadings.is_empty() {
                // The trace's and each family's shared ranks (a generator's
                // ranks carry their own).
                let shared: f64 = if self.model.trace_shape.is_empty() {
                    StandardNormal.sample(rng)
                } else {
                    shaped(&self.model.trace_shape, rng.random())
                };
                families.clear();
                families.extend((0..own.len()).map(|_| -> f64 { StandardNormal.sample(rng) }));
                for (k, (z, &(value_key, _))) in own.iter_mut().zip(keys).enumerate() {
                    let (t, f) = self.weights.loadings[value_key as usize];
                    let f = if topology.parents[k].is_some() { f } else { 0.0 };
                    let family = topology.parents[k].map_or(0.0, |p| families[p as usize]);
                    *z = t * shared + f * family + (1.0 - t * t - f * f).max(0.0).sqrt() * *z;
                }
            }
            // Children's duration latents, summed per parent: a leaf's is its
            // own; a parent's follows its children's by its duration coupling.
            let (mut sum, mut count) = (vec![0.0f64; own.len()], vec![0u32; own.len()]);
            let mut durations = vec![0.0f64; own.len()];
            for k in (0..own.len()).rev() {
                let mut duration = own[k];
                if count[k] > 0
                    && let Some(&(tail, whole)) = self.weights.couplings.get(keys[k].0 as usize)
                {
                    let children = sum[k] / f64::from(count[k]).sqrt();
                    duration = whole * children + (1.0 - whole * whole).max(0.0).sqrt() * own[k];
                    own[k] = tail * children + (1.0 - tail * tail).max(0.0).sqrt() * own[k];
                }
                durations[k] = duration;
                if let Some(p) = topology.parents[k] {
                    sum[p as usize] += duration;
                    count[p as usize] += 1;
                }
            }
            owns.extend_from_slice(&own);
            durs.extend(durations);
            strata.extend(topology.labels.iter().map(|&label| u64::from(label) << 32 | u64::from(bucket)));
        }
        stratify(&mut owns, &strata);
        let leaf: Vec<Vec<bool>> =
            if self.model.lead_own_tails.is_empty() { Vec::new() } else { histogram.topologies.iter().map(leaves).collect() };
        let mut at = 0;
        for (&t, &start) in order.iter().zip(starts) {
            let bucket = self.bucket(start);
            let topology = &histogram.topologies[t];
            let keys = &self.keys.nodes[t];
            let (own, durations) = (&owns[at..at + keys.len()], &durs[at..at + keys.len()]);
            at += keys.len();
            let effects = self.model.nodes.get(t);
            let values_from = latents.len();
            for (k, &(value_key, _)) in keys.iter().enumerate() {
                let z = own[k];
                let burst = self.burst(bucket, value_key);
                let z = if let Some(b) = burst {
                    // The cell's own distribution stands in for the node's
                    // spread and the service's time effect.
                    effects.map_or(0.0, |e| dequantize(e[k] >> 4, -LOCATION_RANGE, LOCATION_RANGE)) + b.score(normal_cdf(z))
                } else {
                    let z = effects.map_or(z, |e| located(e[k], z));
                    let service = self.keys.service_of[topology.labels[k] as usize];
                    z + time_effect(&self.model.times, self.keys.services, bucket, service)
                };
                let (starts, _) = &self.values[value_key as usize];
                let group = u64::from(value_key) << 8 | starts.partition_point(|&s| s <= bucket) as u64;
                latents.push((group, z, rng.random()));
                claims.push(burst.is_some());
            }
            // Leads after values: a lead follows its parent's rank by its
            // coupling, then its node's location.
            let lead_effects = self.model.lead_nodes.get(t);
            for (k, &(_, lead_key)) in keys.iter().enumerate() {
                let noise: f64 = StandardNormal.sample(rng);
                let z = match (topology.parents[k], self.weights.lead_couplings.get(lead_key as usize)) {
                    (Some(p), Some(&(parent, duration))) => {
                        let rest = 1.0 - parent * parent - duration * duration;
                        parent * own[p as usize] + duration * durations[k] + rest.max(0.0).sqrt() * noise
                    }
                    _ => noise,
                };
                let z = lead_effects.map_or(z, |e| located(e[k], z));
                // A share of calls follows its parent into its top decile
                // (decided once the parents are ranked, below).
                if let (Some(p), Some(&share)) = (topology.parents[k], self.model.lead_tails.get(lead_key as usize))
                    && share > 0
                    && rng.random::<f64>() < dequantize(share, 0.0, 1.0)
                {
                    followers.push((latents.len() as u32, (values_from + p as usize) as u32));
                }
                // And a share of leaf calls follows its own duration.
                if let Some(&share) = self.model.lead_own_tails.get(lead_key as usize)
                    && share > 0
                    && topology.parents[k].is_some()
                    && leaf.get(t).is_some_and(|l| l[k])
                    && rng.random::<f64>() < dequantize(share, 0.0, 1.0)
                {
                    followers.push((latents.len() as u32, (values_from + k) as u32));
                }
                let burst = self.burst(bucket, self.keys.values as u32 + lead_key);
                let z = burst.map_or(z, |b| b.score(normal_cdf(z)));
                let (starts, _) = &self.leads[lead_key as usize];
                let group = LEAD_GROUP | u64::from(lead_key) << 8 | starts.partition_point(|&s| s <= bucket) as u64;
                latents.push((group, z, rng.random()));
                claims.push(burst.is_some());
            }
        }
        let mut u = vec![0.0f64; latents.len()];
        rank_within_groups((0..latents.len() as u32).collect(), &latents, &claims, &mut u);
        // Calls whose parent ranked in its top decile rank above every drawn
        // lead, in their parents' order; the leads are ranked again.
        let mut moved: foldhash::HashSet<u64> = foldhash::HashSet::default();
        for &(lead, parent) in &followers {
            let parent = u[parent as usize];
            if parent > 0.9 {
                // Following both its parent and its own duration, the higher.
                let latent = &mut latents[lead as usize].1;
                *latent = latent.max(ABOVE_DRAWN + parent);
                moved.insert(latents[lead as usize].0);
            }
        }
        if !moved.is_empty() {
            // Only the groups a follower moved in.
            let leads = (0..latents.len() as u32).filter(|&i| moved.contains(&latents[i as usize].0)).collect();
            rank_within_groups(leads, &latents, &claims, &mut u);
        }
        let mut u = u.into_iter();
        order.iter().map(|&t| u.by_ref().take(2 * histogram.topologies[t].len()).collect()).collect()
    }

    /// The burst of `key` in `bucket`, if it has one.
    fn burst(&self, bucket: u32, key: u32) -> Option<&Burst> {
        if self.bursts.is_empty() {
            return None;
        }
        self.bursts.get(&(bucket, key))
    }

    fn bucket(&self, start: u64) -> u32 {
        (start / self.model.bucket_ns).saturating_sub(self.model.first_bucket) as u32
    }

    /// Composes one trace of `topology` starting at `trace_start`, the
    /// `occurrence`-th trace of its topology in the window, with its
    /// nodes' value and lead ranks `u` from [`TimingTables::ranks`]: every
    /// node's offset from the trace's start and duration (µs) in `scratch`,
    /// for [`TimingTables::place`].
    #[allow(clippy::too_many_arguments)]
    pub fn compose(
        &self,
        histogram: &TopologyHistogram,
        (topology, occurrence): (usize, u32),
        trace_start: u64,
        u: &[f64],
        nested: &dyn Fn(u32, u32) -> bool,
        repairs: &mut TimingRepairs,
        scratch: &mut Scratch,
    ) {
        let t = &histogram.topologies[topology];
        let n = t.len();
        let bucket = self.bucket(trace_start);
        let (children, roots) = &self.layout[topology];
        // Offsets from the parent's start (roots: the trace's), and durations, in µs.
        let Scratch { offset, duration, lead, stack, .. } = scratch;
        for v in [&mut *offset, &mut *duration, &mut *lead] {
            v.clear();
            v.resize(n, 0.0);
        }
        let keys = &self.keys.nodes[topology];
        let spans = |k: usize| self.spanning[keys[k].0 as usize] && t.parents[k].is_some();
        for k in 0..n {
            let (value_key, lead_key) = (keys[k].0 as usize, keys[k].1 as usize);
            let read = |(starts, sketches): &(Vec<u32>, Vec<Quantiles>), u: f64| {
                sketches[starts.partition_point(|&s| s <= bucket)].at(u)
            };
            let value = read(&self.values[value_key], u[k]);
            duration[k] = if spans(k) {
                signed_exp(value) // the gap to the parent's end, until the parent is composed
            } else if children[k].is_empty() || self.detached[value_key] {
                value.min(25.0).exp_m1().max(0.0)
            } else {
                signed_exp(value) // the tail, until the children are laid out
            };
            lead[k] = signed_exp(read(&self.leads[lead_key], u[n + k]));
        }
        // Children before parents: canonical order puts parents first.
        for p in (0..n).rev() {
            let kids = &children[p];
            if kids.is_empty() {
                continue;
            }
            let (end, must_hold) = self.lay_out(kids, lead, duration, offset, |c| nested(t.labels[p], t.labels[c]), spans);
            // No call longer against its parent than the window ever had.
            let longest = kids.iter().filter(|&&c| !spans(c)).map(|&c| duration[c]).fold(0.0, f64::max);
            let reach = reach_of(self.model.reaches[keys[p].0 as usize]);
            let least = reach.map_or(0.0, |r| ((longest.ln_1p()) - r).min(25.0).exp_m1().max(0.0));
            duration[p] = if self.detached[keys[p].0 as usize] {
                // Its own duration, long enough for the children that always lay inside.
                let own = duration[p].max(must_hold);
                extended(own, own.max(least), repairs)
            } else {
                let natural = (end + duration[p]).max(0.0);
                extended(natural, natural.max(must_hold).max(least), repairs)
            };
            // Spanning children last until their gap before the parent's end
            // (within it when they always were), and start no later.
            for &c in kids.iter().filter(|&&c| spans(c)) {
                let mut end = (duration[p] - duration[c]).max(0.0);
                if nested(t.labels[p], t.labels[c]) {
                    end = end.min(duration[p]);
                }
                offset[c] = offset[c].min(end);
                duration[c] = end - offset[c];
            }
            // A rare call's family takes its stored length, its rare calls
            // their stored shares of it.
            if let Some(f) = self.pins[topology].iter().find(|f| f.parent as usize == p) {
                let at = occurrence as usize % f.durations.len().max(1);
                let length = f.durations.get(at).map_or(duration[p], |&d| shares::duration(d));
                scale_subtree(p, length, children, (offset, duration), stack);
                for (c, codes) in &f.calls {
                    let (c, to) = (*c as usize, codes.get(at).map_or(0.0, |&s| shares::share(s)) * length);
                    // A call composed inside its parent stays inside; one
                    // composed to outlive it keeps its end beyond the parent's.
                    let end = offset[c] + duration[c];
                    scale_subtree(c, to, children, (offset, duration), stack);
                    offset[c] = if end <= length { offset[c].min(length - to) } else { end - to }.max(0.0);
                }
            }
        }
        self.lay_out(roots, lead, duration, offset, |_| false, |_| false);
        // Offsets from the trace's start.
        for k in 0..n {
            if let Some(p) = t.parents[k] {
                offset[k] += offset[p as usize];
            }
        }
    }

    /// The (start, end) of every node of the trace [`TimingTables::compose`]
    /// left in `scratch`, in canonical order, in `scratch.out`; the trace is
    /// moved or cut to end inside `window`.
    pub fn place(
        &self,
        histogram: &TopologyHistogram,
        topology: usize,
        trace_start: u64,
        window: (u64, u64),
        repairs: &mut TimingRepairs,
        scratch: &mut Scratch,
    ) {
        let t = &histogram.topologies[topology];
        let n = t.len();
        let Scratch { offset, duration, out, .. } = scratch;
        // Where the trace ends (children of detached spans may end after everything else).
        let length = (0..n).map(|k| offset[k] + duration[k]).fold(0.0f64, f64::max);
        // The trace must end inside the window: move it earlier, cut it if it is longer.
        let (window_start, window_end) = window;
        let length_ns = (length * 1e3) as u64;
        let mut start = trace_start;
        if start.saturating_add(length_ns) > window_end {
            start = window_end.saturating_sub(length_ns).max(window_start);
            repairs.start_shifted += 1;
        }
        out.clear();
        out.resize(n, (0, 0));
        // One rounding of trace-relative times to nanoseconds, monotone, so a
        // child composed to end within its parent still does in integers.
        let at = |us: f64| start.saturating_add((us * 1e3).round().max(0.0) as u64);
        for k in 0..n {
            let (rel_start, rel_end) = (offset[k], offset[k] + duration[k]);
            let (mut s, mut e) = (at(rel_start), at(rel_end));
            if let Some(p) = t.parents[k] {
                let (parent, p) = (out[p as usize], p as usize);
                s = s.max(parent.0);
                if rel_end <= offset[p] + duration[p] + 1e-6 {
                    e = e.min(parent.1);
                }
            }
            let wanted = e.max(s);
            let e = wanted.min(window_end);
            let s = s.min(e);
            if e < wanted {
                repairs.end_clamped += 1;
                if (e - s) as f64 * 1.1 < (wanted - s) as f64 {
                    repairs.changed_over_10pct += 1;
                }
            }
            out[k] = (s, e);
        }
    }

    /// Lays `kids` out one after the other with their leads (a spanning one
    /// at its lead from the parent's start, aside); returns where the last
    /// one ends and the end the parent must reach to hold the children
    /// `must_nest` says always lay inside it.
    fn lay_out(
        &self,
        kids: &[usize],
        lead: &[f64],
        duration: &[f64],
        offset: &mut [f64],
        must_nest: impl Fn(usize) -> bool,
        spans: impl Fn(usize) -> bool,
    ) -> (f64, f64) {
        let (mut cursor, mut end, mut must_hold) = (0.0f64, 0.0f64, 0.0f64);
        for &c in kids {
            if spans(c) {
                offset[c] = lead[c].max(0.0);
                continue;
            }
            let s = (cursor + lead[c]).max(0.0);
            offset[c] = s;
            let e = s + duration[c];
            cursor = cursor.max(e);
            end = end.max(e);
            if must_nest(c) {
                must_hold = must_hold.max(e);
            }
        }
        (end, must_hold)
    }
}

/// Sets node `k`'s duration to `to`, scaling the offsets and durations of
/// every node below it by as much, so that each share below `k` stays as
/// composed (a zero-length node's subtree is left as it is).
fn scale_subtree(
    k: usize,
    to: f64,
    children: &[Vec<usize>],
    (offset, duration): (&mut [f64], &mut [f64]),
    stack: &mut Vec<usize>,
) {
    let factor = if duration[k] > 0.0 { to / duration[k] } else { 1.0 };
    duration[k] = to;
    stack.clear();
    stack.extend_from_slice(&children[k]);
    while let Some(d) = stack.pop() {
        offset[d] *= factor;
        duration[d] *= factor;
        stack.extend_from_slice(&children[d]);
    }
}

/// The ranks of one sketch's latents (`run`, sorted by score) when bursts
/// are among them: each burst latent takes the rank its score asks for (the
/// free one nearest above, as they come in order), and the others fill the
/// rest in order. So a burst's cell gets the values its distribution says
/// while the sketch still hands out each of its values once.
fn claimed_ranks(run: &[u32], latents: &[(u64, f64, u64)], claims: &[bool], u: &mut [f64]) {
    let n = run.len();
    let mut taken = vec![false; n];
    let bursts: Vec<u32> = run.iter().copied().filter(|&i| claims[i as usize]).collect();
    let mut next = 0usize;
    for (j, &i) in bursts.iter().enumerate() {
        let wanted = (normal_cdf(latents[i as usize].1) * n as f64) as usize;
        // Leave room above for the bursts still to come.
        let slot = wanted.max(next).min(n - (bursts.len() - j));
        taken[slot] = true;
        u[i as usize] = (slot as f64 + 0.5) / n as f64;
        next = slot + 1;
    }
    let mut free = (0..n).filter(|&s| !taken[s]);
    for &i in run.iter().filter(|&&i| !claims[i as usize]) {
        let slot = free.next().unwrap_or(n - 1);
        u[i as usize] = (slot as f64 + 0.5) / n as f64;
    }
}

/// Stratifies `latents` (standard normal scores) within their `strata`: the
/// i-th smallest of a stratum's n moves into the i-th of n equal slices of
/// probability, at the place its own rank's distribution puts it. Order
/// within a stratum is kept, so which spans are slow together is unchanged,
/// and each latent is still a standard normal; but a stratum's latents now
/// cover its distribution evenly instead of at random. Strata are a label's
/// spans in one topology bucket (a minute): RED dashboards read duration per
/// service and minute, often from a handful of spans, and a random draw of
/// that handful scatters like a small sample does (measured in BENCHMARKS.md,
/// "Stratified ranks").
fn stratify(latents: &mut [f64], strata: &[u64]) {
    let (positions, bounds) = runs_by_key(strata.iter().copied());
    let mut run: Vec<(f64, u32)> = Vec::new();
    for w in bounds.windows(2) {
        run.clear();
        run.extend(positions[w[0]..w[1]].iter().map(|&i| (latents[i as usize], i)));
        run.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let n = run.len() as f64;
        for (r, &(z, i)) in run.iter().enumerate() {
            // The (r+1)-th smallest of n uniforms, by its normal
            // approximation: mean (r+1)/(n+1), variance mean·(1−mean)/(n+2).
            let mean = (r as f64 + 1.0) / (n + 1.0);
            let sd = (mean * (1.0 - mean) / (n + 2.0)).sqrt();
            let within = normal_cdf((normal_cdf(z) - mean) / sd);
            latents[i as usize] = rough_normal_quantile((r as f64 + within) / n);
        }
    }
}

/// The positions of `keys` grouped by key, each key's in their order (a
/// counting sort), and where each key's run begins and ends. A window has
/// hundreds of thousands of latents and a key a few to a few thousand: runs
/// sorted one by one stay in cache, where one sort of every latent through
/// an index does not (it was a fifth of generation).
fn runs_by_key(keys: impl Iterator<Item = u64>) -> (Vec<u32>, Vec<usize>) {
    let mut dense: foldhash::HashMap<u64, u32> = foldhash::HashMap::default();
    let ids: Vec<u32> = keys
        .map(|k| {
            let next = dense.len() as u32;
            *dense.entry(k).or_insert(next)
        })
        .collect();
    let mut bounds = vec![0usize; dense.len() + 1];
    for &id in &ids {
        bounds[id as usize + 1] += 1;
    }
    for i in 1..bounds.len() {
        bounds[i] += bounds[i - 1];
    }
    let mut positions = vec![0u32; ids.len()];
    let mut next = bounds.clone();
    for (i, &id) in ids.iter().enumerate() {
        positions[next[id as usize]] = i as u32;
        next[id as usize] += 1;
    }
    (positions, bounds)
}

/// Ranks the latents `members` within their groups (ties by their third
/// field) into `u`: evenly spaced probabilities, bursts claiming theirs.
fn rank_within_groups(members: Vec<u32>, latents: &[(u64, f64, u64)], claims: &[bool], u: &mut [f64]) {
    let (positions, bounds) = runs_by_key(members.iter().map(|&m| latents[m as usize].0));
    let mut run: Vec<(f64, u64, u32)> = Vec::new();
    let mut sorted: Vec<u32> = Vec::new();
    for w in bounds.windows(2) {
        run.clear();
        run.extend(positions[w[0]..w[1]].iter().map(|&p| {
            let m = members[p as usize];
            let (_, z, tie) = latents[m as usize];
            (z, tie, m)
        }));
        run.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let n = run.len() as f64;
        if run.iter().any(|&(_, _, i)| claims[i as usize]) {
            sorted.clear();
            sorted.extend(run.iter().map(|&(_, _, i)| i));
            claimed_ranks(&sorted, latents, claims, u);
            continue;
        }
        for (r, &(_, _, i)) in run.iter().enumerate() {
            u[i as usize] = (r as f64 + 0.5) / n;
        }
    }
}

/// Normal scores of `values` within groups, ties broken by `rng`: turns a
/// CTGAN's generated durations into the noise [`TimingTables::compose`] reads.
pub fn group_scores(values: &[f64], groups: &[u64], rng: &mut StdRng) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let jitter: Vec<u64> = (0..values.len()).map(|_| rng.random()).collect();
    order.sort_by(|&a, &b| groups[a].cmp(&groups[b]).then(values[a].total_cmp(&values[b])).then(jitter[a].cmp(&jitter[b])));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && groups[order[j]] == groups[order[i]] {
            j += 1;
        }
        let n = (j - i) as f64;
        for (r, &k) in order[i..j].iter().enumerate() {
            out[k] = normal_quantile((r as f64 + 0.5) / n);
        }
        i = j;
    }
    out
}

/// A fresh seeded generator for composing traces.
pub fn timing_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x7469_6d69_6e67)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drawn as generation draws a lead, `wa·a + wb·b + rest·noise` with
    /// `rest² = 1 − wa² − wb²`, from scores a and b that move together, a
    /// lead comes back near the correlations it was fitted to (a little
    /// under: the noise does not know a–b). Pairwise weights took the shared
    /// part twice: 0.58 and 0.66 with a–b at 0.58 came back at 0.80 and 0.83.
    #[test]
    fn jointly_fitted_lead_weights_give_back_the_fitted_correlations() {
        let (ya, yb, ab) = (0.58, 0.66, 0.58);
        let mut rng = StdRng::seed_from_u64(7);
        let n = 200_000;
        let drawn = |(wa, wb): (f64, f64), rng: &mut StdRng| {
            let rest = (1.0 - wa * wa - wb * wb).max(0.0).sqrt();
            let mut sums = [0.0f64; 5];
            for _ in 0..n {
                let (u, v, e): (f64, f64, f64) =
                    (StandardNormal.sample(rng), StandardNormal.sample(rng), StandardNormal.sample(rng));
                let (a, b) = (u, ab * u + (1.0 - ab * ab).sqrt() * v);
                let y = wa * a + wb * b + rest * e;
                for (s, x) in sums.iter_mut().zip([y * a, y * b, y * y, a * a, b * b]) {
                    *s += x;
                }
            }
            (correlation(sums[0], sums[2], sums[3]), correlation(sums[1], sums[2], sums[4]))
        };
        let (a, b) = drawn(joint_weights(ya, yb, ab), &mut rng);
        assert!((a - ya).abs() < 0.06 && (b - yb).abs() < 0.06, "joint: {a:.3} {b:.3}");
        let (a, b) = drawn((ya, yb), &mut rng);
        assert!(a > ya + 0.15 && b > yb + 0.12, "pairwise overshoots: {a:.3} {b:.3}");
        // Scores that are the same twice: one weight carries it.
        assert_eq!(joint_weights(0.5, 0.4, 0.99), (0.5, 0.0));
        // Never more than all of the variance.
        let (a, b) = joint_weights(0.9, -0.9, 0.5);
        assert!(a * a + b * b <= 1.0 + 1e-12);
    }

    #[test]
    fn weights_keep_zero_and_one_exact_and_their_leftover_spread_close() {
        for w in [-1.0, 0.0, 1.0] {
            assert_eq!(dequantize_weight(quantize_weight(w)), w);
        }
        assert_eq!(dequantize_loading(quantize_loading(0.0)), 0.0);
        assert_eq!(dequantize_loading(quantize_loading(1.0)), 1.0);
        let mut previous = -1.0;
        for i in 0..=200 {
            let w = -1.0 + f64::from(i) / 100.0;
            let back = dequantize_weight(quantize_weight(w));
            assert!(back >= previous, "monotone at {w}");
            previous = back;
            // Within half a level of angle (π/28): the leftover spread
            // √(1 − w²) is kept within sin(π/28) = 0.112 everywhere (uniform
            // in w, 0.94 came back as 1, its spread 0.34 as none).
            let spread = |w: f64| (1.0 - w * w).max(0.0).sqrt();
            assert!((spread(back) - spread(w)).abs() <= 0.113, "{w} came back as {back}");
            assert!((back - w).abs() <= 0.12, "{w} came back as {back}");
        }
        // A hostile nibble of 15 reads as the largest weight.
        assert_eq!(dequantize_weight(15), 1.0);
    }

    #[test]
    fn a_trace_shape_gives_back_the_quantiles_it_keeps_and_normal_tails_beyond() {
        // Kept from a standard normal: the normal again, within a code's step.
        let normal: Vec<u8> = SHAPE_PROBS.iter().map(|&p| shape_code(normal_quantile(p))).collect();
        let step = 2.0 * SHAPE_RANGE / 255.0;
        for i in 1..1000 {
            let u = f64::from(i) / 1000.0;
            let (got, want) = (shaped(&normal, u), normal_quantile(u));
            // Linear between kept points: within a step plus the curvature
            // between 0.25 and 0.5.
            assert!((got - want).abs() <= step + 0.03, "at {u}: {got} against {want}");
        }
        // One trace in twenty slow everywhere (a mixture): its top quantiles
        // come back, where a normal of the same spread puts them lower.
        let mixture = |p: f64| if p < 0.95 { normal_quantile(p / 0.95) * 0.8 - 0.15 } else { 2.4 + (p - 0.95) * 10.0 };
        let slow: Vec<u8> = SHAPE_PROBS.iter().map(|&p| shape_code(mixture(p))).collect();
        for (&p, &code) in SHAPE_PROBS.iter().zip(&slow) {
            assert!((shaped(&slow, p) - shape_value(code)).abs() < 1e-9);
        }
        assert!(shaped(&slow, 0.975) > normal_quantile(0.975) + 0.5);
        // Beyond the last point, a normal tail from it: monotone and finite.
        let (a, b) = (shaped(&slow, 0.995), shaped(&slow, 1.0));
        assert!(a > shape_value(slow[SHAPE_PROBS.len() - 1]) && b >= a && b.is_finite());
        assert!(shaped(&slow, 0.0).is_finite() && shaped(&slow, 0.0) < shaped(&slow, 0.005));
    }

    #[test]
    fn the_budget_pools_node_locations_by_path_then_drops_them_and_rare_calls_before_the_couplings() {
        let mut steps = vec![CalibrationConfig::default()];
        while let Some(next) = smaller(steps.last().unwrap()) {
            assert!(steps.len() < 64, "the steps end");
            steps.push(next);
        }
        assert!(steps[0].composed && !steps[1].composed, "composed durations go first");
        let at = |locations| steps.iter().position(|c| c.node_effects && c.node_locations == locations);
        let (paths, alone) =
            (at(NodeLocations::Paths).expect("a step pools by path"), at(NodeLocations::None).expect("then couplings alone"));
        assert!(!steps[paths].time_effects, "time effects go first");
        assert_eq!(alone, paths + 1);
        // Then rare calls down to the pairs seen at most RARE_CALLS_KEPT times.
        let off = steps.iter().position(|c| !c.node_effects).expect("a step drops the couplings");
        let mut kept: Vec<u32> = steps[alone..off].iter().map(|c| c.rare_calls).collect();
        kept.dedup();
        assert_eq!(kept, [16, 8, 4], "rare calls kept before the couplings go");
        assert_eq!(steps[off - 1].quantiles_per_root, QUANTILES_BEFORE_COUPLINGS, "and fewer quantiles");
        assert_eq!(steps[off].rare_calls, RARE_CALLS_KEPT);
        let last = steps.last().unwrap();
        assert!(!last.segments && !last.latency_bands && !last.node_effects && last.rare_calls == 0);
    }

    #[test]
    fn stratified_latents_keep_their_order_and_take_one_slice_each() {
        let mut rng = timing_rng(3);
        let n = 40;
        let mut latents: Vec<f64> = (0..2 * n).map(|_| StandardNormal.sample(&mut rng)).collect();
        // Two interleaved strata of n.
        let strata: Vec<u64> = (0..2 * n as u64).map(|i| i % 2).collect();
        let before = latents.clone();
        stratify(&mut latents, &strata);
        for stratum in 0..2 {
            let members: Vec<usize> = (0..2 * n).filter(|&i| strata[i] == stratum).collect();
            let mut slices: Vec<usize> = members.iter().map(|&i| (normal_cdf(latents[i]) * n as f64).floor() as usize).collect();
            slices.sort_unstable();
            assert_eq!(slices, (0..n).collect::<Vec<_>>(), "one latent per slice of probability");
            for &a in &members {
                for &b in &members {
                    assert_eq!(before[a] < before[b], latents[a] < latents[b], "order within the stratum is kept");
                }
            }
        }
    }

    #[test]
    fn a_lone_latent_stays_near_where_it_was() {
        // A stratum of one keeps its coupling to the rest of its trace: its
        // place moves little and never across the median.
        for z in [-2.5, -1.0, -0.2, 0.0, 0.3, 1.5, 2.5] {
            let mut latents = [z];
            stratify(&mut latents, &[7]);
            assert!((normal_cdf(latents[0]) - normal_cdf(z)).abs() < 0.05, "{z} moved to {}", latents[0]);
            assert_eq!(latents[0] > 0.0, z > 0.0);
        }
    }

    #[test]
    fn a_burst_gives_back_its_tail_shares() {
        // A quarter of the cell above 1.96 (where a calm cell has 2.5%).
        let burst = Burst { bucket: 0, key: 0, below: [0, 0, 13, 64, 128, 170, 191] };
        let scores: Vec<f64> = (0..1000).map(|i| burst.score((f64::from(i) + 0.5) / 1000.0)).collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]), "monotone");
        let above = scores.iter().filter(|&&z| z > 1.96).count();
        assert!((245..=255).contains(&above), "{above} of 1000 above 1.96");
        let below = scores.iter().filter(|&&z| z < 0.0).count();
        assert!((245..=255).contains(&below), "{below} of 1000 below 0");
        assert!(scores.iter().all(|z| z.is_finite()));
    }

    #[test]
    fn calm_and_stormy_cells_are_told_apart() {
        let calm: Vec<(f64, f64)> = (0..40).map(|i| (normal_quantile((f64::from(i) + 0.5) / 40.0), 1.0)).collect();
        assert!(burst_evidence(&calm) < 1.0, "{}", burst_evidence(&calm));
        // 9 calls of 9 in the top 10% of their key.
        let storm = [1.46, 1.47, 1.52, 1.54, 1.6, 1.68, 1.7, 2.07, 2.69].map(|z| (z, 1.0));
        assert!(burst_evidence(&storm) > BURST_EVIDENCE, "{}", burst_evidence(&storm));
    }

    #[test]
    fn bursts_claim_their_ranks_and_the_rest_fill_in() {
        // Six latents of one sketch, sorted by score; the two bursts ask
        // for the top (normal score 3: slot 5) and the middle (0: slot 3).
        let latents = [(0, -1.0, 0), (0, -0.5, 1), (0, 0.0, 2), (0, 0.2, 3), (0, 0.4, 4), (0, 3.0, 5)];
        let claims = [false, false, true, false, false, true];
        let run: Vec<u32> = (0..6).collect();
        let mut u = vec![0.0; 6];
        claimed_ranks(&run, &latents, &claims, &mut u);
        let slots: Vec<usize> = u.iter().map(|u| (u * 6.0) as usize).collect();
        assert_eq!(slots, vec![0, 1, 3, 2, 4, 5]);
    }
}
