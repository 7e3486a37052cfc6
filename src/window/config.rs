//! The window's and the sink's sections of the compressor's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How spans are grouped into windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// A window closes this long after it opened...
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// ...or once it holds this many traces, whichever comes first: a memory
    /// guard (a window keeps about 40 bytes per trace it saw, to tell late
    /// spans and count starts), not the normal way windows close.
    pub max_traces: usize,
    /// ...or before a new trace takes it past this many spans: the
    /// decompressor regenerates at most `link.max_window_spans` (10,000,000 by
    /// default) spans a window. Open traces still grow until the close, so
    /// the default leaves a tenth of room.
    pub max_spans: usize,
    /// A trace is complete when no span of it has arrived for this long.
    #[serde(with = "humantime_serde")]
    pub trace_idle: Duration,
    /// Most spans held at once between receipt and the sink finishing with
    /// them; beyond it the receiver answers with backpressure. Open traces
    /// stay for `trace_idle` after their last span, so the budget over
    /// `trace_idle` bounds the sustained rate (3,000,000 / 5 s: about 500,000
    /// spans/s after the windows' samples); each resident span costs about
    /// 100–150 bytes (more with attributes no other span shares).
    pub span_budget: usize,
    /// Most spans of one trace a window keeps; later spans of that trace are
    /// dropped and counted (`gent_oversized_trace_spans_total`), so one
    /// runaway trace cannot hold the window's memory or its training.
    pub max_spans_per_trace: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            duration: Duration::from_secs(60),
            max_traces: 2_000_000,
            max_spans: 9_000_000,
            trace_idle: Duration::from_secs(5),
            span_budget: 3_000_000,
            max_spans_per_trace: 100_000,
        }
    }
}

/// What happens to a closed window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Write each closed window as OTLP JSON lines into this folder (a
    /// debugging aid); `null` writes nothing.
    pub otlp_json_dir: Option<PathBuf>,
}
