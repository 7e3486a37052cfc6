//! gent: trace compression for OpenTelemetry.
//!
//! Modules in the order data flows through them (docs/architecture.md; a
//! module uses only those before it, `tests/architecture.rs` checks):
//! [`trace`] is the span and trace model; [`container`] seals bytes; [`otlp`]
//! decodes OTLP, converts it to and from spans, and sends it with one retry
//! policy (and replays recorded traces as load); [`io`] reads and writes
//! trace files; [`tabular`] and [`nn`] hold the columns and networks the
//! generators train; [`gent`] (Gen-T) and [`llm`] (TraceLLM) are the two
//! generators; [`codec`] names and encodes what a window's payload carries;
//! [`fidelity`] scores regenerated traces against real ones. The daemons'
//! parts follow: [`connections`] and [`metrics`] serve every server,
//! [`window`] folds traces into windows, [`receiver`] takes OTLP, [`packet`]
//! is the link, [`export`] writes regenerated traces (each with its
//! configuration section beside it), [`config`] assembles and checks the
//! daemons' documents, and [`pipeline`] wires the compressor and
//! decompressor (and the demo that runs both).

pub mod trace;

pub mod container;
pub mod io;
pub mod otlp;

pub mod nn;
pub mod tabular;

pub mod gent;
pub mod llm;

pub mod codec;
pub mod fidelity;

pub mod connections;
pub mod metrics;

pub mod receiver;
pub mod window;

pub mod export;
pub mod packet;

pub mod config;

pub mod pipeline;
