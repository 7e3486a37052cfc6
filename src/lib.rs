//! gent: trace compression for OpenTelemetry.
//!
//! Spans enter through [`io`] (files) or [`receiver`] (OTLP gRPC and HTTP), are
//! grouped by [`window`] into windows of [`trace::Trace`]s with their DAG and
//! canonical topology, and leave through the writers in [`io`] or a window sink.
//! [`pipeline`] wires the daemons together (compressor, ship stage, decompressor); [`metrics`] holds every `gent_`
//! metric; [`replay`] sends recorded traces as live load; [`tabular`] encodes
//! tables for the CTGAN generators, [`nn`] holds the networks; [`gent`] the
//! Gen-T model of a window and [`packet`] its self-contained byte form.

pub mod config;
pub mod demo;
pub mod export;
pub mod fidelity;
pub mod gent;
pub mod io;
pub mod llm;
pub mod metrics;
pub mod nn;
pub mod packet;
pub mod pipeline;
pub mod receiver;
pub mod replay;
pub mod tabular;
pub mod trace;
pub mod window;
