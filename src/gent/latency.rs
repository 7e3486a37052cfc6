//! Which minutes held an entry's slow traces.
//!
//! The calibrated timing ([`super::timing`]) gives every label its measured
//! distribution, but per trace it draws *how slow* from a copula and knows
//! *when* only through time effects and bursts, which a Chernoff bound keeps
//! to cells that departed strongly. A latency alarm, or a latency heatmap,
//! reads something else: per minute, how many of an entry's traces were
//! slower than its usual p90. With about fifty traces a minute and a
//! handful above the p90, a minute's count from independent draws is noise
//! (on TrainTicket hour 12 the latency alarm scored 0.70 over three seeds,
//! hour 16 0.53; an independent half of the same hour scores 0.73 and
//! 0.41).
//!
//! So the packet carries, per entry service (the service of a trace's root)
//! and time bucket, how many of its traces' root durations exceed the
//! window's 50th, 90th and 99th percentiles: a latency heatmap in four
//! bands, three varints a minute. After the traces are timed, whole-trace
//! timings are exchanged between traces of the same topology so that each
//! (entry, bucket) holds its traces of each band. A trace keeps its
//! topology and start, so counts per minute, every label's distribution,
//! nesting, self time and a call's share of its caller are untouched; only
//! which minute a trace's timing lands in changes.

use std::collections::{BTreeMap, HashMap};

use super::topology::TopologyHistogram;

/// The root-duration quantiles that cut an entry's traces into bands.
pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
const CUTS: usize = QUANTILES.len();
const BANDS: usize = CUTS + 1;

/// How far, in buckets, a timing may move: an hour of minutes. It bounds the
/// search of a long window (a day of minutes would be 1,440 cells a trace),
/// and a timing carries its own minute's time effects.
const MAX_MOVE: u64 = 60;

/// Most (entry, bucket) cells a model holds: a bucket a minute for a week,
/// per entry, far beyond a window.
const MAX_CELLS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LatencyError {
    #[error("latency bands: {0}")]
    Inconsistent(String),
}

/// One entry service's bands.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntryBands {
    /// A root label of the entry; its service names the entry.
    pub label: u32,
    /// Root durations at [`QUANTILES`], in microseconds, non-decreasing.
    pub thresholds: [u64; CUTS],
    /// Per time bucket with a trace above the first threshold: the buckets
    /// since the previous such bucket (since the model's first bucket for
    /// the first), then how many of the entry's traces starting in it last
    /// longer than each threshold (non-increasing).
    pub cells: Vec<(u32, [u32; CUTS])>,
}

/// What a window's latency per minute keeps ([`fit`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyBands {
    /// Per entry service, its traces in each band per bucket.
    pub entries: Vec<EntryBands>,
}

impl LatencyBands {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Root durations of a trace: its topology, start and its first root's
/// duration, as the fold counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub topology: usize,
    pub start: u64,
    pub duration_us: u32,
}

/// Each topology's entry: the service of its first root.
fn entry_services<'a>(histogram: &'a TopologyHistogram) -> Vec<Option<&'a str>> {
    (histogram.topologies.iter())
        .map(|t| t.roots().next().and_then(|r| histogram.labels.get(t.labels[r] as usize)).map(|l| l.service.as_str()))
        .collect()
}

/// The bands of every entry of a window from its traces' roots, read once
/// (`first_bucket`: its first time bucket, `bucket_ns` wide).
pub fn fit(
    roots: impl IntoIterator<Item = Root>,
    histogram: &TopologyHistogram,
    bucket_ns: u64,
    first_bucket: u64,
) -> Vec<EntryBands> {
    let services = entry_services(histogram);
    let bucket_ns = bucket_ns.max(1);
    // Per entry service: its first root label and its traces' (bucket, duration).
    let mut entries: Vec<(u32, Vec<(u64, u32)>)> = Vec::new();
    let mut by_service: HashMap<&str, usize> = HashMap::new();
    for r in roots {
        let Some(Some(service)) = services.get(r.topology) else { continue };
        let t = &histogram.topologies[r.topology];
        let at = *by_service.entry(service).or_insert_with(|| {
            let label = t.roots().next().map_or(0, |n| t.labels[n]);
            entries.push((label, Vec::new()));
            entries.len() - 1
        });
        entries[at].1.push(((r.start / bucket_ns).saturating_sub(first_bucket), r.duration_us));
    }
    entries.into_iter().map(|(label, traces)| entry(label, traces)).collect()
}

fn entry(label: u32, mut traces: Vec<(u64, u32)>) -> EntryBands {
    let mut durations: Vec<u32> = traces.iter().map(|t| t.1).collect();
    durations.sort_unstable();
    // The value at rank ⌊q·n⌋, as an operator's "slower than the p90" reads it.
    let thresholds = QUANTILES.map(|q| u64::from(durations[((q * durations.len() as f64) as usize).min(durations.len() - 1)]));
    traces.sort_unstable();
    let mut cells: Vec<(u64, [u32; CUTS])> = Vec::new();
    for (bucket, d) in traces {
        let above = thresholds.map(|t| u32::from(u64::from(d) > t));
        if above[0] == 0 {
            continue;
        }
        match cells.last_mut() {
            Some((b, counts)) if *b == bucket => counts.iter_mut().zip(above).for_each(|(c, a)| *c += a),
            _ => cells.push((bucket, above)),
        }
    }
    let mut previous = 0;
    let cells = (cells.into_iter())
        .map(|(bucket, counts)| {
            let delta = (bucket - previous).min(u64::from(u32::MAX)) as u32;
            previous = bucket;
            (delta, counts)
        })
        .collect();
    EntryBands { label, thresholds, cells }
}

/// Checks decoded bands against the histogram they were fitted with.
pub fn validate(latency: &LatencyBands, histogram: &TopologyHistogram) -> Result<(), LatencyError> {
    let bad = |what: &str| Err(LatencyError::Inconsistent(what.into()));
    let bands = &latency.entries;
    if bands.len() > histogram.labels.len() {
        return bad("more entries than labels");
    }
    if bands.iter().map(|e| e.cells.len()).sum::<usize>() > MAX_CELLS {
        return bad("too many cells");
    }
    for e in bands {
        if e.label as usize >= histogram.labels.len() {
            return bad("an entry's label is out of range");
        }
        if e.thresholds.windows(2).any(|w| w[0] > w[1]) {
            return bad("thresholds out of order");
        }
        if e.cells.iter().any(|(_, c)| c.windows(2).any(|w| w[0] < w[1])) {
            return bad("a cell's counts increase with the threshold");
        }
        if e.cells.iter().enumerate().any(|(i, (delta, _))| i > 0 && *delta == 0) {
            return bad("two cells of one bucket");
        }
    }
    Ok(())
}

/// The regenerated traces the latency bands are brought to: possibly a part
/// of the window, whose targets are then scaled to it.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The window's (start, end), Unix nanoseconds.
    pub window: (u64, u64),
    /// The bands' time bucket and the window's first, as the timing model's.
    pub bucket: (u64, u64),
    /// Each trace's topology.
    pub order: &'a [usize],
    /// Each trace's start.
    pub starts: &'a [u64],
    /// Traces per (entry, bucket) of the whole regenerated window.
    pub totals: &'a HashMap<(usize, u64), u32>,
}

impl Part<'_> {
    /// The (entry, bucket) of trace `i`, if its topology has an entry with bands.
    fn cell(&self, targets: &Targets, i: usize) -> Option<(usize, u64)> {
        let e = targets.entry_of.get(self.order[i]).copied().flatten()?;
        Some((e, (self.starts[i] / self.bucket.0.max(1)).saturating_sub(self.bucket.1)))
    }

    /// The whole window's traces in `cell`, of which this part holds `n`.
    fn total(&self, cell: (usize, u64), n: u32) -> u32 {
        self.totals.get(&cell).copied().unwrap_or(n).max(n)
    }
}

/// Exchanges whole-trace timings between traces of the same topology so
/// that each (entry, bucket) holds as many traces of each band as the bands
/// say. `times` are the traces' (start, end) per node. Returns how many
/// traces got another's timing.
pub fn arrange(latency: &LatencyBands, histogram: &TopologyHistogram, part: &Part, times: &mut [Vec<(u64, u64)>]) -> usize {
    let assignment = assign(latency, histogram, part, times);
    let moved = assignment.iter().filter(|(slot, source)| slot != source).count();
    let mut taken: Vec<Option<Vec<(u64, u64)>>> = times.iter_mut().map(|t| Some(std::mem::take(t))).collect();
    for (slot, source) in assignment {
        let mut t = taken[source].take().unwrap_or_default();
        if slot != source {
            shift(&mut t, part.starts[slot], part.window);
        }
        times[slot] = t;
    }
    moved
}

/// Which trace's timing each trace of an entry gets under [`arrange`]:
/// (slot, source) pairs, every trace of an entry once on each side.
pub fn assign(
    latency: &LatencyBands,
    histogram: &TopologyHistogram,
    part: &Part,
    times: &[Vec<(u64, u64)>],
) -> Vec<(usize, usize)> {
    let Part { order, .. } = *part;
    let targets = Targets::new(latency, histogram);
    // Each trace's cell and band; traces of no entry stay as they are.
    let cell_of = |i: usize| part.cell(&targets, i);
    let band_of = |i: usize, e: usize| {
        let first_root = histogram.topologies[order[i]].roots().next().unwrap_or(0);
        let (s, end) = times[i].get(first_root).copied().unwrap_or((0, 0));
        let us = end.saturating_sub(s) / 1_000;
        latency.entries[e].thresholds.iter().filter(|&&t| us > t).count()
    };
    let mut subset: HashMap<(usize, u64), u32> = HashMap::new();
    for i in 0..order.len() {
        if let Some(c) = cell_of(i) {
            *subset.entry(c).or_default() += 1;
        }
    }
    let mut room = Room::new(&targets, &subset, part);
    // Slowest first, each trace's timing stays in its cell while the cell
    // has room for its band, else goes to the cell with the most room for
    // it among those with a trace of its topology not yet given a timing.
    let mut movers: Vec<(usize, usize, (usize, u64))> =
        (0..order.len()).filter_map(|i| cell_of(i).map(|cell| (band_of(i, cell.0), i, cell))).collect();
    movers.sort_unstable_by_key(|&(band, i, _)| (std::cmp::Reverse(band), i));
    let mut slots = Slots::new(movers.iter().map(|&(_, i, cell)| (order[i], cell, i)));
    let mut assignment: Vec<(usize, usize)> = Vec::with_capacity(movers.len());
    for &(band, source, own) in &movers {
        let t = order[source];
        let cell = if slots.free(t, own) && room.left(own, band) >= 0.5 {
            own
        } else {
            let candidates = slots.near(t, own);
            // On a tie the nearest minute: a trace's timing carries its
            // minute's time effects and bursts.
            let near = |c: &(usize, u64)| std::cmp::Reverse(c.1.abs_diff(own.1));
            let best =
                candidates.max_by(|a, b| room.left(*a, band).total_cmp(&room.left(*b, band)).then_with(|| near(a).cmp(&near(b))));
            // Every free slot of the topology may lie farther away: the nearest.
            best.or_else(|| slots.nearest(t, own)).expect("a trace not yet placed leaves a free slot of its topology")
        };
        room.take(cell, band);
        assignment.push((slots.take(t, cell, (cell == own).then_some(source)), source));
    }
    assignment
}

/// Most a trace's timing is stretched or shrunk to cross a cut: under the
/// tenth by which a span's duration counts as changed.
const MAX_STRETCH: f64 = 1.099;

/// Brings the count of traces above each cut to what the bands say (scaled
/// to this part of the window), per entry (`by_bucket` false, before
/// [`arrange`] places the traces) or per entry and bucket (true, after it):
/// composed bottom-up, a window's root durations need not cross the p90 as
/// often as the real ones did (hour 16: 156 to 213 regenerated traces above
/// it, from seed to seed and build to build, against 183), and an alarm on
/// them then fires in too few minutes or too many; and a minute whose
/// topologies drew no slow timing to take cannot be given one by
/// exchanging. The traces nearest a cut on the wrong side are stretched (or
/// shrunk) whole, every span by the same factor, to just across it: nesting
/// and each call's share of its caller stay as they were. Only traces within
/// [`MAX_STRETCH`] of the cut are moved. Returns how many traces were.
pub fn calibrate(
    latency: &LatencyBands,
    histogram: &TopologyHistogram,
    part: &Part,
    by_bucket: bool,
    times: &mut [Vec<(u64, u64)>],
) -> usize {
    let Part { window, order, .. } = *part;
    let targets = Targets::new(latency, histogram);
    // Per group (entry, or entry and bucket): its traces, and per cell of
    // this part its traces, whose targets are scaled by them.
    let mut groups: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut subset: HashMap<(usize, u64), u32> = HashMap::new();
    for i in 0..order.len() {
        if let Some((e, b)) = part.cell(&targets, i) {
            groups.entry((e, if by_bucket { b } else { 0 })).or_default().push(i);
            *subset.entry((e, b)).or_default() += 1;
        }
    }
    let mut wanted: HashMap<(usize, u64), [f64; CUTS]> = HashMap::new();
    for (&(e, b), &n) in &subset {
        let total = part.total((e, b), n);
        let above = targets.above.get(&(e, b)).copied().unwrap_or([0; CUTS]);
        let w = wanted.entry((e, if by_bucket { b } else { 0 })).or_default();
        for (w, a) in w.iter_mut().zip(above) {
            *w += f64::from(a) * f64::from(n) / f64::from(total);
        }
    }
    let root_of = |i: usize| histogram.topologies[order[i]].roots().next().unwrap_or(0);
    let duration = |t: &[(u64, u64)], r: usize| t.get(r).map_or(0, |&(s, e)| e.saturating_sub(s));
    let mut moved = vec![false; order.len()];
    let mut keys: Vec<(usize, u64)> = groups.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let traces = groups.get_mut(&key).expect("a group of its own key");
        for (k, &cut_us) in latency.entries[key.0].thresholds.iter().enumerate() {
            let cut = cut_us.saturating_mul(1_000);
            // Slowest first: the first `want` should be above the cut.
            traces.sort_by_key(|&i| (std::cmp::Reverse(duration(&times[i], root_of(i))), i));
            let above = traces.iter().take_while(|&&i| duration(&times[i], root_of(i)) / 1_000 > cut_us).count();
            let want = (wanted[&key][k].round() as usize).min(traces.len());
            let (range, to) = if above < want {
                (above..want, cut + 1_000) // just above: a whole µs more
            } else {
                (want..above, cut) // at the cut, which is not above it
            };
            for &i in &traces[range] {
                let from = duration(&times[i], root_of(i));
                let factor = to as f64 / from.max(1) as f64;
                if !(1.0 / MAX_STRETCH..=MAX_STRETCH).contains(&factor) {
                    continue;
                }
                stretch(&mut times[i], factor, window);
                moved[i] = true;
            }
        }
    }
    moved.iter().filter(|&&m| m).count()
}

/// Every node's start and end from the trace's start times `factor`, then
/// moved earlier if the trace would end after the window.
fn stretch(times: &mut [(u64, u64)], factor: f64, window: (u64, u64)) {
    let first = times.iter().map(|t| t.0).min().unwrap_or(0);
    let at = |x: u64| first + ((x - first) as f64 * factor).round() as u64;
    for (s, e) in times.iter_mut() {
        (*s, *e) = (at(*s), at(*e));
    }
    shift(times, first, window);
}

/// What each (entry, bucket) still has room for: traces per band.
struct Room(HashMap<(usize, u64), [f64; BANDS]>);

impl Room {
    /// The targets scaled to the part of the window being arranged.
    fn new(targets: &Targets, subset: &HashMap<(usize, u64), u32>, part: &Part) -> Self {
        let scaled = subset.iter().map(|(&cell, &n)| {
            let total = part.total(cell, n);
            (cell, targets.bands(cell, total).map(|b| b * f64::from(n) / f64::from(total)))
        });
        Room(scaled.collect())
    }

    fn left(&self, cell: (usize, u64), band: usize) -> f64 {
        self.0[&cell][band]
    }

    fn take(&mut self, cell: (usize, u64), band: usize) {
        self.0.get_mut(&cell).expect("every cell counted")[band] -= 1.0;
    }
}

/// The traces of each (topology, cell) not yet given a timing. A topology's
/// traces share its entry, so its cells are its buckets.
struct Slots {
    /// Per topology: its entry, and per bucket its traces (a stack) and how
    /// many are still free.
    by_topology: HashMap<usize, (usize, BTreeMap<u64, (Vec<usize>, usize)>)>,
    given: Vec<bool>,
}

impl Slots {
    fn new(traces: impl Iterator<Item = (usize, (usize, u64), usize)>) -> Self {
        let mut by_topology: HashMap<usize, (usize, BTreeMap<u64, (Vec<usize>, usize)>)> = HashMap::new();
        let mut most = 0;
        for (t, (entry, bucket), i) in traces {
            most = most.max(i + 1);
            let (_, buckets) = by_topology.entry(t).or_insert_with(|| (entry, BTreeMap::new()));
            let (stack, n) = buckets.entry(bucket).or_default();
            stack.push(i);
            *n += 1;
        }
        Slots { by_topology, given: vec![false; most] }
    }

    /// The cells within [`MAX_MOVE`] buckets of `own` with a free trace of `t`.
    fn near(&self, t: usize, own: (usize, u64)) -> impl Iterator<Item = (usize, u64)> + '_ {
        let range = own.1.saturating_sub(MAX_MOVE)..=own.1.saturating_add(MAX_MOVE);
        let by = self.by_topology.get(&t);
        by.into_iter()
            .flat_map(move |(entry, buckets)| buckets.range(range.clone()).filter(|b| b.1.1 > 0).map(|b| (*entry, *b.0)))
    }

    /// The nearest cell with a free trace of `t`.
    fn nearest(&self, t: usize, own: (usize, u64)) -> Option<(usize, u64)> {
        let (entry, buckets) = self.by_topology.get(&t)?;
        let before = buckets.range(..=own.1).rev().find(|b| b.1.1 > 0).map(|b| *b.0);
        let after = buckets.range(own.1..).find(|b| b.1.1 > 0).map(|b| *b.0);
        let bucket = match (before, after) {
            (Some(b), Some(a)) => Some(if own.1 - b <= a - own.1 { b } else { a }),
            (b, a) => b.or(a),
        };
        bucket.map(|b| (*entry, b))
    }

    fn free(&self, t: usize, cell: (usize, u64)) -> bool {
        self.by_topology.get(&t).and_then(|(_, buckets)| buckets.get(&cell.1)).is_some_and(|(_, n)| *n > 0)
    }

    /// A free trace of `t` in `cell`: `own` (a trace of that cell) if it is free.
    fn take(&mut self, t: usize, cell: (usize, u64), own: Option<usize>) -> usize {
        let (_, buckets) = self.by_topology.get_mut(&t).expect("a topology with traces");
        let (stack, n) = buckets.get_mut(&cell.1).expect("a cell with a free trace");
        *n -= 1;
        let slot = if let Some(own) = own.filter(|&i| !self.given[i]) {
            own
        } else {
            loop {
                let i = stack.pop().expect("a free trace is left");
                if !self.given[i] {
                    break i;
                }
            }
        };
        self.given[slot] = true;
        slot
    }
}

/// Moves a trace's times to begin at `start`, earlier if it would end after the window.
fn shift(times: &mut [(u64, u64)], start: u64, window: (u64, u64)) {
    let (first, last) = times.iter().fold((u64::MAX, 0), |(f, l), &(s, e)| (f.min(s), l.max(e)));
    if first == u64::MAX {
        return;
    }
    let length = last - first;
    let start = start.min(window.1.saturating_sub(length)).max(window.0);
    for (s, e) in times.iter_mut() {
        *s = *s - first + start;
        *e = *e - first + start;
    }
}

/// The bands as targets: per topology its entry, per (entry, bucket) the
/// traces above each threshold.
struct Targets {
    entry_of: Vec<Option<usize>>,
    above: HashMap<(usize, u64), [u32; CUTS]>,
}

impl Targets {
    fn new(latency: &LatencyBands, histogram: &TopologyHistogram) -> Self {
        let services = entry_services(histogram);
        let index: HashMap<&str, usize> = (latency.entries.iter().enumerate())
            .filter_map(|(e, b)| histogram.labels.get(b.label as usize).map(|l| (l.service.as_str(), e)))
            .collect();
        let entry_of = services.iter().map(|s| s.and_then(|s| index.get(s).copied())).collect();
        let mut above = HashMap::new();
        for (e, b) in latency.entries.iter().enumerate() {
            let mut bucket = 0u64;
            for &(delta, counts) in &b.cells {
                bucket += u64::from(delta);
                above.insert((e, bucket), counts);
            }
        }
        Targets { entry_of, above }
    }

    /// Traces of each band in `cell`, of `total`.
    fn bands(&self, cell: (usize, u64), total: u32) -> [f64; BANDS] {
        let a = self.above.get(&cell).copied().unwrap_or([0; CUTS]);
        // Traces above each cut, from the cell's total down: a band holds
        // those above its lower cut and not above its upper one.
        let above = |k: usize| if k == 0 { total.max(a[0]) } else { a[k - 1] };
        std::array::from_fn(|k| f64::from(above(k) - if k < CUTS { a[k].min(above(k)) } else { 0 }))
    }
}

/// Traces per (entry, bucket) of a whole regenerated window.
pub fn totals(
    latency: &LatencyBands,
    histogram: &TopologyHistogram,
    bucket: (u64, u64),
    order: &[usize],
    starts: &[u64],
) -> HashMap<(usize, u64), u32> {
    let targets = Targets::new(latency, histogram);
    let mut out = HashMap::new();
    for (&t, &s) in order.iter().zip(starts) {
        if let Some(e) = targets.entry_of.get(t).copied().flatten() {
            *out.entry((e, (s / bucket.0.max(1)).saturating_sub(bucket.1))).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gent::topology::{Label, Topology};

    const MINUTE: u64 = 60_000_000_000;

    /// One single-span topology per service named.
    fn histogram(services: &[&str]) -> TopologyHistogram {
        TopologyHistogram {
            labels: services.iter().map(|s| Label { service: s.to_string(), name: "GET /".into() }).collect(),
            topologies: (0..services.len() as u32).map(|l| Topology { labels: vec![l], parents: vec![None] }).collect(),
            counts: vec![1; services.len()],
        }
    }

    #[test]
    fn fitting_counts_each_minutes_traces_above_each_cut() {
        let h = histogram(&["gateway", "batch"]);
        // Gateway: durations 1..=10 µs, the slowest four in minute 3.
        let mut roots: Vec<Root> =
            (1..=10u32).map(|d| Root { topology: 0, start: if d > 6 { 3 * MINUTE } else { 0 }, duration_us: d }).collect();
        roots.push(Root { topology: 1, start: 5 * MINUTE, duration_us: 7 });
        let bands = fit(roots, &h, MINUTE, 0);
        assert_eq!(bands.len(), 2);
        // Cut at rank ⌊q·n⌋: 6, 10, 10 µs; above 6: 7, 8, 9, 10.
        assert_eq!(bands[0].thresholds, [6, 10, 10]);
        assert_eq!(bands[0].cells, vec![(3, [4, 0, 0])]);
        // One trace is at every cut and above none.
        assert_eq!((bands[1].label, bands[1].cells.len()), (1, 0));
        assert!(validate(&LatencyBands { entries: bands }, &h).is_ok());
    }

    #[test]
    fn slow_timings_move_to_the_minutes_that_held_slow_traces_and_keep_their_shape() {
        let h = histogram(&["gateway"]);
        // Real: four slow traces (100 µs) in minute 1, the rest 1 µs.
        let real: Vec<Root> = (0..20u64)
            .map(|i| Root { topology: 0, start: (i / 10) * MINUTE, duration_us: if (16..20).contains(&i) { 100 } else { 1 } })
            .collect();
        let bands = LatencyBands { entries: fit(real, &h, MINUTE, 0) };
        // Regenerated: the slow timings landed in minute 0.
        let order = vec![0; 20];
        let starts: Vec<u64> = (0..20).map(|i| (i / 10) * MINUTE + i).collect();
        let mut times: Vec<Vec<(u64, u64)>> =
            starts.iter().enumerate().map(|(i, &s)| vec![(s, s + if i < 4 { 100_000 } else { 1_000 })]).collect();
        let totals = totals(&bands, &h, (MINUTE, 0), &order, &starts);
        let part = Part { window: (0, 2 * MINUTE), bucket: (MINUTE, 0), order: &order, starts: &starts, totals: &totals };
        let moved = arrange(&bands, &h, &part, &mut times);
        assert_eq!(moved, 8);
        for (i, t) in times.iter().enumerate() {
            // Every trace keeps its start; the slow ones are now in minute 1.
            assert_eq!(t[0].0, starts[i]);
            let slow = t[0].1 - t[0].0 == 100_000;
            assert_eq!(slow, starts[i] >= MINUTE && slow, "trace {i}");
        }
        assert_eq!(times.iter().filter(|t| t[0].1 - t[0].0 == 100_000).count(), 4);
        // Where the bands already hold, nothing moves.
        let again = arrange(&bands, &h, &part, &mut times);
        assert_eq!(again, 0);
    }

    #[test]
    fn traces_near_a_cut_are_stretched_across_it_whole_and_no_further() {
        // A two-span topology: a root and one call.
        let h = TopologyHistogram {
            labels: vec![
                Label { service: "gateway".into(), name: "GET /".into() },
                Label { service: "db".into(), name: "q".into() },
            ],
            topologies: vec![Topology { labels: vec![0, 1], parents: vec![None, Some(0)] }],
            counts: vec![1],
        };
        // Real: 20 traces a minute; in minute 0 four are slower than the
        // p50 cut (40 µs), in minute 1 two.
        let real: Vec<Root> = (0..40u64)
            .map(|i| Root {
                topology: 0,
                start: (i / 20) * MINUTE,
                duration_us: if [0, 1, 2, 3, 20, 21].contains(&i) { 50 } else { 40 },
            })
            .collect();
        let bands = LatencyBands { entries: fit(real, &h, MINUTE, 0) };
        assert_eq!(bands.entries[0].thresholds[0], 40);
        // Regenerated: minute 0 has three traces just under the cut (38 µs)
        // and one far under it (20 µs); minute 1 has four just over it (42 µs).
        let order = vec![0; 40];
        let starts: Vec<u64> = (0..40).map(|i| (i / 20) * MINUTE + i * 1_000_000).collect();
        let root_us = |i: u64| match i {
            0..=2 => 38,
            3 => 20,
            20..=23 => 42,
            _ => 10,
        };
        let mut times: Vec<Vec<(u64, u64)>> = (0..40u64)
            .map(|i| {
                let (s, d) = (starts[i as usize], root_us(i) * 1_000);
                vec![(s, s + d), (s + d / 4, s + d / 2)]
            })
            .collect();
        let totals = totals(&bands, &h, (MINUTE, 0), &order, &starts);
        let window = (0, 2 * MINUTE + 60_000_000_000);
        let moved = calibrate(
            &bands,
            &h,
            &Part { window, bucket: (MINUTE, 0), order: &order, starts: &starts, totals: &totals },
            true,
            &mut times,
        );
        // Three stretched up in minute 0 (the fourth is 50 % short: left
        // alone), two shrunk to the cut in minute 1.
        assert_eq!(moved, 5);
        let above = |range: std::ops::Range<usize>| times[range].iter().filter(|t| (t[0].1 - t[0].0) / 1_000 > 40).count();
        assert_eq!((above(0..20), above(20..40)), (3, 2));
        for (i, t) in times.iter().enumerate() {
            // Each trace keeps its start, its call inside it, and the call's share.
            assert_eq!(t[0].0, starts[i]);
            assert!(t[1].0 >= t[0].0 && t[1].1 <= t[0].1, "trace {i}");
            let share = (t[1].1 - t[1].0) as f64 / (t[0].1 - t[0].0) as f64;
            assert!((share - 0.25).abs() < 1e-3, "trace {i}: {share}");
        }
    }

    #[test]
    fn a_day_of_minutes_keeps_every_timing_and_start() {
        // 100,000 traces over 1,440 minutes; the real slow traces in the
        // first hour, the regenerated ones in the last: most slow timings
        // cannot reach their minutes within an hour's move.
        let h = histogram(&["gateway"]);
        let n = 100_000u64;
        let start = |i: u64| i * 1_440 / n * MINUTE + i % 1_000;
        let real: Vec<Root> = (0..n)
            .map(|i| Root { topology: 0, start: start(i), duration_us: if i < n / 24 && i % 3 == 0 { 500 } else { 5 } })
            .collect();
        let bands = LatencyBands { entries: fit(real, &h, MINUTE, 0) };
        let order = vec![0; n as usize];
        let starts: Vec<u64> = (0..n).map(start).collect();
        let length = |i: u64| if i > n - n / 24 && i % 3 == 0 { 500_000 } else { 5_000 };
        let mut times: Vec<Vec<(u64, u64)>> = (0..n).map(|i| vec![(start(i), start(i) + length(i))]).collect();
        let totals = totals(&bands, &h, (MINUTE, 0), &order, &starts);
        let window = (0, 1_441 * MINUTE);
        let moved = arrange(
            &bands,
            &h,
            &Part { window, bucket: (MINUTE, 0), order: &order, starts: &starts, totals: &totals },
            &mut times,
        );
        assert!(moved > 0);
        let mut lengths: Vec<u64> = times.iter().map(|t| t[0].1 - t[0].0).collect();
        let mut before: Vec<u64> = (0..n).map(length).collect();
        lengths.sort_unstable();
        before.sort_unstable();
        assert_eq!(lengths, before, "every timing is given to one trace");
        assert!(times.iter().zip(&starts).all(|(t, &s)| t[0].0 == s), "every trace keeps its start");
    }

    #[test]
    fn bands_that_do_not_fit_their_histogram_are_refused() {
        let h = histogram(&["gateway"]);
        let entry = |label, cells| EntryBands { label, thresholds: [1, 2, 3], cells };
        let check = |entries: Vec<EntryBands>| validate(&LatencyBands { entries }, &h);
        assert!(check(vec![entry(0, vec![(0, [3, 2, 1])])]).is_ok());
        assert!(check(vec![entry(1, vec![])]).is_err());
        assert!(check(vec![entry(0, vec![(0, [1, 2, 0])])]).is_err());
        assert!(check(vec![entry(0, vec![(2, [1, 0, 0]), (0, [1, 0, 0])])]).is_err());
        let unordered = EntryBands { thresholds: [3, 2, 1], ..entry(0, vec![]) };
        assert!(check(vec![unordered]).is_err());
    }
}
