//! Jaeger JSON as the Jaeger query API and UI produce and load it:
//! `{"data":[{"traceID", "spans":[...], "processes":{...}}]}`. Span kind, status
//! and scope travel as the tags the OpenTelemetry-to-Jaeger translation uses
//! (`span.kind`, `otel.status_code`, `error`, `otel.scope.name`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::json::{error_at, micros_to_nanos, parse_all, parse_element};
use super::{ParseError, hex_id};
use crate::trace::{Resource, Scope, Span, SpanKind, Status, StatusCode, Trace, UNKNOWN_SERVICE};

#[derive(Deserialize)]
struct File<'a> {
    #[serde(borrow, default)]
    data: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct TraceIn<'a> {
    #[serde(borrow, default)]
    spans: Vec<&'a RawValue>,
    #[serde(default)]
    processes: HashMap<String, Process>,
}

#[derive(Deserialize, Serialize, Default, Clone)]
struct Process {
    #[serde(rename = "serviceName", default)]
    service_name: String,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize, Serialize, Clone)]
struct Tag {
    key: String,
    #[serde(rename = "type", default)]
    kind: String,
    value: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpanIn {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "parentSpanID", default)]
    parent_span_id: Option<String>,
    #[serde(default)]
    operation_name: String,
    #[serde(default)]
    references: Vec<Reference>,
    start_time: u64,
    #[serde(default)]
    duration: u64,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    logs: Vec<Log>,
    #[serde(rename = "processID", default)]
    process_id: String,
    #[serde(default)]
    process: Option<Process>,
}

#[derive(Deserialize, Serialize)]
struct Reference {
    #[serde(rename = "refType")]
    ref_type: String,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize, Serialize)]
struct Log {
    timestamp: u64,
    #[serde(default)]
    fields: Vec<Tag>,
}

pub fn read(text: &[u8], out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    let file: File = parse_all(text)?;
    for raw_trace in file.data {
        let trace: TraceIn = parse_element(text, raw_trace)?;
        let mut resources: HashMap<&str, Arc<Resource>> = HashMap::new();
        for raw_span in trace.spans {
            let span: SpanIn = parse_element(text, raw_span)?;
            let resource = match (&span.process, trace.processes.get_key_value(&span.process_id)) {
                (Some(inline), _) => resource_of(inline),
                (None, Some((id, process))) => resources.entry(id.as_str()).or_insert_with(|| resource_of(process)).clone(),
                (None, None) => {
                    return Err(error_at(
                        text,
                        raw_span,
                        format!("processID {:?} is not in the trace's processes", span.process_id),
                    ));
                }
            };
            let span = convert(span, resource).map_err(|e| error_at(text, raw_span, e))?;
            if out.len() >= max {
                return Err(error_at(text, raw_span, super::too_many_spans(max)));
            }
            out.push(span);
        }
    }
    Ok(())
}

fn resource_of(process: &Process) -> Arc<Resource> {
    let service = if process.service_name.is_empty() { UNKNOWN_SERVICE.to_string() } else { process.service_name.clone() };
    Resource::new(service, process.tags.iter().map(tag_to_kv).collect())
}

fn convert(span: SpanIn, resource: Arc<Resource>) -> Result<Span, String> {
    let trace_id = hex_id::<16>(span.trace_id.as_bytes(), "traceID")?;
    let span_id = hex_id::<8>(span.span_id.as_bytes(), "spanID")?;
    let start = micros_to_nanos(span.start_time, "startTime")?;
    let end = start
        .checked_add(micros_to_nanos(span.duration, "duration")?)
        .ok_or("startTime + duration overflows 64-bit nanoseconds")?;
    let mut parent_span_id = match span.parent_span_id.as_deref() {
        Some(p) if !p.is_empty() && p.bytes().any(|b| b != b'0') => Some(hex_id::<8>(p.as_bytes(), "parentSpanID")?),
        _ => None,
    };
    let mut links = Vec::new();
    for r in &span.references {
        let ref_trace = hex_id::<16>(r.trace_id.as_bytes(), "references.traceID")?;
        let ref_span = hex_id::<8>(r.span_id.as_bytes(), "references.spanID")?;
        if parent_span_id.is_none() && r.ref_type == "CHILD_OF" && ref_trace == trace_id {
            parent_span_id = Some(ref_span);
        } else if Some(ref_span) != parent_span_id {
            links.push(Link { trace_id: ref_trace.to_vec(), span_id: ref_span.to_vec(), ..Default::default() });
        }
    }
    let mut kind = SpanKind::Unspecified;
    let mut status = Status::default();
    let mut scope = Scope::default();
    let mut attributes = Vec::with_capacity(span.tags.len());
    for tag in &span.tags {
        let text = || tag.value.as_str().map(str::to_string).unwrap_or_else(|| tag.value.to_string());
        match tag.key.as_str() {
            "span.kind" => kind = SpanKind::parse(&text()).unwrap_or_default(),
            "otel.status_code" => {
                status.code = match text().to_ascii_uppercase().as_str() {
                    "ERROR" => StatusCode::Error,
                    "OK" => StatusCode::Ok,
                    _ => StatusCode::Unset,
                }
            }
            "otel.status_description" => status.message = text(),
            "error" if tag.value == serde_json::Value::Bool(true) || text() == "true" => status.code = StatusCode::Error,
            "otel.scope.name" | "otel.library.name" => scope.name = text(),
            "otel.scope.version" | "otel.library.version" => scope.version = text(),
            _ => attributes.push(tag_to_kv(tag)),
        }
    }
    let events = span.logs.iter().map(|log| event_of(log)).collect::<Result<Vec<_>, _>>()?;
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        resource,
        scope: Arc::new(scope),
        name: span.operation_name,
        kind,
        status,
        start,
        end,
        attributes,
        events,
        links,
    })
}

fn event_of(log: &Log) -> Result<Event, String> {
    let mut name = String::from("log");
    let mut attributes = Vec::new();
    for field in &log.fields {
        match (field.key.as_str(), field.value.as_str()) {
            ("event", Some(event)) => name = event.to_string(),
            _ => attributes.push(tag_to_kv(field)),
        }
    }
    Ok(Event { time_unix_nano: micros_to_nanos(log.timestamp, "logs.timestamp")?, name, attributes, ..Default::default() })
}

/// A Jaeger tag as a typed OTLP attribute; values that do not match their
/// declared type are kept as strings rather than dropped.
fn tag_to_kv(tag: &Tag) -> KeyValue {
    use serde_json::Value as J;
    let value = match (tag.kind.to_ascii_lowercase().as_str(), &tag.value) {
        ("bool", J::Bool(b)) => Value::BoolValue(*b),
        ("bool", J::String(s)) if s == "true" || s == "false" => Value::BoolValue(s == "true"),
        ("int64", J::Number(n)) if n.is_i64() => Value::IntValue(n.as_i64().unwrap_or_default()),
        ("int64", J::String(s)) if s.parse::<i64>().is_ok() => Value::IntValue(s.parse().unwrap_or_default()),
        ("float64", J::Number(n)) => Value::DoubleValue(n.as_f64().unwrap_or_default()),
        ("float64", J::String(s)) if s.parse::<f64>().is_ok() => Value::DoubleValue(s.parse().unwrap_or_default()),
        ("binary", J::String(s)) => match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(bytes) => Value::BytesValue(bytes),
            Err(_) => Value::StringValue(s.clone()),
        },
        (_, J::String(s)) => Value::StringValue(s.clone()),
        (_, other) => Value::StringValue(other.to_string()),
    };
    KeyValue { key: tag.key.clone(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn kv_to_tag(kv: &KeyValue) -> Tag {
    use serde_json::Value as J;
    let (kind, value) = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => ("string", J::String(s.clone())),
        Some(Value::BoolValue(b)) => ("bool", J::Bool(*b)),
        Some(Value::IntValue(i)) => ("int64", J::from(*i)),
        Some(Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => ("float64", J::Number(n)),
            None => ("string", J::String(d.to_string())),
        },
        Some(Value::BytesValue(b)) => ("binary", J::String(base64::engine::general_purpose::STANDARD.encode(b))),
        Some(other) => ("string", J::String(format!("{other:?}"))),
        None => ("string", J::String(String::new())),
    };
    Tag { key: kv.key.clone(), kind: kind.to_string(), value }
}

fn string_tag(key: &str, value: &str) -> Tag {
    Tag { key: key.to_string(), kind: "string".into(), value: serde_json::Value::String(value.into()) }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    operation_name: &'a str,
    references: Vec<Reference>,
    flags: u32,
    start_time: u64,
    duration: u64,
    tags: Vec<Tag>,
    logs: Vec<Log>,
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<()>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: SpansOut<'a>,
    // Ordered, so that a packet and a seed write the same bytes every time.
    processes: BTreeMap<String, Process>,
    warnings: Option<()>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    data: Traces<'a>,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<()>,
}

/// The file's traces, each converted as it is written, so that writing holds
/// one trace's Jaeger form at a time rather than the window's.
struct Traces<'a>(&'a [Trace]);

impl Serialize for Traces<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(trace_out))
    }
}

/// Writes Jaeger JSON; times are rounded down to Jaeger's microseconds.
pub fn write(traces: &[Trace], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let file = FileOut { total: traces.len(), data: Traces(traces), limit: 0, offset: 0, errors: None };
    serde_json::to_writer(&mut *out, &file)?;
    out.write_all(b"\n")
}

/// One trace's spans, each converted as it is written (a trace may hold
/// hundreds of thousands), with the process id of each span's resource.
struct SpansOut<'a> {
    spans: &'a [Span],
    process_ids: HashMap<*const Resource, String>,
}

impl Serialize for SpansOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let id = |span: &Span| self.process_ids.get(&Arc::as_ptr(&span.resource)).cloned().unwrap_or_default();
        serializer.collect_seq(self.spans.iter().map(|span| span_out(span, id(span))))
    }
}

fn trace_out(trace: &Trace) -> TraceOut<'_> {
    let mut processes: BTreeMap<String, Process> = BTreeMap::new();
    let mut process_ids: HashMap<*const Resource, String> = HashMap::new();
    for span in &trace.spans {
        process_ids.entry(Arc::as_ptr(&span.resource)).or_insert_with(|| {
            let id = format!("p{}", processes.len() + 1);
            let tags = span.resource.attributes.iter().map(kv_to_tag).collect();
            processes.insert(id.clone(), Process { service_name: span.resource.service.clone(), tags });
            id
        });
    }
    let spans = SpansOut { spans: &trace.spans, process_ids };
    TraceOut { trace_id: hex::encode(trace.trace_id), spans, processes, warnings: None }
}

fn span_out(span: &Span, process_id: String) -> SpanOut<'_> {
    let trace_id = hex::encode(span.trace_id);
    let mut references: Vec<Reference> = span
        .parent_span_id
        .iter()
        .map(|p| Reference { ref_type: "CHILD_OF".into(), trace_id: trace_id.clone(), span_id: hex::encode(p) })
        .collect();
    references.extend(span.links.iter().map(|l| Reference {
        ref_type: "FOLLOWS_FROM".into(),
        trace_id: hex::encode(&l.trace_id),
        span_id: hex::encode(&l.span_id),
    }));
    let mut tags: Vec<Tag> = span.attributes.iter().map(kv_to_tag).collect();
    if span.kind != SpanKind::Unspecified {
        tags.push(string_tag("span.kind", span.kind.as_str()));
    }
    if span.status.code != StatusCode::Unset {
        tags.push(string_tag("otel.status_code", span.status.code.as_str()));
    }
    if span.status.code == StatusCode::Error {
        tags.push(Tag { key: "error".into(), kind: "bool".into(), value: serde_json::Value::Bool(true) });
    }
    if !span.status.message.is_empty() {
        tags.push(string_tag("otel.status_description", &span.status.message));
    }
    if !span.scope.name.is_empty() {
        tags.push(string_tag("otel.scope.name", &span.scope.name));
    }
    if !span.scope.version.is_empty() {
        tags.push(string_tag("otel.scope.version", &span.scope.version));
    }
    let logs = span
        .events
        .iter()
        .map(|e| {
            let mut fields = vec![string_tag("event", &e.name)];
            fields.extend(e.attributes.iter().map(kv_to_tag));
            Log { timestamp: e.time_unix_nano / 1_000, fields }
        })
        .collect();
    SpanOut {
        trace_id,
        span_id: hex::encode(span.span_id),
        operation_name: &span.name,
        references,
        flags: 1,
        start_time: span.start / 1_000,
        duration: span.duration() / 1_000,
        tags,
        logs,
        process_id,
        warnings: None,
    }
}
