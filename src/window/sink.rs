//! Where closed windows go. The sink runs on its own thread because what it does
//! with a window (train a model) is CPU-bound; until it lets go of the window's
//! spans, they stay counted against the budget, so a slow sink pushes back on
//! clients.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::assembler::{ClosedWindow, RawWindow, unix_nano_now};
use crate::io::{self, IoError, OutputFormat};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create window folder {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] IoError),
    #[error("cannot move {from} into place: {source}")]
    Rename { from: PathBuf, source: std::io::Error },
    #[error("window {window}: {reason}")]
    Ship { window: u64, reason: String },
}

/// Takes each closed window. A sink may take the traces out of it and give
/// their share of the budget back early ([`crate::window::Held::release_all_but`]).
pub trait WindowSink: Send + 'static {
    fn take(&mut self, window: &mut ClosedWindow) -> Result<(), SinkError>;
}

/// Writes each window as OTLP JSON lines to `<dir>/window-<id>.jsonl`.
pub struct OtlpJsonDirSink {
    dir: PathBuf,
}

impl OtlpJsonDirSink {
    pub fn new(dir: PathBuf) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::CreateDir { path: dir.clone(), source })?;
        Ok(OtlpJsonDirSink { dir })
    }
}

impl WindowSink for OtlpJsonDirSink {
    fn take(&mut self, window: &mut ClosedWindow) -> Result<(), SinkError> {
        // Written under a temporary name and renamed, so a reader of the folder
        // never sees half a window.
        let name = format!("window-{:06}-{}.jsonl", window.id, window.start_unix_nano);
        let partial = self.dir.join(format!(".{name}.partial"));
        io::write_file(&window.traces.traces, OutputFormat::OtlpJson, &partial)?;
        let path = self.dir.join(name);
        std::fs::rename(&partial, &path).map_err(|source| SinkError::Rename { from: partial, source })?;
        tracing::debug!(path = %path.display(), "window written");
        Ok(())
    }
}

/// A sink that keeps nothing (when no output folder is configured).
pub struct DiscardSink;

impl WindowSink for DiscardSink {
    fn take(&mut self, _: &mut ClosedWindow) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Assembles each window and feeds it to `sink` on a dedicated thread until
/// `input` closes. A failing window is logged and counted; the sink goes on with
/// the next.
pub fn run_sink(
    mut sink: Box<dyn WindowSink>,
    mut input: mpsc::Receiver<RawWindow>,
    metrics: Metrics,
    window_duration: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("gent-sink".into()).spawn(move || {
        while let Some(raw) = input.blocking_recv() {
            let started = Instant::now();
            let waited = unix_nano_now().saturating_sub(raw.end_unix_nano) as f64 / 1e9;
            metrics.sink_wait_seconds.observe(waited);
            let mut window = raw.assemble();
            record(&metrics, &window);
            if let Err(e) = sink.take(&mut window) {
                metrics.sink_errors.inc();
                tracing::error!(window = window.id, error = %e, "sink failed to take window");
            }
            let took = started.elapsed();
            metrics.sink_seconds.observe(took.as_secs_f64());
            if took > window_duration {
                tracing::warn!(
                    window = window.id,
                    seconds = format!("{:.1}", took.as_secs_f64()),
                    window_seconds = window_duration.as_secs_f64(),
                    "the sink took longer than a window lasts: closed windows wait and the receivers push back \
                     (lower pipeline.fidelity.sample_spans or window.max_traces, or add cores)"
                );
            }
            // Dropping the window gives its spans' budget back.
        }
    })
}

fn record(m: &Metrics, w: &ClosedWindow) {
    m.windows_closed.inc();
    m.received_traces.inc_by(w.traces.traces.len() as u64);
    m.window_traces.observe(w.traces.traces.len() as f64);
    m.window_spans.observe(w.traces.span_count() as f64);
    m.window_spans_total.inc_by(w.traces.span_count() as u64);
    m.duplicate_spans.inc_by(w.traces.defects.duplicate_spans);
    tracing::info!(
        window = w.id,
        traces = w.traces.traces.len(),
        spans = w.traces.span_count(),
        late_spans = w.late_spans,
        duplicate_spans = w.traces.defects.duplicate_spans,
        "window closed"
    );
}
