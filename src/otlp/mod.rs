//! OTLP in and out. In: the wire decoder that walks protobuf straight into
//! gent's spans (the receivers and protobuf files), and the conversion
//! between opentelemetry-proto's types and gent's spans (OTLP JSON, the
//! writers). Out: one client for OTLP/gRPC and OTLP/HTTP (protobuf) with one
//! retry policy, shared by the decompressor's exporters and `gent replay`.
//! The file formats built on these live in `io`.

mod client;
mod model;
pub mod replay;
mod retry;
mod wire;

pub use client::{Attempt, Client, ClientConfig, ClientError, Prepared, Protocol};
pub use model::{
    by_resource_and_scope, parent_span_id, resource_from_otlp, resource_to_otlp, scope_from_otlp, scope_to_otlp, span_from_otlp,
    span_id, spans_from_request, spans_from_request_within, status_to_otlp, string_attribute, to_request, too_many_spans,
    trace_id,
};
pub use retry::{Backoff, grpc_retry_delay, grpc_retryable, http_retry_after, http_retryable};
pub use wire::{WireError, decode_request, decode_request_within};
