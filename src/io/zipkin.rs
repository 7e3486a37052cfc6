//! Zipkin v2 JSON: a list of spans. Zipkin lets a server share its client's span
//! id (`"shared": true`); gent needs unique ids, so a shared server span that
//! collides with a client span gets an id derived from it and its process, is parented to the
//! client span, and takes over the children of its own service. Zipkin also lets
//! a span arrive in parts; an undated part (no timestamp) is merged into the dated
//! part with the same ids and local service, as Zipkin itself does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::xxh3_64;

use super::json::{error_at, micros_to_nanos, parse_all, parse_element};
use super::{ParseError, hex_id};
use crate::otlp::string_attribute;
use crate::trace::{Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId, UNKNOWN_SERVICE};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpanIn {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(default)]
    local_endpoint: Option<Endpoint>,
    #[serde(default)]
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    shared: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Deserialize)]
struct Annotation {
    timestamp: u64,
    value: String,
}

pub fn read(text: &[u8], out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    let raws: Vec<&RawValue> = parse_all(text)?;
    let mut parts = Vec::with_capacity(raws.len());
    for raw in raws {
        parts.push((parse_element::<SpanIn>(text, raw)?, raw));
    }
    let parts = merge_undated_parts(parts)
        .map_err(|raw| error_at(text, raw, "span part has no timestamp and no dated part with its id and service"))?;
    let mut resources: HashMap<InstanceKey, Arc<Resource>> = HashMap::new();
    let scope = Arc::new(Scope::default());
    let mut spans = Vec::with_capacity(parts.len());
    let mut shared = Vec::with_capacity(parts.len());
    for (zipkin, raw) in parts {
        shared.push(zipkin.shared);
        let span = convert(zipkin, &mut resources, &scope).map_err(|e| error_at(text, raw, e))?;
        spans.push(span);
    }
    split_shared_spans(&mut spans, &shared);
    // The document is parsed whole first, so its bytes bound what it holds.
    if out.len().saturating_add(spans.len()) > max {
        return Err(ParseError::new(super::Position::Byte(0), super::too_many_spans(max)));
    }
    out.extend(spans);
    Ok(())
}

type Part<'a> = (SpanIn, &'a RawValue);

/// Folds every part without a timestamp into the first dated part of the same
/// span (trace id, id, local service). Fails with the orphaned part.
fn merge_undated_parts(parts: Vec<Part<'_>>) -> Result<Vec<Part<'_>>, &RawValue> {
    let key = |s: &SpanIn| {
        let service = s.local_endpoint.as_ref().and_then(|e| e.service_name.clone());
        (s.trace_id.to_ascii_lowercase(), s.id.to_ascii_lowercase(), service)
    };
    let (dated, undated): (Vec<Part>, Vec<Part>) = parts.into_iter().partition(|(s, _)| s.timestamp.is_some());
    if undated.is_empty() {
        return Ok(dated);
    }
    let mut dated = dated;
    let mut index = HashMap::new();
    for (i, (span, _)) in dated.iter().enumerate() {
        index.entry(key(span)).or_insert(i);
    }
    for (part, raw) in undated {
        let &i = index.get(&key(&part)).ok_or(raw)?;
        let target = &mut dated[i].0;
        if target.name.as_deref().is_none_or(str::is_empty) {
            target.name = part.name;
        }
        target.kind = target.kind.take().or(part.kind);
        target.duration = target.duration.or(part.duration);
        target.remote_endpoint = target.remote_endpoint.take().or(part.remote_endpoint);
        target.annotations.extend(part.annotations);
        for (k, v) in part.tags {
            target.tags.entry(k).or_insert(v);
        }
    }
    Ok(dated)
}

/// A process: service name, address and port of the local endpoint.
type InstanceKey = (String, Option<String>, Option<u16>);

fn convert(span: SpanIn, resources: &mut HashMap<InstanceKey, Arc<Resource>>, scope: &Arc<Scope>) -> Result<Span, String> {
    let local = span.local_endpoint.unwrap_or(Endpoint { service_name: None, ipv4: None, ipv6: None, port: None });
    let service = local.service_name.filter(|s| !s.is_empty()).unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
    let key = (service, local.ipv4.or(local.ipv6), local.port);
    let resource = resources.entry(key).or_insert_with_key(resource_of).clone();
    let timestamp = span.timestamp.ok_or("span has no timestamp")?;
    let start = micros_to_nanos(timestamp, "timestamp")?;
    let end = start
        .checked_add(micros_to_nanos(span.duration.unwrap_or(0), "duration")?)
        .ok_or("timestamp + duration overflows 64-bit nanoseconds")?;
    let mut status = Status::default();
    let mut attributes = Vec::with_capacity(span.tags.len() + 1);
    for (key, value) in &span.tags {
        if key == "error" {
            status = Status { code: StatusCode::Error, message: value.clone() };
        } else {
            attributes.push(string_attribute(key, value));
        }
    }
    if let Some(peer) = span.remote_endpoint.and_then(|e| e.service_name) {
        attributes.push(string_attribute("peer.service", &peer));
    }
    let events = span
        .annotations
        .iter()
        .map(|a| {
            Ok(Event {
                time_unix_nano: micros_to_nanos(a.timestamp, "annotations.timestamp")?,
                name: a.value.clone(),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Span {
        trace_id: hex_id::<16>(span.trace_id.as_bytes(), "traceId")?,
        span_id: hex_id::<8>(span.id.as_bytes(), "id")?,
        parent_span_id: match span.parent_id.as_deref() {
            None | Some("") => None,
            Some(p) => Some(hex_id::<8>(p.as_bytes(), "parentId")?),
        },
        resource,
        scope: scope.clone(),
        name: span.name.unwrap_or_default(),
        kind: span.kind.as_deref().and_then(SpanKind::parse).unwrap_or_default(),
        status,
        start,
        end,
        attributes,
        events,
        links: vec![],
    })
}

fn resource_of((service, ip, port): &InstanceKey) -> Arc<Resource> {
    let mut attributes = Vec::new();
    if let Some(ip) = ip {
        attributes.push(string_attribute("net.host.ip", ip));
    }
    if let Some(port) = port {
        attributes.push(KeyValue {
            key: "net.host.port".into(),
            value: Some(AnyValue { value: Some(Value::IntValue(i64::from(*port))) }),
            ..Default::default()
        });
    }
    Resource::new(service.clone(), attributes)
}

/// Gives each shared server span that collides with a non-shared span its own id.
fn split_shared_spans(spans: &mut [Span], shared: &[bool]) {
    let owners: HashSet<(TraceId, SpanId)> =
        spans.iter().zip(shared).filter(|(_, s)| !**s).map(|(s, _)| (s.trace_id, s.span_id)).collect();
    // (trace, old id, process) -> new id of the server half
    let mut renamed: HashMap<(TraceId, SpanId, *const Resource), SpanId> = HashMap::new();
    for (span, _) in spans.iter_mut().zip(shared).filter(|(_, s)| **s) {
        if !owners.contains(&(span.trace_id, span.span_id)) {
            continue;
        }
        let mut seed = span.span_id.to_vec();
        seed.extend_from_slice(format!("{:?}", span.resource).as_bytes());
        let new_id = xxh3_64(&seed).max(1).to_be_bytes();
        renamed.insert((span.trace_id, span.span_id, Arc::as_ptr(&span.resource)), new_id);
        span.parent_span_id = Some(span.span_id);
        span.span_id = new_id;
    }
    if renamed.is_empty() {
        return;
    }
    for span in spans.iter_mut() {
        let Some(parent) = span.parent_span_id else {
            continue;
        };
        if let Some(&new_parent) = renamed.get(&(span.trace_id, parent, Arc::as_ptr(&span.resource)))
            && new_parent != span.span_id
        {
            span.parent_span_id = Some(new_parent);
        }
    }
}
