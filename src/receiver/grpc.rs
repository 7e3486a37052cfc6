//! OTLP/gRPC `TraceService/Export`, through opentelemetry-proto's generated
//! server. tonic decodes (and decompresses) before our handler runs, so a layer
//! looks at its refusals on the way out: it counts them and gives them the codes
//! OTLP asks for (INVALID_ARGUMENT for an undecodable payload, not INTERNAL).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Ingest, Protocol, ReceiverError, Refusal};
use crate::metrics::RefusalReason;

/// Set on refusals our handler made (and counted), so the layer leaves them be.
const COUNTED: &str = "gent-refusal";

struct Service {
    ingest: Arc<Ingest>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let bytes = request.encoded_len() as u64;
        self.ingest.metrics().received_bytes.with_label_values(&[Protocol::Grpc.label()]).inc_by(bytes);
        match self.ingest.export(request, Protocol::Grpc) {
            Ok(accepted) => {
                let partial_success = (accepted.rejected_spans > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: accepted.rejected_spans as i64,
                    error_message: accepted.message,
                });
                Ok(Response::new(ExportTraceServiceResponse { partial_success }))
            }
            Err(refusal) => Err(status(refusal, self.ingest.limits().retry_after)),
        }
    }
}

fn status(refusal: Refusal, retry_after: Duration) -> Status {
    let mut status = match refusal.reason {
        // RESOURCE_EXHAUSTED is retryable for OTLP clients only with RetryInfo.
        RefusalReason::QueueFull => Status::with_error_details(
            Code::ResourceExhausted,
            refusal.message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        ),
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
    let limits = ingest.limits().clone();
    let outcome_ingest = ingest.clone();
    let service = TraceServiceServer::new(Service { ingest })
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits.max_message_bytes);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(move |response| classify(&outcome_ingest, response)))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ReceiverError::Serve { protocol: "grpc", reason: e.to_string() })
}

/// Counts and re-codes refusals tonic made itself, before our handler ran.
fn classify<B>(ingest: &Ingest, mut response: axum::http::Response<B>) -> axum::http::Response<B> {
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
        _ => return response,
    };
    ingest.refuse_undecoded(reason, message);
    headers.insert("grpc-status", axum::http::HeaderValue::from(new_code as i32));
    response
}
