//! OTLP files: the protobuf reader (on `otlp`'s wire decoder, so errors carry
//! a byte offset), OTLP JSON (one object or JSON lines) and both writers.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{ParseError, Position};
use crate::otlp::{spans_from_request_within, to_request};
use crate::trace::{Span, Trace};

/// Reads one protobuf `ExportTraceServiceRequest` (or `TracesData`: same field 1).
/// A file is all or nothing: the first span with an invalid id fails it, at the
/// byte offset of that span.
pub fn read_proto(bytes: &[u8], out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    let before = out.len();
    let mut first_invalid = None;
    let decoded = crate::otlp::decode_request_within(bytes, out, max, &mut |offset, reason| {
        first_invalid.get_or_insert((offset, reason));
    });
    let error = match (decoded, first_invalid) {
        (Err(e), _) => Some((e.offset, e.reason)),
        (Ok(()), Some((offset, reason))) => Some((offset, format!("span: {reason}"))),
        (Ok(()), None) => None,
    };
    match error {
        Some((offset, reason)) => {
            out.truncate(before);
            Err(ParseError::new(Position::Byte(offset as u64), reason))
        }
        None => Ok(()),
    }
}

/// Reads OTLP JSON: a single request object, or several (JSON lines as the
/// Collector's file exporter writes them, or simply concatenated).
pub fn read_json(bytes: &[u8], out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<ExportTraceServiceRequest>();
    loop {
        let start = stream.byte_offset();
        let Some(next) = stream.next() else {
            return Ok(());
        };
        let request = next.map_err(|e| super::json::error(bytes, &e))?;
        let start = start + bytes[start..].iter().take_while(|b| b.is_ascii_whitespace()).count();
        let at = |reason| ParseError::new(Position::of_offset(bytes, start), reason);
        let before = out.len();
        spans_from_request_within(request, out, max).map_err(at)?;
        // Unknown fields are ignored by the OTLP JSON rules, so snake_case
        // names (protobuf's "preserve field names" output) would silently yield
        // nothing; refuse them instead of losing the spans.
        if out.len() == before && snake_case_spans(&bytes[start..stream.byte_offset()]) {
            return Err(at(SNAKE_CASE.to_string()));
        }
    }
}

pub const SNAKE_CASE: &str = "uses snake_case field names (resource_spans, scope_spans); OTLP JSON \
    requires lowerCamelCase (resourceSpans, scopeSpans)";

/// Whether OTLP JSON text names its spans in snake_case, which OTLP JSON forbids.
pub fn snake_case_spans(text: &[u8]) -> bool {
    ["\"resource_spans\"", "\"scope_spans\""].iter().any(|key| memchr::memmem::find(text, key.as_bytes()).is_some())
}

/// OTLP JSON lines: one request per trace, so a reader can stream it (a
/// trace of more than [`REQUEST_SPANS`] spans takes several lines).
pub fn write_json_lines(traces: &[Trace], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for part in traces.iter().flat_map(|t| t.spans.chunks(REQUEST_SPANS)) {
        serde_json::to_writer(&mut *out, &to_request(part))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub fn write_proto(traces: &[Trace], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    write_proto_of(traces, out)
}

/// [`write_proto`] of traces held anywhere (a sample of borrowed traces
/// need not be copied into a slice first).
pub fn write_proto_of<'a>(traces: impl IntoIterator<Item = &'a Trace>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    // Requests of at most REQUEST_SPANS spans each, one after another: in
    // protobuf, concatenated messages are one message with the repeated
    // fields joined, so the file is one request, and memory stays bounded by
    // the request, not the window or the largest trace (a window of millions
    // of spans built whole took as much again in prost structs and bytes).
    // Whole traces share a request while they fit.
    let mut parts = traces.into_iter().flat_map(|t| t.spans.chunks(REQUEST_SPANS)).peekable();
    let mut buffer = Vec::new();
    let mut request: Vec<&[Span]> = Vec::new();
    while let Some(first) = parts.next() {
        let mut spans = first.len();
        request.clear();
        request.push(first);
        while let Some(next) = parts.next_if(|p| spans + p.len() <= REQUEST_SPANS) {
            spans += next.len();
            request.push(next);
        }
        buffer.clear();
        to_request(request.iter().flat_map(|p| p.iter())).encode(&mut buffer).map_err(std::io::Error::other)?;
        out.write_all(&buffer)?;
    }
    Ok(())
}

/// Most spans in one request written by [`write_proto`] or one line written
/// by [`write_json_lines`]: what converting a request to OTLP holds at once.
const REQUEST_SPANS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::test_span;

    /// A trace of more spans than one request takes several (lines, or
    /// protobuf messages one after another) and reads back whole; smaller
    /// traces share a request while they fit.
    #[test]
    fn a_trace_over_one_request_is_written_in_parts_and_reads_back_whole() {
        let n = 2 * REQUEST_SPANS as u64 + 5;
        // One resource and scope throughout, so each request has one of each.
        let base = test_span(1, 1, None, 1_000, 1_000_000);
        let span = |k: u64| Span {
            span_id: (k + 1).to_be_bytes(),
            parent_span_id: k.checked_sub(1).map(|p| (p + 1).to_be_bytes()),
            start: 1_000 + k,
            ..base.clone()
        };
        let large = Trace { trace_id: [1; 16], spans: (0..n).map(span).collect() };
        let small = |t: u8| Trace { trace_id: [t; 16], spans: vec![Span { trace_id: [t; 16], ..base.clone() }] };
        let traces = [small(2), large, small(3), small(4)];

        let mut json = Vec::new();
        write_json_lines(&traces, &mut json).unwrap();
        assert_eq!(json.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 1 + 3 + 2);
        let mut proto = Vec::new();
        write_proto(&traces, &mut proto).unwrap();
        // Requests: [small 2], [10,000 of the large], [10,000], [5, small 3, small 4].
        let request = ExportTraceServiceRequest::decode(&proto[..]).unwrap();
        let sizes: Vec<usize> = request.resource_spans.iter().map(|r| r.scope_spans[0].spans.len()).collect();
        assert_eq!(sizes.len(), 4, "requests of {:?} spans", &sizes[..sizes.len().min(8)]);
        assert_eq!(sizes, [1, REQUEST_SPANS, REQUEST_SPANS, 7]);

        for (bytes, read) in [(&json, read_json as fn(&[u8], &mut Vec<Span>, usize) -> _), (&proto, read_proto)] {
            let mut spans = Vec::new();
            read(bytes, &mut spans, usize::MAX).unwrap();
            assert_eq!(spans.len() as u64, n + 3);
            assert_eq!(spans.iter().filter(|s| s.trace_id == [1; 16]).count() as u64, n);
        }
    }
}
