//! Spans from the receivers become folded windows.
//!
//! `budget` bounds the spans held anywhere on the way; `assembler` groups spans
//! by trace id, holding open traces in compact form ([`crate::trace::OpenSpan`]), hands
//! traces on as they complete and closes windows by time;
//! `fold` folds each window's traces as they complete into the state its model
//! is trained on; `sink` takes closed windows (train and ship, or discard).

mod assembler;
mod budget;
mod config;
mod fold;
mod sink;

pub use assembler::{Assembler, Batch, Completed, RawWindow, WindowEvent};
pub use budget::{Budget, Held};
pub use config::{SinkConfig, WindowConfig};
pub use fold::{ClosedWindow, FoldConfig, FoldError, Folder, spawn};
pub use sink::{DiscardSink, SinkError, WindowSink};
