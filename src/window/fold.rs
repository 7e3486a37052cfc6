//! Folds the open window as its traces complete (issue 20). Each batch of
//! completed traces is repaired and counted, written to the debugging folder
//! when one is set, and folded into the window's [`Digest`] and call-graph
//! conditions; then its spans are dropped, except those the digest's samples
//! keep, which stay counted against the budget. So a window of any size holds
//! only its open traces and bounded samples. At the close the folded window
//! goes to the sink thread, which trains and ships it while the next window
//! folds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::assembler::{Completed, RawWindow, WindowEvent};
use super::budget::{Budget, Held};
use super::sink::WindowSink;
use crate::gent::{Digest, DigestConfig, WindowDigest};
use crate::io::{self, IoError};
use crate::llm::regeneration::{ConditionsBuilder, WindowConditions};
use crate::metrics::Metrics;
use crate::trace;

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("cannot create window folder {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] IoError),
    #[error("cannot start the {name} thread: {source}")]
    Thread { name: &'static str, source: std::io::Error },
}

/// Traces made spans in full and folded at once.
const FOLD_TRACES: usize = 1024;

/// What a window is folded into.
#[derive(Debug, Clone, Default)]
pub struct FoldConfig {
    /// The digest the pipeline trains on (None: no model state is kept).
    pub digest: Option<DigestConfig>,
    /// Also build the window's call-graph conditions.
    pub conditions: bool,
    /// Also write each window's traces, as received, to
    /// `<dir>/window-<id>-<start>.jsonl` as OTLP JSON lines.
    pub json_dir: Option<PathBuf>,
}

/// A closed window, folded, as the sink receives it. Dropping it gives back
/// the budget its samples hold.
pub struct ClosedWindow {
    pub id: u64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub traces: u64,
    pub spans: u64,
    /// Spans that arrived late (for a trace completed earlier) and landed here.
    pub late_spans: u64,
    pub duplicate_spans: u64,
    pub digest: Option<WindowDigest>,
    pub conditions: Option<WindowConditions>,
    pub held: Held,
}

/// The window being folded.
struct Folding {
    digest: Option<Digest>,
    conditions: Option<ConditionsBuilder>,
    json: Option<JsonFile>,
    traces: u64,
    spans: u64,
    duplicate_spans: u64,
    /// What the digest's samples hold.
    held: Held,
}

/// A window's OTLP JSON lines, written under a temporary name as its traces
/// complete and moved into place at the close, so a reader of the folder
/// never sees half a window.
struct JsonFile {
    out: io::AtomicFile,
    /// Where the file goes at the close, once the window's start is known.
    dir: PathBuf,
}

impl JsonFile {
    fn create(dir: &std::path::Path, id: u64) -> Result<Self, IoError> {
        Ok(JsonFile { out: io::AtomicFile::create(&dir.join(format!("window-{id:06}.jsonl")))?, dir: dir.to_path_buf() })
    }

    fn write(&mut self, traces: &[trace::Trace]) -> Result<(), IoError> {
        io::write_traces(traces, io::OutputFormat::OtlpJson, &mut self.out).map_err(|source| self.out.failed(source))
    }

    fn finish(self, id: u64, start: u64) -> Result<PathBuf, FoldError> {
        Ok(self.out.commit_as(self.dir.join(format!("window-{id:06}-{start}.jsonl")))?)
    }
}

/// Folds windows one after another, on the fold thread.
pub struct Folder {
    config: FoldConfig,
    budget: Budget,
    metrics: Metrics,
    /// Windows closed so far: the open one's id is the next.
    closed: u64,
    open: Folding,
}

impl Folder {
    pub fn new(config: FoldConfig, budget: Budget, metrics: Metrics) -> Result<Self, FoldError> {
        if let Some(dir) = &config.json_dir {
            std::fs::create_dir_all(dir).map_err(|source| FoldError::CreateDir { path: dir.clone(), source })?;
        }
        let open = Folding::new(&config, &budget);
        Ok(Folder { config, budget, metrics, closed: 0, open })
    }

    /// Folds a batch of the open window's completed traces and drops what
    /// the window keeps no sample of. A few traces at a time: they are spans
    /// in full only while folded (a window's close completes every open
    /// trace at once).
    pub fn fold(&mut self, completed: Completed) {
        let Completed { mut groups, held } = completed;
        self.open.held.absorb(held);
        let mut rest = groups.len();
        while rest > 0 {
            let part = groups.split_off(rest.saturating_sub(FOLD_TRACES));
            rest = groups.len();
            self.fold_part(part);
        }
    }

    fn fold_part(&mut self, groups: Vec<(trace::TraceId, Vec<trace::OpenSpan>)>) {
        // Repaired in the compact form they were held in: the digest reads
        // them so, and its samples keep them as they are.
        let (traces, defects) = trace::assemble_open(groups);
        let f = &mut self.open;
        f.duplicate_spans += defects.duplicate_spans;
        f.traces += traces.len() as u64;
        f.spans += traces.iter().map(|t| t.span_count() as u64).sum::<u64>();
        if let Some(dir) = &self.config.json_dir {
            let full: Vec<trace::Trace> = traces.iter().map(trace::PackedTrace::unpack).collect();
            self.write_json(dir.clone(), &full);
        }
        let f = &mut self.open;
        for trace in traces {
            if let Some(conditions) = &mut f.conditions {
                conditions.add_spans(trace.spans());
            }
            if let Some(digest) = &mut f.digest {
                digest.add_packed(trace);
            }
        }
        f.held.release_all_but(f.digest.as_ref().map_or(0, Digest::held_spans));
    }

    /// Appends `traces` to the open window's file; a failure is logged and
    /// counted, and the window's file given up (a debugging aid never stops
    /// the pipeline).
    fn write_json(&mut self, dir: PathBuf, traces: &[trace::Trace]) {
        let id = self.closed + 1;
        let file = match self.open.json.take() {
            Some(file) => Ok(file),
            None => JsonFile::create(&dir, id),
        };
        match file.and_then(|mut f| f.write(traces).map(|()| f)) {
            Ok(file) => self.open.json = Some(file),
            Err(e) => {
                self.metrics.sink_errors.inc();
                tracing::error!(window = id, error = %e, "cannot write the window's OTLP JSON; giving up its file");
                // The partial file is removed; the next window starts a new one.
            }
        }
    }

    /// Folds the window's last traces and closes it.
    pub fn close(&mut self, raw: RawWindow) -> ClosedWindow {
        self.fold(raw.last);
        self.closed += 1;
        let f = std::mem::replace(&mut self.open, Folding::new(&self.config, &self.budget));
        if let Some(file) = f.json {
            match file.finish(raw.id, raw.start_unix_nano) {
                Ok(path) => tracing::debug!(path = %path.display(), "window written"),
                Err(e) => {
                    self.metrics.sink_errors.inc();
                    tracing::error!(window = raw.id, error = %e, "cannot write the window's OTLP JSON");
                }
            }
        }
        let digest = f.digest.map(Digest::finish);
        let conditions = f.conditions.map(|c| c.finish(digest.as_ref().map_or(raw.start_unix_nano, |d| d.window_start)));
        let window = ClosedWindow {
            id: raw.id,
            start_unix_nano: raw.start_unix_nano,
            end_unix_nano: raw.end_unix_nano,
            traces: f.traces,
            spans: f.spans,
            late_spans: raw.late_spans,
            duplicate_spans: f.duplicate_spans,
            digest,
            conditions,
            held: f.held,
        };
        record(&self.metrics, &window);
        window
    }
}

impl Folding {
    fn new(config: &FoldConfig, budget: &Budget) -> Self {
        Folding {
            digest: config.digest.map(Digest::new),
            conditions: config.conditions.then(ConditionsBuilder::default),
            json: None,
            traces: 0,
            spans: 0,
            duplicate_spans: 0,
            held: budget.empty(),
        }
    }
}

fn record(m: &Metrics, w: &ClosedWindow) {
    m.windows_closed.inc();
    m.received_traces.inc_by(w.traces);
    m.window_traces.observe(w.traces as f64);
    m.window_spans.observe(w.spans as f64);
    m.window_spans_total.inc_by(w.spans);
    m.duplicate_spans.inc_by(w.duplicate_spans);
    tracing::info!(
        window = w.id,
        traces = w.traces,
        spans = w.spans,
        late_spans = w.late_spans,
        duplicate_spans = w.duplicate_spans,
        "window closed"
    );
}

/// Starts the fold thread, which folds `input`'s events with `folder`, and
/// the sink thread it hands closed windows to (one at a time: a sink slower
/// than the windows holds the fold back, and the receivers push back once
/// the budget is spent). Both end when `input` closes and every window is
/// through the sink; joining the returned thread joins both.
pub fn spawn(
    mut folder: Folder,
    sink: Box<dyn WindowSink>,
    mut input: mpsc::Receiver<WindowEvent>,
    metrics: Metrics,
    window_duration: Duration,
) -> Result<std::thread::JoinHandle<()>, FoldError> {
    let (closed, sink_input) = mpsc::channel(1);
    let sink = super::sink::run_sink(sink, sink_input, metrics, window_duration)
        .map_err(|source| FoldError::Thread { name: "sink", source })?;
    let fold = move || {
        while let Some(event) = input.blocking_recv() {
            match event {
                WindowEvent::Completed(c) => folder.fold(c),
                WindowEvent::Closed(raw) => {
                    let started = Instant::now();
                    let window = folder.close(raw);
                    tracing::debug!(window = window.id, seconds = started.elapsed().as_secs_f64(), "window folded");
                    if closed.blocking_send(window).is_err() {
                        tracing::error!("the sink thread stopped; closing the fold");
                        break;
                    }
                }
            }
        }
        drop(closed);
        if let Err(panic) = sink.join() {
            std::panic::resume_unwind(panic);
        }
    };
    std::thread::Builder::new().name("gent-fold".into()).spawn(fold).map_err(|source| FoldError::Thread { name: "fold", source })
}
