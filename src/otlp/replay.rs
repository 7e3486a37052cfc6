//! `gent replay`: recorded traces sent over OTLP as live traffic, to load-test a
//! pipeline with one's own traces and to benchmark gent.
//!
//! Each pass gets fresh ids: trace and span ids are XORed with a random key per
//! pass, which keeps them unique and keeps every parent link intact without a
//! lookup table. Timestamps are shifted so the first trace starts now, keeping
//! the timing within and between traces. Requests go through the shared OTLP
//! client and its retry policy: backpressure (RESOURCE_EXHAUSTED with
//! RetryInfo, HTTP 429/503 with Retry-After) is waited out and the request
//! sent again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use rand::RngCore;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::otlp;
use crate::trace::Trace;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Client(#[from] otlp::ClientError),
    #[error("nothing to replay: the input holds no spans")]
    Empty,
    #[error("every request failed; last error: {0}")]
    AllFailed(String),
}

pub use crate::otlp::Protocol as ReplayProtocol;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// `http://host:4317` for gRPC; `http://host:4318` (`/v1/traces` added) for HTTP.
    pub endpoint: String,
    pub protocol: ReplayProtocol,
    /// Spans per second; `None` sends as fast as the receiver takes them.
    pub rate: Option<f64>,
    /// Passes over the input.
    pub loops: u64,
    /// Spans per request (whole traces are never split).
    pub batch_spans: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ReplayReport {
    pub spans_sent: u64,
    pub traces_sent: u64,
    pub requests: u64,
    /// Requests sent again after backpressure.
    pub retries: u64,
    /// Spans the receiver rejected in partial successes.
    pub rejected_spans: u64,
    /// Requests that failed for good.
    pub failed_requests: u64,
    pub seconds: f64,
    pub spans_per_second: f64,
}

/// One request's worth of whole traces.
struct Prepared {
    request: ExportTraceServiceRequest,
    spans: u64,
    traces: u64,
}

/// Groups traces into requests of about `batch_spans` spans.
fn prepare(traces: &[Trace], batch_spans: usize) -> Vec<Prepared> {
    let mut out = Vec::new();
    let mut group: Vec<&Trace> = Vec::new();
    let mut spans = 0;
    for trace in traces {
        if spans > 0 && spans + trace.spans.len() > batch_spans {
            out.push(to_prepared(&group, spans));
            group.clear();
            spans = 0;
        }
        spans += trace.spans.len();
        group.push(trace);
    }
    if spans > 0 {
        out.push(to_prepared(&group, spans));
    }
    out
}

fn to_prepared(group: &[&Trace], spans: usize) -> Prepared {
    Prepared { request: super::to_request(group.iter().flat_map(|t| &t.spans)), spans: spans as u64, traces: group.len() as u64 }
}

/// The per-pass changes: ids XOR keys, times shifted by `shift` nanoseconds.
#[derive(Clone, Copy)]
struct Pass {
    trace_key: [u8; 16],
    span_key: [u8; 8],
    shift: i128,
}

impl Pass {
    fn apply(&self, request: &mut ExportTraceServiceRequest) {
        let shift = |t: &mut u64| *t = (*t as i128 + self.shift).clamp(0, u64::MAX as i128) as u64;
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    xor(&mut span.trace_id, &self.trace_key);
                    xor(&mut span.span_id, &self.span_key);
                    xor(&mut span.parent_span_id, &self.span_key);
                    shift(&mut span.start_time_unix_nano);
                    shift(&mut span.end_time_unix_nano);
                    for event in &mut span.events {
                        shift(&mut event.time_unix_nano);
                    }
                    for link in &mut span.links {
                        xor(&mut link.trace_id, &self.trace_key);
                        xor(&mut link.span_id, &self.span_key);
                    }
                }
            }
        }
    }
}

fn xor(id: &mut [u8], key: &[u8]) {
    if id.len() == key.len() {
        id.iter_mut().zip(key).for_each(|(b, k)| *b ^= k);
    }
}

/// A non-zero key: ids XORed with it never collide with each other, and an id
/// equal to the key (which would become the invalid all-zero id) has odds 2^-64.
fn key<const N: usize>(rng: &mut impl RngCore) -> [u8; N] {
    let mut key = [0u8; N];
    rng.fill_bytes(&mut key);
    key[0] |= 1;
    key
}

/// The client `options` describe: no deadline per request (a load generator
/// waits as long as the receiver takes), no gzip.
async fn connect(options: &ReplayOptions) -> Result<otlp::Client, ReplayError> {
    let endpoint = match options.protocol {
        ReplayProtocol::Grpc => options.endpoint.clone(),
        ReplayProtocol::Http => {
            let base = options.endpoint.trim_end_matches('/');
            if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") }
        }
    };
    let config = otlp::ClientConfig { endpoint, protocol: options.protocol, timeout: None, gzip: false, headers: Vec::new() };
    Ok(otlp::Client::connect(&config).await?)
}

/// Longest wait on backpressure, however long the receiver asks for: replay is
/// a load generator and should keep probing.
const MAX_RETRY_WAIT: Duration = Duration::from_millis(250);

/// How long a request keeps being retried without the receiver asking for a
/// wait (connection refused, a server shutting down): then it counts as failed.
/// Backpressure the receiver asks for (RetryInfo, Retry-After) is waited out
/// for as long as it lasts.
const RETRY_UNASKED_FOR: Duration = Duration::from_secs(30);

/// Sends one request until it is accepted, refused, or retried without an
/// asked-for wait for [`RETRY_UNASKED_FOR`].
async fn send(client: &otlp::Client, request: &otlp::Prepared, sent: &mut Sent) -> Result<(), String> {
    let backoff =
        || otlp::Backoff::new(Duration::from_millis(100), MAX_RETRY_WAIT, Some(RETRY_UNASKED_FOR)).capped(MAX_RETRY_WAIT);
    let mut unasked = backoff();
    loop {
        match client.send(request).await {
            otlp::Attempt::Sent { rejected, .. } => {
                sent.ok = true;
                sent.rejected = rejected;
                return Ok(());
            }
            otlp::Attempt::Refused { reason } => return Err(reason),
            otlp::Attempt::Retry { reason, asked } => {
                sent.retries += 1;
                match asked {
                    Some(wait) => {
                        unasked = backoff();
                        tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
                    }
                    None if unasked.again(None).await => {}
                    None => return Err(reason),
                }
            }
        }
    }
}

/// Sends `traces` `options.loops` times.
pub async fn replay(traces: &[Trace], options: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let prepared = Arc::new(prepare(traces, options.batch_spans.max(1)));
    if prepared.is_empty() {
        return Err(ReplayError::Empty);
    }
    let first_start = traces.iter().map(|t| t.start()).min().unwrap_or(0);
    let client = Arc::new(connect(options).await?);
    let in_flight = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let started = Instant::now();
    let mut report = ReplayReport::default();
    let mut rng = rand::rng();
    let mut handles = Vec::new();
    let mut scheduled_spans = 0u64;
    let last_error = Arc::new(std::sync::Mutex::new(String::new()));
    for _ in 0..options.loops {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()) as i128;
        let pass = Pass { trace_key: key(&mut rng), span_key: key(&mut rng), shift: now - first_start as i128 };
        for (i, p) in prepared.iter().enumerate() {
            if let Some(rate) = options.rate {
                let due = started + Duration::from_secs_f64(scheduled_spans as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            scheduled_spans += p.spans;
            let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
            let (client, prepared, last_error) = (client.clone(), prepared.clone(), last_error.clone());
            handles.push(tokio::spawn(async move {
                let _permit = permit;
                let Prepared { request, spans, traces } = &prepared[i];
                let mut request = request.clone();
                pass.apply(&mut request);
                let mut sent = Sent { ok: false, spans: *spans, traces: *traces, retries: 0, rejected: 0 };
                let outcome = match client.prepare(request) {
                    Ok(request) => send(&client, &request, &mut sent).await,
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = outcome {
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
                }
                sent
            }));
            report.requests += 1;
            // Reap finished tasks now and then so the list stays short.
            if handles.len() >= 4 * options.concurrency.max(1) {
                reap(&mut handles, &mut report, false).await;
            }
        }
    }
    reap(&mut handles, &mut report, true).await;
    report.seconds = started.elapsed().as_secs_f64();
    report.spans_per_second = report.spans_sent as f64 / report.seconds.max(1e-9);
    if report.failed_requests == report.requests {
        let error = last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        return Err(ReplayError::AllFailed(error));
    }
    Ok(report)
}

/// What became of one request.
struct Sent {
    ok: bool,
    spans: u64,
    traces: u64,
    retries: u64,
    rejected: u64,
}

type Task = tokio::task::JoinHandle<Sent>;

/// Collects finished tasks: the older half, or all of them when `all`.
async fn reap(handles: &mut Vec<Task>, report: &mut ReplayReport, all: bool) {
    let keep = if all { 0 } else { handles.len() / 2 };
    let done: Vec<Task> = handles.drain(..handles.len() - keep).collect();
    for handle in done {
        match handle.await {
            Ok(sent) if sent.ok => {
                report.spans_sent += sent.spans - sent.rejected.min(sent.spans);
                report.traces_sent += sent.traces;
                report.retries += sent.retries;
                report.rejected_spans += sent.rejected;
            }
            Ok(sent) => {
                report.retries += sent.retries;
                report.failed_requests += 1;
            }
            Err(_) => report.failed_requests += 1,
        }
    }
}
