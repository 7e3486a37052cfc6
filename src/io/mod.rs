//! Trace files in and out. Readers turn every supported format into
//! [`crate::trace::Span`]s; writers turn [`crate::trace::Trace`]s into OTLP JSON
//! lines, OTLP protobuf or Jaeger JSON. `input` finds and sniffs files, one module
//! per format holds its reader (and writer, where there is one).

pub mod alibaba;
mod atomic;
mod input;
mod jaeger;
mod json;
mod otlp;
mod span_csv;
mod zipkin;

use std::fmt;
use std::path::PathBuf;

pub use atomic::{AtomicFile, write_atomic, write_traces_atomic};
pub use input::{
    DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_INPUT_SPANS, Input, ReadLimits, decode, decode_within, read_file, read_inputs,
    read_inputs_within, sniff,
};
pub use otlp::{SNAKE_CASE, read_proto, snake_case_spans};
// The OTLP conversions every reader and writer shares, where callers of
// `io` have always found them.
pub use crate::otlp::{
    WireError, decode_request, resource_from_otlp, scope_from_otlp, span_from_otlp, spans_from_request, to_request,
    too_many_spans,
};

use crate::trace::Trace;

/// Input formats. Sniffed from content unless forced with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// OTLP protobuf `ExportTraceServiceRequest`.
    OtlpProto,
    /// OTLP JSON: one object, or JSON lines as the Collector file exporter writes.
    OtlpJson,
    /// Jaeger API/UI JSON (`{"data":[...]}`).
    Jaeger,
    /// Zipkin v2 JSON span list.
    Zipkin,
    /// Span CSV (`TraceID,SpanID,ParentID,PodName,OperationName,...`).
    SpanCsv,
    /// Alibaba call-graph text (`[GENERATE GRAPH]` blocks).
    Alibaba,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OtlpProto => "OTLP protobuf",
            Format::OtlpJson => "OTLP JSON",
            Format::Jaeger => "Jaeger JSON",
            Format::Zipkin => "Zipkin v2 JSON",
            Format::SpanCsv => "span CSV",
            Format::Alibaba => "Alibaba call-graph text",
        })
    }
}

/// Output formats of the writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// OTLP JSON lines: one `ExportTraceServiceRequest` per trace per line.
    OtlpJson,
    /// One OTLP protobuf `ExportTraceServiceRequest` holding every trace.
    OtlpProto,
    /// Jaeger JSON that the Jaeger UI loads ("JSON file" upload).
    Jaeger,
}

/// Where in a file something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A text position, 1-based.
    Line { line: u64, column: u64 },
    /// A byte offset into the (decompressed) file.
    Byte(u64),
}

impl Position {
    /// The line and column of byte `offset` in `text`.
    pub fn of_offset(text: &[u8], offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Position::Line { line, column: (before.len() - line_start) as u64 + 1 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line { line, column } => write!(f, "line {line}, column {column}"),
            Position::Byte(offset) => write!(f, "byte {offset}"),
        }
    }
}

/// A decoding failure inside one file, before the file name is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub position: Position,
    pub reason: String,
}

impl ParseError {
    pub fn new(position: Position, reason: impl Into<String>) -> Self {
        ParseError { position, reason: reason.into() }
    }
}

/// Errors of reading and writing trace files.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}: the input is larger than {limit} bytes once decompressed (all files together); \
         raise --max-input-bytes or read fewer files at once"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{path}: {position}: format not recognised: the content starts {found} (expected OTLP \
         protobuf or JSON, Jaeger JSON, Zipkin v2 JSON, span CSV or Alibaba call-graph text); \
         force one with --format"
    )]
    Unrecognised { path: PathBuf, position: Position, found: String },
    #[error("{path}: {position}: invalid {format}: {reason}")]
    Parse { path: PathBuf, format: Format, position: Position, reason: String },
    #[error("{path}: {position}: corrupt gzip stream: {reason}")]
    Gzip { path: PathBuf, position: Position, reason: String },
    #[error("{path}: no such file or folder")]
    Missing { path: PathBuf },
}

impl IoError {
    /// Whether the error is the input's fault (exit code 2) rather than the
    /// environment's (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, IoError::Read { .. } | IoError::Write { .. })
    }
}

/// Writes `traces` in `format` to `out`.
/// Writes borrowed traces as OTLP protobuf (what [`write_traces`] writes
/// for [`OutputFormat::OtlpProto`]).
pub fn write_proto_of<'a>(traces: impl IntoIterator<Item = &'a Trace>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    otlp::write_proto_of(traces, out)
}

pub fn write_traces(traces: &[Trace], format: OutputFormat, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    match format {
        OutputFormat::OtlpJson => otlp::write_json_lines(traces, out),
        OutputFormat::OtlpProto => otlp::write_proto(traces, out),
        OutputFormat::Jaeger => jaeger::write(traces, out),
    }
}

/// Writes `traces` to the file at `path`, creating or truncating it.
pub fn write_file(traces: &[Trace], format: OutputFormat, path: &std::path::Path) -> Result<(), IoError> {
    let fail = |source| IoError::Write { path: path.to_path_buf(), source };
    let file = std::fs::File::create(path).map_err(fail)?;
    let mut out = std::io::BufWriter::new(file);
    write_traces(traces, format, &mut out).map_err(fail)?;
    std::io::Write::flush(&mut out).map_err(fail)
}

/// Parses a hex id of `N` bytes. Shorter ids are left-padded with zeroes, since
/// Jaeger and Zipkin carry 64-bit trace ids; all-zero ids are invalid in OTLP.
pub(crate) fn hex_id<const N: usize>(text: &[u8], field: &str) -> Result<[u8; N], String> {
    let mut id = [0u8; N];
    // Full-length ids are the norm: decode them without padding.
    let decoded = if text.len() == 2 * N {
        hex::decode_to_slice(text, &mut id)
    } else if !text.is_empty() && text.len() < 2 * N {
        let mut padded = [b'0'; 64];
        padded[2 * N - text.len()..2 * N].copy_from_slice(text);
        hex::decode_to_slice(&padded[..2 * N], &mut id)
    } else {
        return Err(format!("{field} {:?} must be 1 to {} hex digits", shown(text, N), 2 * N));
    };
    decoded.map_err(|_| format!("{field} {:?} is not hexadecimal", shown(text, N)))?;
    if id == [0u8; N] {
        return Err(format!("{field} is all zeroes, which is not a valid id"));
    }
    Ok(id)
}

/// The start of a bad id, cut short so a garbage field cannot flood the message.
fn shown(text: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&text[..text.len().min(2 * n + 8)]).into_owned()
}
