//! The compressor end to end, in process: real sockets, real TrainTicket traces,
//! every OTLP flavour, bad input, overload, and the daemon binary under SIGTERM.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gent::config::CompressorConfig;
use gent::io;
use gent::pipeline::compressor::{self, Running};
use gent::trace::Trace;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tonic::codec::CompressionEncoding;

fn local() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn config(dir: &Path) -> CompressorConfig {
    let mut config = CompressorConfig::default();
    config.receiver.grpc = local();
    config.receiver.http = local();
    config.metrics.endpoint = local();
    config.sink.otlp_json_dir = Some(dir.to_path_buf());
    // These tests are about ingest and windows; tests/pipeline.rs covers shipping.
    config.pipeline = None;
    config
}

fn hour_16() -> Vec<Trace> {
    let files: Vec<_> = (0..60).map(|m| data(&format!("trainticket/16_{m:02}_trace.csv.gz"))).collect();
    read_set(&files).traces
}

/// Requests of whole traces, about `batch` spans each.
fn requests(traces: &[Trace], batch: usize) -> Vec<ExportTraceServiceRequest> {
    traces
        .chunks(1)
        .fold(Vec::<Vec<&Trace>>::new(), |mut groups, t| {
            match groups.last_mut() {
                Some(g) if g.iter().map(|t| t.spans.len()).sum::<usize>() + t[0].spans.len() <= batch => g.push(&t[0]),
                _ => groups.push(vec![&t[0]]),
            }
            groups
        })
        .into_iter()
        .map(|g| io::to_request(g.into_iter().flat_map(|t| &t.spans)))
        .collect()
}

fn ids(traces: &[Trace]) -> BTreeSet<([u8; 16], [u8; 8])> {
    traces.iter().flat_map(|t| &t.spans).map(|s| (s.trace_id, s.span_id)).collect()
}

async fn grpc_client(running: &Running) -> TraceServiceClient<tonic::transport::Channel> {
    let url = format!("http://{}", running.grpc.unwrap());
    TraceServiceClient::connect(url).await.unwrap().send_compressed(CompressionEncoding::Gzip)
}

fn http_url(running: &Running) -> String {
    format!("http://{}/v1/traces", running.http.unwrap())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The value of one sample in Prometheus text format, e.g.
/// `gent_refused_spans_total{reason="queue_full"}`.
async fn metric(running: &Running, sample: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", running.metrics_addr.unwrap())).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{sample} not in /metrics:\n{text}"))
}

/// [`metric`] once it reaches `at_least`, or its value after `limit`: a
/// counter bumped as connections close can trail a response served on a
/// slot they freed.
async fn metric_reaching(running: &Running, sample: &str, at_least: f64, limit: Duration) -> f64 {
    let start = std::time::Instant::now();
    loop {
        let value = metric(running, sample).await;
        if value >= at_least || start.elapsed() > limit {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_windows(dir: &Path) -> Vec<Trace> {
    let input = io::read_inputs(&[dir.to_path_buf()], None).unwrap();
    assert!(input.skipped.is_empty(), "only window files in the sink folder: {:?}", input.skipped);
    gent::trace::assemble(input.spans).traces
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_otlp_flavour_lands_in_the_windows_and_the_metrics() {
    let traces = hour_16();
    let dir = tempfile::tempdir().unwrap();
    let running = compressor::start(config(dir.path())).await.unwrap();
    let thirds: Vec<&[Trace]> = traces.chunks(traces.len() / 3 + 1).collect();
    let count = |ts: &[Trace]| ts.iter().map(|t| t.spans.len()).sum::<usize>() as f64;

    let mut grpc = grpc_client(&running).await;
    for request in requests(thirds[0], 500) {
        let response = grpc.export(request).await.unwrap().into_inner();
        assert_eq!(response.partial_success, None);
    }
    let http = reqwest::Client::new();
    for request in requests(thirds[1], 500) {
        let response = http
            .post(http_url(&running))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(gzip(&request.encode_to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-protobuf");
        let body = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
        assert_eq!(body.partial_success, None);
    }
    for request in requests(thirds[2], 500) {
        let response = http
            .post(http_url(&running))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&request).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    assert_eq!(metric(&running, r#"gent_received_spans_total{protocol="grpc"}"#).await, count(thirds[0]));
    assert_eq!(metric(&running, r#"gent_received_spans_total{protocol="http"}"#).await, count(thirds[1]) + count(thirds[2]));
    assert_eq!(metric(&running, "gent_resident_spans").await, count(&traces));
    // The assembler files spans as they come: the queue drains.
    for _ in 0..100 {
        if metric(&running, "gent_queue_spans").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&running, "gent_queue_spans").await, 0.0);
    for reason in ["decode_error", "invalid_id", "queue_full"] {
        assert_eq!(metric(&running, &format!(r#"gent_refused_spans_total{{reason="{reason}"}}"#)).await, 0.0);
    }

    let metrics = running.metrics.clone();
    running.shutdown().await.unwrap();
    let windows = read_windows(dir.path());
    assert_eq!(ids(&windows), ids(&traces), "the windows hold exactly the spans sent");
    assert_eq!(windows.len(), traces.len());
    assert_eq!(metrics.received_traces.get(), traces.len() as u64);
    assert_eq!(metrics.windows_closed.get(), 1);
    assert_eq!(metrics.resident_spans.get(), 0, "the flushed window gave its budget back");
}

/// A gRPC request with an arbitrary payload, sent as raw HTTP/2.
async fn raw_grpc(running: &Running, payload: &[u8]) -> (String, String) {
    raw_grpc_messages(running, &[payload]).await
}

/// A gRPC `Export` call carrying `messages` (unary calls carry exactly one).
async fn raw_grpc_messages(running: &Running, messages: &[&[u8]]) -> (String, String) {
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut body = Vec::new();
    for payload in messages {
        body.push(0u8);
        body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        body.extend_from_slice(payload);
    }
    let response = client
        .post(format!("http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", running.grpc.unwrap()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send()
        .await
        .unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (header("grpc-status"), header("grpc-message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_are_counted_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.receiver.max_message_bytes = 64 << 10;
    cfg.receiver.max_spans_per_request = 1000;
    cfg.receiver.max_attribute_value_bytes = 100;
    let running = compressor::start(cfg).await.unwrap();
    let traces = hour_16();
    let valid = requests(&traces[..20], 60).remove(0);
    let valid_bytes = valid.encode_to_vec();
    let http = reqwest::Client::new();
    let post = |content_type: &'static str, body: Vec<u8>| {
        http.post(http_url(&running)).header("content-type", content_type).body(body).send()
    };

    // Garbage and truncated protobuf over HTTP: 400 with a google.rpc.Status body.
    let r = post("application/x-protobuf", b"\xff\xff\xff garbage".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let status = tonic_types::Status::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(status.message.contains("undecodable OTLP protobuf"), "{}", status.message);
    let r = post("application/x-protobuf", valid_bytes[..valid_bytes.len() - 9].to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    // Invalid JSON: 400 with a JSON status.
    let r = post("application/json", b"{\"resourceSpans\": [".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(body["message"].as_str().unwrap().contains("undecodable OTLP JSON"), "{body}");
    // A JSON array is not a request (serde would read `[]` as an empty one).
    for not_an_object in [&b"[]"[..], b" [[]]", b"null"] {
        let r = post("application/json", not_an_object.to_vec()).await.unwrap();
        assert_eq!(r.status(), 400, "{}", String::from_utf8_lossy(not_an_object));
    }
    // snake_case JSON would read as nothing: refused, not silently accepted.
    let snake = serde_json::to_string(&valid).unwrap().replace("resourceSpans", "resource_spans");
    let r = post("application/json", snake.into_bytes()).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(body["message"].as_str().unwrap().contains("snake_case"), "{body}");
    // Wrong content type and encoding: 415.
    assert_eq!(post("text/plain", valid_bytes.clone()).await.unwrap().status(), 415);
    let r = http
        .post(http_url(&running))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(valid_bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Bad gzip: 400. Oversized, plain or once decompressed: 413.
    let r = http
        .post(http_url(&running))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(b"\x1f\x8b not really".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = requests(&traces, 5000).remove(0).encode_to_vec();
    assert!(big.len() > 64 << 10);
    // Bodies just over the limit: a body the socket buffers cannot hold may
    // be answered before it is all sent, and the client then sees the
    // connection close instead of the 413. The gzip one is over the limit
    // only once decompressed.
    let over = (1..50).map(|k| requests(&traces, k * 50).remove(0).encode_to_vec()).find(|b| b.len() > 80 << 10).unwrap();
    assert_eq!(post("application/x-protobuf", over.clone()).await.unwrap().status(), 413);
    let zipped = gzip(&over);
    assert!(zipped.len() < 64 << 10, "{} compressed bytes", zipped.len());
    let r = http
        .post(http_url(&running))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(zipped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // gRPC: garbage and truncated payloads are INVALID_ARGUMENT (3), oversized
    // RESOURCE_EXHAUSTED (8), too many spans INVALID_ARGUMENT.
    let (code, message) = raw_grpc(&running, b"\xff\xff\xff garbage").await;
    assert_eq!(code, "3", "{message}");
    let (code, _) = raw_grpc(&running, &valid_bytes[..valid_bytes.len() - 9]).await;
    assert_eq!(code, "3");
    // A unary call with two messages, or none, is refused whole.
    let (code, message) = raw_grpc_messages(&running, &[&valid_bytes, &valid_bytes]).await;
    assert_eq!(code, "3", "{message}");
    assert!(message.contains("more%20than%20one%20request%20message"), "{message}");
    let (code, message) = raw_grpc_messages(&running, &[]).await;
    assert_eq!(code, "3", "{message}");
    // A header with a byte HTTP forbids (DEL): hyper answers 400 before the
    // handler runs; it is counted all the same.
    let mut socket = std::net::TcpStream::connect(running.http.unwrap()).unwrap();
    socket.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: gent\r\nx-bad: a\x7fb\r\ncontent-length: 0\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = std::io::Read::read_to_string(&mut socket, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let mut grpc = grpc_client(&running).await;
    let status = grpc.export(ExportTraceServiceRequest::decode(&big[..]).unwrap()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let many = requests(&traces, 1500).into_iter().find(|r| r.encoded_len() < 64 << 10 && span_count(r) > 1000);
    if let Some(many) = many {
        let status = grpc.export(many).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("more than the limit of 1000"), "{}", status.message());
    }

    // Invalid ids and oversized attributes: partial success, the rest accepted.
    let mut mixed = valid.clone();
    let spans = mixed
        .resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .map(|ss| &mut ss.spans)
        .find(|spans| spans.len() >= 3)
        .expect("a scope with three spans");
    spans[0].trace_id = vec![1, 2, 3];
    spans[1].span_id = vec![0; 8];
    spans[2].attributes.push(opentelemetry_proto::tonic::common::v1::KeyValue {
        key: "big".into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("x".repeat(500))),
        }),
        ..Default::default()
    });
    let response = grpc.export(mixed.clone()).await.unwrap().into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3);
    assert!(partial.error_message.contains("traceId has 3 bytes"), "{}", partial.error_message);
    let r = post("application/json", serde_json::to_vec(&mixed).unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    // proto3 JSON allows int64 as a number or a string; opentelemetry-proto writes a number.
    let rejected = &body["partialSuccess"]["rejectedSpans"];
    assert!(rejected == 3 || rejected == "3", "{body}");

    // Still serving.
    assert_eq!(grpc.export(valid.clone()).await.unwrap().into_inner().partial_success, None);
    assert_eq!(post("application/x-protobuf", valid_bytes.clone()).await.unwrap().status(), 200);

    let refused = |reason: &'static str| {
        let running = &running;
        async move { metric(running, &format!(r#"gent_refused_spans_total{{reason="{reason}"}}"#)).await }
    };
    // HTTP garbage, truncated, invalid JSON, three JSON non-objects, snake_case
    // JSON, bad gzip, a DEL in a header; gRPC garbage, truncated, two messages,
    // no message.
    assert_eq!(refused("decode_error").await, 13.0);
    assert_eq!(refused("unsupported_media_type").await, 2.0);
    // HTTP plain and gzip, gRPC.
    assert_eq!(refused("too_large").await, 3.0);
    assert_eq!(refused("invalid_id").await, 4.0);
    assert_eq!(refused("attribute_too_large").await, 2.0);
    running.shutdown().await.unwrap();
}

fn span_count(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_pushes_back_and_memory_stays_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.window.span_budget = 3000;
    cfg.receiver.max_spans_per_request = 1000;
    cfg.window.duration = Duration::from_millis(800);
    cfg.window.trace_idle = Duration::from_millis(200);
    cfg.receiver.retry_after = Duration::from_millis(50);
    let running = compressor::start(cfg).await.unwrap();
    let traces = hour_16();

    // Watch the budget while a replay (which honours backpressure) floods the
    // receiver with three passes over the hour.
    let budget = running.budget.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = done.clone();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(budget.resident());
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        peak
    });
    let options = gent::otlp::replay::ReplayOptions {
        endpoint: format!("http://{}", running.grpc.unwrap()),
        protocol: gent::otlp::replay::ReplayProtocol::Grpc,
        rate: None,
        loops: 3,
        batch_spans: 500,
        concurrency: 8,
    };
    let report = gent::otlp::replay::replay(&traces, &options).await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = watcher.await.unwrap();
    let sent: usize = traces.iter().map(|t| t.spans.len()).sum();
    assert_eq!(report.spans_sent as usize, 3 * sent);
    assert_eq!(report.failed_requests, 0);
    assert!(report.retries > 0, "the budget of 3000 spans must have pushed back");
    assert!(peak <= 3000, "resident spans peaked at {peak}");
    assert!(peak > 0);
    let queue_full = metric(&running, r#"gent_refused_spans_total{reason="queue_full"}"#).await;
    assert!(queue_full > 0.0);

    let metrics = running.metrics.clone();
    running.shutdown().await.unwrap();
    let windows = read_windows(dir.path());
    assert_eq!(windows.iter().map(|t| t.spans.len()).sum::<usize>(), 3 * sent, "nothing accepted was lost");
    assert_eq!(windows.len(), 3 * traces.len());
    assert!(metrics.windows_closed.get() > 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_daemon_binary_flushes_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http, metrics) = (free_port(), free_port(), free_port());
    let windows = dir.path().join("windows");
    let config = dir.path().join("compressor.yaml");
    std::fs::write(
        &config,
        format!(
            "receiver:\n  grpc: 127.0.0.1:{grpc}\n  http: 127.0.0.1:{http}\nmetrics:\n  endpoint: 127.0.0.1:{metrics}\nsink:\n  otlp_json_dir: {}\npipeline: null\n",
            windows.display()
        ),
    )
    .unwrap();
    let mut daemon = gent().args(["compressor", "--config"]).arg(&config).spawn().unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok()
    });
    assert!(up, "the daemon did not start listening");

    let input = data("trainticket/16_00_trace.csv.gz");
    let out = gent()
        .args(["replay", "--protocol", "http", "--json", "--endpoint"])
        .arg(format!("http://127.0.0.1:{http}"))
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let sent = read_set(&[input]).span_count() as u64;
    assert_eq!(report["spans_sent"], sent);

    let status = std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = daemon.wait().unwrap();
    assert!(code.success(), "{code:?}");
    let flushed: usize = read_windows(&windows).iter().map(|t| t.spans.len()).sum();
    assert_eq!(flushed as u64, sent, "the open window was flushed on SIGTERM");
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "window:\n  duraton: 5s\n").unwrap();
    let out = gent().args(["compressor", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml") && stderr.contains("duraton"), "{stderr}");
}

/// How long until the server closed `socket` (read end or reset), reading and
/// dropping whatever it answers; `None` if it was still open after `limit`.
fn closed_within(mut socket: std::net::TcpStream, start: std::time::Instant, limit: Duration) -> Option<Duration> {
    use std::io::Read;
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match socket.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// Writes `prefix`, then one byte of `trickle` every 200 ms until the socket fails.
fn trickle(socket: &std::net::TcpStream, prefix: &[u8], byte: u8) {
    let mut writer = socket.try_clone().unwrap();
    writer.write_all(prefix).unwrap();
    std::thread::spawn(move || {
        while writer.write_all(&[byte]).is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_surplus_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.receiver.connections.idle_timeout = Duration::from_secs(1);
    cfg.receiver.connections.request_timeout = Duration::from_secs(2);
    cfg.receiver.connections.max_connections = 6;
    let running = compressor::start(cfg).await.unwrap();
    let (http, grpc) = (running.http.unwrap(), running.grpc.unwrap());
    let valid = requests(&hour_16()[..5], 60).remove(0).encode_to_vec();
    let connect = |addr| std::net::TcpStream::connect(addr).unwrap();
    let post = |length: usize| {
        format!(
            "POST /v1/traces HTTP/1.1\r\nhost: gent\r\ncontent-type: application/x-protobuf\r\ncontent-length: {length}\r\n\r\n"
        )
    };
    let start = std::time::Instant::now();

    // Idle: HTTP silent, HTTP after a finished keep-alive request, headers
    // trickled a byte at a time, gRPC silent, gRPC after the HTTP/2 preface.
    let silent = connect(http);
    let kept_alive = connect(http);
    let mut request = post(valid.len()).into_bytes();
    request.extend_from_slice(&valid);
    (&kept_alive).write_all(&request).unwrap();
    let headers = connect(http);
    trickle(&headers, b"POST /v1/traces HTTP/1.1\r\n", b'x');
    let grpc_silent = connect(grpc);
    let grpc_preface = connect(grpc);
    // The client preface and an empty SETTINGS frame.
    (&grpc_preface).write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    // Slow: a body trickled in is cut off at request_timeout with 408.
    let slow = connect(http);
    trickle(&slow, post(100_000).as_bytes(), 0);
    let mut slow_answer = slow.try_clone().unwrap();

    let limit = Duration::from_secs(5);
    let idle: Vec<_> = [silent, kept_alive, headers, grpc_silent, grpc_preface]
        .into_iter()
        .map(|s| std::thread::spawn(move || closed_within(s, start, limit)))
        .collect();
    for (mode, closed) in
        ["http silent", "http keep-alive", "http trickled headers", "grpc silent", "grpc preface"].into_iter().zip(idle)
    {
        let closed = closed.join().unwrap().unwrap_or_else(|| panic!("{mode}: still open after {limit:?}"));
        assert!(closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500), "{mode}: closed after {closed:?}");
    }
    let mut answer = String::new();
    slow_answer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = std::io::Read::read_to_string(&mut slow_answer, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "slow body answered {answer:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());

    // The limit: six silent connections fill the HTTP server; a seventh client
    // is served once they have been closed as idle, and not before.
    let start = std::time::Instant::now();
    let hogs: Vec<_> = (0..6).map(|_| connect(http)).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&running, r#"gent_connections{server="http"}"#).await, 6.0);
    let r = reqwest::Client::new()
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(valid.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(900), "served after {:?}, past the limit", start.elapsed());

    // The hogs stay open until the server has closed them all as idle: a hog
    // the client dropped first would be a client close, not an idle one.
    let closed = |server: &'static str| format!("gent_connections_idle_closed_total{{server=\"{server}\"}}");
    let http_closed = metric_reaching(&running, &closed("http"), 9.0, Duration::from_secs(3)).await;
    assert!(http_closed >= 9.0, "{http_closed} HTTP connections closed as idle");
    let grpc_closed = metric_reaching(&running, &closed("grpc"), 2.0, Duration::from_secs(3)).await;
    assert!(grpc_closed >= 2.0, "{grpc_closed} gRPC connections closed as idle");
    drop(hogs);
    assert_eq!(metric(&running, r#"gent_refused_spans_total{reason="timeout"}"#).await, 1.0);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_follow_the_span_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.window.span_budget = 1000;
    cfg.receiver.max_spans_per_request = 1000;
    // The window stays open, so accepted spans hold their budget.
    cfg.window.duration = Duration::from_secs(600);
    let running = compressor::start(cfg).await.unwrap();
    let get = |path: &'static str| {
        let url = format!("http://{}{path}", running.metrics_addr.unwrap());
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));

    // One accepted span leaves less than a full-size request of budget.
    let valid = requests(&hour_16()[..5], 60).remove(0);
    grpc_client(&running).await.export(valid).await.unwrap();
    let (code, reason) = get("/readyz").await;
    assert_eq!(code, 503);
    assert!(reason.contains("span budget spent"), "{reason}");
    assert_eq!(get("/healthz").await.0, 200);
    running.shutdown().await.unwrap();
}
