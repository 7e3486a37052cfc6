//! Spans from the receivers become windows of assembled traces.
//!
//! `budget` bounds the spans held anywhere on the way; `assembler` groups spans
//! by trace id and closes windows by time or trace count; `sink` takes closed
//! windows (for now: writes them as OTLP JSON).

mod assembler;
mod budget;
mod sink;

pub use assembler::{Assembler, Batch, ClosedWindow, RawWindow};
pub use budget::{Budget, Held};
pub use sink::{DiscardSink, OtlpJsonDirSink, SinkError, WindowSink, run_sink};
