//! OTLP protobuf straight into gent's spans, for the hot paths (the receivers
//! and protobuf files). Decoding through opentelemetry-proto's structs costs an
//! intermediate copy of every span, three allocations for its ids and a moving
//! `Vec` per scope; here the wire is walked with prost's primitives, ids go
//! into fixed arrays and only the span's own fields are allocated. Attributes,
//! events, links and status still decode through the generated types, so their
//! meaning stays prost's.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::Status as OtlpStatus;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use prost::Message;

use super::model::{parent_span_id, resource_from_otlp, scope_from_otlp, span_id, too_many_spans, trace_id};
use crate::trace::{Resource, Scope, Span, SpanKind, Status, StatusCode};

/// A wire-level failure: the byte offset into the whole message, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    pub offset: usize,
    pub reason: String,
}

enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

/// The fields of one message: (field number, value, offset of the field).
struct Fields<'a> {
    rest: &'a [u8],
    base: usize,
    len: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Fields { rest: buf, base, len: buf.len() }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>, usize), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let offset = self.base + self.len - self.rest.len();
        let fail = |reason: String| Some(Err(WireError { offset, reason }));
        let key = match prost::encoding::decode_varint(&mut self.rest) {
            Ok(key) => key,
            Err(e) => return fail(format!("field key: {e}")),
        };
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => match prost::encoding::decode_varint(&mut self.rest) {
                Ok(v) => Value::Varint(v),
                Err(e) => return fail(format!("field {field}: {e}")),
            },
            1 => match self.rest.split_first_chunk::<8>() {
                Some((bytes, rest)) => {
                    self.rest = rest;
                    Value::Fixed64(u64::from_le_bytes(*bytes))
                }
                None => return fail(format!("field {field}: truncated fixed64")),
            },
            5 => match self.rest.split_first_chunk::<4>() {
                Some((_, rest)) => {
                    self.rest = rest;
                    Value::Fixed32
                }
                None => return fail(format!("field {field}: truncated fixed32")),
            },
            2 => {
                let len = match prost::encoding::decode_varint(&mut self.rest) {
                    Ok(len) => len,
                    Err(e) => return fail(format!("field {field} length: {e}")),
                };
                match usize::try_from(len).ok().filter(|&l| l <= self.rest.len()) {
                    Some(len) => {
                        let (bytes, rest) = self.rest.split_at(len);
                        self.rest = rest;
                        Value::Bytes(bytes)
                    }
                    None => {
                        return fail(format!(
                            "field {field} claims {len} bytes but only {} remain (truncated?)",
                            self.rest.len()
                        ));
                    }
                }
            }
            other => return fail(format!("field {field} has unsupported wire type {other}")),
        };
        if field == 0 {
            return fail("field number 0 is invalid".into());
        }
        Some(Ok((field, value, offset)))
    }
}

fn message<M: Message + Default>(bytes: &[u8], offset: usize, what: &str) -> Result<M, WireError> {
    M::decode(bytes).map_err(|e| WireError { offset, reason: format!("{what}: {e}") })
}

/// Decodes an `ExportTraceServiceRequest` (or `TracesData`: the same field 1)
/// into `out`. A span with an invalid id is left out and its offset and reason
/// handed to `invalid`; a malformed message fails whole, naming the byte offset.
pub fn decode_request(buf: &[u8], out: &mut Vec<Span>, invalid: &mut dyn FnMut(usize, String)) -> Result<(), WireError> {
    decode_request_within(buf, out, usize::MAX, invalid)
}

/// [`decode_request`], failing at the span that would make `out` hold more
/// than `max` spans.
pub fn decode_request_within(
    buf: &[u8],
    out: &mut Vec<Span>,
    max: usize,
    invalid: &mut dyn FnMut(usize, String),
) -> Result<(), WireError> {
    for field in Fields::new(buf, 0) {
        if let (1, Value::Bytes(rs), offset) = field? {
            resource_spans(rs, offset, (out, max), invalid)?;
        }
    }
    Ok(())
}

fn resource_spans(
    buf: &[u8],
    base: usize,
    (out, max): (&mut Vec<Span>, usize),
    invalid: &mut dyn FnMut(usize, String),
) -> Result<(), WireError> {
    // Field order is not guaranteed on the wire: find the resource first.
    let mut resource = None;
    let mut scopes = Vec::new();
    for field in Fields::new(buf, base) {
        match field? {
            (1, Value::Bytes(r), offset) => resource = Some(message::<OtlpResource>(r, offset, "resource")?),
            (2, Value::Bytes(ss), offset) => scopes.push((ss, offset)),
            _ => {}
        }
    }
    let resource = resource_from_otlp(resource.unwrap_or_default());
    for (ss, offset) in scopes {
        scope_spans(ss, offset, &resource, (&mut *out, max), invalid)?;
    }
    Ok(())
}

fn scope_spans(
    buf: &[u8],
    base: usize,
    resource: &Arc<Resource>,
    (out, max): (&mut Vec<Span>, usize),
    invalid: &mut dyn FnMut(usize, String),
) -> Result<(), WireError> {
    let mut scope = None;
    let mut spans = Vec::new();
    for field in Fields::new(buf, base) {
        match field? {
            (1, Value::Bytes(s), offset) => scope = Some(message::<InstrumentationScope>(s, offset, "scope")?),
            (2, Value::Bytes(span), offset) => spans.push((span, offset)),
            _ => {}
        }
    }
    let scope = scope_from_otlp(scope);
    if out.len().saturating_add(spans.len()) > max {
        let offset = spans.first().map_or(base, |s| s.1);
        return Err(WireError { offset, reason: too_many_spans(max) });
    }
    out.reserve(spans.len());
    for (bytes, offset) in spans {
        match span(bytes, offset, resource, &scope)? {
            Ok(span) => out.push(span),
            Err(reason) => invalid(offset, reason),
        }
    }
    Ok(())
}

/// The outer `Result` is a malformed message; the inner one a well-formed span
/// that is invalid (a bad id).
fn span(buf: &[u8], base: usize, resource: &Arc<Resource>, scope: &Arc<Scope>) -> Result<Result<Span, String>, WireError> {
    let (mut trace, mut id, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let mut name = String::new();
    let (mut kind, mut start, mut end) = (0i32, 0u64, 0u64);
    let mut attributes: Vec<KeyValue> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut links: Vec<Link> = Vec::new();
    let mut status = OtlpStatus::default();
    for field in Fields::new(buf, base) {
        match field? {
            (1, Value::Bytes(b), _) => trace = b,
            (2, Value::Bytes(b), _) => id = b,
            (4, Value::Bytes(b), _) => parent = b,
            (5, Value::Bytes(b), offset) => {
                name =
                    std::str::from_utf8(b).map_err(|_| WireError { offset, reason: "span name is not UTF-8".into() })?.to_owned()
            }
            (6, Value::Varint(v), _) => kind = v as i32,
            (7, Value::Fixed64(v), _) => start = v,
            (8, Value::Fixed64(v), _) => end = v,
            (9, Value::Bytes(b), offset) => attributes.push(message(b, offset, "span attribute")?),
            (11, Value::Bytes(b), offset) => events.push(message(b, offset, "span event")?),
            (13, Value::Bytes(b), offset) => links.push(message(b, offset, "span link")?),
            (15, Value::Bytes(b), offset) => status = message(b, offset, "span status")?,
            (1 | 2 | 4 | 5 | 7 | 8 | 9 | 11 | 13 | 15, _, offset) => {
                return Err(WireError { offset, reason: "span field has the wrong wire type".into() });
            }
            _ => {}
        }
    }
    let ids = (|| Ok::<_, String>((trace_id(trace)?, span_id(id, "spanId")?, parent_span_id(parent)?)))();
    Ok(ids.map(|(trace_id, span_id, parent_span_id)| Span {
        trace_id,
        span_id,
        parent_span_id,
        resource: resource.clone(),
        scope: scope.clone(),
        name,
        kind: SpanKind::from_otlp(kind),
        status: Status { code: StatusCode::from_otlp(status.code), message: status.message },
        start,
        end,
        attributes,
        events,
        links,
    }))
}
