//! OTLP/gRPC `TraceService/Export`. The service is written out here rather than
//! taken from opentelemetry-proto's generated server so the request reaches us
//! as bytes and goes through gent's wire decoder (no intermediate structs).
//! tonic still handles framing, decompression and the size limit; a layer looks
//! at its refusals on the way out, counts them and gives them the codes OTLP asks
//! for (INVALID_ARGUMENT for an undecodable payload, not INTERNAL).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::bytes::{Buf, Bytes};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Ingest, Protocol, ReceiverError, Refusal};
use crate::connections;
use crate::metrics::RefusalReason;

/// Set on refusals our handler made (and counted), so the layer leaves them be.
const COUNTED: &str = "gent-refusal";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Requests arrive as their protobuf bytes; responses are prost messages.
#[derive(Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// The handler. `Export` is unary, but it is served as a client stream so that
/// a call carrying a second message is refused (tonic's unary path reads the
/// first and drops the rest unseen).
struct Export(Arc<Ingest>);

impl tonic::server::ClientStreamingService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<ExportTraceServiceResponse>, Status>> + Send>>;

    fn call(&mut self, request: Request<tonic::Streaming<Bytes>>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let retry_after = ingest.limits().retry_after;
            let refuse = |message: &str| status(ingest.refuse_undecoded(RefusalReason::Decode, message.into()), retry_after);
            let mut messages = request.into_inner();
            // Framing, decompression and size errors come back as tonic's own
            // statuses, which `classify` counts.
            let Some(bytes) = messages.message().await? else {
                return Err(refuse("unary Export call without a request message"));
            };
            if messages.message().await?.is_some() {
                return Err(refuse("unary Export call with more than one request message"));
            }
            ingest.metrics().received_bytes.with_label_values(&[Protocol::Grpc.label()]).inc_by(bytes.len() as u64);
            match ingest.export_protobuf(&bytes, Protocol::Grpc) {
                Ok(accepted) => Ok(Response::new(accepted.response())),
                Err(refusal) => Err(status(refusal, retry_after)),
            }
        })
    }
}

/// `TraceService` as a tower service, for tonic's router.
#[derive(Clone)]
struct TraceServiceServer {
    ingest: Arc<Ingest>,
}

impl tonic::server::NamedService for TraceServiceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tower::Service<http::Request<B>> for TraceServiceServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let ingest = self.ingest.clone();
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                let status = Status::unimplemented(format!("{} is not served here", request.uri().path()));
                Ok(status.into_http())
            });
        }
        let limit = ingest.limits().max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            Ok(grpc.client_streaming(Export(ingest), request).await)
        })
    }
}

fn status(refusal: Refusal, retry_after: Duration) -> Status {
    let mut status = match refusal.reason {
        // RESOURCE_EXHAUSTED is retryable for OTLP clients only with RetryInfo.
        RefusalReason::QueueFull => {
            Status::with_error_details(Code::ResourceExhausted, refusal.message, ErrorDetails::with_retry_info(Some(retry_after)))
        }
        RefusalReason::ShuttingDown => Status::unavailable(refusal.message),
        RefusalReason::TooLarge => Status::resource_exhausted(refusal.message),
        _ => Status::invalid_argument(refusal.message),
    };
    if let Ok(value) = refusal.reason.label().parse() {
        status.metadata_mut().insert(COUNTED, value);
    }
    status
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    ingest: Arc<Ingest>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let outcome_ingest = ingest.clone();
    let limits = &ingest.limits().connections;
    let incoming = connections::Listener::new(listener, limits, ingest.metrics().connections.stats("grpc")).incoming();
    let builder = connections::grpc_server(limits);
    let service = TraceServiceServer { ingest };
    builder
        .layer(tower::util::MapResponseLayer::new(move |response| classify(&outcome_ingest, response)))
        .layer(connections::TrackLayer)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ReceiverError::Serve { protocol: "grpc", reason: e.to_string() })
}

/// Counts and re-codes refusals tonic made itself, before our handler ran.
fn classify<B>(ingest: &Ingest, mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    if headers.contains_key(COUNTED) {
        return response;
    }
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok()) else {
        return response;
    };
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (reason, new_code) = match Code::from_i32(code) {
        Code::Ok => return response,
        // Message over max_message_bytes.
        Code::OutOfRange | Code::ResourceExhausted => (RefusalReason::TooLarge, Code::ResourceExhausted),
        // Compression we do not accept.
        Code::Unimplemented => (RefusalReason::UnsupportedMedia, Code::Unimplemented),
        // Protobuf or decompression failure: the payload is bad, not the server.
        Code::Internal => (RefusalReason::Decode, Code::InvalidArgument),
        // request_timeout (tonic answers CANCELLED): the client was too slow.
        Code::Cancelled => (RefusalReason::Timeout, Code::DeadlineExceeded),
        _ => return response,
    };
    ingest.refuse_undecoded(reason, message);
    headers.insert("grpc-status", http::HeaderValue::from(new_code as i32));
    response
}
