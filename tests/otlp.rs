//! The one OTLP client, as the decompressor's exporters and `gent replay`
//! use it, against servers that push back: both protocols retry what the
//! OTLP specification calls retryable, wait at least what the server asks
//! (gRPC RetryInfo, HTTP Retry-After), and give up at once on the rest.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use gent::config::OtlpExporterConfig;
use gent::export::{Exporter, OtlpExporter, WindowName};
use gent::otlp::Protocol;
use gent::otlp::replay::{ReplayOptions, replay};
use gent::trace::Trace;

/// What the fake backend answers, in turn; then success.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Backpressure, with the wait the server asks for.
    Busy(Duration),
    /// Retryable without a wait asked (gRPC UNAVAILABLE, HTTP 502).
    Down,
    /// Not retryable (gRPC INVALID_ARGUMENT, HTTP 400).
    Bad,
}

#[derive(Clone, Default)]
struct Backend {
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Instant>>>,
}

impl Backend {
    fn new(script: &[Answer]) -> Self {
        Backend { script: Arc::new(Mutex::new(script.iter().copied().collect())), seen: Default::default() }
    }

    fn next(&self) -> Option<Answer> {
        self.seen.lock().unwrap().push(Instant::now());
        self.script.lock().unwrap().pop_front()
    }

    /// Time between the first request and each later one.
    fn gaps(&self) -> Vec<Duration> {
        let seen = self.seen.lock().unwrap();
        seen.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

#[tonic::async_trait]
impl TraceService for Backend {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        match self.next() {
            None => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            Some(Answer::Busy(wait)) => {
                Err(tonic::Status::with_error_details(Code::ResourceExhausted, "busy", ErrorDetails::with_retry_info(Some(wait))))
            }
            Some(Answer::Down) => Err(tonic::Status::unavailable("down")),
            Some(Answer::Bad) => Err(tonic::Status::invalid_argument("bad")),
        }
    }
}

async fn serve_grpc(backend: Backend) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(backend).accept_compressed(tonic::codec::CompressionEncoding::Gzip))
            .serve_with_incoming(incoming),
    );
    addr
}

async fn serve_http(backend: Backend) -> SocketAddr {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move || {
            let backend = backend.clone();
            async move {
                match backend.next() {
                    None => (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], Vec::new()).into_response(),
                    Some(Answer::Busy(wait)) => {
                        (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, wait.as_secs().to_string())], "busy")
                            .into_response()
                    }
                    Some(Answer::Down) => StatusCode::BAD_GATEWAY.into_response(),
                    Some(Answer::Bad) => StatusCode::BAD_REQUEST.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A few real traces (the Jaeger fixtures).
fn traces() -> Vec<Trace> {
    let jaeger: Vec<_> = common::fixtures().into_iter().filter(|(_, f)| *f == gent::io::Format::Jaeger).map(|(p, _)| p).collect();
    let set = common::read_set(&jaeger);
    assert!(set.traces.len() >= 3);
    set.traces.into_iter().take(3).collect()
}

fn exporter(protocol: Protocol, addr: SocketAddr) -> Exporter {
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{addr}"),
        Protocol::Http => format!("http://{addr}/v1/traces"),
    };
    let c = OtlpExporterConfig {
        endpoint,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(40),
        retry_for: Duration::from_secs(5),
        ..OtlpExporterConfig::default()
    };
    Exporter::Otlp(Arc::new(OtlpExporter::new(&c, protocol).unwrap()))
}

async fn serve(protocol: Protocol, backend: Backend) -> SocketAddr {
    match protocol {
        Protocol::Grpc => serve_grpc(backend).await,
        Protocol::Http => serve_http(backend).await,
    }
}

fn window() -> WindowName {
    WindowName { producer: "test".into(), window_id: 1, part: None }
}

/// The wait each protocol's backend asks for: RetryInfo takes any duration,
/// Retry-After whole seconds.
fn asked(protocol: Protocol) -> Duration {
    match protocol {
        Protocol::Grpc => Duration::from_millis(700),
        Protocol::Http => Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_waits_what_the_server_asks_retries_what_is_retryable_and_stops_on_the_rest() {
    let traces = Arc::new(traces());
    for protocol in [Protocol::Grpc, Protocol::Http] {
        // Backpressure with a wait, then a retryable failure without one, then success.
        let backend = Backend::new(&[Answer::Busy(asked(protocol)), Answer::Down]);
        let addr = serve(protocol, backend.clone()).await;
        exporter(protocol, addr).export(&window(), traces.clone()).await.unwrap();
        let gaps = backend.gaps();
        assert_eq!(gaps.len(), 2, "{protocol:?}: three attempts");
        assert!(gaps[0] >= asked(protocol), "{protocol:?}: waited {:?}, the server asked {:?}", gaps[0], asked(protocol));
        assert!(gaps[1] < asked(protocol), "{protocol:?}: the back-off, not the earlier ask: {:?}", gaps[1]);

        // Not retryable: one attempt, and the error says so.
        let backend = Backend::new(&[Answer::Bad]);
        let addr = serve(protocol, backend.clone()).await;
        let e = exporter(protocol, addr).export(&window(), traces.clone()).await.unwrap_err().to_string();
        assert!(e.contains("not retryable"), "{protocol:?}: {e}");
        assert_eq!(backend.gaps().len(), 0, "{protocol:?}: sent once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_waits_out_backpressure_and_counts_what_is_refused() {
    let traces = traces();
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let backend = Backend::new(&[Answer::Busy(asked(protocol)), Answer::Down]);
        let addr = serve(protocol, backend.clone()).await;
        let options = ReplayOptions {
            endpoint: format!("http://{addr}"),
            protocol,
            rate: None,
            loops: 1,
            batch_spans: 1_000_000,
            concurrency: 1,
        };
        let report = replay(&traces, &options).await.unwrap();
        assert_eq!((report.requests, report.retries, report.failed_requests), (1, 2, 0), "{protocol:?}: {report:?}");
        let gaps = backend.gaps();
        // A load generator waits what the server asks, up to 250 ms, and keeps probing.
        assert!(gaps[0] >= Duration::from_millis(250), "{protocol:?}: waited {:?}", gaps[0]);

        let backend = Backend::new(&[Answer::Bad]);
        let addr = serve(protocol, backend.clone()).await;
        let e = replay(&traces, &ReplayOptions { endpoint: format!("http://{addr}"), ..options }).await.unwrap_err().to_string();
        assert!(e.contains("every request failed"), "{protocol:?}: {e}");
        assert_eq!(backend.gaps().len(), 0, "{protocol:?}: sent once");
    }
}
