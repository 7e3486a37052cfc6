//! OTLP out: one client for OTLP/gRPC and OTLP/HTTP (protobuf) with one
//! retry policy, shared by the decompressor's exporters and `gent replay`.
//! Decoding OTLP in lives with the other readers, in `io`.

mod client;
mod retry;

pub use client::{Attempt, Client, ClientConfig, ClientError, Prepared, Protocol};
pub use retry::{Backoff, grpc_retry_delay, grpc_retryable, http_retry_after, http_retryable};
