//! Where folded windows go. The sink runs on its own thread because what it
//! does with a window (train a model) is CPU-bound; the next window folds
//! meanwhile. What a window's samples hold stays counted against the budget
//! until the sink lets go of it, so a slow sink pushes back on clients.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::assembler::unix_nano_now;
use super::fold::ClosedWindow;
use crate::metrics::Metrics;

/// Why a sink could not take a window: the sink's own error, kept whole
/// (`source()` gives it back, typed).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("window {window}: {source}")]
    Take { window: u64, source: Box<dyn std::error::Error + Send + Sync> },
}

/// Takes each closed window. A sink may take the digest out of it and give
/// its share of the budget back early ([`crate::window::Held::release_all_but`]).
pub trait WindowSink: Send + 'static {
    fn take(&mut self, window: &mut ClosedWindow) -> Result<(), SinkError>;
}

/// A sink that keeps nothing (no pipeline: windows at most go to the
/// debugging folder as they fold).
pub struct DiscardSink;

impl WindowSink for DiscardSink {
    fn take(&mut self, _: &mut ClosedWindow) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Feeds each closed window to `sink` on a dedicated thread until `input`
/// closes. A failing window is logged and counted; the sink goes on with the
/// next.
pub(super) fn run_sink(
    mut sink: Box<dyn WindowSink>,
    mut input: mpsc::Receiver<ClosedWindow>,
    metrics: Metrics,
    window_duration: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("gent-sink".into()).spawn(move || {
        while let Some(mut window) = input.blocking_recv() {
            let started = Instant::now();
            let waited = unix_nano_now().saturating_sub(window.end_unix_nano) as f64 / 1e9;
            metrics.sink_wait_seconds.observe(waited);
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
                     (lower pipeline.train_spans or pipeline.fidelity.sample_spans, or add cores)"
                );
            }
            // Dropping the window gives its samples' budget back.
        }
    })
}
