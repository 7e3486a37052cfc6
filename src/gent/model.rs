//! Training a window's Gen-T model and regenerating traces from it (Gen-T
//! §3.1). Features are in microseconds. Per trace: the start offset within the
//! window (T_G). Per root: its offset from the trace start, duration, status
//! and kind (R_G). Per chain: the gap from the parent,
//! duration, status and kind of every node after the head (C_G), conditioned
//! on the head's metadata. Every generator is conditioned on the topology (a
//! GCN embedding trained with it, or with `gcn: false` a one-hot topology id,
//! the paper's ablation) and on fixed-width codes of the labels of the nodes
//! it fills, which the topology fixes.
//!
//! Generation reproduces the histogram exactly, fills roots, then chains in
//! rounds (a chain's head is always filled in an earlier round), batching
//! every trace's chains of a round into one CTGAN call.

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::Device;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::attributes::{AttributeConfig, AttributeSchema, NodeValues, ValueCounts, Valued};
use super::digest::{DigestConfig, WindowDigest};
use super::latency::{self, LatencyBands, Root};
use super::starts::{StartBuckets, StartError, StartModel};
use super::status::{Change, ErrorCounts, StatusError, StatusModel, StatusTotals};
use super::tables::{StoredTableModel, TableModel};
use super::timing::{
    CalibrationConfig, NodeLocations, Scratch, TimingError, TimingModel, TimingRepairs, TimingTables, group_scores, timing_rng,
};
use super::topology::{Placement, Topology, TopologyHistogram};
use crate::nn::weights::Precision;
use crate::nn::{Context, CtganConfig, CtganError, GraphInput, pooled_features};
use crate::tabular::{Column, ColumnData, Table};
use crate::trace::{Resource, Scope, Span, SpanKind, Status, StatusCode, Trace};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the window holds no traces")]
    Empty,
    #[error("invalid Gen-T configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Ctgan(#[from] CtganError),
    #[error("stored model is inconsistent: {0}")]
    Stored(String),
    #[error(transparent)]
    Starts(#[from] StartError),
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error(transparent)]
    Status(#[from] StatusError),
}

/// Padding label for chain positions a short chain does not have.
const PAD: &str = "-";
const STATUSES: [StatusCode; 3] = [StatusCode::Unset, StatusCode::Ok, StatusCode::Error];

/// Training settings (`gent train --config`, see config/model.yaml).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenTConfig {
    /// Most nodes per chain, head included (≥ 2).
    pub chain_length: usize,
    /// Topology conditioning by a GCN embedding (true) or a one-hot topology id.
    pub gcn: bool,
    /// CTGAN settings shared by T_G, R_G and C_G (Gen-T: one residual layer of
    /// 128, a critic of 128, 10 epochs).
    pub ctgan: CtganConfig,
    /// Span attributes modelled beside timing, status and kind.
    pub attributes: AttributeConfig,
    /// Calibrated timing and exact start counts (beyond Gen-T).
    pub calibration: CalibrationConfig,
    /// When R_G and C_G are trained (with calibration on).
    pub generators: Generators,
}

/// When the metadata generators R_G and C_G are trained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generators {
    /// Only for what the sketches do not cover: status, kind and attributes,
    /// when one of them varies in the window; timing comes from the sketches.
    #[default]
    Auto,
    /// Always, timing included; the ranks of their durations then drive the
    /// calibrated timing (the GANs' joint structure, the sketches' marginals).
    Always,
}

/// Longest chain C_G generates at once; its conditioning vector grows with it.
pub const MAX_CHAIN_LENGTH: usize = 64;

impl GenTConfig {
    /// The first setting out of range, named.
    pub fn validate(&self) -> Result<(), ModelError> {
        if !(2..=MAX_CHAIN_LENGTH).contains(&self.chain_length) {
            return Err(ModelError::Config(format!("chain_length must be in 2..={MAX_CHAIN_LENGTH}, got {}", self.chain_length)));
        }
        self.ctgan.validate()?;
        self.calibration.validate().map_err(ModelError::Config)?;
        self.attributes.validate().map_err(ModelError::Config)
    }
}

impl Default for GenTConfig {
    fn default() -> Self {
        GenTConfig {
            chain_length: 3,
            gcn: true,
            ctgan: CtganConfig { generator: vec![128], critic: vec![128], epochs: 10, ..CtganConfig::default() },
            attributes: AttributeConfig::default(),
            calibration: CalibrationConfig::default(),
            generators: Generators::Auto,
        }
    }
}

/// Counts of corrections made while regenerating, reported as quality figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Repairs {
    /// Start offsets outside the window, clamped into it.
    pub start_clamped: u64,
    /// Negative gaps (a child before its parent) set to zero.
    pub gap_clamped: u64,
    /// Children ending after a parent they always lay within in the data, moved
    /// and shortened to fit inside it.
    pub end_clamped: u64,
    /// Chain nodes already filled by an earlier chain (first value kept).
    pub merges: u64,
    /// Calibrated timing: traces moved earlier to end inside the window.
    pub start_shifted: u64,
    /// Calibrated timing: parents lengthened to hold a child that always lay inside them.
    pub parent_extended: u64,
    /// Spans whose duration a repair changed by more than 10%.
    pub changed_over_10pct: u64,
    /// Calibrated timing: traces given the timing of another trace of
    /// their topology, so that each minute holds its slow traces
    /// (`calibration.latency_bands`).
    pub latency_arranged: u64,
    /// Calibrated timing: traces stretched or shrunk whole, by under 10%,
    /// to cross a latency band's cut as often as the window's did.
    pub latency_stretched: u64,
    /// Calibrated timing: spans composed of calls mapped shorter than their
    /// calls reached, the waits between the calls shortened
    /// (`calibration.composed`).
    pub waits_shortened: u64,
    /// Calibrated timing: of those, spans held longer than their label's
    /// quantile by the calls that lay inside them.
    pub composed_held: u64,
    /// Calibrated status: spans made to fail, or not to, so that each
    /// label fails as often per time bucket as it did.
    pub status_changed: u64,
    /// Calibrated status: categorical attribute values and span kinds
    /// changed so that each label and status has them as often as it had.
    pub values_changed: u64,
}

/// Traces per (entry, time bucket) of a whole regenerated window.
type BandTotals = HashMap<(usize, u64), u32>;

/// What a part of a regenerated window is scaled by: the whole window's
/// traces per latency band cell and spans per failing label and bucket.
#[derive(Default)]
struct Totals {
    bands: BandTotals,
    status: StatusTotals,
}

/// One window's model.
pub struct WindowModel {
    pub window_start: u64,
    pub window_end: u64,
    pub histogram: TopologyHistogram,
    pub chain_length: usize,
    gcn: bool,
    /// The attribute keys modelled in this window.
    pub attributes: AttributeSchema,
    /// (parent label, child label) pairs whose children always lay inside their parent.
    nested: Vec<(u32, u32)>,
    start: Start,
    /// Calibrated timing; `None` with calibration off.
    timing: Option<TimingModel>,
    /// Failed spans per label and bucket; `None` with calibration off.
    status: Option<StatusModel>,
    /// Categorical attribute values per label and status, when the
    /// generators fill them ([`ValueCounts`]).
    values: Option<ValueCounts>,
    /// Whether R_G and C_G generate timing columns.
    timed: bool,
    roots: TableModel,
    chains: TableModel,
    /// How the calibrated timing met the packet budget, when there is one.
    pub budget: Option<Budget>,
}

/// [`WindowModel`] as it goes into a packet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredWindowModel {
    pub window_start: u64,
    pub window_end: u64,
    pub histogram: TopologyHistogram,
    pub chain_length: usize,
    gcn: bool,
    attributes: AttributeSchema,
    nested: Vec<(u32, u32)>,
    start: StoredStart,
    timing: Option<TimingModel>,
    status: Option<StatusModel>,
    values: Option<ValueCounts>,
    timed: bool,
    roots: StoredTableModel,
    chains: StoredTableModel,
}

impl StoredWindowModel {
    /// Each part of the stored model in its packet encoding (postcard), by
    /// name: what `gent train --json` breaks a packet's bytes down into.
    pub fn parts(&self) -> Vec<(&'static str, Vec<u8>)> {
        fn encode(value: &impl serde::Serialize) -> Vec<u8> {
            postcard::to_stdvec(value).unwrap_or_default()
        }
        let (sketches, (node_effects, time_effects), bands, shares) = match &self.timing {
            Some(t) => {
                let sketches_alone = TimingModel {
                    nodes: Vec::new(),
                    lead_nodes: Vec::new(),
                    times: Vec::new(),
                    bursts: Vec::new(),
                    bands: Default::default(),
                    shares: Default::default(),
                    ..t.clone()
                };
                let effects = (encode(&(&t.nodes, &t.lead_nodes)), encode(&(&t.times, &t.bursts)));
                (encode(&sketches_alone), effects, encode(&t.bands), encode(&t.shares))
            }
            None => (Vec::new(), (Vec::new(), Vec::new()), Vec::new(), Vec::new()),
        };
        let (starts, t_g) = match &self.start {
            StoredStart::Counts(c) => (encode(c), Vec::new()),
            StoredStart::Generator(t) => (Vec::new(), encode(t)),
        };
        vec![
            ("histogram", encode(&self.histogram)),
            ("starts", starts),
            ("sketches", sketches),
            ("node_effects", node_effects),
            ("time_effects", time_effects),
            ("latency_bands", bands),
            ("rare_shares", shares),
            ("status", encode(&(&self.status, &self.values))),
            ("t_g", t_g),
            ("r_g", encode(&self.roots)),
            ("c_g", encode(&self.chains)),
            ("other", encode(&(&self.attributes, &self.nested, self.window_start, self.window_end))),
        ]
    }
}

/// The context of a table's rows: vectors (row-major) and each row's topology.
struct Contexts<'a> {
    values: Vec<f32>,
    width: usize,
    topologies: Vec<u32>,
    /// Pooled GCN features per topology, when conditioning by GCN.
    graphs: Option<&'a [f32]>,
}

impl<'a> Contexts<'a> {
    fn get(&self) -> Option<Context<'_>> {
        let graph = self.graphs.map(|features| GraphInput { features, width: GRAPH_FEATURES, rows: &self.topologies });
        (self.width > 0 || graph.is_some()).then_some(Context { values: &self.values, width: self.width, graph })
    }
}

/// Width of a node label's code in the context vectors.
const LABEL_CODE: usize = 16;

/// The 64 bits of a label's xxh3 hash, from which its codes are drawn: any
/// machine derives the same code from the label text alone.
fn label_bits(label: &super::topology::Label) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(label.service.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(label.name.as_bytes());
    hasher.digest()
}

fn signs<const N: usize>(bits: u64) -> [f32; N] {
    std::array::from_fn(|i| if bits >> i & 1 == 1 { 1.0 } else { -1.0 })
}

/// A node label's code: 16 signs of its hash. Every code is a corner of the
/// hypercube and so linearly separable from all the others, which lets the
/// networks tell labels apart as well as with a one-hot, at a fixed width
/// instead of one column per label (246 on TrainTicket): the generators'
/// first layers, most of a packet, shrink accordingly.
fn label_code(label: &super::topology::Label) -> [f32; LABEL_CODE] {
    signs(label_bits(label))
}

/// GCN node features: all 64 signs of the label's hash (a fixed "embedding"
/// of the label that needs no vocabulary, so rolling windows with new labels
/// keep the same widths and can warm-start), then the node's log depth and log
/// fan-out, without which one GCN layer barely tells apart two shapes over
/// the same labels (a chain from a fan-out: 82% vs 99% right in tests/ctgan.rs).
const NODE_FEATURES: usize = 66;
/// GCN input per topology: node features propagated and mean-pooled, plus
/// the log node count, which mean pooling cannot see.
const GRAPH_FEATURES: usize = NODE_FEATURES + 1;

fn graph_features(histogram: &TopologyHistogram) -> Vec<f32> {
    let bits: Vec<u64> = histogram.labels.iter().map(label_bits).collect();
    let mut out = Vec::with_capacity(histogram.topologies.len() * GRAPH_FEATURES);
    let mut nodes = Vec::new();
    for topology in &histogram.topologies {
        let n = topology.len();
        let (mut depth, mut fan_out) = (vec![0.0f32; n], vec![0.0f32; n]);
        // Parents come before their children, so one pass fills depths.
        for k in 0..n {
            if let Some(p) = topology.parents[k].map(|p| p as usize).filter(|&p| p < k) {
                depth[k] = depth[p] + 1.0;
                fan_out[p] += 1.0;
            }
        }
        nodes.clear();
        for k in 0..n {
            nodes.extend(signs::<64>(bits[topology.labels[k] as usize]));
            nodes.extend([depth[k].ln_1p(), fan_out[k].ln_1p()]);
        }
        out.extend(pooled_features(&nodes, NODE_FEATURES, &topology.parents));
        out.push(((n as f32).ln_1p() / 8.0).min(2.0));
    }
    out
}

/// What the three generators' tables are built from: the share's traces
/// placed on their topologies, with each node's timing and attributes.
struct Rows<'a> {
    histogram: &'a TopologyHistogram,
    cond: &'a Conditioning<'a>,
    placements: &'a [Placement],
    metas: &'a [Vec<Meta>],
    attrs: &'a [Vec<NodeValues>],
    schema: &'a AttributeSchema,
    /// Each trace's start, in µs from the window's start.
    offsets: &'a [f64],
    /// Whether R_G and C_G carry timing columns.
    timed: bool,
    /// Whether the packet counts status, kinds and categorical values
    /// ([`StatusModel`], [`ValueCounts`]): R_G and C_G then hold those
    /// columns at their usual value ([`hold_counted`]).
    counted: bool,
    /// Whether a column [`Self::counted`] held had varied.
    held_varied: std::cell::Cell<bool>,
}

/// A generator's table and, when its rows are conditioned, their contexts.
type TableInput<'a> = (Vec<Column>, Option<Contexts<'a>>);

impl<'a> Rows<'a> {
    /// T_G's table: one start offset per trace (only with calibration off;
    /// calibrated windows count starts instead).
    fn starts(&self, calibrated: bool) -> TableInput<'a> {
        let start_columns = vec![Column::continuous("start_us", self.offsets.to_vec(), false)];
        let start_ctx = (!calibrated).then(|| {
            let mut ctx = self.cond.contexts(self.cond.start_width(), self.placements.len());
            for placement in self.placements {
                self.cond.push_start(&mut ctx, placement.topology);
            }
            ctx
        });
        (start_columns, start_ctx)
    }

    /// R_G's table: one row per root span.
    fn roots(&self) -> TableInput<'a> {
        let (mut root_metas, mut root_attrs) = (Vec::new(), Vec::new());
        for (placement, (meta, attr)) in self.placements.iter().zip(self.metas.iter().zip(self.attrs)) {
            for r in self.histogram.topologies[placement.topology].roots() {
                root_metas.push(Some(meta[r]));
                root_attrs.push(Some(&attr[r]));
            }
        }
        let mut root_columns = meta_columns("", &root_metas, false, self.timed);
        root_columns.extend(self.schema.columns("", &root_attrs));
        self.hold(&mut root_columns);
        // Contexts only for a table a CTGAN learns: with calibration on, every
        // column is often constant, and a window's contexts take ~240 bytes a row.
        let root_ctx = TableModel::learns(&root_columns).then(|| {
            let mut ctx = self.cond.contexts(self.cond.root_width(), root_metas.len());
            for (placement, &offset) in self.placements.iter().zip(self.offsets) {
                let topology = &self.histogram.topologies[placement.topology];
                for r in topology.roots() {
                    self.cond.push_root(&mut ctx, placement.topology, topology.labels[r], offset);
                }
            }
            ctx
        });
        (root_columns, root_ctx)
    }

    /// C_G's table: one row per chain of `chain_length` nodes, each node
    /// relative to its parent.
    fn chains(&self, chain_length: usize) -> TableInput<'a> {
        let plans: Vec<Vec<(usize, Vec<usize>)>> =
            self.histogram.topologies.iter().map(|t| chain_plan(t, chain_length)).collect();
        let mut positions: Vec<Vec<Option<Meta>>> = vec![Vec::new(); chain_length - 1];
        let mut position_attrs: Vec<Vec<Option<&NodeValues>>> = vec![Vec::new(); chain_length - 1];
        for (placement, (meta, attr)) in self.placements.iter().zip(self.metas.iter().zip(self.attrs)) {
            for (_, chain) in &plans[placement.topology] {
                for (p, (column, attr_column)) in positions.iter_mut().zip(&mut position_attrs).enumerate() {
                    column.push(chain.get(p + 1).map(|&n| relative(meta[n], meta[chain[p]].duration_us)));
                    attr_column.push(chain.get(p + 1).map(|&n| &attr[n]));
                }
            }
        }
        let chain_rows = positions.first().map_or(0, Vec::len);
        let mut chain_columns: Vec<Column> = positions
            .iter()
            .zip(&position_attrs)
            .enumerate()
            .flat_map(|(p, (m, a))| {
                let prefix = format!("n{}_", p + 1);
                let mut columns = meta_columns(&prefix, m, true, self.timed);
                columns.extend(self.schema.columns(&prefix, a));
                columns
            })
            .collect();
        drop((positions, position_attrs));
        self.hold(&mut chain_columns);
        let chain_ctx = TableModel::learns(&chain_columns).then(|| {
            let mut ctx = self.cond.contexts(self.cond.chain_width(), chain_rows);
            for ((placement, meta), &offset) in self.placements.iter().zip(self.metas).zip(self.offsets) {
                let topology = &self.histogram.topologies[placement.topology];
                for (_, chain) in &plans[placement.topology] {
                    self.cond.push_chain(&mut ctx, topology, placement.topology, chain, &meta[chain[0]], offset);
                }
            }
            ctx
        });
        (chain_columns, chain_ctx)
    }

    /// Holds the columns the packet counts at their usual value, when it
    /// counts them: which spans fail and with which values is then decided
    /// by the counts alone, and a generator is trained only for what they
    /// do not cover (numbers, timing when asked for). On hour 16 with
    /// failures, C_G learned only status and the status code, 4.7 KB of a
    /// 14 KB packet, and the counts overrode it.
    fn hold(&self, columns: &mut [Column]) {
        if !self.counted {
            return;
        }
        // A position's flags: roots have one position, chains repeat them.
        let position: Vec<bool> = meta_flags(self.timed).chain(self.schema.counted_columns()).collect();
        for (column, counted) in columns.iter_mut().zip(position.iter().cycle()) {
            if *counted && hold_counted(column) {
                self.held_varied.set(true);
            }
        }
    }
}

/// Per column of [`meta_columns`], whether the packet counts it: status and
/// kind, not timing.
fn meta_flags(timed: bool) -> impl Iterator<Item = bool> {
    std::iter::repeat_n(false, if timed { 2 } else { 0 }).chain([true, true])
}

/// A span field [`ValueCounts`] counts per label, as an OTLP code.
#[derive(Clone, Copy)]
enum Field {
    Kind,
    /// Of spans that did not fail only.
    Status,
}

impl Field {
    fn applies(self, meta: &Meta) -> bool {
        matches!(self, Field::Kind) || meta.status != StatusCode::Error
    }

    fn get(self, meta: &Meta) -> u8 {
        match self {
            Field::Kind => meta.kind.to_otlp() as u8,
            Field::Status => meta.status.to_otlp() as u8,
        }
    }

    fn set(self, meta: &mut Meta, code: u8) {
        match self {
            Field::Kind => meta.kind = SpanKind::from_otlp(i32::from(code)),
            // Never ERROR: which spans fail is the status model's.
            Field::Status => meta.status = StatusCode::from_otlp(i32::from(code.min(1))),
        }
    }
}

/// Sets every row of a categorical `column` to its most common value other
/// than ERROR and padding (ties to the first in order); returns whether it
/// varied.
fn hold_counted(column: &mut Column) -> bool {
    let ColumnData::Categorical(values) = &mut column.data else { return false };
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for v in values.iter() {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    let error = status_label(StatusCode::Error);
    let usual = (counts.iter())
        .filter(|(v, _)| **v != error && **v != PAD)
        .max_by_key(|&(v, n)| (*n, std::cmp::Reverse(*v)))
        .or_else(|| counts.iter().next())
        .map(|(v, _)| v.to_string());
    let Some(usual) = usual else { return false };
    let varied = counts.len() > 1;
    values.iter_mut().for_each(|v| v.clone_from(&usual));
    varied
}

/// How rows are conditioned; fixed by the histogram, so training and
/// generation build identical vectors.
struct Conditioning<'a> {
    histogram: &'a TopologyHistogram,
    chain_length: usize,
    window_us: f64,
    codes: Vec<[f32; LABEL_CODE]>,
    /// Pooled GCN features per topology; `None` conditions by one-hot topology id.
    graphs: Option<Vec<f32>>,
}

impl<'a> Conditioning<'a> {
    fn new(histogram: &'a TopologyHistogram, chain_length: usize, window_us: f64, gcn: bool) -> Self {
        let codes = histogram.labels.iter().map(label_code).collect();
        let graphs = gcn.then(|| graph_features(histogram));
        Conditioning { histogram, chain_length, window_us, codes, graphs }
    }

    /// Empty contexts of `width` with room for `rows` rows: exact, as a
    /// window's may take a hundred megabytes.
    fn contexts(&self, width: usize, rows: usize) -> Contexts<'_> {
        let values = Vec::with_capacity(width.saturating_mul(rows));
        Contexts { values, width, topologies: Vec::with_capacity(rows), graphs: self.graphs.as_deref() }
    }

    /// Columns of the one-hot topology id: none when a GCN embeds the topology.
    fn topologies(&self) -> usize {
        if self.graphs.is_some() { 0 } else { self.histogram.topologies.len() }
    }

    fn start_width(&self) -> usize {
        self.topologies()
    }

    fn root_width(&self) -> usize {
        self.topologies() + LABEL_CODE + 1
    }

    fn chain_width(&self) -> usize {
        self.topologies() + self.chain_length * LABEL_CODE + 1 + STATUSES.len() + SpanKind::ALL.len() + 1
    }

    fn one_hot(out: &mut Vec<f32>, width: usize, hot: usize) {
        if width == 0 {
            return;
        }
        let at = out.len();
        out.resize(at + width, 0.0);
        out[at + hot] = 1.0;
    }

    /// Starts a row of topology `t`: its id, and its one-hot when there is no GCN.
    fn push_topology(&self, ctx: &mut Contexts<'_>, t: usize) {
        ctx.topologies.push(t as u32);
        Self::one_hot(&mut ctx.values, self.topologies(), t);
    }

    fn push_start(&self, ctx: &mut Contexts<'_>, topology: usize) {
        self.push_topology(ctx, topology);
    }

    fn push_root(&self, ctx: &mut Contexts<'_>, topology: usize, label: u32, offset_us: f64) {
        self.push_topology(ctx, topology);
        let out = &mut ctx.values;
        out.extend_from_slice(&self.codes[label as usize]);
        out.push((offset_us / self.window_us) as f32);
    }

    fn push_chain(&self, ctx: &mut Contexts<'_>, topology: &Topology, t: usize, chain: &[usize], head: &Meta, offset_us: f64) {
        self.push_topology(ctx, t);
        let out = &mut ctx.values;
        for p in 0..self.chain_length {
            match chain.get(p) {
                Some(&node) => out.extend_from_slice(&self.codes[topology.labels[node] as usize]),
                None => out.resize(out.len() + LABEL_CODE, 0.0),
            }
        }
        out.push((head.duration_us.ln_1p() / 16.0) as f32);
        Self::one_hot(out, STATUSES.len(), STATUSES.iter().position(|&s| s == head.status).unwrap_or(0));
        Self::one_hot(out, SpanKind::ALL.len(), head.kind as usize);
        out.push((offset_us / self.window_us) as f32);
    }
}

/// What the model fills in for one node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Meta {
    gap_us: f64,
    duration_us: f64,
    status: StatusCode,
    kind: SpanKind,
}

/// Stands in for a node no generator filled, which a well-formed topology never has.
const EMPTY_META: Meta = Meta { gap_us: 0.0, duration_us: 0.0, status: StatusCode::Unset, kind: SpanKind::Unspecified };

fn status_label(s: StatusCode) -> String {
    s.as_str().to_string()
}

fn parse_status(s: &str) -> StatusCode {
    STATUSES.into_iter().find(|c| c.as_str() == s).unwrap_or_default()
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Rounds of C_G that run one after another. A topology deeper than this
/// (about 128 levels at the default chain length) has its deeper chains
/// sampled in one last round, before their heads' metadata is known, so that
/// generation costs a bounded number of network calls whatever the depth a
/// packet claims (a million-node chain took 500,000 calls).
const MAX_SEQUENTIAL_ROUNDS: usize = 64;

/// Most chains sampled by one C_G call.
const ROUND_ROWS: usize = 65_536;

/// The chains of every trace to generate (by its index in `order`), grouped
/// by round; within the last round, in round order, so that a chain's head is
/// written before the chain.
fn rounds<'a>(order: &[usize], plans: &'a [Vec<(usize, Vec<usize>)>]) -> Vec<Vec<(usize, &'a [usize])>> {
    let mut rounds: Vec<Vec<(usize, usize, &[usize])>> = Vec::new();
    for (i, &t) in order.iter().enumerate() {
        for (r, chain) in &plans[t] {
            let slot = (*r).min(MAX_SEQUENTIAL_ROUNDS);
            if rounds.len() <= slot {
                rounds.resize_with(slot + 1, Vec::new);
            }
            rounds[slot].push((*r, i, chain));
        }
    }
    if let Some(last) = rounds.get_mut(MAX_SEQUENTIAL_ROUNDS) {
        last.sort_by_key(|&(r, ..)| r);
    }
    rounds.into_iter().map(|slots| slots.into_iter().map(|(_, i, chain)| (i, chain)).collect()).collect()
}

/// Chains of every topology and the round each is generated in.
fn chain_plan(topology: &Topology, chain_length: usize) -> Vec<(usize, Vec<usize>)> {
    let chains = topology.chains(chain_length);
    let mut round_filled = vec![0usize; topology.len()];
    let mut out = Vec::with_capacity(chains.len());
    for chain in chains {
        let round = if topology.parents[chain[0]].is_none() { 0 } else { round_filled[chain[0]] + 1 };
        for &n in &chain[1..] {
            round_filled[n] = round;
        }
        out.push((round, chain));
    }
    out
}

/// The columns of a node's metadata, for position `p` of a table: its timing
/// when `timed`, then status and kind. `relative`: gap and duration hold
/// [`relative`] log-ratios (signed, so not log-scaled again); otherwise
/// microseconds, log-scaled.
fn meta_columns(prefix: &str, metas: &[Option<Meta>], relative: bool, timed: bool) -> Vec<Column> {
    let mut columns = Vec::with_capacity(4);
    if timed {
        let log = !relative;
        let unit = if relative { "rel" } else { "us" };
        columns.push(Column::continuous(
            &format!("{prefix}gap_{unit}"),
            metas.iter().map(|m| m.map_or(0.0, |m| if relative { m.gap_us } else { m.gap_us.max(0.0) })).collect(),
            log,
        ));
        columns.push(Column::continuous(
            &format!("{prefix}duration_{unit}"),
            metas.iter().map(|m| m.map_or(0.0, |m| m.duration_us)).collect(),
            log,
        ));
    }
    // Padding rows (chain positions a short chain lacks) repeat a real value
    // when the generators carry no timing: the chain's shape already says
    // which positions exist, and a column that varies only by padding would
    // otherwise cost a network.
    let pad = |label: fn(&Meta) -> String| {
        let real = metas.iter().flatten().next().filter(|_| !timed).map(label);
        real.unwrap_or_else(|| PAD.to_string())
    };
    let status = |m: &Meta| status_label(m.status);
    let kind = |m: &Meta| m.kind.as_str().to_string();
    for (name, label) in [("status", status as fn(&Meta) -> String), ("kind", kind)] {
        let padding = pad(label);
        columns.push(Column::categorical(
            &format!("{prefix}{name}"),
            metas.iter().map(|m| m.as_ref().map_or_else(|| padding.clone(), label)).collect(),
        ));
    }
    columns
}

/// A child's timing relative to its parent, as log-ratios: the gap against the
/// parent's duration, the duration against what remains of the parent after
/// the gap. C_G then learns "inside the parent" as "below zero" rather than as
/// a relation between numbers it generates. Measured on TrainTicket hour 12
/// after 10 epochs: 21.6% of spans needed an end clamp, against 64% with
/// absolute microseconds and 82% with both ratios against the parent duration.
fn relative(child: Meta, parent_duration_us: f64) -> Meta {
    let parent = parent_duration_us.max(0.0);
    let gap = child.gap_us.max(0.0);
    Meta {
        gap_us: ((gap + 1.0) / (parent + 1.0)).ln(),
        // Against what is left of the parent after the gap: ≤ 0 means inside.
        duration_us: ((child.duration_us.max(0.0) + 1.0) / ((parent - gap).max(0.0) + 1.0)).ln(),
        ..child
    }
}

/// The inverse of [`relative`].
fn absolute(child: Meta, parent_duration_us: f64) -> Meta {
    let parent = parent_duration_us.max(0.0);
    // exp overflows to inf past ~709; cap at a day so times stay finite.
    let back = |r: f64, scale: f64| (r.min(30.0).exp() * scale - 1.0).clamp(0.0, 86_400e6);
    let gap = back(child.gap_us, parent + 1.0);
    Meta { gap_us: gap, duration_us: back(child.duration_us, (parent - gap).max(0.0) + 1.0), ..child }
}

/// Table columns of a node before its attributes: timing (when the
/// generators carry it), status and kind (see [`meta_columns`]).
fn meta_width(timed: bool) -> usize {
    if timed { 4 } else { 2 }
}

/// The node metadata in row `row` from column `first` on; without timing
/// columns the gap and duration are left to the caller.
fn read_meta(table: &Table, first: usize, row: usize, timed: bool) -> Meta {
    let number = |i: usize| match &table.columns[i].data {
        ColumnData::Continuous { values, .. } => values[row],
        ColumnData::Categorical(_) => 0.0,
    };
    let label = |i: usize| match &table.columns[i].data {
        ColumnData::Categorical(values) => values[row].as_str(),
        ColumnData::Continuous { .. } => PAD,
    };
    let at = if timed { first + 2 } else { first };
    Meta {
        gap_us: if timed { number(first) } else { 0.0 },
        duration_us: if timed { number(first + 1).max(0.0) } else { 0.0 },
        status: parse_status(label(at)),
        kind: SpanKind::parse(label(at + 1)).unwrap_or_default(),
    }
}

/// How a model places its traces in time.
enum Start {
    /// Gen-T's T_G (calibration off).
    Generator(TableModel),
    /// Exact counts per bucket.
    Counts(StartModel),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum StoredStart {
    Generator(StoredTableModel),
    Counts(StartModel),
}

/// Per trace to regenerate: its topology and each node's metadata and attributes.
struct Filling {
    order: Vec<usize>,
    metas: Vec<Vec<Option<Meta>>>,
    attrs: Vec<Vec<Vec<KeyValue>>>,
}

impl WindowModel {
    /// Learns the model of `traces` (one window).
    pub fn train(
        traces: &[Trace],
        config: &GenTConfig,
        device: &Device,
        previous: Option<&WindowModel>,
    ) -> Result<Self, ModelError> {
        Self::train_within(traces, config, device, previous, (0, 0))
    }

    /// Learns the model of `all` (one window), fitting the generators on a
    /// share of about `max_spans` of its spans (0: all of them) and the
    /// timing on the timing of a head sample of about `timing_spans` (0: on
    /// the share), so the work per window stops growing with the window. The
    /// histogram and the start counts are always exact; see
    /// [`super::digest`] for the samples.
    pub fn train_within(
        all: &[Trace],
        config: &GenTConfig,
        device: &Device,
        previous: Option<&WindowModel>,
        (max_spans, timing_spans): (usize, usize),
    ) -> Result<Self, ModelError> {
        let digest = WindowDigest::of(
            all.iter().cloned(),
            DigestConfig {
                share_spans: max_spans,
                seed: config.ctgan.seed,
                check_spans: 0,
                check_seed: 0,
                // A window fitted whole needs no bins.
                cells_bucket_ns: if max_spans > 0 { config.calibration.topology_bucket.as_nanos() as u64 } else { 0 },
                timing_spans: if max_spans > 0 { timing_spans } else { 0 },
                status_bucket_ns: if config.calibration.enabled {
                    config.calibration.topology_bucket.as_nanos() as u64
                } else {
                    0
                },
            },
        );
        Self::train_digest(&digest, config, device, previous)
    }

    /// Learns the model of a folded window: the histogram and the start
    /// counts over all its traces, timing and generators on its share.
    pub fn train_digest(
        digest: &WindowDigest,
        config: &GenTConfig,
        device: &Device,
        previous: Option<&WindowModel>,
    ) -> Result<Self, ModelError> {
        if digest.fitted.is_empty() {
            return Err(ModelError::Empty);
        }
        config.validate()?;
        let (window_start, window_end) = (digest.window_start, digest.window_end);
        let histogram = digest.histogram.clone();
        let (traces, placements) = (&digest.fitted[..], &digest.placements[..]);
        let cond = Conditioning::new(&histogram, config.chain_length, us(window_end - window_start), config.gcn);
        let metas: Vec<Vec<Meta>> = traces.iter().zip(placements).map(|(t, p)| node_metas(t, p, &histogram)).collect();
        let schema = AttributeSchema::infer(traces.iter().flat_map(|t| t.spans.iter()), &config.attributes);
        let attrs: Vec<Vec<NodeValues>> =
            traces.iter().zip(placements).map(|(t, p)| p.spans.iter().map(|&i| schema.values(&t.spans[i])).collect()).collect();
        let calibrated = config.calibration.enabled;
        // With calibration, R_G and C_G carry timing only when asked to.
        let timed = !calibrated || config.generators == Generators::Always;
        let offsets: Vec<f64> = traces.iter().map(|t| us(t.start() - window_start)).collect();
        let rows = Rows {
            histogram: &histogram,
            cond: &cond,
            placements,
            metas: &metas,
            attrs: &attrs,
            schema: &schema,
            offsets: &offsets,
            timed,
            counted: calibrated && config.calibration.status,
            held_varied: std::cell::Cell::new(false),
        };
        // The packet budget, when there is one: the generators get a share.
        let allowed =
            config.calibration.budget.filter(|_| calibrated).map(|rate| (digest.head_gzip_bytes(rate) * BUDGET_MARGIN) as usize);
        let mut ctgan = config.ctgan.clone();
        if ctgan.max_generator_bytes.is_none() {
            ctgan.max_generator_bytes = allowed.map(|a| a / GENERATOR_SHARE);
        }
        let (start_columns, start_ctx) = rows.starts(calibrated);
        let (root_columns, root_ctx) = rows.roots();
        let (chain_columns, chain_ctx) = rows.chains(config.chain_length);
        // The generators are independent: train them side by side (Gen-T
        // does the same on one GPU), C_G, the largest, on this thread.
        let held_varied = rows.held_varied.get();
        let (start, roots, chains) = std::thread::scope(|s| {
            let start =
                start_ctx.as_ref().map(|ctx| s.spawn(|| TableModel::fit(start_columns, ctx.get(), ctgan.clone(), device, None)));
            let roots = s.spawn(|| {
                let ctx = root_ctx.as_ref().and_then(Contexts::get);
                TableModel::fit(root_columns, ctx, ctgan.clone(), device, previous.map(|p| &p.roots))
            });
            let ctx = chain_ctx.as_ref().and_then(Contexts::get);
            let chains = TableModel::fit(chain_columns, ctx, ctgan.clone(), device, previous.map(|p| &p.chains));
            let join = |h: std::thread::ScopedJoinHandle<'_, _>| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (start.map(join), join(roots), chains)
        });
        let start = match start {
            Some(t_g) => Start::Generator(t_g?),
            None => {
                let c = &config.calibration;
                let buckets = StartBuckets { start: c.start_bucket, topology: c.topology_bucket };
                Start::Counts(StartModel::fit(&digest.starts, &digest.topologies, buckets))
            }
        };
        let mut nested = nested_pairs(traces, placements, &histogram);
        let mut model = WindowModel {
            window_start,
            window_end,
            histogram,
            chain_length: config.chain_length,
            gcn: config.gcn,
            attributes: schema,
            nested: Vec::new(),
            start,
            timing: None,
            status: None,
            values: None,
            timed,
            roots: roots?,
            chains: chains?,
            budget: None,
        };
        if calibrated {
            model.status = config.calibration.status.then(|| fit_status(digest, config, allowed));
            // Only generators that learned, or columns held at one value,
            // fill values that may be off.
            let learned = model.roots.learned() || model.chains.learned();
            if config.calibration.status && (learned || held_varied) {
                let h = &model.histogram;
                let spans = (traces.iter().zip(placements)).flat_map(|(t, p)| {
                    let labels = &h.topologies[p.topology].labels;
                    p.spans.iter().zip(labels).map(move |(&i, &label)| (label, &t.spans[i]))
                });
                model.values = Some(model.attributes.value_counts(spans)).filter(|v| !v.is_empty());
            }
            model.fit_timing(digest, config, allowed)?;
            // Composed parents hold their children whenever their tail is not
            // negative; only parents whose tail sometimes was need the list.
            let negative = model.timing.as_ref().map(|t| t.labels_with_negative_tails(&model.histogram)).unwrap_or_default();
            nested.retain(|(parent, _)| negative.contains(parent));
        }
        model.nested = nested;
        Ok(model)
    }

    /// Fits the calibrated timing on the digest's fitted traces within the
    /// packet budget of its whole window: the configured sketches if they
    /// fit, else smaller ones (see [`timing::smaller`]).
    fn fit_timing(&mut self, digest: &WindowDigest, config: &GenTConfig, allowed: Option<usize>) -> Result<(), ModelError> {
        let (starts, topologies) = (&digest.starts, &digest.topologies);
        let calibration = &config.calibration;
        let histogram = self.histogram.clone();
        let timed = digest.timed();
        let cells = digest.cells.as_ref();
        let bucket_ns = (calibration.topology_bucket.as_nanos() as u64).max(1);
        let roots = (starts.iter().zip(topologies).zip(&digest.root_durations)).map(|((&start, &topology), &duration_us)| Root {
            topology,
            start,
            duration_us,
        });
        let entries = latency::fit(roots, &histogram, bucket_ns, self.window_start / bucket_ns);
        let fit = |c: &CalibrationConfig| {
            let mut t = TimingModel::fit(&timed, &histogram, self.window_start, c, cells);
            if c.latency_bands {
                t.bands = LatencyBands { entries: entries.clone() };
            }
            t
        };
        let Some(allowed) = allowed else {
            self.timing = Some(fit(calibration));
            return Ok(());
        };
        // The packet as it would be, at the default f16 weights, with the
        // header's settings (without the attribute key list, as packed).
        let mut stored = self.to_stored(Precision::F16)?;
        let settings = GenTConfig {
            attributes: AttributeConfig { keys: Vec::new(), categorical: Vec::new(), ..config.attributes.clone() },
            ..config.clone()
        };
        let header = crate::container::compressed_len(&postcard::to_stdvec(&settings).unwrap_or_default()) + HEADER_FRAMING;
        let measure = |stored: &mut StoredWindowModel, c: &CalibrationConfig| {
            let buckets = StartBuckets { start: c.start_bucket, topology: c.topology_bucket };
            stored.timing = Some(fit(c));
            stored.start = StoredStart::Counts(StartModel::fit(starts, topologies, buckets));
            crate::container::compressed_len(&postcard::to_stdvec(&*stored).unwrap_or_default()) + header
        };
        let mut current = calibration.clone();
        let mut bytes = measure(&mut stored, &current);
        while bytes > allowed {
            if let Some(next) = super::timing::smaller(&current) {
                current = next;
                bytes = measure(&mut stored, &current);
            } else {
                // Not even the smallest fits: the topologies and generators
                // alone exceed the budget, and a smaller calibration would
                // buy a few bytes with most of the timing (TrainTicket hour
                // 16 with errors: 7,975 bytes at 0.576 against 13,152 at
                // 0.761, budget 5,675). The configured one is kept.
                current = calibration.clone();
                bytes = measure(&mut stored, &current);
                break;
            }
        }
        self.budget = Some(Budget {
            allowed,
            estimated: bytes,
            met: bytes <= allowed,
            composed: current.composed,
            quantiles_per_root: current.quantiles_per_root,
            start_bucket: current.start_bucket,
            node_effects: current.node_effects,
            node_locations: if current.node_effects { current.node_locations } else { NodeLocations::None },
            time_effects: current.time_effects,
            bursts: current.bursts && current.time_effects,
            latency_bands: current.latency_bands,
            segments: current.segments,
            rare_calls: current.rare_calls,
        });
        self.timing = stored.timing;
        if let StoredStart::Counts(counts) = stored.start {
            self.start = Start::Counts(counts);
        }
        Ok(())
    }
}

/// The window's failed spans per label and bucket ([`super::status`]),
/// counted over every trace as the window folded (else over the fitted
/// traces, which are then the whole window), with duration ranks read off
/// the fitted traces. Counts per bucket that would take more than a
/// generator's share of the budget are kept for the whole window instead.
fn fit_status(digest: &WindowDigest, config: &GenTConfig, allowed: Option<usize>) -> StatusModel {
    let fitted = (&digest.fitted[..], &digest.placements[..]);
    let counted;
    let counts = match &digest.errors {
        Some(counts) => counts,
        None => {
            let bucket_ns = config.calibration.topology_bucket.as_nanos() as u64;
            counted = ErrorCounts::of(fitted.0, fitted.1, &digest.histogram, bucket_ns);
            &counted
        }
    };
    let model = StatusModel::fit(counts, digest.window_start, fitted, &digest.histogram);
    let bytes = |m: &StatusModel| crate::container::compressed_len(&postcard::to_stdvec(m).unwrap_or_default());
    match allowed {
        Some(allowed) if bytes(&model) > allowed / GENERATOR_SHARE => model.coarsened(),
        _ => model,
    }
}

/// How a model met its packet budget (`calibration.budget`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Budget {
    /// Bytes the budget allows for this window.
    pub allowed: usize,
    /// The packet's estimated bytes (f16 weights).
    pub estimated: usize,
    /// Whether it fits; a window whose topologies and generators alone
    /// exceed the budget does not, and keeps the configured calibration.
    pub met: bool,
    /// The calibration that was used.
    pub composed: bool,
    pub quantiles_per_root: f64,
    #[serde(with = "humantime_serde")]
    pub start_bucket: std::time::Duration,
    pub node_effects: bool,
    pub node_locations: NodeLocations,
    pub time_effects: bool,
    pub bursts: bool,
    pub latency_bands: bool,
    pub segments: bool,
    pub rare_calls: u32,
}

/// Each of a packet's generators (R_G, C_G; and T_G without calibration)
/// may take at most this share of its budget: with calibrated timing they
/// carry status, kind and attributes, and the sketches carry the timing
/// most queries read.
const GENERATOR_SHARE: usize = 8;

/// Bytes a packet adds around its body: magic, version, checksum, the
/// header's counts and the compression frame.
const HEADER_FRAMING: usize = 64;

/// Share of the estimated head-sampling bytes a packet may use: what is
/// left of the estimate's spread over seeds.
const BUDGET_MARGIN: f64 = 0.95;
/// Kept traces the head-sampling estimate looks at in all, over as many
/// seeds as that takes ([`BUDGET_SEEDS`]): a small window keeps a handful of
/// traces per seed, and one large trace more or less moves their bytes by
/// a quarter.
const BUDGET_KEPT: usize = 200;
/// Fewest and most seeds the estimate averages over.
const BUDGET_SEEDS: (u64, u64) = (5, 64);
/// Most kept traces gzipped per seed; more are scaled from these by spans.
const BUDGET_SAMPLE: usize = 500;

/// What head sampling 1:`rate` of `traces` ships as gzip OTLP protobuf (the
/// Collector's default level), estimated as the mean over seeded samples,
/// each at most [`BUDGET_SAMPLE`] traces scaled by spans. A sample of few
/// traces compresses worse than the whole window, so the same share of the
/// window costs more as a sample; this is what the packet replaces.
/// Measured in bytes, not in samples: no seed alone says what a rate costs.
pub fn head_gzip_bytes(traces: &[Trace], rate: u64) -> f64 {
    head_gzip_bytes_from(traces, (1, 0), rate)
}

/// [`head_gzip_bytes`] of a window of which `share` is a head sample
/// 1:`share_rate` with `share_seed` (rate 1: the whole window). Each seed
/// samples the share at the rate that, with the share's, comes nearest
/// `rate` from below, and scales its bytes by what is left; a whole window
/// is sampled at `rate` exactly.
pub(crate) fn head_gzip_bytes_from(share: &[Trace], (share_rate, share_seed): (u64, u64), rate: u64) -> f64 {
    let (q, rate) = (share_rate.max(1), rate.max(1));
    // Within a share, never its own seed: those samples would nest in it.
    let seed_of = |i: u64| if q == 1 { i } else { share_seed.wrapping_add(i + 1) };
    let within = (rate / q).max(1);
    // The window's spans a seed's sample of the share stands for, per span.
    let scale = (q * within) as f64 / rate as f64;
    let expected = (share.len() as u64 * q / rate).max(1);
    let seeds = (BUDGET_KEPT as u64).div_ceil(expected).clamp(BUDGET_SEEDS.0, BUDGET_SEEDS.1);
    let spans = |t: &[&Trace]| t.iter().map(|t| t.spans.len() as u64).sum::<u64>();
    let bytes_of = |seed: u64| {
        let kept: Vec<&Trace> = share.iter().filter(|t| crate::trace::head_keeps(&t.trace_id, within, seed_of(seed))).collect();
        let step = kept.len().div_ceil(BUDGET_SAMPLE).max(1);
        let sample: Vec<&Trace> = kept.iter().step_by(step).copied().collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let written = crate::io::write_proto_of(sample.iter().copied(), &mut gz);
        let bytes = written.and_then(|()| gz.finish()).map_or(0, |b| b.len() as u64);
        // Integer first, as a whole window always was: byte-identical budgets.
        (bytes * spans(&kept) / spans(&sample).max(1)) as f64 * scale
    };
    // Sampling at 1:1 keeps every trace whatever the seed (a large window's
    // share already sampled at the rate or beyond): every seed would encode
    // and gzip the same traces, so one does, and the mean is taken as
    // before (the same bits).
    let total: f64 = if within == 1 {
        let once = bytes_of(0);
        (0..seeds).map(|_| once).sum()
    } else {
        (0..seeds).map(bytes_of).sum()
    };
    total / seeds as f64
}

impl WindowModel {
    /// Whether R_G and C_G started from the previous window's weights.
    pub fn warm_started(&self) -> (bool, bool) {
        (self.roots.warm_started(), self.chains.warm_started())
    }

    pub fn to_stored(&self, precision: Precision) -> Result<StoredWindowModel, ModelError> {
        Ok(StoredWindowModel {
            window_start: self.window_start,
            window_end: self.window_end,
            histogram: self.histogram.clone(),
            chain_length: self.chain_length,
            gcn: self.gcn,
            attributes: self.attributes.clone(),
            nested: self.nested.clone(),
            start: match &self.start {
                Start::Generator(t_g) => StoredStart::Generator(t_g.to_stored(precision)?),
                Start::Counts(c) => StoredStart::Counts(c.clone()),
            },
            timing: self.timing.clone(),
            status: self.status.clone(),
            values: self.values.clone(),
            timed: self.timed,
            roots: self.roots.to_stored(precision)?,
            chains: self.chains.to_stored(precision)?,
        })
    }

    pub fn from_stored(stored: StoredWindowModel, device: &Device) -> Result<Self, ModelError> {
        let h = &stored.histogram;
        if h.topologies.len() != h.counts.len() {
            return Err(ModelError::Stored("topology and count lists differ in length".into()));
        }
        for t in &h.topologies {
            let well_formed = !t.labels.is_empty()
                && t.labels.len() == t.parents.len()
                && t.labels.iter().all(|&l| (l as usize) < h.labels.len())
                && t.parents.iter().enumerate().all(|(i, p)| p.is_none_or(|p| (p as usize) < i));
            if !well_formed {
                return Err(ModelError::Stored("a topology is empty, names a missing label or a parent after its child".into()));
            }
        }
        // Every label names a node: a packet of unused labels only costs memory.
        let nodes = h.topologies.iter().fold(0usize, |sum, t| sum.saturating_add(t.len()));
        if h.labels.len() > nodes {
            return Err(ModelError::Stored(format!("{} labels for {nodes} topology nodes", h.labels.len())));
        }
        if !(2..=MAX_CHAIN_LENGTH).contains(&stored.chain_length) || stored.window_end <= stored.window_start {
            return Err(ModelError::Stored("chain length or window range out of range".into()));
        }
        if let StoredStart::Counts(c) = &stored.start {
            c.validate(&h.counts)?;
        }
        if let Some(t) = &stored.timing {
            t.validate(h)?;
        }
        if let Some(s) = &stored.status {
            s.validate(h)?;
        }
        if let Some(v) = &stored.values {
            stored.attributes.validate_counts(v, h.labels.len()).map_err(ModelError::Stored)?;
        }
        if stored.timing.is_some() != matches!(stored.start, StoredStart::Counts(_)) {
            return Err(ModelError::Stored("calibrated timing and start counts come together".into()));
        }
        let roots = TableModel::from_stored(stored.roots, device)?;
        let chains = TableModel::from_stored(stored.chains, device)?;
        // Generation reads each node's columns at fixed places in R_G's and
        // C_G's tables: their widths must be what the settings imply.
        let node = meta_width(stored.timed) + stored.attributes.width();
        if roots.width() != node || chains.width() != (stored.chain_length - 1) * node {
            return Err(ModelError::Stored(format!(
                "R_G has {} columns and C_G {}; chain length {} with {node} columns per node needs {node} and {}",
                roots.width(),
                chains.width(),
                stored.chain_length,
                (stored.chain_length - 1) * node
            )));
        }
        Ok(WindowModel {
            window_start: stored.window_start,
            window_end: stored.window_end,
            chain_length: stored.chain_length,
            gcn: stored.gcn,
            attributes: stored.attributes,
            nested: stored.nested,
            start: match stored.start {
                StoredStart::Generator(t_g) => {
                    let t_g = TableModel::from_stored(t_g, device)?;
                    if t_g.width() == 0 {
                        return Err(ModelError::Stored("T_G has no start column".into()));
                    }
                    Start::Generator(t_g)
                }
                StoredStart::Counts(c) => Start::Counts(c),
            },
            timing: stored.timing,
            status: stored.status,
            values: stored.values,
            timed: stored.timed,
            roots,
            chains,
            histogram: stored.histogram,
            budget: None,
        })
    }

    /// Regenerates the window: every topology as often as it was counted,
    /// fresh ids, timestamps inside the window. Same model and seed, same traces.
    pub fn generate(&self, seed: u64) -> Result<(Vec<Trace>, Repairs), ModelError> {
        self.generate_only(seed, |topologies, _| (0..topologies.len()).collect())
    }

    /// Regenerates only the traces `select` picks: it is given every trace's
    /// topology and start (Unix ns) and returns indices into them,
    /// ascending. They are timed as a window of that many traces, so a
    /// stratified 1:k pick gives what a 1:k sample of [`WindowModel::generate`]
    /// would, at 1/k of the work (the compressor's self-evaluation of large
    /// windows).
    pub fn generate_only(
        &self,
        seed: u64,
        select: impl FnOnce(&[usize], &[u64]) -> Vec<usize>,
    ) -> Result<(Vec<Trace>, Repairs), ModelError> {
        let mut repairs = Repairs::default();
        let (mut order, mut starts) = self.trace_starts(seed, &mut repairs)?;
        let totals = self.totals(&order, &starts, seed);
        let mut occurrences = self.occurrences(&order);
        let kept = select(&order, &starts);
        if kept.len() < order.len() {
            let valid: Vec<usize> = kept.into_iter().filter(|&i| i < order.len()).collect();
            occurrences = valid.iter().map(|&i| occurrences[i]).collect();
            (order, starts) = valid.iter().map(|&i| (order[i], starts[i])).unzip();
        }
        let traces = self.build_traces((order, starts, occurrences), seed, &totals, &mut repairs)?;
        Ok((traces, repairs))
    }

    /// Regenerates the window in `parts` parts, handing each to `each` as it
    /// is built (it returns false to stop), so memory holds one part: part p
    /// is every `parts`-th of the window's traces from the p-th (each part a
    /// slice across topologies and time, timed as a window of its own, as
    /// [`Self::generate_only`] does) with noise and ids of its own. Together
    /// the parts hold every topology as often as it was counted. One part is
    /// [`Self::generate`].
    pub fn generate_parts(
        &self,
        seed: u64,
        parts: usize,
        mut each: impl FnMut(Vec<Trace>, Repairs) -> bool,
    ) -> Result<(), ModelError> {
        let parts = parts.max(1);
        let mut repairs = Repairs::default();
        let (order, starts) = self.trace_starts(seed, &mut repairs)?;
        let mut totals = self.totals(&order, &starts, seed);
        let occurrences = self.occurrences(&order);
        for part in 0..parts {
            let (o, s) = (part..order.len()).step_by(parts).map(|i| (order[i], starts[i])).unzip();
            let n = (part..order.len()).step_by(parts).map(|i| occurrences[i]).collect();
            let noise = if parts == 1 { seed } else { xxhash_rust::xxh3::xxh3_64_with_seed(&(part as u64).to_le_bytes(), seed) };
            let traces = self.build_traces((o, s, n), noise, &totals, &mut repairs)?;
            if let Some(status) = &self.status {
                // The next part's failures continue from this one's.
                let part = (part..order.len()).step_by(parts).map(|i| (order[i], starts[i]));
                status.advance(&self.histogram, part, &mut totals.status);
            }
            if !each(traces, std::mem::take(&mut repairs)) {
                break;
            }
        }
        Ok(())
    }

    /// Per trace of `order` (topologies), how many traces of its topology
    /// come before it: which of a rare call's stored shares it takes.
    fn occurrences(&self, order: &[usize]) -> Vec<u32> {
        let mut seen = vec![0u32; self.histogram.topologies.len()];
        order
            .iter()
            .map(|&t| {
                let n = seen.get(t).copied().unwrap_or(0);
                if let Some(s) = seen.get_mut(t) {
                    *s += 1;
                }
                n
            })
            .collect()
    }

    /// The traces of topologies `order` starting at `starts`, each its
    /// topology's `occurrences`-th in the window, timed and filled with
    /// `seed`'s noise, sorted by start.
    fn build_traces(
        &self,
        (order, starts, occurrences): (Vec<usize>, Vec<u64>, Vec<u32>),
        seed: u64,
        totals: &Totals,
        out: &mut Repairs,
    ) -> Result<Vec<Trace>, ModelError> {
        let mut repairs = std::mem::take(out);
        // Looked up for every call composed: foldhash, not SipHash.
        let nested: foldhash::HashSet<(u32, u32)> = self.nested.iter().copied().collect();
        let h = &self.histogram;
        let mut filling = Filling {
            metas: order.iter().map(|&t| vec![None; h.topologies[t].len()]).collect(),
            attrs: if self.attributes.keys.is_empty() {
                Vec::new()
            } else {
                order.iter().map(|&t| vec![Vec::new(); h.topologies[t].len()]).collect()
            },
            order,
        };
        let times = match &self.timing {
            // Timing first, then status, kind and attributes given it.
            Some(timing) if !self.timed => {
                let times = self.compose(
                    timing,
                    (&filling.order, &starts, &occurrences),
                    None,
                    seed,
                    (&nested, &totals.bands),
                    &mut repairs,
                );
                filling.metas = self.metas_of(&filling.order, &times);
                self.fill_metadata(&mut filling, &starts, seed, &mut repairs)?;
                times
            }
            // The generators' timing sets each node's rank, the sketches its value.
            Some(timing) => {
                self.fill_metadata(&mut filling, &starts, seed, &mut repairs)?;
                let noise = self.generated_noise(&filling, seed);
                self.compose(
                    timing,
                    (&filling.order, &starts, &occurrences),
                    Some(&noise),
                    seed,
                    (&nested, &totals.bands),
                    &mut repairs,
                )
            }
            None => {
                self.fill_metadata(&mut filling, &starts, seed, &mut repairs)?;
                self.times_of(&filling, &starts, &nested, &mut repairs)
            }
        };
        if let Some(status) = self.status.as_ref() {
            repairs.status_changed += self.calibrate_status(status, &mut filling, (&starts, &times), &totals.status, seed);
        }
        if let Some(values) = self.values.as_ref() {
            repairs.values_changed += self.calibrate_values(values, &mut filling, seed);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut resources: HashMap<&str, Arc<Resource>> = HashMap::new();
        let scope = Arc::new(Scope { name: "gent".into(), version: env!("CARGO_PKG_VERSION").into() });
        let mut traces = Vec::with_capacity(filling.order.len());
        for (i, &t) in filling.order.iter().enumerate() {
            let node_attrs = filling.attrs.get_mut(i).map(std::mem::take).unwrap_or_default();
            let topology = &h.topologies[t];
            traces.push(self.build_trace(topology, &times[i], &filling.metas[i], node_attrs, &mut resources, &scope, &mut rng));
        }
        traces.sort_by_key(Trace::start);
        *out = repairs;
        Ok(traces)
    }

    /// Every trace to regenerate, as its topology and start time.
    fn trace_starts(&self, seed: u64, repairs: &mut Repairs) -> Result<(Vec<usize>, Vec<u64>), ModelError> {
        let t_g = match &self.start {
            Start::Counts(counts) => return Ok(counts.generate(self.window_start, self.window_end, seed).into_iter().unzip()),
            Start::Generator(t_g) => t_g,
        };
        let h = &self.histogram;
        let cond = Conditioning::new(h, self.chain_length, us(self.window_end - self.window_start), self.gcn);
        let order = h.expand();
        let mut ctx = cond.contexts(cond.start_width(), order.len());
        for &t in &order {
            cond.push_start(&mut ctx, t);
        }
        let table = t_g.sample(order.len(), ctx.get(), seed ^ 0x5151)?;
        let window_us = cond.window_us;
        let starts = match &table.columns[0].data {
            ColumnData::Continuous { values, .. } => values
                .iter()
                .map(|&v| {
                    let clamped = v.clamp(0.0, window_us);
                    repairs.start_clamped += u64::from(clamped != v);
                    self.window_start + (clamped * 1e3) as u64
                })
                .collect(),
            ColumnData::Categorical(_) => vec![self.window_start; order.len()],
        };
        Ok((order, starts))
    }

    /// Runs R_G on the roots, then C_G chain by chain, writing what they
    /// generate into `filling` (timing only when they carry it).
    fn fill_metadata(&self, filling: &mut Filling, starts: &[u64], seed: u64, repairs: &mut Repairs) -> Result<(), ModelError> {
        let h = &self.histogram;
        let cond = Conditioning::new(h, self.chain_length, us(self.window_end - self.window_start), self.gcn);
        let offsets: Vec<f64> = starts.iter().map(|&s| us(s.saturating_sub(self.window_start))).collect();
        let node_width = meta_width(self.timed) + self.attributes.width();
        // R_G (contexts only for a CTGAN: constants need none).
        let learned = self.roots.learned();
        let mut ctx = cond.contexts(cond.root_width(), 0);
        let mut slots = Vec::new();
        for (i, &t) in filling.order.iter().enumerate() {
            let topology = &h.topologies[t];
            for r in topology.roots() {
                if learned {
                    cond.push_root(&mut ctx, t, topology.labels[r], offsets[i]);
                }
                slots.push((i, r));
            }
        }
        let table = self.roots.sample(slots.len(), ctx.get().filter(|_| learned), seed ^ 0x7272)?;
        for (row, &(i, r)) in slots.iter().enumerate() {
            self.write_node(filling, (i, r), &table, 0, row, None);
        }

        // C_G, round by round: a chain's head is a node of the round before.
        let plans: Vec<Vec<(usize, Vec<usize>)>> = h.topologies.iter().map(|t| chain_plan(t, self.chain_length)).collect();
        let mut filled: Vec<Vec<bool>> = filling.order.iter().map(|&t| vec![false; h.topologies[t].len()]).collect();
        let all = rounds(&filling.order, &plans);
        // A round of many chains goes in parts, so that its context and table
        // stay bounded (the first part keeps the round's seed).
        let parts = all
            .iter()
            .enumerate()
            .flat_map(|(round, slots)| slots.chunks(ROUND_ROWS).enumerate().map(move |(k, part)| (round, k, part)));
        for (round, k, slots) in parts {
            let learned = self.chains.learned();
            let mut ctx = cond.contexts(cond.chain_width(), if learned { slots.len() } else { 0 });
            for &(i, chain) in slots.iter().filter(|_| learned) {
                let t = filling.order[i];
                let head = filling.metas[i][chain[0]].unwrap_or(EMPTY_META);
                cond.push_chain(&mut ctx, &h.topologies[t], t, chain, &head, offsets[i]);
            }
            let part_seed = seed ^ (0x9000 + round as u64) ^ (k as u64).wrapping_mul(0xa076_1d64_78bd_642f);
            let table = self.chains.sample(slots.len(), ctx.get().filter(|_| learned), part_seed)?;
            for (row, &(i, chain)) in slots.iter().enumerate() {
                for (p, &node) in chain.iter().enumerate().skip(1) {
                    if filled[i][node] {
                        repairs.merges += 1;
                        continue;
                    }
                    filled[i][node] = true;
                    let parent = filling.metas[i][chain[p - 1]].map_or(0.0, |m| m.duration_us);
                    self.write_node(filling, (i, node), &table, (p - 1) * node_width, row, Some(parent));
                }
            }
        }
        Ok(())
    }

    /// Writes one generated row's node into `filling`: all of it from
    /// generators that carry timing (a chain node's relative to its parent's
    /// duration), otherwise status, kind and attributes beside the timing
    /// already there.
    fn write_node(
        &self,
        filling: &mut Filling,
        (i, node): (usize, usize),
        table: &Table,
        first: usize,
        row: usize,
        parent: Option<f64>,
    ) {
        let generated = read_meta(table, first, row, self.timed);
        let slot = &mut filling.metas[i][node];
        *slot = Some(match (self.timed, *slot, parent) {
            (true, _, Some(parent)) => absolute(generated, parent),
            (true, _, None) | (false, None, _) => generated,
            (false, Some(timing), _) => Meta { status: generated.status, kind: generated.kind, ..timing },
        });
        if !filling.attrs.is_empty() {
            filling.attrs[i][node] = self.attributes.read(table, first + meta_width(self.timed), row);
        }
    }

    /// What a part of the window is scaled by ([`Totals`]).
    fn totals(&self, order: &[usize], starts: &[u64], seed: u64) -> Totals {
        Totals {
            bands: self.band_totals(order, starts),
            status: self.status.as_ref().map(|s| s.totals(&self.histogram, (order, starts), seed)).unwrap_or_default(),
        }
    }

    /// Makes exactly the counted spans fail ([`super::status`]): each
    /// changed span takes the status, kind and attributes another span of
    /// its label had. Returns how many spans changed status.
    fn calibrate_status(
        &self,
        status: &StatusModel,
        filling: &mut Filling,
        (starts, times): (&[u64], &[Vec<(u64, u64)>]),
        totals: &StatusTotals,
        seed: u64,
    ) -> u64 {
        // No span failed and constant generators give every span one status
        // (not ERROR, or some would have failed): nothing to change.
        if status.is_empty() && !(self.roots.learned() || self.chains.learned()) {
            return 0;
        }
        let metas = &filling.metas;
        let failed = |i: usize, k: usize| metas[i][k].is_some_and(|m| m.status == StatusCode::Error);
        let changes = status.changes(&self.histogram, (&filling.order, starts, times), failed, totals, seed);
        // Every change reads what its source had before any was applied.
        let taken: Vec<Option<(Option<Meta>, Vec<KeyValue>)>> = (changes.iter())
            .map(|c| match *c {
                Change::Take(_, (i, k)) => {
                    Some((filling.metas[i][k], filling.attrs.get(i).map(|a| a[k].clone()).unwrap_or_default()))
                }
                _ => None,
            })
            .collect();
        let mut changed = 0;
        for (change, taken) in changes.iter().zip(taken) {
            let ((i, k), code) = match *change {
                Change::Take(to, _) => (to, None),
                Change::Failed(to) => (to, Some(StatusCode::Error)),
                Change::Cleared(to) => (to, Some(StatusCode::Unset)),
            };
            let Some(meta) = filling.metas[i][k].as_mut() else { continue };
            let before = meta.status;
            match taken {
                Some((Some(from), attrs)) => {
                    (meta.status, meta.kind) = (from.status, from.kind);
                    if let Some(a) = filling.attrs.get_mut(i) {
                        a[k] = attrs;
                    }
                }
                _ => meta.status = code.unwrap_or(meta.status),
            }
            changed += u64::from((before == StatusCode::Error) != (meta.status == StatusCode::Error));
        }
        changed
    }

    /// Brings each (label, status)'s categorical attribute values to the
    /// window's shares ([`ValueCounts`]); returns how many changed.
    fn calibrate_values(&self, values: &ValueCounts, filling: &mut Filling, seed: u64) -> u64 {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7a1_0e5);
        let kinds = self.calibrate_codes((values.kind, &values.kinds), Field::Kind, filling, &mut rng)
            + self.calibrate_codes((values.status, &values.statuses), Field::Status, filling, &mut rng);
        // Kinds and statuses alone (no categorical key counted): no span's values to gather.
        if values.groups.is_empty() && values.defaults.is_empty() {
            return kinds;
        }
        let h = &self.histogram;
        let mut spans = Vec::new();
        for ((attrs, metas), &t) in filling.attrs.iter_mut().zip(&filling.metas).zip(&filling.order) {
            for ((attributes, meta), &label) in attrs.iter_mut().zip(metas).zip(&h.topologies[t].labels) {
                let failed = meta.is_some_and(|m| m.status == StatusCode::Error);
                spans.push(Valued { label, failed, attributes });
            }
        }
        kinds + self.attributes.calibrate(values, &mut spans, &mut rng)
    }

    /// Brings a field of each label's spans (kind, or the status of those
    /// that did not fail) to the window's counts (scaled to the spans
    /// regenerated), changing as few as it takes: labels not counted take
    /// the window's usual code. Returns how many changed.
    fn calibrate_codes(
        &self,
        (usual, counts): (u8, &[(u32, Vec<(u8, u32)>)]),
        field: Field,
        filling: &mut Filling,
        rng: &mut StdRng,
    ) -> u64 {
        if counts.is_empty() {
            return 0;
        }
        let index: HashMap<u32, usize> = counts.iter().enumerate().map(|(j, k)| (k.0, j)).collect();
        let mut nodes: Vec<Vec<(usize, usize)>> = vec![Vec::new(); counts.len()];
        let mut changed = 0;
        for (i, &t) in filling.order.iter().enumerate() {
            for (k, label) in self.histogram.topologies[t].labels.iter().enumerate() {
                let Some(meta) = filling.metas[i][k].as_mut().filter(|m| field.applies(m)) else { continue };
                match index.get(label) {
                    Some(&j) => nodes[j].push((i, k)),
                    None if field.get(meta) != usual => {
                        field.set(meta, usual);
                        changed += 1;
                    }
                    None => {}
                }
            }
        }
        for ((_, want), nodes) in counts.iter().zip(&nodes) {
            let want: Vec<(u16, u32)> = want.iter().map(|&(k, n)| (u16::from(k), n)).collect();
            let code_at = |&(i, k): &(usize, usize)| filling.metas[i][k].map_or(0, |m| u16::from(field.get(&m)));
            let current: Vec<u16> = nodes.iter().map(code_at).collect();
            for (m, code) in super::attributes::reassigned(&current, &want, rng) {
                let (i, k) = nodes[m];
                if let Some(meta) = filling.metas[i][k].as_mut() {
                    field.set(meta, code as u8);
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Traces per (entry, time bucket) of the whole regenerated window, which
    /// a part's latency bands are scaled by (empty without bands).
    fn band_totals(&self, order: &[usize], starts: &[u64]) -> BandTotals {
        match &self.timing {
            Some(t) if !t.bands.is_empty() => {
                latency::totals(&t.bands, &self.histogram, (t.bucket_ns, t.first_bucket), order, starts)
            }
            _ => BandTotals::default(),
        }
    }

    /// Calibrated times of every trace: (start, end) per node; then whole
    /// timings arranged among traces of a topology by the latency bands,
    /// and timed again at the starts they moved to.
    fn compose(
        &self,
        timing: &TimingModel,
        traces: (&[usize], &[u64], &[u32]),
        noise: Option<&[Vec<f64>]>,
        seed: u64,
        (nested, totals): (&foldhash::HashSet<(u32, u32)>, &BandTotals),
        repairs: &mut Repairs,
    ) -> Vec<Vec<(u64, u64)>> {
        let (order, starts, occurrences) = traces;
        let h = &self.histogram;
        let tables = TimingTables::new(timing, h);
        let mut fixes = TimingRepairs::default();
        let is_nested = |p: u32, c: u32| nested.contains(&(p, c));
        let window = (self.window_start, self.window_end);
        let timed = |starts: &[u64], fixes: &mut TimingRepairs| {
            // The generator is seeded afresh, so a trace draws the same noise
            // whatever start it is timed at.
            let ranks = tables.ranks(h, order, starts, noise, &mut timing_rng(seed));
            // Each trace is composed from its own ranks alone: the traces are
            // split among the cores.
            let parts = super::cores::on_cores(order.len(), |range| {
                let (mut scratch, mut fixes) = (Scratch::default(), TimingRepairs::default());
                let times: Vec<Vec<(u64, u64)>> = range
                    .map(|i| {
                        let (t, start) = (order[i], starts[i]);
                        tables.compose(h, (t, occurrences[i]), start, &ranks[i], &is_nested, &mut fixes, &mut scratch);
                        tables.place(h, t, start, window, &mut fixes, &mut scratch);
                        scratch.out.clone()
                    })
                    .collect();
                (times, fixes)
            });
            let mut times = Vec::with_capacity(order.len());
            for (part, f) in parts {
                times.extend(part);
                fixes.add(&f);
            }
            times
        };
        let mut times = timed(starts, &mut fixes);
        if !timing.bands.is_empty() {
            let bucket = (timing.bucket_ns, timing.first_bucket);
            let bands = &timing.bands;
            let part = latency::Part { window, bucket, order, starts, totals };
            let first = latency::calibrate(bands, h, &part, false, &mut times);
            // Where each timing goes. A timing drawn for one minute and moved
            // to another would bring that minute's ranks with it (its spans
            // ranked among that minute's spans of each label, that minute's
            // time effects), so it is drawn again at the start it goes to.
            let (mut to, mut at) = ((0..order.len()).collect::<Vec<_>>(), starts.to_vec());
            for (slot, source) in latency::assign(bands, h, &part, &times) {
                (to[source], at[source]) = (slot, starts[slot]);
            }
            let moved = to.iter().enumerate().filter(|&(i, &slot)| i != slot).count();
            let part = latency::Part { starts: &at, ..part };
            // Timed again, the first stretches are undone.
            let mut stretched = if moved > 0 { 0 } else { first };
            if moved > 0 {
                fixes = TimingRepairs::default();
                times = timed(&at, &mut fixes);
                // Drawn again, some timings cross a cut: they are arranged
                // and stretched once more among the starts they now have.
                stretched += latency::calibrate(bands, h, &part, false, &mut times);
                repairs.latency_arranged += (moved + latency::arrange(bands, h, &part, &mut times)) as u64;
            }
            stretched += latency::calibrate(bands, h, &part, true, &mut times);
            repairs.latency_stretched += stretched as u64;
            let mut placed = vec![Vec::new(); times.len()];
            for (t, slot) in times.into_iter().zip(to) {
                placed[slot] = t;
            }
            times = placed;
        }
        tables.map_composed(h, order, &mut times, (seed, self.window_end), &mut fixes);
        repairs.start_shifted += fixes.start_shifted;
        repairs.end_clamped += fixes.end_clamped;
        repairs.parent_extended += fixes.parent_extended;
        repairs.changed_over_10pct += fixes.changed_over_10pct;
        repairs.waits_shortened += fixes.waits_shortened;
        repairs.composed_held += fixes.composed_held;
        times
    }

    /// Node metadata with the composed timing (gap from the parent, duration),
    /// before status and kind are generated.
    fn metas_of(&self, order: &[usize], times: &[Vec<(u64, u64)>]) -> Vec<Vec<Option<Meta>>> {
        order
            .iter()
            .zip(times)
            .map(|(&t, times)| {
                let topology = &self.histogram.topologies[t];
                let trace_start = times.iter().map(|x| x.0).min().unwrap_or(0);
                times
                    .iter()
                    .enumerate()
                    .map(|(k, &(s, e))| {
                        let base = topology.parents[k].map_or(trace_start, |p| times[p as usize].0);
                        Some(Meta { gap_us: us(s.saturating_sub(base)), duration_us: us(e - s), ..EMPTY_META })
                    })
                    .collect()
            })
            .collect()
    }

    /// The normal scores of the generators' durations within each node's
    /// label and role: the ranks the CTGANs chose, for the sketches to map.
    fn generated_noise(&self, filling: &Filling, seed: u64) -> Vec<Vec<f64>> {
        let h = &self.histogram;
        let (mut values, mut groups) = (Vec::new(), Vec::new());
        for (&t, metas) in filling.order.iter().zip(&filling.metas) {
            let topology = &h.topologies[t];
            let mut has_children = vec![false; topology.len()];
            for p in topology.parents.iter().flatten() {
                has_children[*p as usize] = true;
            }
            for (k, m) in metas.iter().enumerate() {
                values.push(m.map_or(0.0, |m| m.duration_us));
                groups.push(u64::from(topology.labels[k]) << 1 | u64::from(has_children[k]));
            }
        }
        let mut scores = group_scores(&values, &groups, &mut timing_rng(seed ^ 0x6e6f_6973_65)).into_iter();
        filling.order.iter().map(|&t| scores.by_ref().take(h.topologies[t].len()).collect()).collect()
    }

    /// Times from the generators' own timing (calibration off): gaps before
    /// the parent clamped to zero, children that always lay inside their
    /// parent moved and shortened to fit, everything inside the window.
    fn times_of(
        &self,
        filling: &Filling,
        starts: &[u64],
        nested: &foldhash::HashSet<(u32, u32)>,
        repairs: &mut Repairs,
    ) -> Vec<Vec<(u64, u64)>> {
        let end_limit = self.window_end;
        filling
            .order
            .iter()
            .zip(&filling.metas)
            .zip(starts)
            .map(|((&t, metas), &trace_start)| {
                let topology = &self.histogram.topologies[t];
                let mut out: Vec<(u64, u64)> = Vec::with_capacity(topology.len());
                for k in 0..topology.len() {
                    let meta = metas[k].unwrap_or(EMPTY_META);
                    let parent = topology.parents[k].map(|p| p as usize);
                    if meta.gap_us < 0.0 {
                        repairs.gap_clamped += 1;
                    }
                    let gap = (meta.gap_us.max(0.0) * 1e3) as u64;
                    let base = parent.map_or(trace_start, |p| out[p].0);
                    let mut start = base.saturating_add(gap).min(end_limit);
                    let mut end = start.saturating_add((meta.duration_us * 1e3) as u64).min(end_limit);
                    if let Some(p) = parent
                        && nested.contains(&(topology.labels[p], topology.labels[k]))
                        && end > out[p].1
                    {
                        let wanted = end - start;
                        start = start.min(out[p].1);
                        end = out[p].1;
                        repairs.end_clamped += 1;
                        if (end - start) as f64 * 1.1 < wanted as f64 {
                            repairs.changed_over_10pct += 1;
                        }
                    }
                    out.push((start, end));
                }
                out
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn build_trace<'a>(
        &'a self,
        topology: &Topology,
        times: &[(u64, u64)],
        metas: &[Option<Meta>],
        mut attributes: Vec<Vec<KeyValue>>,
        resources: &mut HashMap<&'a str, Arc<Resource>>,
        scope: &Arc<Scope>,
        rng: &mut StdRng,
    ) -> Trace {
        let trace_id: [u8; 16] = rng.random();
        let ids: Vec<[u8; 8]> = (0..topology.len()).map(|_| rng.random()).collect();
        let mut spans: Vec<Span> = Vec::with_capacity(topology.len());
        for (k, &(start, end)) in times.iter().enumerate() {
            let meta = metas[k].unwrap_or(EMPTY_META);
            let label = &self.histogram.labels[topology.labels[k] as usize];
            let parent = topology.parents[k].map(|p| p as usize);
            let resource = resources
                .entry(label.service.as_str())
                .or_insert_with(|| Resource::new(label.service.clone(), vec![crate::trace::synthetic_marker()]))
                .clone();
            spans.push(Span {
                trace_id,
                span_id: ids[k],
                parent_span_id: parent.map(|p| ids[p]),
                resource,
                scope: scope.clone(),
                name: label.name.clone(),
                kind: meta.kind,
                status: Status { code: meta.status, message: String::new() },
                start,
                end,
                attributes: attributes.get_mut(k).map(std::mem::take).unwrap_or_default(),
                events: Vec::new(),
                links: Vec::new(),
            });
        }
        spans.sort_by_key(|s| s.start);
        Trace { trace_id, spans }
    }
}

/// Each canonical node's metadata; the gap is from the parent (roots: from the trace start).
fn node_metas(trace: &Trace, placement: &Placement, histogram: &TopologyHistogram) -> Vec<Meta> {
    let topology = &histogram.topologies[placement.topology];
    let start = trace.start();
    placement
        .spans
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let span = &trace.spans[i];
            let base = topology.parents[k].map_or(start, |p| trace.spans[placement.spans[p as usize]].start);
            Meta {
                gap_us: (span.start as f64 - base as f64) / 1e3,
                duration_us: us(span.duration()),
                status: span.status.code,
                kind: span.kind,
            }
        })
        .collect()
}

/// Label pairs (parent, child) whose every child lay inside its parent.
fn nested_pairs(traces: &[Trace], placements: &[Placement], histogram: &TopologyHistogram) -> Vec<(u32, u32)> {
    let mut inside: HashMap<(u32, u32), bool> = HashMap::new();
    for (trace, placement) in traces.iter().zip(placements) {
        let topology = &histogram.topologies[placement.topology];
        for (p, c) in topology.edges() {
            let (ps, cs) = (&trace.spans[placement.spans[p]], &trace.spans[placement.spans[c]]);
            let within = cs.start >= ps.start && cs.end <= ps.end;
            let entry = inside.entry((topology.labels[p], topology.labels[c])).or_insert(true);
            *entry &= within;
        }
    }
    let mut pairs: Vec<(u32, u32)> = inside.into_iter().filter(|(_, v)| *v).map(|(k, _)| k).collect();
    pairs.sort_unstable();
    pairs
}
