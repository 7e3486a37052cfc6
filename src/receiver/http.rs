//! OTLP/HTTP `POST /v1/traces`: protobuf or JSON bodies, optionally gzip.
//! Responses use the request's content type: an `ExportTraceServiceResponse` on
//! success, a `google.rpc.Status` on failure, as the OTLP specification asks.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{Ingest, Protocol, ReceiverError, Refusal};
use crate::connections;
use crate::io;
use crate::metrics::RefusalReason;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    ingest: Arc<Ingest>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let limits = ingest.limits().connections.clone();
    let listener = connections::Listener::new(listener, &limits, ingest.metrics().connections.stats("http"));
    let counter = ingest.clone();
    let malformed = move |e: &hyper::Error| {
        counter.refuse_undecoded(RefusalReason::Decode, format!("malformed HTTP request: {e}"));
    };
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        // The body limit is enforced (and counted) by `export` itself.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(connections::TrackLayer)
        .with_state(ingest);
    connections::serve_http(listener, app, &limits, malformed, shutdown).await;
    Ok(())
}

async fn export(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    // Errors are answered in protobuf unless the client spoke JSON.
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let encoding = match media.as_str() {
        PROTOBUF => Encoding::Protobuf,
        JSON => Encoding::Json,
        _ => {
            let message = format!("unsupported content type {content_type:?}; use {PROTOBUF} or {JSON}");
            let refusal = ingest.refuse_undecoded(RefusalReason::UnsupportedMedia, message);
            return failure(Encoding::Protobuf, StatusCode::UNSUPPORTED_MEDIA_TYPE, refusal, &ingest);
        }
    };
    // A body trickled in slowly must not hold the connection (and its memory).
    let timeout = ingest.limits().connections.request_timeout;
    let decoded = tokio::time::timeout(timeout, decode(&ingest, &headers, body, encoding)).await.unwrap_or_else(|_| {
        let message = format!("request body not received within request_timeout ({})", humantime::format_duration(timeout));
        Err((StatusCode::REQUEST_TIMEOUT, ingest.refuse_undecoded(RefusalReason::Timeout, message)))
    });
    let exported = match decoded {
        Ok(Payload::Protobuf(bytes)) => ingest.export_protobuf(&bytes, Protocol::Http),
        Ok(Payload::Json(request)) => ingest.export(request, Protocol::Http),
        Err((code, refusal)) => return failure(encoding, code, refusal, &ingest),
    };
    match exported {
        Ok(accepted) => {
            let response = accepted.response();
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
            };
            reply(StatusCode::OK, encoding, body, None)
        }
        Err(refusal) => {
            let code = match refusal.reason {
                RefusalReason::QueueFull => StatusCode::TOO_MANY_REQUESTS,
                RefusalReason::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                RefusalReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            failure(encoding, code, refusal, &ingest)
        }
    }
}

/// A body ready for the ingest: protobuf stays bytes for the wire decoder.
enum Payload {
    Protobuf(Bytes),
    Json(ExportTraceServiceRequest),
}

/// Reads and decompresses the body within `max_message_bytes`; JSON is parsed here.
async fn decode(ingest: &Ingest, headers: &HeaderMap, body: Body, encoding: Encoding) -> Result<Payload, (StatusCode, Refusal)> {
    let limit = ingest.limits().max_message_bytes;
    let too_large = |what: &str| {
        let message = format!("{what} is larger than the limit of {limit} bytes; send smaller batches");
        (StatusCode::PAYLOAD_TOO_LARGE, ingest.refuse_undecoded(RefusalReason::TooLarge, message))
    };
    let raw: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large("request body"))?;
    let content_encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let bytes = match content_encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => raw,
        "gzip" => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| {
                let message = format!("gzip body does not decompress: {e}");
                (StatusCode::BAD_REQUEST, ingest.refuse_undecoded(RefusalReason::Decode, message))
            })?;
            if out.len() > limit {
                return Err(too_large("decompressed request body"));
            }
            Bytes::from(out)
        }
        other => {
            let message = format!("unsupported content encoding {other:?}; use gzip or none");
            let refusal = ingest.refuse_undecoded(RefusalReason::UnsupportedMedia, message);
            return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, refusal));
        }
    };
    ingest.metrics().received_bytes.with_label_values(&[Protocol::Http.label()]).inc_by(bytes.len() as u64);
    match encoding {
        Encoding::Protobuf => Ok(Payload::Protobuf(bytes)),
        Encoding::Json => {
            let refuse = |message: String| (StatusCode::BAD_REQUEST, ingest.refuse_undecoded(RefusalReason::Decode, message));
            // serde reads a struct from an array too (`[]` would be an empty
            // request): the OTLP JSON encoding of a message is an object.
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(refuse("undecodable OTLP JSON payload: not a JSON object".into()));
            }
            let request: ExportTraceServiceRequest =
                serde_json::from_slice(&bytes).map_err(|e| refuse(format!("undecodable OTLP JSON payload: {e}")))?;
            // Unknown (snake_case) names would otherwise be accepted as nothing.
            let spans: usize = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
            if spans == 0 && io::snake_case_spans(&bytes) {
                return Err(refuse(format!("OTLP JSON payload {}", io::SNAKE_CASE)));
            }
            Ok(Payload::Json(request))
        }
    }
}

fn failure(encoding: Encoding, code: StatusCode, refusal: Refusal, ingest: &Ingest) -> Response {
    let retry_after = (refusal.reason == RefusalReason::QueueFull).then(|| ingest.limits().retry_after.as_secs().max(1));
    let grpc_code = match code {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        StatusCode::REQUEST_TIMEOUT => tonic::Code::DeadlineExceeded,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::Unimplemented,
        _ => tonic::Code::InvalidArgument,
    };
    let body = match encoding {
        Encoding::Protobuf => {
            tonic_types::Status { code: grpc_code as i32, message: refusal.message, details: vec![] }.encode_to_vec()
        }
        Encoding::Json => serde_json::json!({ "code": grpc_code as i32, "message": refusal.message }).to_string().into_bytes(),
    };
    reply(code, encoding, body, retry_after)
}

fn reply(code: StatusCode, encoding: Encoding, body: Vec<u8>, retry_after: Option<u64>) -> Response {
    let media = match encoding {
        Encoding::Protobuf => PROTOBUF,
        Encoding::Json => JSON,
    };
    let mut response = (code, [(header::CONTENT_TYPE, HeaderValue::from_static(media))], body).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
