//! An OTLP/gRPC load generator that shares no code with gent: it reads span
//! CSV itself (`TraceID,SpanID,ParentID,PodName,OperationName,Start,End,…`,
//! the `../shared/data` layout), builds `ExportTraceServiceRequest`s of whole
//! traces with `opentelemetry-proto`'s types and sends them with its tonic
//! client over several streams (one HTTP/2 connection each, one request in
//! flight per stream) for a fixed time. Every pass over the input gets fresh
//! trace ids. Used by `benches/ingest.sh` to compare gent's receiver with
//! rotel-agent under a load that is not `gent replay`.
//!
//! cargo run --release --example otlp_load -- ENDPOINT SECONDS STREAMS BATCH FILE...
//!
//! Prints one JSON object: spans accepted, requests refused, seconds and
//! accepted spans per second.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

struct Row {
    trace: [u8; 16],
    span: [u8; 8],
    parent: Option<[u8; 8]>,
    pod: String,
    name: String,
    start: u64,
    end: u64,
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    // Short ids are left-padded, as OTLP exporters pad them.
    let padded = format!("{text:0>width$}", width = 2 * N);
    hex::decode_to_slice(padded.get(..2 * N)?, &mut out).ok()?;
    Some(out)
}

fn read_rows(path: &str) -> Vec<Row> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let reader: Box<dyn BufRead> = if path.ends_with(".gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut rows = Vec::new();
    for line in reader.lines().skip(1) {
        let line = line.unwrap_or_else(|e| panic!("{path}: {e}"));
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() < 7 {
            continue;
        }
        let (Some(trace), Some(span), Ok(start), Ok(end)) =
            (hex_bytes::<16>(cols[0]), hex_bytes::<8>(cols[1]), cols[5].parse(), cols[6].parse())
        else {
            continue;
        };
        rows.push(Row {
            trace,
            span,
            parent: if cols[2] == "root" { None } else { hex_bytes::<8>(cols[2]) },
            pod: cols[3].to_string(),
            name: cols[4].to_string(),
            start,
            end,
        });
    }
    rows
}

/// `frontend-579b9bff58-t2dbm` -> `frontend`.
fn service_of(pod: &str) -> &str {
    let mut parts = pod.rsplitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(service)) => service,
        _ => pod,
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}

/// Requests of whole traces, about `batch` spans each, with times shifted so
/// the first span starts now.
fn build_requests(rows: Vec<Row>, batch: usize) -> Vec<(ExportTraceServiceRequest, u64)> {
    let first = rows.iter().map(|r| r.start).min().unwrap_or(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let shift = now.saturating_sub(first);
    let mut order = Vec::new();
    let mut traces: HashMap<[u8; 16], Vec<Row>> = HashMap::new();
    for row in rows {
        let entry = traces.entry(row.trace).or_default();
        if entry.is_empty() {
            order.push(row.trace);
        }
        entry.push(row);
    }
    let mut requests = Vec::new();
    let mut pending: Vec<Row> = Vec::new();
    for id in order {
        pending.extend(traces.remove(&id).unwrap_or_default());
        if pending.len() >= batch {
            requests.push(request(std::mem::take(&mut pending), shift));
        }
    }
    if !pending.is_empty() {
        requests.push(request(pending, shift));
    }
    requests
}

fn request(rows: Vec<Row>, shift: u64) -> (ExportTraceServiceRequest, u64) {
    let count = rows.len() as u64;
    let mut by_service: HashMap<String, Vec<Span>> = HashMap::new();
    for row in rows {
        let span = Span {
            trace_id: row.trace.to_vec(),
            span_id: row.span.to_vec(),
            parent_span_id: row.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: row.name,
            kind: if row.parent.is_none() { span::SpanKind::Server } else { span::SpanKind::Internal } as i32,
            start_time_unix_nano: row.start + shift,
            end_time_unix_nano: row.end + shift,
            attributes: vec![text("k8s.pod.name", &row.pod)],
            ..Default::default()
        };
        by_service.entry(service_of(&row.pod).to_string()).or_default().push(span);
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", &service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, count)
}

/// The same request with the trace ids of pass `pass`: its first eight bytes
/// XOR the pass number, so every pass is a new set of traces.
fn for_pass(template: &ExportTraceServiceRequest, pass: u64) -> ExportTraceServiceRequest {
    let mut out = template.clone();
    let mask = pass.to_le_bytes();
    for span in out.resource_spans.iter_mut().flat_map(|r| r.scope_spans.iter_mut()).flat_map(|s| s.spans.iter_mut()) {
        for (byte, m) in span.trace_id.iter_mut().zip(mask) {
            *byte ^= m;
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: otlp_load ENDPOINT SECONDS STREAMS BATCH FILE...");
        std::process::exit(2);
    }
    let endpoint = args[1].clone();
    let seconds: f64 = args[2].parse().expect("SECONDS");
    let streams: usize = args[3].parse().expect("STREAMS");
    let batch: usize = args[4].parse().expect("BATCH");
    let rows: Vec<Row> = args[5..].iter().flat_map(|p| read_rows(p)).collect();
    let requests = Arc::new(build_requests(rows, batch));
    assert!(!requests.is_empty(), "no spans in the input");

    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let channel =
            tonic::transport::Endpoint::from_shared(endpoint.clone()).expect("ENDPOINT").connect().await.expect("connect");
        let mut client = TraceServiceClient::new(channel);
        let (requests, next, accepted, refused) = (requests.clone(), next.clone(), accepted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (template, spans) = &requests[(i % requests.len() as u64) as usize];
                let message = for_pass(template, i / requests.len() as u64 + 1);
                match client.export(message).await {
                    Ok(_) => {
                        accepted.fetch_add(*spans, Ordering::Relaxed);
                    }
                    Err(_) => {
                        // Pushed back: the receiver refused it; wait as an SDK would.
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let spans = accepted.load(Ordering::Relaxed);
    println!(
        "{{\"spans_accepted\":{spans},\"requests_refused\":{},\"seconds\":{elapsed:.2},\"spans_per_second\":{:.0}}}",
        refused.load(Ordering::Relaxed),
        spans as f64 / elapsed
    );
}
