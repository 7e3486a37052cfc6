//! Groups spans by trace id into windows. A window closes when it has been open
//! for `duration`, or when it holds `max_traces` traces or `max_spans` spans
//! and another trace begins (guards of memory and of the decompressor's
//! limit). A trace is complete once no span of it arrived for
//! `trace_idle`, or when its window closes; completed traces leave at once
//! ([`WindowEvent::Completed`]) to be folded into the window's state, so the
//! assembler holds only traces still open. A span arriving for a completed
//! trace (in this window or the one closed before) goes to the next window and
//! counts as late.

// foldhash: randomly seeded per process, and several times faster than
// SipHash on 16-byte ids and short names; these maps are on every span's path.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::WindowConfig;
use super::budget::{Budget, Held};
use crate::metrics::Metrics;
use crate::trace::{Names, OpenSpan};
use crate::trace::{Span, TraceId};

/// Spans accepted by a receiver, with their share of the budget.
pub struct Batch {
    pub spans: Vec<Span>,
    pub held: Held,
}

/// What the assembler hands on, in order: the traces of the open window as
/// they complete, then the window's close with its last traces.
pub enum WindowEvent {
    Completed(Completed),
    Closed(RawWindow),
}

/// Traces of the open window completed since the last event: each trace's
/// spans in compact form, not yet repaired, with their share of the budget.
pub struct Completed {
    pub groups: Vec<(TraceId, Vec<OpenSpan>)>,
    pub held: Held,
}

/// A window's close as the assembler leaves it, with the traces that were
/// still open (grouped by trace, not yet repaired).
pub struct RawWindow {
    /// Sequence number of the window since the daemon started, from 1.
    pub id: u64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub last: Completed,
    /// Spans that arrived late (for a trace completed earlier) and landed here.
    pub late_spans: u64,
}

struct OpenTrace {
    spans: Vec<OpenSpan>,
    last_arrival: Instant,
}

/// The window being filled.
struct Window {
    opened: Instant,
    opened_unix_nano: u64,
    open: HashMap<TraceId, OpenTrace>,
    /// Ids of the traces completed (to tell late spans).
    completed: HashSet<TraceId>,
    /// Completed traces not handed on yet, with their spans' budget.
    ready: Completed,
    late_spans: u64,
    /// Spans filed in this window.
    spans: usize,
    /// The open traces' budget.
    held: Held,
}

impl Window {
    fn new(budget: &Budget) -> Self {
        Window {
            opened: Instant::now(),
            opened_unix_nano: unix_nano_now(),
            open: HashMap::new(),
            completed: HashSet::new(),
            ready: Completed { groups: Vec::new(), held: budget.empty() },
            late_spans: 0,
            spans: 0,
            held: budget.empty(),
        }
    }

    /// Moves open trace `id` to the ready ones.
    fn complete(&mut self, id: TraceId) {
        if let Some(trace) = self.open.remove(&id) {
            self.held.transfer(trace.spans.len(), &mut self.ready.held);
            self.ready.groups.push((id, trace.spans));
            self.completed.insert(id);
        }
    }

    /// The ready traces, leaving none.
    fn take_ready(&mut self, budget: &Budget) -> Completed {
        std::mem::replace(&mut self.ready, Completed { groups: Vec::new(), held: budget.empty() })
    }

    fn traces(&self) -> usize {
        self.open.len() + self.completed.len()
    }

    /// Files up to `n` spans of trace `id`, within `max_spans` per trace;
    /// returns how many were filed.
    fn add_run(
        &mut self,
        id: TraceId,
        run: &mut impl Iterator<Item = Span>,
        n: usize,
        max_spans: usize,
        now: Instant,
        names: &mut Names,
    ) -> usize {
        let trace = self.open.entry(id).or_insert_with(|| OpenTrace { spans: Vec::new(), last_arrival: now });
        trace.last_arrival = now;
        let room = max_spans.saturating_sub(trace.spans.len()).min(n);
        if trace.spans.is_empty() {
            // Most traces arrive in one request: no slack for them.
            trace.spans.reserve_exact(room);
        } else {
            trace.spans.reserve(room);
        }
        trace.spans.extend(run.by_ref().take(room).map(|span| OpenSpan::new(span, names)));
        self.spans += room;
        room
    }

    fn add(&mut self, span: Span, now: Instant, names: &mut Names) {
        let trace = self.open.entry(span.trace_id).or_insert_with(|| OpenTrace { spans: Vec::new(), last_arrival: now });
        trace.last_arrival = now;
        trace.spans.push(OpenSpan::new(span, names));
        self.spans += 1;
    }
}

pub struct Assembler {
    config: WindowConfig,
    budget: Budget,
    metrics: Metrics,
    next_id: u64,
    current: Window,
    /// Late spans for traces completed in the current window: they open the next one.
    carry: Window,
    /// Traces of the window closed last, to recognise late spans for them.
    shipped: HashSet<TraceId>,
    /// The open spans' names.
    names: Names,
}

impl Assembler {
    pub fn new(config: WindowConfig, budget: Budget, metrics: Metrics) -> Self {
        let current = Window::new(&budget);
        let carry = Window::new(&budget);
        Assembler { config, budget, metrics, next_id: 1, current, carry, shipped: HashSet::new(), names: Names::default() }
    }

    /// Runs until `input` is closed (every receiver gone), then closes the open
    /// windows so nothing accepted is lost. Completed traces and closed
    /// windows go to `output`.
    pub async fn run(mut self, mut input: mpsc::UnboundedReceiver<Batch>, output: mpsc::Sender<WindowEvent>) {
        let tick = (self.config.trace_idle / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => {
                        for window in self.accept(batch, Instant::now()) {
                            if output.send(window).await.is_err() {
                                tracing::error!("window sink stopped; closing the assembler");
                                return;
                            }
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if let Some(event) = self.tick(Instant::now()) {
                        if output.send(event).await.is_err() {
                            tracing::error!("window sink stopped; closing the assembler");
                            return;
                        }
                    }
                }
            }
        }
        for window in self.flush() {
            if output.send(window).await.is_err() {
                tracing::error!("window sink stopped before the final windows were flushed");
                return;
            }
        }
    }

    /// Files a batch's spans; returns the windows that filled up meanwhile.
    pub fn accept(&mut self, mut batch: Batch, now: Instant) -> Vec<WindowEvent> {
        self.metrics.queue_spans.sub(batch.spans.len() as i64);
        // OTLP lists spans by resource, so one request interleaves its traces.
        // Filed trace by trace, a window that fills up mid-request closes between
        // two traces instead of cutting the traces in flight in two; and each
        // trace's spans are filed as one run (one lookup, one exact allocation).
        let mut spans = std::mem::take(&mut batch.spans);
        spans.sort_by_key(|s| s.trace_id);
        let runs = runs(&spans);
        let mut spans = spans.into_iter();
        let mut closed = Vec::new();
        for (id, n) in runs {
            let mut run = spans.by_ref().take(n);
            if self.current.completed.contains(&id) {
                run.for_each(|span| self.late(span, &mut batch.held, true));
                continue;
            }
            if self.shipped.contains(&id) && !self.current.open.contains_key(&id) {
                run.for_each(|span| self.late(span, &mut batch.held, false));
                continue;
            }
            // The window closes when a trace beyond `max_traces` (or one
            // that would take it past `max_spans`) arrives, so
            // the traces already in it keep gathering their spans until then.
            let full = self.current.traces() >= self.config.max_traces
                || (self.current.spans > 0 && self.current.spans + n > self.config.max_spans);
            if !self.current.open.contains_key(&id) && full {
                closed.extend(self.close().map(WindowEvent::Closed));
            }
            let filed = self.current.add_run(id, &mut run, n, self.config.max_spans_per_trace, now, &mut self.names);
            run.for_each(drop);
            // The dropped ones are counted; their share of the budget goes back with the batch.
            self.metrics.oversized_trace_spans.inc_by((n - filed) as u64);
            batch.held.transfer(filed, &mut self.current.held);
        }
        closed
    }

    /// A span for a completed trace: into the next window (`to_carry`) or, for a
    /// trace of the window already shipped, into this one.
    fn late(&mut self, span: Span, held: &mut Held, to_carry: bool) {
        let window = if to_carry { &mut self.carry } else { &mut self.current };
        if window.open.get(&span.trace_id).is_some_and(|t| t.spans.len() >= self.config.max_spans_per_trace) {
            self.metrics.oversized_trace_spans.inc();
            return;
        }
        self.metrics.late_spans.inc();
        window.late_spans += 1;
        held.transfer(1, &mut window.held);
        window.add(span, Instant::now(), &mut self.names);
    }

    /// Completes idle traces and closes the window when its time is up;
    /// returns the close, else the traces completed since the last tick.
    pub fn tick(&mut self, now: Instant) -> Option<WindowEvent> {
        let idle = self.config.trace_idle;
        let done: Vec<TraceId> =
            self.current.open.iter().filter(|(_, t)| now.duration_since(t.last_arrival) >= idle).map(|(id, _)| *id).collect();
        for id in done {
            self.current.complete(id);
        }
        if now.duration_since(self.current.opened) >= self.config.duration {
            return self.close().map(WindowEvent::Closed);
        }
        if self.current.ready.groups.is_empty() {
            return None;
        }
        Some(WindowEvent::Completed(self.current.take_ready(&self.budget)))
    }

    /// Closes the current window (if it held anything) and opens the next,
    /// seeded with the carried late spans.
    fn close(&mut self) -> Option<RawWindow> {
        let next = std::mem::replace(&mut self.carry, Window::new(&self.budget));
        let mut window = std::mem::replace(&mut self.current, next);
        // The new window's clock starts now, whenever its carried spans came.
        self.current.opened = Instant::now();
        self.current.opened_unix_nano = unix_nano_now();
        let open: Vec<TraceId> = window.open.keys().copied().collect();
        for id in open {
            window.complete(id);
        }
        if window.completed.is_empty() {
            return None;
        }
        let closed = RawWindow {
            id: self.next_id,
            start_unix_nano: window.opened_unix_nano,
            end_unix_nano: unix_nano_now(),
            last: window.take_ready(&self.budget),
            late_spans: window.late_spans,
        };
        self.shipped = window.completed;
        self.next_id += 1;
        self.names.prune();
        Some(closed)
    }

    /// Closes everything still open: the current window, then the carried spans.
    pub fn flush(&mut self) -> Vec<WindowEvent> {
        let mut closed: Vec<WindowEvent> = self.close().into_iter().map(WindowEvent::Closed).collect();
        closed.extend(self.close().map(WindowEvent::Closed));
        closed
    }
}

/// Each run of equal trace ids in `spans` (sorted by trace id): the id and
/// the run's length.
fn runs(spans: &[Span]) -> Vec<(TraceId, usize)> {
    let mut runs: Vec<(TraceId, usize)> = Vec::new();
    for span in spans {
        match runs.last_mut() {
            Some((id, n)) if *id == span.trace_id => *n += 1,
            _ => runs.push((span.trace_id, 1)),
        }
    }
    runs
}

pub(super) fn unix_nano_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Resource, Scope, SpanKind, Status};
    use std::sync::Arc;

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: None,
            resource: Resource::new("svc", vec![]),
            scope: Arc::new(Scope::default()),
            name: "op".into(),
            kind: SpanKind::Server,
            status: Status::default(),
            start: 1,
            end: 2,
            attributes: vec![],
            events: vec![],
            links: vec![],
        }
    }

    fn setup(config: WindowConfig) -> (Assembler, Budget) {
        let metrics = Metrics::new().unwrap();
        let budget = Budget::new(100, metrics.resident_spans.clone());
        (Assembler::new(config, budget.clone(), metrics), budget)
    }

    fn batch(budget: &Budget, spans: Vec<Span>) -> Batch {
        Batch { held: budget.try_reserve(spans.len()).unwrap(), spans }
    }

    /// A window as the events tell it: every trace, completed or last.
    struct Closed {
        id: u64,
        traces: crate::trace::TraceSet,
        late_spans: u64,
        held: Held,
    }

    /// Gathers the completed traces handed on so far into the windows closed
    /// since; `pending` holds those of the window still open.
    fn gather(events: impl IntoIterator<Item = WindowEvent>, pending: &mut Vec<Completed>) -> Vec<Closed> {
        let mut closed = Vec::new();
        for event in events {
            match event {
                WindowEvent::Completed(c) => pending.push(c),
                WindowEvent::Closed(raw) => {
                    pending.push(raw.last);
                    let mut held = pending[0].held.split(0);
                    let mut groups = Vec::new();
                    for c in pending.drain(..) {
                        held.absorb(c.held);
                        groups.extend(c.groups.into_iter().map(|(id, spans)| crate::trace::into_spans(id, spans)));
                    }
                    let traces = crate::trace::assemble_grouped(groups);
                    closed.push(Closed { id: raw.id, traces, late_spans: raw.late_spans, held });
                }
            }
        }
        closed
    }

    fn assembled(events: Vec<WindowEvent>) -> Vec<Closed> {
        gather(events, &mut Vec::new())
    }

    fn ids(w: &Closed) -> Vec<u8> {
        w.traces.traces.iter().map(|t| t.trace_id[0]).collect()
    }

    #[test]
    fn spans_beyond_the_per_trace_limit_are_dropped_counted_and_give_their_budget_back() {
        let (mut a, budget) = setup(WindowConfig { max_spans_per_trace: 3, ..WindowConfig::default() });
        let spans = (1..=5).map(|s| span(1, s)).chain([span(2, 1)]).collect();
        assert!(a.accept(batch(&budget, spans), Instant::now()).is_empty());
        assert_eq!(a.metrics.oversized_trace_spans.get(), 2);
        assert_eq!(budget.resident(), 4, "three spans of trace 1 and one of trace 2 held; the dropped two given back");
    }

    #[test]
    fn closes_by_trace_count_and_by_time() {
        let config = WindowConfig { max_traces: 2, duration: Duration::from_secs(10), ..Default::default() };
        let (mut a, budget) = setup(config);
        let t0 = Instant::now();
        let closed = assembled(a.accept(batch(&budget, vec![span(1, 1), span(2, 1), span(2, 2), span(3, 1)]), t0));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].traces.span_count(), 3);
        assert_eq!(closed[0].held.count(), 3);
        drop(closed);
        assert_eq!(budget.resident(), 1, "trace 3 is still held");
        assert!(a.tick(t0 + Duration::from_secs(1)).is_none());
        let w = assembled(a.tick(Instant::now() + Duration::from_secs(11)).into_iter().collect());
        assert_eq!(ids(&w[0]), [3]);
        assert_eq!(w[0].id, 2);
    }

    #[test]
    fn a_window_closes_before_a_new_trace_takes_it_past_max_spans() {
        let (mut a, budget) = setup(WindowConfig { max_spans: 4, ..WindowConfig::default() });
        let spans = vec![span(1, 1), span(1, 2), span(2, 1), span(2, 2), span(3, 1)];
        let mut closed = assembled(a.accept(batch(&budget, spans), Instant::now()));
        closed.extend(assembled(a.flush()));
        assert_eq!(closed.iter().map(ids).collect::<Vec<_>>(), vec![vec![1, 2], vec![3]], "trace 3 would pass 4 spans");
    }

    #[test]
    fn a_window_full_mid_request_does_not_cut_the_request_s_traces() {
        let (mut a, budget) = setup(WindowConfig { max_traces: 2, ..WindowConfig::default() });
        // Three traces, their spans interleaved as OTLP's per-resource grouping does.
        let spans = vec![span(1, 1), span(2, 1), span(3, 1), span(1, 2), span(2, 2), span(3, 2)];
        let mut closed = assembled(a.accept(batch(&budget, spans), Instant::now()));
        closed.extend(assembled(a.flush()));
        let sizes: Vec<Vec<usize>> = closed.iter().map(|w| w.traces.traces.iter().map(|t| t.spans.len()).collect()).collect();
        assert_eq!(sizes, vec![vec![2, 2], vec![2]]);
        assert_eq!(a.metrics.late_spans.get(), 0);
    }

    #[test]
    fn spans_for_completed_traces_are_late_and_go_to_the_next_window() {
        let config = WindowConfig { trace_idle: Duration::from_secs(1), ..Default::default() };
        let (mut a, budget) = setup(config);
        let t0 = Instant::now();
        a.accept(batch(&budget, vec![span(1, 1)]), t0);
        // Trace 1 completes and is handed on at once.
        let completed = a.tick(t0 + Duration::from_secs(2)).into_iter().collect::<Vec<_>>();
        assert!(matches!(&completed[..], [WindowEvent::Completed(c)] if c.groups.len() == 1 && c.held.count() == 1));
        a.accept(batch(&budget, vec![span(1, 2), span(2, 1)]), t0 + Duration::from_secs(2));
        let windows = assembled(completed.into_iter().chain(a.flush()).collect());
        assert_eq!(windows.len(), 2);
        assert_eq!((ids(&windows[0]), windows[0].late_spans), (vec![1, 2], 0));
        assert_eq!(windows[0].traces.span_count(), 2);
        assert_eq!((ids(&windows[1]), windows[1].late_spans), (vec![1], 1));
        assert_eq!(windows[1].traces.traces[0].spans[0].span_id, [2; 8]);
        drop(windows);
        assert_eq!(budget.resident(), 0);
    }

    #[test]
    fn the_assembler_holds_only_open_traces() {
        let config = WindowConfig { trace_idle: Duration::from_secs(1), ..Default::default() };
        let (mut a, budget) = setup(config);
        let t0 = Instant::now();
        a.accept(batch(&budget, vec![span(1, 1), span(1, 2), span(2, 1)]), t0);
        a.accept(batch(&budget, vec![span(3, 1)]), t0 + Duration::from_secs(1));
        let Some(WindowEvent::Completed(c)) = a.tick(t0 + Duration::from_millis(1500)) else { panic!("traces 1 and 2 complete") };
        assert_eq!((c.groups.len(), c.held.count()), (2, 3));
        assert_eq!((a.current.open.len(), a.current.held.count(), a.current.ready.held.count()), (1, 1, 0));
        assert!(a.tick(t0 + Duration::from_millis(1600)).is_none(), "nothing new completed");
        drop(c);
        assert_eq!(budget.resident(), 1);
    }

    #[test]
    fn a_span_for_the_trace_shipped_last_is_late_in_the_current_window() {
        let (mut a, budget) = setup(WindowConfig::default());
        a.accept(batch(&budget, vec![span(1, 1)]), Instant::now());
        let first = assembled(a.flush());
        assert_eq!(first.len(), 1);
        a.accept(batch(&budget, vec![span(1, 2)]), Instant::now());
        let second = assembled(a.flush());
        assert_eq!((ids(&second[0]), second[0].late_spans), (vec![1], 1));
        assert_eq!(a.metrics.late_spans.get(), 1);
    }
}
