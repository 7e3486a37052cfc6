//! The receiver's section of the compressor's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connections::ConnectionConfig;

/// OTLP ingest: where to listen and what to refuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address; `null` turns gRPC off.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address (`POST /v1/traces`); `null` turns HTTP off.
    pub http: Option<SocketAddr>,
    /// Largest request accepted, in bytes after decompression.
    pub max_message_bytes: usize,
    /// Largest number of spans in one request; larger requests are refused whole.
    pub max_spans_per_request: usize,
    /// Most attributes on one span (span attributes; resource attributes count apart).
    pub max_attributes_per_span: usize,
    /// Largest attribute value, in bytes of string or byte content.
    pub max_attribute_value_bytes: usize,
    /// Suggested client back-off when the queue is full (gRPC RetryInfo,
    /// HTTP `Retry-After`).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Connection limits and timeouts, for both gRPC and HTTP.
    pub connections: ConnectionConfig,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            grpc: Some(SocketAddr::from(([0, 0, 0, 0], 4317))),
            http: Some(SocketAddr::from(([0, 0, 0, 0], 4318))),
            // The OpenTelemetry Collector's default for gRPC.
            max_message_bytes: 4 << 20,
            max_spans_per_request: 10_000,
            max_attributes_per_span: 128,
            max_attribute_value_bytes: 64 << 10,
            retry_after: Duration::from_secs(1),
            connections: ConnectionConfig::default(),
        }
    }
}
