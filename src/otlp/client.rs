//! One OTLP trace client over gRPC or HTTP/protobuf: one attempt at a time,
//! each classified by the shared retry policy ([`super::retry`]). The caller
//! owns the loop, so an exporter can give up after its deadline while a load
//! generator keeps probing.

use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::Channel;

use super::retry::{grpc_retry_delay, grpc_retryable, http_retry_after, http_retryable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("header {name:?}: {reason}")]
    Header { name: String, reason: String },
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// gRPC: `http(s)://host:4317`. HTTP: the full URL (`…/v1/traces`).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Deadline of one request; none when `None`.
    pub timeout: Option<Duration>,
    /// gzip-compress requests.
    pub gzip: bool,
    /// Headers (gRPC metadata) sent with every request.
    pub headers: Vec<(String, String)>,
}

/// A request made ready for the wire once, sent as often as retries need.
#[derive(Debug, Clone)]
pub enum Prepared {
    Grpc(ExportTraceServiceRequest),
    /// The encoded (and, with `gzip`, compressed) protobuf body.
    Http(Vec<u8>),
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Accepted; `rejected` spans were refused in a partial success.
    Sent { rejected: u64, message: String },
    /// Worth sending again, after at least `asked` when the server said so.
    Retry { reason: String, asked: Option<Duration> },
    /// Not worth sending again.
    Refused { reason: String },
}

enum Transport {
    Grpc { client: TraceServiceClient<Channel>, headers: Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)> },
    Http { client: reqwest::Client, headers: reqwest::header::HeaderMap },
}

pub struct Client {
    transport: Transport,
    config: ClientConfig,
}

impl Client {
    /// A client that connects on first use (and again after a failure).
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let transport = match config.protocol {
            Protocol::Grpc => grpc(config, endpoint(config)?.connect_lazy())?,
            Protocol::Http => http(config)?,
        };
        Ok(Client { transport, config: config.clone() })
    }

    /// A client connected now: a gRPC endpoint that does not answer fails here.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let transport = match config.protocol {
            Protocol::Grpc => {
                let channel =
                    endpoint(config)?.connect().await.map_err(|e| endpoint_error(config, format!("cannot connect: {e}")))?;
                grpc(config, channel)?
            }
            Protocol::Http => http(config)?,
        };
        Ok(Client { transport, config: config.clone() })
    }

    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// `request` ready for this client's wire (CPU work: encoding, gzip).
    pub fn prepare(&self, request: ExportTraceServiceRequest) -> std::io::Result<Prepared> {
        match self.transport {
            Transport::Grpc { .. } => Ok(Prepared::Grpc(request)),
            Transport::Http { .. } => http_body(&request, self.config.gzip).map(Prepared::Http),
        }
    }

    /// One attempt at sending `request`.
    pub async fn send(&self, request: &Prepared) -> Attempt {
        match (&self.transport, request) {
            (Transport::Grpc { client, headers }, Prepared::Grpc(request)) => send_grpc(client, headers, request).await,
            (Transport::Http { client, headers }, Prepared::Http(body)) => {
                send_http(client, headers, &self.config, body.clone()).await
            }
            _ => Attempt::Refused { reason: "a request prepared for the other protocol".into() },
        }
    }
}

fn endpoint_error(config: &ClientConfig, reason: String) -> ClientError {
    ClientError::Endpoint { endpoint: config.endpoint.clone(), reason }
}

fn endpoint(config: &ClientConfig) -> Result<tonic::transport::Endpoint, ClientError> {
    let bad = |e: &dyn std::fmt::Display| endpoint_error(config, e.to_string());
    let mut endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| bad(&e))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(timeout) = config.timeout {
        endpoint = endpoint.timeout(timeout);
    }
    if config.endpoint.starts_with("https://") {
        endpoint = endpoint.tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots()).map_err(|e| bad(&e))?;
    }
    Ok(endpoint)
}

fn grpc(config: &ClientConfig, channel: Channel) -> Result<Transport, ClientError> {
    let mut client = TraceServiceClient::new(channel).max_decoding_message_size(16 << 20);
    if config.gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let mut headers = Vec::new();
    for (name, value) in &config.headers {
        let bad = |e: &dyn std::fmt::Display| ClientError::Header { name: name.clone(), reason: e.to_string() };
        let key: MetadataKey<Ascii> = name.to_ascii_lowercase().parse().map_err(|e| bad(&e))?;
        let value: MetadataValue<Ascii> = value.parse().map_err(|e| bad(&e))?;
        headers.push((key, value));
    }
    Ok(Transport::Grpc { client, headers })
}

fn http(config: &ClientConfig) -> Result<Transport, ClientError> {
    let bad = |e: &dyn std::fmt::Display| endpoint_error(config, e.to_string());
    reqwest::Url::parse(&config.endpoint).map_err(|e| bad(&e))?;
    let mut builder = reqwest::Client::builder();
    if let Some(timeout) = config.timeout {
        builder = builder.timeout(timeout);
    }
    let client = builder.build().map_err(|e| bad(&e))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &config.headers {
        let bad = |e: &dyn std::fmt::Display| ClientError::Header { name: name.clone(), reason: e.to_string() };
        let key = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(&e))?;
        let value = reqwest::header::HeaderValue::from_str(value).map_err(|e| bad(&e))?;
        headers.insert(key, value);
    }
    Ok(Transport::Http { client, headers })
}

fn http_body(request: &ExportTraceServiceRequest, gzip: bool) -> std::io::Result<Vec<u8>> {
    let raw = request.encode_to_vec();
    if !gzip {
        return Ok(raw);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
    gz.write_all(&raw)?;
    gz.finish()
}

async fn send_grpc(
    client: &TraceServiceClient<Channel>,
    headers: &[(MetadataKey<Ascii>, MetadataValue<Ascii>)],
    request: &ExportTraceServiceRequest,
) -> Attempt {
    let mut r = tonic::Request::new(request.clone());
    for (k, v) in headers {
        r.metadata_mut().insert(k.clone(), v.clone());
    }
    match client.clone().export(r).await {
        Ok(response) => sent(response.into_inner()),
        Err(status) => {
            let reason = format!("{:?}: {}", status.code(), status.message());
            if grpc_retryable(&status) {
                Attempt::Retry { reason, asked: grpc_retry_delay(&status) }
            } else {
                Attempt::Refused { reason }
            }
        }
    }
}

async fn send_http(
    client: &reqwest::Client,
    headers: &reqwest::header::HeaderMap,
    config: &ClientConfig,
    body: Vec<u8>,
) -> Attempt {
    let mut request = client
        .post(&config.endpoint)
        .headers(headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body);
    if config.gzip {
        request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
    }
    let response = match request.send().await {
        Ok(response) => response,
        // Connection refused or reset, a timeout: the server may be back soon.
        Err(e) => return Attempt::Retry { reason: e.to_string(), asked: None },
    };
    let status = response.status();
    if status.is_success() {
        let bytes = response.bytes().await.unwrap_or_default();
        return sent(ExportTraceServiceResponse::decode(bytes).unwrap_or_default());
    }
    let reason = format!("HTTP {status}");
    if !http_retryable(status.as_u16()) {
        return Attempt::Refused { reason };
    }
    let asked = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(http_retry_after);
    Attempt::Retry { reason, asked }
}

fn sent(response: ExportTraceServiceResponse) -> Attempt {
    match response.partial_success {
        Some(p) => Attempt::Sent { rejected: p.rejected_spans.max(0) as u64, message: p.error_message },
        None => Attempt::Sent { rejected: 0, message: String::new() },
    }
}
