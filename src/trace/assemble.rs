//! Loose spans in, repaired traces out. Every defect is either repaired or the
//! offending copy rejected, and each is counted by kind so `gent stats` and the
//! metrics can report it; nothing is dropped silently.

use serde::Serialize;

use super::open::{OpenSpan, PackedTrace};
use super::span::{Span, SpanId, SpanView, Trace, TraceId};

/// Input defects found while assembling traces, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Defects {
    /// Exact copies of a span already seen (same ids and fields): dropped.
    pub duplicate_spans: u64,
    /// A span id seen again with different fields: the later copy is rejected.
    pub conflicting_duplicates: u64,
    /// Parent links forming a cycle: broken by making one span a fragment root.
    pub cycles: u64,
    /// Spans ending before they start: repaired by setting end = start.
    pub end_before_start: u64,
}

impl Defects {
    pub fn add(&mut self, other: &Defects) {
        self.duplicate_spans += other.duplicate_spans;
        self.conflicting_duplicates += other.conflicting_duplicates;
        self.cycles += other.cycles;
        self.end_before_start += other.end_before_start;
    }
}

/// Assembled traces, ordered by start time, and the defects met on the way.
#[derive(Debug, Clone, Default)]
pub struct TraceSet {
    pub traces: Vec<Trace>,
    pub defects: Defects,
}

impl TraceSet {
    pub fn span_count(&self) -> usize {
        self.traces.iter().map(|t| t.spans.len()).sum()
    }
}

/// Groups spans by trace id, drops duplicates and repairs defects.
///
/// Among spans sharing a (trace id, span id) the first one in input order wins,
/// so the result does not depend on how the input was split into files.
pub fn assemble(mut spans: Vec<Span>) -> TraceSet {
    // A stable sort keeps input order among equal ids: the first copy comes first.
    spans.sort_by(|a, b| (a.trace_id, a.span_id).cmp(&(b.trace_id, b.span_id)));
    let mut defects = Defects::default();
    let mut traces = Vec::new();
    let mut current: Vec<Span> = Vec::new();
    for span in spans {
        if let Some(last) = current.last() {
            if last.trace_id != span.trace_id {
                traces.push(finished(std::mem::take(&mut current), &mut defects));
            } else if last.span_id == span.span_id {
                record_duplicate(span.trace_id, last, &span, &mut defects);
                continue;
            }
        }
        current.push(span);
    }
    if !current.is_empty() {
        traces.push(finished(current, &mut defects));
    }
    traces.sort_by_cached_key(|t| (t.start(), t.trace_id));
    TraceSet { traces, defects }
}

/// One trace's spans (unique by id, not empty), repaired.
fn finished(spans: Vec<Span>, defects: &mut Defects) -> Trace {
    let trace_id = spans[0].trace_id;
    Trace { trace_id, spans: finish_trace(trace_id, spans, defects) }
}

/// Like [`assemble`], for spans already grouped one trace per group (as a
/// window holds them): each group is repaired on its own, which avoids sorting
/// every span of a large window together.
pub fn assemble_grouped(groups: impl IntoIterator<Item = Vec<Span>>) -> TraceSet {
    let mut defects = Defects::default();
    let mut traces: Vec<Trace> = (groups.into_iter())
        .filter(|g| !g.is_empty())
        .map(|group| {
            debug_assert!(group.iter().all(|s| s.trace_id == group[0].trace_id));
            let trace_id = group[0].trace_id;
            Trace { trace_id, spans: repair(trace_id, group, &mut defects) }
        })
        .collect();
    traces.sort_by_cached_key(|t| (t.start(), t.trace_id));
    TraceSet { traces, defects }
}

/// [`assemble_grouped`] for a window's completed traces in the compact form
/// they were held in: repaired alike, and left compact (the fold reads them
/// so; only the few a sample keeps are ever made spans again).
pub fn assemble_open(groups: impl IntoIterator<Item = (TraceId, Vec<OpenSpan>)>) -> (Vec<PackedTrace>, Defects) {
    let mut defects = Defects::default();
    let mut traces: Vec<PackedTrace> = (groups.into_iter())
        .filter(|(_, g)| !g.is_empty())
        .map(|(trace_id, group)| PackedTrace::new(trace_id, repair(trace_id, group, &mut defects)))
        .collect();
    traces.sort_by_cached_key(|t| (t.start(), t.trace_id));
    (traces, defects)
}

/// A span as the repairs change it (full here, compact in `open`).
pub(super) trait Repairable: SpanView + PartialEq {
    fn set_end(&mut self, end: u64);
    fn clear_parent(&mut self);
}

impl Repairable for Span {
    fn set_end(&mut self, end: u64) {
        self.end = end;
    }
    fn clear_parent(&mut self) {
        self.parent_span_id = None;
    }
}

/// One trace's spans without duplicates, repaired and in order of start.
fn repair<S: Repairable>(trace_id: TraceId, mut group: Vec<S>, defects: &mut Defects) -> Vec<S> {
    // Cached keys: the (key, index) pairs are sorted and each span moved
    // once, where sorting the spans themselves moved ~200-byte structs
    // at every step (the fold thread's largest cost after the topology).
    group.sort_by_cached_key(|s| s.id());
    // In place: the first of each span id stays, the window is not copied.
    group.dedup_by(|later, kept| {
        let duplicate = later.id() == kept.id();
        if duplicate {
            record_duplicate(trace_id, kept, later, defects);
        }
        duplicate
    });
    // Traces that came in several requests grew by doubling: give the
    // slack back, as the window is held until its model is shipped.
    if group.capacity() > group.len() + group.len() / 4 {
        group.shrink_to_fit();
    }
    finish_trace(trace_id, group, defects)
}

fn record_duplicate<S: Repairable>(trace_id: TraceId, kept: &S, dropped: &S, defects: &mut Defects) {
    if kept == dropped {
        defects.duplicate_spans += 1;
    } else {
        defects.conflicting_duplicates += 1;
        tracing::debug!(
            trace_id = %hex::encode(trace_id),
            span_id = %hex::encode(dropped.id()),
            "conflicting duplicate span rejected: same ids, different fields"
        );
    }
}

/// Repairs one trace's spans, unique by id, and orders them by start.
fn finish_trace<S: Repairable>(trace_id: TraceId, mut spans: Vec<S>, defects: &mut Defects) -> Vec<S> {
    for span in spans.iter_mut().filter(|s| s.end_ns() < s.start_ns()) {
        let start = span.start_ns();
        span.set_end(start);
        defects.end_before_start += 1;
    }
    // Cycles are rare: a cheap walk rules them out before the full analysis.
    if has_cycle(&spans) {
        defects.cycles += break_cycles(trace_id, &mut spans);
    }
    spans.sort_by_cached_key(|s| (s.start_ns(), s.id()));
    spans
}

/// Each span's parent as an index into `spans` (None for roots and orphans).
/// Spans have unique ids here (duplicates are gone).
fn parent_indices<S: SpanView>(spans: &[S]) -> Vec<Option<usize>> {
    let mut ids: Vec<(SpanId, usize)> = spans.iter().enumerate().map(|(i, s)| (s.id(), i)).collect();
    ids.sort_unstable();
    spans
        .iter()
        .map(|s| {
            let p = s.parent_id()?;
            ids.binary_search_by_key(&p, |&(id, _)| id).ok().map(|k| ids[k].1)
        })
        .collect()
}

/// Walks parent links from every span, iteratively (a cycle may be millions
/// of spans long), calling `on_cycle` with the spans of each cycle the first
/// time a walk closes it. Each span has at most one parent, so a walk that
/// comes back to a span on its own path has found a simple cycle, and every
/// cycle is found exactly once. Linear in the number of spans.
fn walk_cycles(parents: &[Option<usize>], mut on_cycle: impl FnMut(&[usize])) {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; parents.len()];
    let mut position = vec![0usize; parents.len()];
    let mut path = Vec::new();
    for start in 0..parents.len() {
        let mut node = Some(start);
        while let Some(i) = node {
            match state[i] {
                2 => break,
                1 => {
                    on_cycle(&path[position[i]..]);
                    break;
                }
                _ => {
                    state[i] = 1;
                    position[i] = path.len();
                    path.push(i);
                    node = parents[i];
                }
            }
        }
        for i in path.drain(..) {
            state[i] = 2;
        }
    }
}

/// Whether following parent links from some span comes back to a span already
/// on the path.
fn has_cycle<S: SpanView>(spans: &[S]) -> bool {
    let mut found = false;
    walk_cycles(&parent_indices(spans), |_| found = true);
    found
}

/// Clears one parent link per parent cycle, which turns the spans back into
/// a forest. The span cut loose is the earliest of its cycle, the most
/// plausible true root.
fn break_cycles<S: Repairable>(trace_id: TraceId, spans: &mut [S]) -> u64 {
    let mut cuts = Vec::new();
    walk_cycles(&parent_indices(spans), |cycle| {
        cuts.push(*cycle.iter().min_by_key(|&&i| (spans[i].start_ns(), spans[i].id())).expect("a cycle is never empty"));
    });
    for &cut in &cuts {
        tracing::debug!(
            trace_id = %hex::encode(trace_id),
            span_id = %hex::encode(spans[cut].id()),
            "parent cycle broken: span made a fragment root"
        );
        spans[cut].clear_parent();
    }
    cuts.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::span::test_span as span;

    #[test]
    fn exact_duplicates_are_dropped_and_conflicts_rejected() {
        let mut conflicting = span(1, 2, Some(1), 5, 6);
        conflicting.name = "other".into();
        let set = assemble(vec![span(1, 1, None, 0, 10), span(1, 2, Some(1), 5, 6), span(1, 2, Some(1), 5, 6), conflicting]);
        assert_eq!(set.traces.len(), 1);
        assert_eq!(set.traces[0].spans.len(), 2);
        assert_eq!(set.traces[0].spans[1].name, "op", "the first copy wins");
        assert_eq!(set.defects.duplicate_spans, 1);
        assert_eq!(set.defects.conflicting_duplicates, 1);
    }

    #[test]
    fn cycles_are_broken_at_the_earliest_span() {
        let set = assemble(vec![
            span(1, 1, Some(3), 0, 10),
            span(1, 2, Some(1), 1, 9),
            span(1, 3, Some(2), 2, 8),
            span(1, 4, Some(4), 3, 4),
        ]);
        assert_eq!(set.defects.cycles, 2);
        let spans = &set.traces[0].spans;
        assert_eq!(spans[0].parent_span_id, None);
        assert_eq!(spans[1].parent_span_id, Some([1; 8]));
        assert_eq!(spans[3].parent_span_id, None, "a self-parent is a cycle of one");
    }

    #[test]
    fn a_cycle_of_200k_spans_is_broken_without_recursion() {
        // A recursive search (petgraph's Tarjan) overflowed the stack here and
        // aborted the process: one request could crash the compressor.
        let n = 200_000u32;
        let id = |k: u32| {
            let mut id = [0u8; 8];
            id[..4].copy_from_slice(&(k + 1).to_le_bytes());
            id
        };
        let spans = (0..n)
            .map(|k| Span {
                span_id: id(k),
                parent_span_id: Some(id((k + 1) % n)),
                ..span(1, 0, None, u64::from(k), u64::from(k) + 1)
            })
            .collect();
        let set = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || assemble(spans))
            .unwrap()
            .join()
            .expect("assembly must not overflow a small stack");
        assert_eq!(set.defects.cycles, 1);
        let roots: Vec<_> = set.traces[0].spans.iter().filter(|s| s.parent_span_id.is_none()).collect();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].span_id, id(0), "cut at the earliest span");
    }

    #[test]
    fn end_before_start_is_clamped_and_traces_ordered_by_start() {
        let set = assemble(vec![span(2, 1, None, 50, 40), span(1, 1, None, 100, 200)]);
        assert_eq!(set.defects.end_before_start, 1);
        assert_eq!(set.traces[0].trace_id, [2; 16]);
        assert_eq!(set.traces[0].spans[0].end, 50);
    }
}
