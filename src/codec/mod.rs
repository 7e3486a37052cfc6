//! What a packet carries, in and out of bytes: a window's Gen-T model with
//! its header and, when the compressor is asked for them, the window's
//! call-graph conditions for a decompressor that regenerates with the
//! language model. The two generators (`gent`, `llm`) do not know each
//! other; this module joins them, and seals the result in the `container`.
//! It also names what else a window's payload can be (real traces) and
//! the engine that turns a model into traces, for both daemons.

mod model;
mod payload;

pub use model::{
    Breakdown, Contents, DEFAULT_MAX_SPANS, DEFAULT_MAX_TRACE_SPANS, Header, PackError, Unpacked, breakdown, open_contents, pack,
    seal_contents, unpack, unpack_bounded, unpack_within,
};
pub use payload::{Engine, MAX_TRACES_BYTES, Origin, Payload, TracesError, decode_traces, encode_traces};
