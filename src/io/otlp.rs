//! OTLP files: the protobuf reader (on `otlp`'s wire decoder, so errors carry
//! a byte offset), OTLP JSON (one object or JSON lines) and both writers.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{ParseError, Position};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::otlp::{
    by_resource_and_scope, resource_to_otlp, scope_to_otlp, spans_from_request_within, status_to_otlp, to_request,
};
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
    let lines: Vec<&[Span]> = traces.iter().flat_map(|t| t.spans.chunks(REQUEST_SPANS)).collect();
    let blocks: Vec<&[&[Span]]> = blocks_of(&lines);
    write_encoded(&blocks, out, |block, buffer| {
        for line in *block {
            serde_json::to_writer(&mut *buffer, &RequestJson(&by_resource_and_scope(*line)))?;
            buffer.push(b'\n');
        }
        Ok(())
    })
}

// OTLP JSON written straight from gent's spans, without first copying every
// span into prost's form (that copy and its hex strings took as long as the
// writing). It reads back as exactly the prost request `to_request` builds
// (a test holds the two equal). Resources and scopes, a few per line, are
// written by opentelemetry-proto's serde.

/// An `ExportTraceServiceRequest` of spans grouped by [`by_resource_and_scope`].
struct RequestJson<'a>(&'a [Vec<Vec<&'a Span>>]);

struct ResourceSpansJson<'a>(&'a [Vec<&'a Span>]);

struct ScopeSpansJson<'a>(&'a [&'a Span]);

struct SpanJson<'a>(&'a Span);

/// A JSON array of `items`, each written as `wrap` makes it.
struct Each<'a, T, W>(&'a [T], fn(&'a T) -> W);

impl<'a, T, W: Serialize> Serialize for Each<'a, T, W> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(self.1))
    }
}

impl Serialize for RequestJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut request = serializer.serialize_struct("ExportTraceServiceRequest", 1)?;
        request.serialize_field("resourceSpans", &Each(self.0, |r| ResourceSpansJson(r)))?;
        request.end()
    }
}

impl Serialize for ResourceSpansJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut resource_spans = serializer.serialize_struct("ResourceSpans", 3)?;
        resource_spans.serialize_field("resource", &resource_to_otlp(&self.0[0][0].resource))?;
        resource_spans.serialize_field("scopeSpans", &Each(self.0, |s| ScopeSpansJson(s)))?;
        resource_spans.serialize_field("schemaUrl", "")?;
        resource_spans.end()
    }
}

impl Serialize for ScopeSpansJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut scope_spans = serializer.serialize_struct("ScopeSpans", 3)?;
        scope_spans.serialize_field("scope", &scope_to_otlp(&self.0[0].scope))?;
        scope_spans.serialize_field("spans", &Each(self.0, |s| SpanJson(s)))?;
        scope_spans.serialize_field("schemaUrl", "")?;
        scope_spans.end()
    }
}

impl Serialize for SpanJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let (mut trace_id, mut span_id, mut parent_id) = ([0u8; 32], [0u8; 16], [0u8; 16]);
        // Fields at their default value are left out, as the protobuf JSON
        // mapping does by default and the Collector writes them: a third of
        // a regenerated span's bytes were empty lists, zero counts and a
        // null status.
        let mut out = serializer.serialize_struct("Span", 10)?;
        out.serialize_field("traceId", hex_str(&span.trace_id, &mut trace_id))?;
        out.serialize_field("spanId", hex_str(&span.span_id, &mut span_id))?;
        if let Some(parent) = &span.parent_span_id {
            out.serialize_field("parentSpanId", hex_str(parent, &mut parent_id))?;
        }
        out.serialize_field("name", &span.name)?;
        let kind = span.kind.to_otlp();
        if kind != 0 {
            out.serialize_field("kind", &kind)?;
        }
        // OTLP JSON spells 64-bit integers as strings.
        out.serialize_field("startTimeUnixNano", itoa::Buffer::new().format(span.start))?;
        out.serialize_field("endTimeUnixNano", itoa::Buffer::new().format(span.end))?;
        if !span.attributes.is_empty() {
            out.serialize_field("attributes", &span.attributes)?;
        }
        if !span.events.is_empty() {
            out.serialize_field("events", &span.events)?;
        }
        if !span.links.is_empty() {
            out.serialize_field("links", &span.links)?;
        }
        if let Some(status) = status_to_otlp(span) {
            out.serialize_field("status", &status)?;
        }
        out.end()
    }
}

/// `bytes` in lowercase hex, written into `buffer` (twice their length).
fn hex_str<'b>(bytes: &[u8], buffer: &'b mut [u8]) -> &'b str {
    let hex = &mut buffer[..2 * bytes.len()];
    hex::encode_to_slice(bytes, hex).expect("the buffer holds twice the bytes");
    std::str::from_utf8(hex).expect("hex digits are ASCII")
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
    // the requests being encoded, not the window or the largest trace (a
    // window of millions of spans built whole took as much again in prost
    // structs and bytes). Whole traces share a request while they fit.
    let mut parts = traces.into_iter().flat_map(|t| t.spans.chunks(REQUEST_SPANS)).peekable();
    let mut requests: Vec<Vec<&[Span]>> = Vec::new();
    while let Some(first) = parts.next() {
        let mut spans = first.len();
        let mut request = vec![first];
        while let Some(next) = parts.next_if(|p| spans + p.len() <= REQUEST_SPANS) {
            spans += next.len();
            request.push(next);
        }
        requests.push(request);
    }
    write_encoded(&requests, out, |request, buffer| {
        to_request(request.iter().flat_map(|p| p.iter())).encode(buffer).map_err(std::io::Error::other)
    })
}

/// `lines` cut into runs of about [`LINE_BLOCK_SPANS`] spans, each run one
/// block for [`write_encoded`].
fn blocks_of<'a>(lines: &'a [&'a [Span]]) -> Vec<&'a [&'a [Span]]> {
    let mut blocks = Vec::new();
    let (mut from, mut total) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        total += line.len();
        if total >= LINE_BLOCK_SPANS {
            blocks.push(&lines[from..=i]);
            (from, total) = (i + 1, 0);
        }
    }
    if from < lines.len() {
        blocks.push(&lines[from..]);
    }
    blocks
}

/// Encodes each block with `encode` and writes the bytes to `out` in block
/// order. Every other block is encoded on a second thread while this one
/// encodes and writes its own, because encoding, not the disk, is what a
/// regenerated window's write costs (JSON most of all). At most two blocks
/// wait encoded, so memory stays bounded by a few blocks. A thread the OS
/// refuses leaves every block to this one.
fn write_encoded<B: Sync>(
    blocks: &[B],
    out: &mut dyn std::io::Write,
    encode: impl Fn(&B, &mut Vec<u8>) -> std::io::Result<()> + Sync,
) -> std::io::Result<()> {
    let encode = &encode;
    let mut buffer = Vec::new();
    let mut own = |block: &B, out: &mut dyn std::io::Write| {
        buffer.clear();
        encode(block, &mut buffer)?;
        out.write_all(&buffer)
    };
    if blocks.len() < 2 {
        return blocks.iter().try_for_each(|b| own(b, out));
    }
    std::thread::scope(|scope| {
        let (send, receive) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(1);
        // Written buffers go back to be filled again: a fresh one each block
        // would fault in its pages again, and that cost as much as encoding.
        let (give_back, returned) = std::sync::mpsc::channel::<Vec<u8>>();
        let helper = std::thread::Builder::new().spawn_scoped(scope, move || {
            for block in blocks.iter().skip(1).step_by(2) {
                let mut bytes = returned.try_recv().unwrap_or_default();
                bytes.clear();
                let encoded = encode(block, &mut bytes).map(|()| bytes);
                // The writer has stopped (it failed) when nobody receives.
                if send.send(encoded).is_err() {
                    return;
                }
            }
        });
        if helper.is_err() {
            return blocks.iter().try_for_each(|b| own(b, out));
        }
        for (i, block) in blocks.iter().enumerate() {
            if i % 2 == 0 {
                own(block, out)?;
            } else {
                let bytes = receive.recv().map_err(|_| std::io::Error::other("the encoding thread stopped"))??;
                out.write_all(&bytes)?;
                // The helper may have finished: then the buffer is simply dropped.
                let _ = give_back.send(bytes);
            }
        }
        Ok(())
    })
}

/// Spans of JSON lines encoded as one block: about 1 MB of text, so that the
/// few blocks waiting encoded hold little memory.
const LINE_BLOCK_SPANS: usize = 2_500;

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

    /// A writer that fails stops the write with its error, whichever thread
    /// was encoding, and leaves no thread behind.
    #[test]
    fn a_failing_output_stops_the_write_with_its_error() {
        struct Fails(usize);
        impl std::io::Write for Fails {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if buf.len() > self.0 {
                    return Err(std::io::Error::other("disk full"));
                }
                self.0 -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let base = test_span(1, 1, None, 1_000, 1_000_000);
        let trace = |t: u64| {
            let id = [(t % 250 + 1) as u8; 16];
            let spans = (0..50u64).map(|k| Span { trace_id: id, span_id: (k + 1).to_be_bytes(), ..base.clone() }).collect();
            Trace { trace_id: id, spans }
        };
        let traces: Vec<Trace> = (0..2_000).map(trace).collect();
        let mut whole = Vec::new();
        write_json_lines(&traces, &mut whole).unwrap();
        for room in [0, 1_000, whole.len() / 3, whole.len() - 1] {
            let error = write_json_lines(&traces, &mut Fails(room)).unwrap_err();
            assert_eq!(error.to_string(), "disk full", "with room for {room} bytes");
            let error = write_proto(&traces, &mut Fails(room.min(100))).unwrap_err();
            assert_eq!(error.to_string(), "disk full");
        }
        assert!(write_json_lines(&traces, &mut Fails(whole.len())).is_ok());
    }
}
