//! A window folded one trace at a time into what its model is trained and
//! checked on (issue 20), so a closed window never needs its spans whole and
//! the work per window stops growing with the window:
//!
//! - the exact topology histogram, and each trace's start and topology (the
//!   start counts);
//! - the *share*: a head sample of whole traces whose rate rises to stay
//!   within a span budget; the generators are fitted on it, and it is
//!   the window's head sample for the fallback and for estimating what head
//!   sampling costs;
//! - one trace of each topology the share misses, within another budget, so
//!   every node of the histogram has timing observations;
//! - apart, a sample to score the model against (not the traces it was
//!   fitted on): a head sample with a seed of its own, within
//!   [`CHECK_POOL`] times the scoring budget, thinned when the window closes
//!   to a stratified sample within the budget ([`crate::trace::stratified`]:
//!   each entry point, span count and minute keeps its share and its spread
//!   of lengths, so it and a regenerated sample differ far less than two
//!   random ones).
//!
//! - per time bucket and topology node, every trace's timing binned
//!   ([`TimeCells`]), so what happens minute by minute is read off all the
//!   window's traces, not only the share's;
//! - the timing alone ([`NodeTimes`], 16 bytes a span) of a head sample
//!   with the share's seed within [`DigestConfig::timing_spans`], by default
//!   [`TIMING_SPANS`]: the share's traces and more, on which the calibrated
//!   timing is fitted instead of on the share (the generators stay on the
//!   share);
//!
//! A window within the share's budget keeps every trace, in arrival order,
//! and trains exactly as on the whole window.
//!
//! The samples hold their traces packed ([`PackedTrace`], about a third of
//! the bytes) while the window fills, and unpack them when it closes.

use std::collections::HashMap;
use std::sync::Arc;

use super::cells::TimeCells;
use super::status::ErrorCounts;
use super::times::NodeTimes;
use super::topology::{HistogramBuilder, Placement, TopologyHistogram};
use crate::trace::{Names, PackedTrace, SpanView, Trace, TraceId, head_keeps};

/// How large the samples of a [`Digest`] may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestConfig {
    /// Most spans of the share (0: every trace).
    pub share_spans: usize,
    /// Seed of the share's head sampling: the fallback's, so the share is
    /// the window's head sample at whichever rate it reached.
    pub seed: u64,
    /// Most spans of the scoring sample (0: none is kept).
    pub check_spans: usize,
    /// Sets the scoring sample's phase within each stratum.
    pub check_seed: u64,
    /// Width of the time buckets every trace's timing is binned in
    /// ([`TimeCells`]; the timing's topology bucket), 0: none.
    pub cells_bucket_ns: u64,
    /// Most spans of the timing sample ([`NodeTimes`], head sampling with
    /// the share's seed; 0: none): only a window larger than its share
    /// keeps one.
    pub timing_spans: usize,
    /// Width of the time buckets failed spans are counted in per label
    /// ([`ErrorCounts`]; the timing's topology bucket), 0: not counted.
    pub status_bucket_ns: u64,
}

/// The timing sample's default budget: 8 MB of node times, twice a
/// default share's spans (`pipeline.train_spans`, 250,000). Fitting the
/// timing on it takes about 150 bytes a span while it runs: the soak's
/// compressor peaked at 740 MiB at 2 M spans and at 596 MiB at 1 M while a
/// window trained at the full span budget (BENCHMARKS.md, session 44).
pub const TIMING_SPANS: usize = 500_000;

/// Most distinct bins [`TimeCells`] hold (25–50 bytes each in the hash table): a window
/// with more goes without them.
const CELL_LIMIT: usize = 1 << 19;

/// What a [`HeadSample`] holds of a trace.
pub(super) trait Held {
    fn trace_id(&self) -> &TraceId;
    fn span_count(&self) -> usize;
}

/// A packed trace and what a sample keeps with it (shared with the other
/// samples that keep it).
impl<P> Held for (Arc<PackedTrace>, P) {
    fn trace_id(&self) -> &TraceId {
        &self.0.trace_id
    }
    fn span_count(&self) -> usize {
        self.0.span_count()
    }
}

/// A consistent head sample 1:`rate` (the traces whose id hash falls below
/// 2^64 / rate) whose rate rises by a quarter (at least 1) each time its
/// spans pass the budget. Raising the rate only drops traces, so the sample
/// is always exactly the head sample at its current rate, whatever order the
/// traces came in. Each trace is held with its arrival number.
#[derive(Debug)]
struct HeadSample<T> {
    budget: usize,
    seed: u64,
    rate: u64,
    spans: usize,
    traces: Vec<(u64, T)>,
}

impl<T: Held> HeadSample<T> {
    fn new(budget: usize, seed: u64) -> Self {
        HeadSample { budget, seed, rate: 1, spans: 0, traces: Vec::new() }
    }

    fn keeps(&self, trace_id: &TraceId) -> bool {
        head_keeps(trace_id, self.rate, self.seed)
    }

    /// Adds `trace` (which [`Self::keeps`]); raises the rate while over
    /// budget (never below one trace). Returns whether the rate rose.
    fn add(&mut self, arrival: u64, trace: T) -> bool {
        self.spans += trace.span_count();
        self.traces.push((arrival, trace));
        let rate = self.rate;
        while self.budget > 0 && self.spans > self.budget && self.traces.len() > 1 {
            self.rate = (self.rate + self.rate / 4).max(self.rate + 1);
            let (rate, seed) = (self.rate, self.seed);
            self.traces.retain(|(_, t)| head_keeps(t.trace_id(), rate, seed));
            self.spans = self.traces.iter().map(|(_, t)| t.span_count()).sum();
        }
        self.rate != rate
    }

    /// The traces in arrival order.
    fn into_traces(self) -> impl Iterator<Item = (u64, T)> {
        let mut traces = self.traces;
        traces.sort_unstable_by_key(|t| t.0);
        traces.into_iter()
    }
}

/// How many times the scoring budget the scoring pool may hold: the
/// stratified thinning at the close has that much room to balance strata
/// (at the defaults, 250,000 spans: a window within the share's budget is
/// thinned from all its traces). Tried at 2 (BENCHMARKS.md "Samples counted
/// once"): 110,000 spans of budget back on a large window, but an hour-sized
/// window was then head-sampled before the thinning, and its self-check
/// read 0.779 against 0.923 for the whole window (0.871 at 5).
const CHECK_POOL: usize = 5;

/// Thins the scoring pool (head sampling 1:q) to a stratified 1:j sample
/// within `budget` spans; returns the rate q·j and the traces in arrival order.
fn stratified_check(pool: HeadSample<(Arc<PackedTrace>, ())>, budget: usize, seed: u64) -> (u64, Vec<Trace>) {
    let q = pool.rate;
    let traces: Vec<Arc<PackedTrace>> = pool.into_traces().map(|(_, (t, ()))| t).collect();
    let spans: usize = traces.iter().map(|t| t.span_count()).sum();
    let j = spans.div_ceil(budget.max(1)).max(1) as u64;
    if j == 1 {
        return (q, traces.iter().map(|t| t.unpack()).collect());
    }
    // Keyed as `crate::trace::stratified` keys full traces.
    let keys: Vec<_> = traces.iter().map(|t| t.stratum()).collect();
    let thinned = crate::trace::systematic(&keys, j, seed).into_iter().map(|i| traces[i].unpack()).collect();
    (q.saturating_mul(j), thinned)
}

/// Which samples take a trace just counted, and where it landed.
struct Keep {
    arrival: u64,
    placement: Placement,
    to_check: bool,
    /// Its hash, when it becomes its topology's representative.
    rare: Option<u64>,
    to_share: bool,
}

/// A window being folded.
#[derive(Debug)]
pub struct Digest {
    config: DigestConfig,
    histogram: HistogramBuilder,
    starts: Vec<u64>,
    topologies: Vec<usize>,
    /// Each trace's first root's duration in microseconds (saturated).
    root_durations: Vec<u32>,
    window: Option<(u64, u64)>,
    spans: u64,
    share: HeadSample<(Arc<PackedTrace>, Placement)>,
    /// Per topology, the trace of lowest hash seen: (arrival, hash, trace,
    /// placement). The share keeps the traces of lowest hash too (same hash,
    /// same seed), so a topology the share covers has its representative in
    /// the share: only the others hold spans of their own.
    rare: HashMap<usize, (u64, u64, Arc<PackedTrace>, Placement)>,
    /// Spans of the representatives the share does not hold.
    rare_spans: usize,
    check: Option<HeadSample<(Arc<PackedTrace>, ())>>,
    /// Spans of the scoring pool the share does not hold.
    check_spans: usize,
    /// The names and attribute sets of the packed traces.
    names: Names,
    cells: Option<TimeCells>,
    times: Option<HeadSample<NodeTimes>>,
    errors: Option<ErrorCounts>,
}

impl Digest {
    pub fn new(config: DigestConfig) -> Self {
        Digest {
            config,
            histogram: HistogramBuilder::default(),
            starts: Vec::new(),
            topologies: Vec::new(),
            root_durations: Vec::new(),
            window: None,
            spans: 0,
            share: HeadSample::new(config.share_spans, config.seed),
            rare: HashMap::new(),
            rare_spans: 0,
            check_spans: 0,
            check: (config.check_spans > 0)
                .then(|| HeadSample::new(config.check_spans.saturating_mul(CHECK_POOL), config.check_seed)),
            names: Names::default(),
            cells: (config.cells_bucket_ns > 0).then(|| TimeCells::new(config.cells_bucket_ns, CELL_LIMIT)),
            times: (config.timing_spans > 0).then(|| HeadSample::new(config.timing_spans, config.seed)),
            errors: (config.status_bucket_ns > 0).then(|| ErrorCounts::new(config.status_bucket_ns)),
        }
    }

    /// Folds one assembled trace in; what no sample keeps is dropped.
    pub fn add(&mut self, trace: Trace) {
        if let Some(keep) = self.count(trace.trace_id, &trace.spans) {
            // Packed once; the samples share the copy.
            let packed = PackedTrace::pack(trace, &mut self.names);
            self.keep(keep, packed);
        }
    }

    /// [`Self::add`] for a trace assembled in compact form, as the window's
    /// fold hands them on: the samples keep it as it is.
    pub fn add_packed(&mut self, trace: PackedTrace) {
        if let Some(keep) = self.count(trace.trace_id, trace.spans()) {
            self.keep(keep, trace);
        }
    }

    /// Counts a trace into the histogram, the starts and the cells; returns
    /// which samples take it, if any.
    fn count<S: SpanView>(&mut self, id: TraceId, spans: &[S]) -> Option<Keep> {
        if spans.is_empty() {
            return None;
        }
        let arrival = self.starts.len() as u64;
        let placement = self.histogram.add_spans(spans);
        if let Some(cells) = &mut self.cells {
            cells.add(spans, &placement, self.histogram.histogram());
        }
        if let Some(times) = &mut self.times
            && times.keeps(&id)
        {
            times.add(arrival, NodeTimes::of(id, spans, &placement));
        }
        let (start, end) = (crate::trace::start_of(spans), crate::trace::end_of(spans));
        if let Some(errors) = &mut self.errors {
            errors.add(spans, &placement, &self.histogram.histogram().topologies[placement.topology], start);
        }
        self.window = Some(self.window.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
        self.starts.push(start);
        self.topologies.push(placement.topology);
        self.root_durations.push(root_duration_us(spans, &placement, self.histogram.histogram()));
        self.spans += spans.len() as u64;
        let to_check = self.check.as_ref().is_some_and(|c| c.keeps(&id));
        let rare = self.rare_room(&id, spans.len(), &placement);
        let to_share = self.share.keeps(&id);
        (to_check || rare.is_some() || to_share).then_some(Keep { arrival, placement, to_check, rare, to_share })
    }

    /// Adds a trace to the samples [`Self::count`] chose.
    fn keep(&mut self, keep: Keep, packed: PackedTrace) {
        let Keep { arrival, placement, to_check, rare, to_share } = keep;
        let id = packed.trace_id;
        let spans = packed.span_count();
        let packed = Arc::new(packed);
        let rare = rare.map(|hash| (hash, placement.clone()));
        if to_share && self.share.add(arrival, (packed.clone(), placement)) {
            self.recount();
        }
        let in_share = self.share.keeps(&id);
        if let Some((hash, placement)) = rare {
            let held = (arrival, hash, packed.clone(), placement);
            if let Some(old) = self.rare.insert(held.3.topology, held)
                && !self.share.keeps(&old.2.trace_id)
            {
                self.rare_spans -= old.2.span_count();
            }
            if !in_share {
                self.rare_spans += spans;
            }
        }
        if to_check && let Some(check) = &mut self.check {
            if check.add(arrival, (packed, ())) {
                self.recount();
            } else if !in_share {
                self.check_spans += spans;
            }
        }
        self.evict_rare();
    }

    /// Counts again the spans of the representatives and the scoring pool
    /// the share does not hold (after a sample's rate rose).
    fn recount(&mut self) {
        let outside = |t: &PackedTrace| if self.share.keeps(&t.trace_id) { 0 } else { t.span_count() };
        self.rare_spans = self.rare.values().map(|r| outside(&r.2)).sum();
        self.check_spans = self.check.as_ref().map_or(0, |c| c.traces.iter().map(|(_, (t, ()))| outside(t)).sum());
    }

    /// Drops representatives the share no longer holds, highest hash first,
    /// while they are over their budget: the share's rate rising can leave
    /// more of them outside it than the budget allows.
    fn evict_rare(&mut self) {
        if self.rare_spans <= self.config.share_spans {
            return;
        }
        let mut outside: Vec<(u64, usize, usize)> = (self.rare.iter())
            .filter(|(_, r)| !self.share.keeps(&r.2.trace_id))
            .map(|(&topology, r)| (r.1, topology, r.2.span_count()))
            .collect();
        outside.sort_unstable();
        while self.rare_spans > self.config.share_spans
            && let Some((_, topology, spans)) = outside.pop()
        {
            self.rare.remove(&topology);
            self.rare_spans -= spans;
        }
    }

    /// Whether `trace` becomes its topology's representative (its hash is the
    /// lowest of the topology's so far and the representatives the share
    /// does not hold stay within the budget): its hash.
    fn rare_room(&self, id: &TraceId, spans: usize, placement: &Placement) -> Option<u64> {
        if self.config.share_spans == 0 {
            return None;
        }
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(id, self.config.seed);
        let freed = match self.rare.get(&placement.topology) {
            Some(held) if hash >= held.1 => return None,
            Some(held) if !self.share.keeps(&held.2.trace_id) => held.2.span_count(),
            _ => 0,
        };
        let added = if self.share.keeps(id) { 0 } else { spans };
        (self.rare_spans - freed + added <= self.config.share_spans).then_some(hash)
    }

    /// Spans folded so far.
    pub fn spans(&self) -> u64 {
        self.spans
    }

    /// Spans the samples hold now, each trace the share holds counted once
    /// (the samples share one copy); a representative also in the scoring
    /// pool is counted twice.
    pub fn held_spans(&self) -> usize {
        self.share.spans + self.rare_spans + self.check_spans
    }

    pub fn finish(mut self) -> WindowDigest {
        let (window_start, window_end) = self.window.unwrap_or((0, 1));
        // Thinned first, so only the kept scoring traces are unpacked.
        let check = self.check.map(|pool| stratified_check(pool, self.config.check_spans, self.config.check_seed));
        let share_rate = self.share.rate;
        let mut fitted: Vec<(u64, Arc<PackedTrace>, Placement)> = self.share.into_traces().map(|(a, (t, p))| (a, t, p)).collect();
        let shared = fitted.len();
        if share_rate > 1 {
            // Topologies the share missed, in arrival order after it.
            let mut covered = vec![false; self.histogram.histogram().topologies.len()];
            for (_, _, p) in &fitted {
                covered[p.topology] = true;
            }
            let mut rare: Vec<(u64, Arc<PackedTrace>, Placement)> = std::mem::take(&mut self.rare)
                .into_values()
                .filter(|r| !covered[r.3.topology])
                .map(|(a, _, t, p)| (a, t, p))
                .collect();
            rare.sort_unstable_by_key(|r| r.0);
            fitted.extend(rare);
        }
        self.rare.clear();
        let (fitted, placements): (Vec<Trace>, Vec<Placement>) = fitted.into_iter().map(|(_, t, p)| (t.unpack(), p)).unzip();
        // The share holds every trace of a window within its budget.
        let cells = self.cells.filter(|c| share_rate > 1 && !c.overflowed());
        // Same seed: a timing sample at the share's rate or above is within the share.
        let times = (self.times.filter(|t| t.rate < share_rate)).map(|t| {
            let rate = t.rate;
            let mut times: Vec<NodeTimes> = t.into_traces().map(|(_, n)| n).collect();
            // It holds the share; the topologies the share missed are added.
            let missed = fitted[shared..].iter().zip(&placements[shared..]);
            let missed = missed.filter(|(t, _)| !head_keeps(&t.trace_id, rate, self.config.seed));
            times.extend(missed.map(|(t, p)| NodeTimes::of(t.trace_id, &t.spans, p)));
            times
        });
        WindowDigest {
            histogram: self.histogram.finish(),
            starts: self.starts,
            topologies: self.topologies,
            root_durations: self.root_durations,
            window_start,
            window_end: window_end.max(window_start + 1),
            spans: self.spans,
            seed: self.config.seed,
            check_seed: self.config.check_seed,
            share_rate,
            shared,
            fitted,
            placements,
            check,
            cells,
            times,
            errors: self.errors,
        }
    }
}

/// The duration of the first root of `spans`' topology, in microseconds.
fn root_duration_us<S: SpanView>(spans: &[S], placement: &Placement, histogram: &TopologyHistogram) -> u32 {
    let topology = &histogram.topologies[placement.topology];
    let root = topology.roots().next().and_then(|r| placement.spans.get(r)).and_then(|&i| spans.get(i));
    root.map_or(0, |s| (s.end_ns().saturating_sub(s.start_ns()) / 1_000).min(u64::from(u32::MAX)) as u32)
}

/// A folded window: what a model is trained and checked on.
#[derive(Debug)]
pub struct WindowDigest {
    pub histogram: TopologyHistogram,
    /// Each trace's start and topology, in arrival order.
    pub starts: Vec<u64>,
    pub topologies: Vec<usize>,
    /// Each trace's first root's duration in microseconds, in arrival order.
    pub root_durations: Vec<u32>,
    pub window_start: u64,
    pub window_end: u64,
    pub spans: u64,
    /// Seed of the share's head sampling.
    pub seed: u64,
    /// Seed of the scoring sample: also the phase of its stratified thinning.
    pub check_seed: u64,
    /// The share is head sampling 1:`share_rate` (1: every trace).
    pub share_rate: u64,
    /// How many of `fitted`, from the front, are the share; the rest are
    /// the topologies it missed.
    pub shared: usize,
    /// The traces timing and generators are fitted on, with their
    /// placements in `histogram`: every trace, in arrival order, when
    /// `share_rate` is 1.
    pub fitted: Vec<Trace>,
    pub placements: Vec<Placement>,
    /// The scoring sample: its rate 1:k and its traces in arrival order
    /// (None when not asked for).
    pub check: Option<(u64, Vec<Trace>)>,
    /// Every trace's timing binned per time bucket and node: only for a
    /// window larger than its share, when asked for and within its limit.
    pub cells: Option<TimeCells>,
    /// The timing of a head sample of the window within `timing_spans`
    /// ([`NodeTimes`]), then of the topologies it missed: only for a window
    /// larger than its share, when asked for and when it holds more traces
    /// than the share.
    pub times: Option<Vec<NodeTimes>>,
    /// Every trace's failed spans per label and time bucket, when asked for.
    pub errors: Option<ErrorCounts>,
}

impl WindowDigest {
    /// Folds `traces` (one window) in order.
    pub fn of(traces: impl IntoIterator<Item = Trace>, config: DigestConfig) -> Self {
        let mut digest = Digest::new(config);
        for trace in traces {
            digest.add(trace);
        }
        digest.finish()
    }

    pub fn traces(&self) -> usize {
        self.starts.len()
    }

    /// What timing is fitted on: the timing sample, else the fitted traces.
    pub fn timed(&self) -> std::borrow::Cow<'_, [NodeTimes]> {
        match &self.times {
            Some(times) => std::borrow::Cow::Borrowed(times),
            None => (self.fitted.iter().zip(&self.placements)).map(|(t, p)| NodeTimes::of(t.trace_id, &t.spans, p)).collect(),
        }
    }

    /// Spans the digest holds (fitted and scoring traces).
    pub fn held_spans(&self) -> usize {
        let check = self.check.as_ref().map_or(0, |(_, t)| t.iter().map(|t| t.spans.len()).sum());
        self.fitted.iter().map(|t| t.spans.len()).sum::<usize>() + check
    }

    /// Whether `fitted` is the whole window, in arrival order.
    pub fn whole(&self) -> bool {
        self.share_rate == 1
    }

    /// The share: a head sample 1:`share_rate` of the window.
    pub fn share(&self) -> &[Trace] {
        &self.fitted[..self.shared]
    }

    /// The window's head sample 1:max(`n`, share rate) (the share's seed),
    /// with that rate.
    pub fn head_sample(&self, n: u64) -> (u64, Vec<&Trace>) {
        let rate = n.max(self.share_rate);
        (rate, self.share().iter().filter(|t| head_keeps(&t.trace_id, rate, self.seed)).collect())
    }

    /// What head sampling 1:`rate` of the window ships as gzip OTLP protobuf
    /// ([`super::model::head_gzip_bytes`]): exact for a whole window,
    /// estimated from the share otherwise.
    pub fn head_gzip_bytes(&self, rate: u64) -> f64 {
        super::model::head_gzip_bytes_from(self.share(), (self.share_rate, self.seed), rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::test_span;

    /// Trace `n` (its id from `n`), whose root has `children` children.
    fn trace(n: u32, children: u8) -> Trace {
        let start = u64::from(n) * 1000;
        let mut spans = vec![test_span(0, 0, None, start, start + 100)];
        spans.extend((1..=children).map(|c| test_span(0, c, Some(0), start + 1, start + 50)));
        let mut trace_id = [0; 16];
        trace_id[..4].copy_from_slice(&n.to_le_bytes());
        for s in &mut spans {
            s.trace_id = trace_id;
        }
        Trace { trace_id, spans }
    }

    /// 1,000 traces of one topology, 30 of another, 2 and 1 of two rare ones.
    fn window() -> Vec<Trace> {
        let counts = [(1u8, 1000u32), (2, 30), (3, 2), (4, 1)];
        let mut n = 0;
        let mut traces = Vec::new();
        for (children, count) in counts {
            for _ in 0..count {
                traces.push(trace(n, children));
                n += 1;
            }
        }
        traces
    }

    fn config(share_spans: usize) -> DigestConfig {
        DigestConfig {
            share_spans,
            seed: 7,
            check_spans: 300,
            check_seed: 8,
            cells_bucket_ns: 0,
            timing_spans: 0,
            status_bucket_ns: 0,
        }
    }

    #[test]
    fn every_trace_is_binned_only_for_a_window_larger_than_its_share() {
        let traces = window();
        let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
        let binned = |budget: usize| DigestConfig { cells_bucket_ns: 10_000, ..config(budget) };
        assert!(WindowDigest::of(traces.clone(), binned(spans)).cells.is_none(), "the share is the whole window");
        let d = WindowDigest::of(traces.clone(), binned(300));
        let cells = d.cells.as_ref().expect("bins of every trace");
        // Every span's lead is binned once, whichever sample kept its trace.
        let leads: u64 =
            cells.bins().filter(|b| b.quantity == super::super::cells::Quantity::Lead).map(|b| u64::from(b.count)).sum();
        assert_eq!(leads, spans as u64);
        assert!(WindowDigest::of(traces, config(300)).cells.is_none(), "not asked for");
    }

    #[test]
    fn a_larger_window_times_a_head_sample_that_holds_the_share_and_more() {
        let traces = window();
        let timed =
            |share: usize, times: usize| WindowDigest::of(traces.clone(), DigestConfig { timing_spans: times, ..config(share) });
        let d = timed(300, 1_500);
        let times = d.times.as_ref().expect("a timing sample");
        let spans: usize = times.iter().map(|t| t.times.len()).sum();
        let fitted: usize = d.fitted.iter().map(|t| t.spans.len()).sum();
        assert!((1_000..=1_500 + fitted).contains(&spans), "{spans} timed spans");
        // A head sample with the share's seed, then the topologies it missed: every fitted
        // trace (the share and those topologies) is timed as placed, once.
        let ids: std::collections::HashSet<TraceId> = times.iter().map(|t| t.trace_id).collect();
        assert_eq!(ids.len(), times.len());
        for (trace, placement) in d.fitted.iter().zip(&d.placements) {
            let timed = times.iter().find(|t| t.trace_id == trace.trace_id).expect("every fitted trace is timed");
            assert_eq!(*timed, NodeTimes::of(trace.trace_id, &trace.spans, placement));
        }
        assert!(timed(0, 1_500).times.is_none(), "the share is the whole window");
        assert!(timed(300, 100).times.is_none(), "no more traces than the share");
        assert!(timed(300, 0).times.is_none(), "not asked for");
    }

    #[test]
    fn a_window_within_the_budget_is_kept_whole_in_arrival_order() {
        let traces = window();
        let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
        for budget in [0, spans] {
            let d = WindowDigest::of(traces.clone(), config(budget));
            assert!(d.whole());
            assert_eq!(d.fitted, traces);
            let (histogram, placements) = TopologyHistogram::build(&traces);
            assert_eq!((d.histogram, d.placements), (histogram, placements));
            assert_eq!(d.starts, traces.iter().map(Trace::start).collect::<Vec<_>>());
            assert_eq!((d.window_start, d.window_end), (0, 1_032_100));
            assert_eq!(d.spans, spans as u64);
        }
    }

    #[test]
    fn a_larger_window_keeps_exact_counts_a_head_sample_within_budget_and_every_topology() {
        let traces = window();
        let d = WindowDigest::of(traces.clone(), config(300));
        let (histogram, _) = TopologyHistogram::build(&traces);
        assert_eq!(d.histogram, histogram, "counts stay exact");
        assert_eq!(d.starts.len(), traces.len());
        assert!(d.share_rate > 1);
        let share_spans: usize = d.share().iter().map(|t| t.spans.len()).sum();
        assert!((100..=300).contains(&share_spans), "{share_spans} spans in the share");
        // The share is exactly the head sample at its rate, in arrival order.
        let expected: Vec<&Trace> = traces.iter().filter(|t| head_keeps(&t.trace_id, d.share_rate, 7)).collect();
        assert_eq!(d.share().iter().collect::<Vec<_>>(), expected);
        // Every topology has a fitted trace, the extra ones within another budget.
        for t in 0..4 {
            assert!(d.placements.iter().any(|p| p.topology == t), "topology {t} has no fitted trace");
        }
        let extra: usize = d.fitted[d.shared..].iter().map(|t| t.spans.len()).sum();
        assert!(extra <= 300);
        for (trace, placement) in d.fitted.iter().zip(&d.placements) {
            assert_eq!(
                TopologyHistogram::build(std::slice::from_ref(trace)).0.topologies[0],
                histogram.topologies[placement.topology]
            );
        }
        // Whatever the order the traces complete in, the same share.
        let reversed = WindowDigest::of(traces.iter().rev().cloned(), config(300));
        assert_eq!(reversed.share_rate, d.share_rate);
        let mut ids: Vec<_> = reversed.share().iter().map(|t| t.trace_id).collect();
        ids.sort_unstable();
        let mut expected_ids: Vec<_> = expected.iter().map(|t| t.trace_id).collect();
        expected_ids.sort_unstable();
        assert_eq!(ids, expected_ids);
        // The scoring sample: within its budget, every k-th of each stratum.
        let (rate, check) = d.check.as_ref().unwrap();
        assert!(*rate > 1 && !check.is_empty());
        assert!(check.iter().map(|t| t.spans.len()).sum::<usize>() <= 300);
        assert_ne!(check.iter().map(|t| t.trace_id).collect::<Vec<_>>(), expected_ids);
    }

    /// The spans the samples of `d` hold, each shared copy once, plus the
    /// representatives outside the share that the scoring pool holds too
    /// (counted twice by design); and the representatives' own spans.
    fn held_by_hand(d: &Digest) -> (usize, usize) {
        let mut seen = std::collections::HashSet::new();
        let mut held = 0;
        let share = d.share.traces.iter().map(|(_, (t, _))| t);
        let rare = d.rare.values().map(|r| &r.2);
        let check = d.check.iter().flat_map(|c| c.traces.iter().map(|(_, (t, ()))| t));
        for t in share.chain(rare).chain(check) {
            if seen.insert(Arc::as_ptr(t)) {
                held += t.span_count();
            }
        }
        let rare_outside: Vec<&Arc<PackedTrace>> =
            d.rare.values().map(|r| &r.2).filter(|t| !d.share.keeps(&t.trace_id)).collect();
        let twice: usize = (d.check.iter().flat_map(|c| c.traces.iter()))
            .filter(|(_, (t, ()))| rare_outside.iter().any(|r| Arc::ptr_eq(r, t)))
            .map(|(_, (t, ()))| t.span_count())
            .sum();
        (held + twice, rare_outside.iter().map(|t| t.span_count()).sum())
    }

    #[test]
    fn the_samples_count_each_trace_they_share_once_and_keep_the_representatives_within_budget() {
        // Many topologies (1 to 40 children), so representatives outside the share fill their budget.
        let traces: Vec<Trace> = (0..4000).map(|n| trace(n, (n % 40 + 1) as u8)).collect();
        for budget in [300, 2_000] {
            let mut d = Digest::new(config(budget));
            for t in &traces {
                d.add(t.clone());
                let (held, rare) = held_by_hand(&d);
                assert_eq!(d.held_spans(), held, "after {} traces", d.starts.len());
                assert_eq!(d.rare_spans, rare);
                assert!(rare <= budget, "representatives outside the share: {rare} spans");
            }
            assert!(d.share.rate > 1);
        }
        // A window within the share's budget: every trace held once.
        let mut d = Digest::new(config(0));
        traces[..100].iter().for_each(|t| d.add(t.clone()));
        let spans: usize = traces[..100].iter().map(|t| t.spans.len()).sum();
        assert_eq!(d.held_spans(), spans);
    }

    #[test]
    fn the_scoring_sample_of_a_window_within_its_pool_keeps_each_kind_and_minute_within_one_trace() {
        // 3 kinds of trace (0, 1, 2 children) over 10 minutes, 40 of each kind a minute.
        let minute = 60_000_000_000;
        let traces: Vec<Trace> = (0..1200u32)
            .map(|i| {
                let mut t = trace(i, (i % 3) as u8);
                let shift = u64::from((i / 3) % 10) * minute;
                for s in &mut t.spans {
                    (s.start, s.end) = (s.start + shift, s.end + shift);
                }
                t
            })
            .collect();
        let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
        // The pool holds the whole window; the sample is within a half of it.
        let budget = spans / CHECK_POOL;
        let d = WindowDigest::of(
            traces,
            DigestConfig {
                share_spans: 0,
                seed: 1,
                check_spans: budget,
                check_seed: 3,
                cells_bucket_ns: 0,
                timing_spans: 0,
                status_bucket_ns: 0,
            },
        );
        let (rate, check) = d.check.unwrap();
        assert_eq!(rate, CHECK_POOL as u64);
        assert_eq!(check.len(), 1200 / CHECK_POOL);
        let mut cells = HashMap::new();
        for t in &check {
            *cells.entry((t.spans.len(), t.start() / minute)).or_insert(0) += 1;
        }
        assert_eq!(cells.len(), 30, "every kind in every minute");
        assert!(cells.values().all(|&c| c == 40 / CHECK_POOL), "{cells:?}");
    }

    #[test]
    fn the_head_sampling_bytes_of_a_share_are_near_those_of_the_whole_window() {
        let traces: Vec<Trace> = (0..20_000).map(|n| trace(n, (n % 5) as u8)).collect();
        let exact = super::super::model::head_gzip_bytes(&traces, 100);
        let d = WindowDigest::of(traces, config(6_000));
        assert!(d.share_rate >= 6, "rate {}", d.share_rate);
        let estimate = d.head_gzip_bytes(100);
        assert!((estimate / exact - 1.0).abs() < 0.25, "estimate {estimate:.0} against exact {exact:.0}");
        let (rate, kept) = d.head_sample(10);
        assert_eq!(rate, d.share_rate.max(10));
        assert!(kept.iter().all(|t| head_keeps(&t.trace_id, rate, 7)));
    }
}
