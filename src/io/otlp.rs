//! OTLP: conversion between the wire types and gent's spans, the protobuf file
//! reader (which walks the top-level fields itself so errors carry a byte
//! offset), OTLP JSON (one object or JSON lines) and both writers.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status as OtlpStatus};
use prost::Message;

use super::{ParseError, Position};
use crate::trace::UNKNOWN_SERVICE;
use crate::trace::{Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, Trace, TraceId};

const SERVICE_NAME: &str = "service.name";

/// Converts a decoded export request into spans, appending to `out`. On error
/// nothing is appended; the message names the offending span by its path.
pub fn spans_from_request(request: ExportTraceServiceRequest, out: &mut Vec<Span>) -> Result<(), String> {
    spans_from_request_within(request, out, usize::MAX)
}

/// [`spans_from_request`], failing once `out` would hold more than `max` spans.
pub fn spans_from_request_within(request: ExportTraceServiceRequest, out: &mut Vec<Span>, max: usize) -> Result<(), String> {
    let before = out.len();
    for (i, rs) in request.resource_spans.into_iter().enumerate() {
        if let Err(e) = spans_from_resource_spans(rs, out, max) {
            out.truncate(before);
            return Err(format!("resourceSpans[{i}].{e}"));
        }
    }
    Ok(())
}

fn spans_from_resource_spans(rs: ResourceSpans, out: &mut Vec<Span>, max: usize) -> Result<(), String> {
    let resource = resource_from_otlp(rs.resource.unwrap_or_default());
    for (j, ss) in rs.scope_spans.into_iter().enumerate() {
        let scope = scope_from_otlp(ss.scope);
        for (k, span) in ss.spans.into_iter().enumerate() {
            let span = span_from_otlp(span, &resource, &scope).map_err(|e| format!("scopeSpans[{j}].spans[{k}]: {e}"))?;
            if out.len() >= max {
                return Err(format!("scopeSpans[{j}].spans[{k}]: {}", super::too_many_spans(max)));
            }
            out.push(span);
        }
    }
    Ok(())
}

pub fn scope_from_otlp(scope: Option<InstrumentationScope>) -> Arc<Scope> {
    Arc::new(scope.map_or_else(Scope::default, |s| Scope { name: s.name, version: s.version }))
}

pub fn resource_from_otlp(resource: OtlpResource) -> Arc<Resource> {
    let mut service = None;
    let mut attributes = Vec::with_capacity(resource.attributes.len());
    for kv in resource.attributes {
        match (&kv.key[..], &kv.value) {
            (SERVICE_NAME, Some(AnyValue { value: Some(any_value::Value::StringValue(s)) })) => service = Some(s.clone()),
            _ => attributes.push(kv),
        }
    }
    Resource::new(service.unwrap_or_else(|| UNKNOWN_SERVICE.to_string()), attributes)
}

pub fn span_from_otlp(span: OtlpSpan, resource: &Arc<Resource>, scope: &Arc<Scope>) -> Result<Span, String> {
    let status = span.status.unwrap_or_default();
    Ok(Span {
        trace_id: trace_id(&span.trace_id)?,
        span_id: span_id(&span.span_id, "spanId")?,
        parent_span_id: parent_span_id(&span.parent_span_id)?,
        resource: resource.clone(),
        scope: scope.clone(),
        name: span.name,
        kind: SpanKind::from_otlp(span.kind),
        status: Status { code: StatusCode::from_otlp(status.code), message: status.message },
        start: span.start_time_unix_nano,
        end: span.end_time_unix_nano,
        attributes: span.attributes,
        events: span.events,
        links: span.links,
    })
}

pub(super) fn trace_id(bytes: &[u8]) -> Result<TraceId, String> {
    let id: TraceId = bytes.try_into().map_err(|_| format!("traceId has {} bytes, expected 16", bytes.len()))?;
    if id == [0; 16] {
        return Err("traceId is all zeroes, which OTLP defines as invalid".into());
    }
    Ok(id)
}

pub(super) fn span_id(bytes: &[u8], field: &str) -> Result<SpanId, String> {
    let id: SpanId = bytes.try_into().map_err(|_| format!("{field} has {} bytes, expected 8", bytes.len()))?;
    if id == [0; 8] {
        return Err(format!("{field} is all zeroes, which OTLP defines as invalid"));
    }
    Ok(id)
}

/// Empty and all-zero parent ids both mean "no parent": producers use either.
pub(super) fn parent_span_id(bytes: &[u8]) -> Result<Option<SpanId>, String> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    span_id(bytes, "parentSpanId").map(Some)
}

/// Builds one export request from `spans`, one `ResourceSpans` per distinct
/// resource and one `ScopeSpans` per distinct scope within it.
pub fn to_request<'a>(spans: impl IntoIterator<Item = &'a Span>) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    // Keyed by allocation: spans of one process share their Arcs.
    let mut resources: HashMap<*const Resource, usize> = HashMap::new();
    let mut scopes: HashMap<(*const Resource, *const Scope), usize> = HashMap::new();
    for span in spans {
        let r = *resources.entry(Arc::as_ptr(&span.resource)).or_insert_with(|| {
            resource_spans.push(ResourceSpans { resource: Some(resource_to_otlp(&span.resource)), ..Default::default() });
            resource_spans.len() - 1
        });
        let scope_spans = &mut resource_spans[r].scope_spans;
        let s = *scopes.entry((Arc::as_ptr(&span.resource), Arc::as_ptr(&span.scope))).or_insert_with(|| {
            scope_spans.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: span.scope.name.clone(),
                    version: span.scope.version.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            scope_spans.len() - 1
        });
        scope_spans[s].spans.push(span_to_otlp(span));
    }
    ExportTraceServiceRequest { resource_spans }
}

fn resource_to_otlp(resource: &Resource) -> OtlpResource {
    let mut attributes = Vec::with_capacity(resource.attributes.len() + 1);
    attributes.push(string_attribute(SERVICE_NAME, &resource.service));
    attributes.extend(resource.attributes.iter().cloned());
    OtlpResource { attributes, ..Default::default() }
}

fn span_to_otlp(span: &Span) -> OtlpSpan {
    let status = (span.status != Status::default())
        .then(|| OtlpStatus { code: span.status.code.to_otlp(), message: span.status.message.clone() });
    OtlpSpan {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: span.name.clone(),
        kind: span.kind.to_otlp(),
        start_time_unix_nano: span.start,
        end_time_unix_nano: span.end,
        attributes: span.attributes.clone(),
        events: span.events.clone(),
        links: span.links.clone(),
        status,
        ..Default::default()
    }
}

pub(super) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}

/// Reads one protobuf `ExportTraceServiceRequest` (or `TracesData`: same field 1).
/// A file is all or nothing: the first span with an invalid id fails it, at the
/// byte offset of that span.
pub fn read_proto(bytes: &[u8], out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    let before = out.len();
    let mut first_invalid = None;
    let decoded = super::otlp_wire::decode_request_within(bytes, out, max, &mut |offset, reason| {
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
    // Requests of at most REQUEST_SPANS spans each, one after another: in
    // protobuf, concatenated messages are one message with the repeated
    // fields joined, so the file is one request, and memory stays bounded by
    // the request, not the window or the largest trace (a window of millions
    // of spans built whole took as much again in prost structs and bytes).
    // Whole traces share a request while they fit.
    let mut parts = traces.iter().flat_map(|t| t.spans.chunks(REQUEST_SPANS)).peekable();
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
