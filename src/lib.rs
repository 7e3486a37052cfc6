//! gent: trace compression for OpenTelemetry.
//!
//! Spans enter through [`io`] (files) and later the receiver, are assembled into
//! [`trace::Trace`]s with their DAG and canonical topology, and leave through the
//! writers in [`io`].

pub mod io;
pub mod trace;
