//! Span CSV as collected from TrainTicket and Online Boutique:
//! `TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration`.
//! The service is the pod name without its two trailing hash segments
//! (`ts-gateway-service-6f6cfc45b-h5m2n` → `ts-gateway-service`); the pod name is
//! kept as the resource attribute `k8s.pod.name`, where the OpenTelemetry
//! semantic conventions put it: one shared resource per pod, no per-span copy. `Duration` (µs) is redundant with
//! the nanosecond times and not read.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ParseError, Position, hex_id};
use crate::otlp::string_attribute;
use crate::trace::{Resource, Scope, Span, SpanKind, Status};

const COLUMNS: [&str; 7] = ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano", "EndTimeUnixNano"];
pub const POD_ATTRIBUTE: &str = "k8s.pod.name";

/// Whether `head` starts with a header naming every column the reader needs.
pub fn is_header(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let names: Vec<&str> = line.trim_end().split(',').collect();
    COLUMNS.iter().all(|c| names.contains(c))
}

pub fn read(text: &[u8], out: &mut Vec<Span>, max: usize) -> Result<(), ParseError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text);
    let headers =
        reader.byte_headers().map_err(|e| ParseError::new(Position::Line { line: 1, column: 1 }, e.to_string()))?.clone();
    let mut index = [0usize; 7];
    for (slot, name) in index.iter_mut().zip(COLUMNS) {
        *slot = headers
            .iter()
            .position(|h| h == name.as_bytes())
            .ok_or_else(|| ParseError::new(Position::Line { line: 1, column: 1 }, format!("header lacks column {name}")))?;
    }
    let scope = Arc::new(Scope::default());
    let mut pods: HashMap<Vec<u8>, Arc<Resource>> = HashMap::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                return Err(ParseError::new(Position::Line { line, column: 1 }, e.to_string()));
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        let span = parse_row(&record, &index, &mut pods, &scope)
            .map_err(|reason| ParseError::new(Position::Line { line, column: 1 }, reason))?;
        if out.len() >= max {
            return Err(ParseError::new(Position::Line { line, column: 1 }, super::too_many_spans(max)));
        }
        out.push(span);
    }
}

fn parse_row(
    record: &csv::ByteRecord,
    index: &[usize; 7],
    pods: &mut HashMap<Vec<u8>, Arc<Resource>>,
    scope: &Arc<Scope>,
) -> Result<Span, String> {
    let field =
        |i: usize| -> Result<&[u8], String> { record.get(index[i]).ok_or_else(|| format!("row has no {} column", COLUMNS[i])) };
    let parent = field(2)?;
    let parent_span_id = match parent {
        b"" | b"root" => None,
        p => Some(hex_id::<8>(p, "ParentID")?),
    };
    let pod = field(3)?;
    if !pods.contains_key(pod) {
        let name = std::str::from_utf8(pod).map_err(|_| "PodName is not UTF-8")?;
        let attributes = vec![string_attribute(POD_ATTRIBUTE, name)];
        pods.insert(pod.to_vec(), Resource::new(service_of_pod(name), attributes));
    }
    let resource = &pods[pod];
    let name = std::str::from_utf8(field(4)?).map_err(|_| "OperationName is not UTF-8")?;
    Ok(Span {
        trace_id: hex_id::<16>(field(0)?, "TraceID")?,
        span_id: hex_id::<8>(field(1)?, "SpanID")?,
        parent_span_id,
        resource: resource.clone(),
        scope: scope.clone(),
        name: name.to_string(),
        kind: SpanKind::Unspecified,
        status: Status::default(),
        start: nanos(field(5)?, "StartTimeUnixNano")?,
        end: nanos(field(6)?, "EndTimeUnixNano")?,
        attributes: vec![],
        events: vec![],
        links: vec![],
    })
}

fn nanos(text: &[u8], column: &str) -> Result<u64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("{column} {:?} is not a non-negative 64-bit integer", String::from_utf8_lossy(text)))
}

/// The Kubernetes pod name without its ReplicaSet and pod hash suffixes.
pub fn service_of_pod(pod: &str) -> &str {
    let mut cut = pod;
    for _ in 0..2 {
        match cut.rfind('-') {
            Some(i) if i > 0 => cut = &cut[..i],
            _ => return pod,
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_is_pod_without_two_hash_segments() {
        assert_eq!(service_of_pod("ts-gateway-service-6f6cfc45b-h5m2n"), "ts-gateway-service");
        assert_eq!(service_of_pod("frontend-579b9bff58-t2dbm"), "frontend");
        assert_eq!(service_of_pod("redis-cart"), "redis-cart");
        assert_eq!(service_of_pod("solo"), "solo");
    }

    #[test]
    fn bad_rows_name_their_line() {
        let text = b"TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration\n\
            04b0385e1feaf140061fb1ec80a57a73,ed5bfe495229b1cf,root,a-b-c,op,1,2,0\n\
            04b0385e1feaf140061fb1ec80a57a73,zz,root,a-b-c,op,1,2,0\n";
        let mut out = Vec::new();
        let err = read(text, &mut out, usize::MAX).unwrap_err();
        assert_eq!(err.position, Position::Line { line: 3, column: 1 });
        assert!(err.reason.contains("SpanID"), "{}", err.reason);
    }
}
