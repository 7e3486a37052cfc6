//! Between opentelemetry-proto's OTLP types and gent's spans, both ways:
//! the ids checked (OTLP defines all-zero ids as invalid), `service.name`
//! lifted out of the resource, and requests built one `ResourceSpans` per
//! distinct resource. The wire decoder (`wire`) and every OTLP reader and
//! writer in `io` build on these.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status as OtlpStatus};

use crate::trace::UNKNOWN_SERVICE;
use crate::trace::{Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId};

/// The message of a read stopped at its span limit; readers match on it.
pub fn too_many_spans(max: usize) -> String {
    format!("more than {max} spans")
}

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
                return Err(format!("scopeSpans[{j}].spans[{k}]: {}", too_many_spans(max)));
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

pub fn trace_id(bytes: &[u8]) -> Result<TraceId, String> {
    let id: TraceId = bytes.try_into().map_err(|_| format!("traceId has {} bytes, expected 16", bytes.len()))?;
    if id == [0; 16] {
        return Err("traceId is all zeroes, which OTLP defines as invalid".into());
    }
    Ok(id)
}

pub fn span_id(bytes: &[u8], field: &str) -> Result<SpanId, String> {
    let id: SpanId = bytes.try_into().map_err(|_| format!("{field} has {} bytes, expected 8", bytes.len()))?;
    if id == [0; 8] {
        return Err(format!("{field} is all zeroes, which OTLP defines as invalid"));
    }
    Ok(id)
}

/// Empty and all-zero parent ids both mean "no parent": producers use either.
pub fn parent_span_id(bytes: &[u8]) -> Result<Option<SpanId>, String> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    span_id(bytes, "parentSpanId").map(Some)
}

/// Builds one export request from `spans`, one `ResourceSpans` per distinct
/// resource and one `ScopeSpans` per distinct scope within it.
pub fn to_request<'a>(spans: impl IntoIterator<Item = &'a Span>) -> ExportTraceServiceRequest {
    let resource_spans = by_resource_and_scope(spans)
        .into_iter()
        .map(|scopes| ResourceSpans {
            resource: Some(resource_to_otlp(&scopes[0][0].resource)),
            scope_spans: scopes
                .into_iter()
                .map(|spans| ScopeSpans {
                    scope: Some(scope_to_otlp(&spans[0].scope)),
                    spans: spans.into_iter().map(span_to_otlp).collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// Spans grouped as an OTLP request holds them: by resource, then by scope
/// within it, each group in the order of its first span. No group is empty.
pub fn by_resource_and_scope<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<Vec<Vec<&'a Span>>> {
    let mut groups: Vec<Vec<Vec<&Span>>> = Vec::new();
    // Keyed by allocation: spans of one process share their Arcs.
    let mut resources: HashMap<*const Resource, usize> = HashMap::new();
    let mut scopes: HashMap<(*const Resource, *const Scope), usize> = HashMap::new();
    for span in spans {
        let r = *resources.entry(Arc::as_ptr(&span.resource)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        let scope_groups = &mut groups[r];
        let s = *scopes.entry((Arc::as_ptr(&span.resource), Arc::as_ptr(&span.scope))).or_insert_with(|| {
            scope_groups.push(Vec::new());
            scope_groups.len() - 1
        });
        scope_groups[s].push(span);
    }
    groups
}

pub fn scope_to_otlp(scope: &Scope) -> InstrumentationScope {
    InstrumentationScope { name: scope.name.clone(), version: scope.version.clone(), ..Default::default() }
}

/// A span's status as OTLP carries it: none when it is the default.
pub fn status_to_otlp(span: &Span) -> Option<OtlpStatus> {
    (span.status != Status::default())
        .then(|| OtlpStatus { code: span.status.code.to_otlp(), message: span.status.message.clone() })
}

pub fn resource_to_otlp(resource: &Resource) -> OtlpResource {
    let mut attributes = Vec::with_capacity(resource.attributes.len() + 1);
    attributes.push(string_attribute(SERVICE_NAME, &resource.service));
    attributes.extend(resource.attributes.iter().cloned());
    OtlpResource { attributes, ..Default::default() }
}

fn span_to_otlp(span: &Span) -> OtlpSpan {
    let status = status_to_otlp(span);
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

pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}
