//! Regenerated traces out of the decompressor: OTLP/gRPC and OTLP/HTTP towards
//! Jaeger (which takes OTLP natively) or a Collector, and files (OTLP JSON lines
//! or Jaeger JSON). Network exporters batch whole traces, gzip, and retry with
//! exponential back-off on the failures OTLP calls retryable; a window that
//! still fails is reported, so the decompressor leaves it unacknowledged and the
//! compressor sends it again.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::config::{ExportersConfig, FileExporterConfig, FileFormat, OtlpExporterConfig};
use crate::io::{self, OutputFormat};
use crate::trace::Trace;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{exporter}: endpoint {endpoint:?}: {reason}")]
    Endpoint { exporter: &'static str, endpoint: String, reason: String },
    #[error("{exporter}: header {name:?}: {reason}")]
    Header { exporter: &'static str, name: String, reason: String },
    #[error("{exporter}: {reason} (gave up after {attempts} attempts)")]
    Failed { exporter: &'static str, reason: String, attempts: u32 },
    #[error("{exporter}: {reason} (not retryable)")]
    Refused { exporter: &'static str, reason: String },
    #[error("file exporter: {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Names the window in file names and logs.
#[derive(Debug, Clone)]
pub struct WindowName {
    pub producer: String,
    pub window_id: u64,
    /// Part `.0` of `.1`, for a window regenerated in parts.
    pub part: Option<(usize, usize)>,
}

impl WindowName {
    /// `<producer>-<id>` with anything but letters, digits, `.`, `_` and `-`
    /// as `_`, and `.part-<n>` for a window's parts after the first.
    fn file_stem(&self) -> String {
        let producer: String =
            self.producer.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
        match self.part {
            Some((part, _)) if part > 0 => format!("window-{producer}-{:06}.part-{part:04}", self.window_id),
            _ => format!("window-{producer}-{:06}", self.window_id),
        }
    }
}

pub enum Exporter {
    Grpc(GrpcExporter),
    Http(HttpExporter),
    File(FileExporter),
}

/// Every exporter the configuration names.
pub fn from_config(c: &ExportersConfig) -> Result<Vec<Exporter>, ExportError> {
    let mut out = Vec::new();
    if let Some(g) = &c.otlp_grpc {
        out.push(Exporter::Grpc(GrpcExporter::new(g)?));
    }
    if let Some(h) = &c.otlp_http {
        out.push(Exporter::Http(HttpExporter::new(h)?));
    }
    for f in &c.files {
        out.push(Exporter::File(FileExporter::new(f)?));
    }
    Ok(out)
}

impl Exporter {
    /// The `exporter` label in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Exporter::Grpc(_) => "otlp_grpc",
            Exporter::Http(_) => "otlp_http",
            Exporter::File(f) => match f.format {
                FileFormat::OtlpJson => "file_otlp_json",
                FileFormat::Jaeger => "file_jaeger",
            },
        }
    }

    /// Exports one window; returns where it went (a URL or a file path).
    pub async fn export(&self, window: &WindowName, traces: Arc<Vec<Trace>>) -> Result<String, ExportError> {
        match self {
            Exporter::Grpc(g) => g.export(traces).await,
            Exporter::Http(h) => h.export(traces).await,
            Exporter::File(f) => f.export(window, traces).await,
        }
    }
}

/// Splits `traces` into requests of at most `batch_spans` spans, never
/// splitting a trace (a trace larger than the batch goes alone).
pub fn batches(traces: &[Trace], batch_spans: usize) -> Vec<ExportTraceServiceRequest> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut spans = 0;
    for (i, t) in traces.iter().enumerate() {
        if spans > 0 && spans + t.spans.len() > batch_spans {
            out.push(io::to_request(traces[start..i].iter().flat_map(|t| &t.spans)));
            start = i;
            spans = 0;
        }
        spans += t.spans.len();
    }
    if start < traces.len() {
        out.push(io::to_request(traces[start..].iter().flat_map(|t| &t.spans)));
    }
    out
}

/// Exponential back-off bounded by a total time.
struct Retry {
    wait: Duration,
    max: Duration,
    until: Instant,
    attempts: u32,
}

impl Retry {
    fn new(c: &OtlpExporterConfig) -> Self {
        Retry { wait: c.retry_initial, max: c.retry_max, until: Instant::now() + c.retry_for, attempts: 0 }
    }

    /// Waits before the next attempt (at least `hint` if the server asked), or
    /// says the time is up.
    async fn again(&mut self, hint: Option<Duration>) -> bool {
        self.attempts += 1;
        let wait = hint.unwrap_or(self.wait).max(self.wait);
        if Instant::now() + wait > self.until {
            return false;
        }
        tokio::time::sleep(wait).await;
        self.wait = (self.wait * 2).min(self.max);
        true
    }
}

pub struct GrpcExporter {
    client: TraceServiceClient<Channel>,
    config: OtlpExporterConfig,
    headers: Vec<(tonic::metadata::MetadataKey<tonic::metadata::Ascii>, tonic::metadata::MetadataValue<tonic::metadata::Ascii>)>,
}

impl GrpcExporter {
    pub fn new(c: &OtlpExporterConfig) -> Result<Self, ExportError> {
        let bad = |reason: String| ExportError::Endpoint { exporter: "otlp_grpc", endpoint: c.endpoint.clone(), reason };
        let mut endpoint = tonic::transport::Endpoint::from_shared(c.endpoint.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(c.timeout);
        if c.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
                .map_err(|e| bad(e.to_string()))?;
        }
        let mut client = TraceServiceClient::new(endpoint.connect_lazy()).max_decoding_message_size(4 << 20);
        if c.gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        let mut headers = Vec::new();
        for (name, value) in &c.headers {
            let bad = |reason: String| ExportError::Header { exporter: "otlp_grpc", name: name.clone(), reason };
            let key =
                name.to_ascii_lowercase().parse().map_err(|e: tonic::metadata::errors::InvalidMetadataKey| bad(e.to_string()))?;
            let value = value.parse().map_err(|e: tonic::metadata::errors::InvalidMetadataValue| bad(e.to_string()))?;
            headers.push((key, value));
        }
        Ok(GrpcExporter { client, config: c.clone(), headers })
    }

    async fn export(&self, traces: Arc<Vec<Trace>>) -> Result<String, ExportError> {
        let batch_spans = self.config.batch_spans;
        let requests = tokio::task::spawn_blocking(move || batches(&traces, batch_spans))
            .await
            .map_err(|e| ExportError::Refused { exporter: "otlp_grpc", reason: e.to_string() })?;
        for request in requests {
            self.send(request).await?;
        }
        Ok(self.config.endpoint.clone())
    }

    async fn send(&self, request: ExportTraceServiceRequest) -> Result<(), ExportError> {
        use tonic::Code;
        let mut retry = Retry::new(&self.config);
        loop {
            let mut r = tonic::Request::new(request.clone());
            for (k, v) in &self.headers {
                r.metadata_mut().insert(k.clone(), v.clone());
            }
            let status = match self.client.clone().export(r).await {
                Ok(response) => {
                    if let Some(p) = &response.get_ref().partial_success
                        && p.rejected_spans > 0
                    {
                        tracing::warn!(
                            rejected = p.rejected_spans,
                            message = p.error_message,
                            "otlp_grpc: backend rejected spans"
                        );
                    }
                    return Ok(());
                }
                Err(status) => status,
            };
            let reason = format!("{:?}: {}", status.code(), status.message());
            if !matches!(
                status.code(),
                Code::Unavailable
                    | Code::ResourceExhausted
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::Cancelled
                    | Code::DataLoss
            ) {
                return Err(ExportError::Refused { exporter: "otlp_grpc", reason });
            }
            tracing::debug!(reason, "otlp_grpc export failed; retrying");
            if !retry.again(None).await {
                return Err(ExportError::Failed { exporter: "otlp_grpc", reason, attempts: retry.attempts });
            }
        }
    }
}

pub struct HttpExporter {
    client: reqwest::Client,
    config: OtlpExporterConfig,
    headers: reqwest::header::HeaderMap,
}

impl HttpExporter {
    pub fn new(c: &OtlpExporterConfig) -> Result<Self, ExportError> {
        let bad = |reason: String| ExportError::Endpoint { exporter: "otlp_http", endpoint: c.endpoint.clone(), reason };
        reqwest::Url::parse(&c.endpoint).map_err(|e| bad(e.to_string()))?;
        let client = reqwest::Client::builder().timeout(c.timeout).build().map_err(|e| bad(e.to_string()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &c.headers {
            let bad = |reason: String| ExportError::Header { exporter: "otlp_http", name: name.clone(), reason };
            let key = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            headers.insert(key, value);
        }
        Ok(HttpExporter { client, config: c.clone(), headers })
    }

    async fn export(&self, traces: Arc<Vec<Trace>>) -> Result<String, ExportError> {
        let (batch_spans, gzip) = (self.config.batch_spans, self.config.gzip);
        let bodies = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<Vec<u8>>> {
            batches(&traces, batch_spans).iter().map(|r| body(r, gzip)).collect()
        })
        .await
        .map_err(|e| ExportError::Refused { exporter: "otlp_http", reason: e.to_string() })?
        .map_err(|e| ExportError::Refused { exporter: "otlp_http", reason: e.to_string() })?;
        for body in bodies {
            self.send(body).await?;
        }
        Ok(self.config.endpoint.clone())
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), ExportError> {
        let mut retry = Retry::new(&self.config);
        loop {
            let mut request = self
                .client
                .post(&self.config.endpoint)
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body.clone());
            if self.config.gzip {
                request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
            }
            let (reason, hint) = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let hint = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let reason = format!("HTTP {status}");
                    // OTLP/HTTP: 429, 502, 503 and 504 are retryable, other errors are not.
                    if ![429, 502, 503, 504].contains(&status.as_u16()) {
                        return Err(ExportError::Refused { exporter: "otlp_http", reason });
                    }
                    (reason, hint)
                }
                Err(e) => (e.to_string(), None),
            };
            tracing::debug!(reason, "otlp_http export failed; retrying");
            if !retry.again(hint).await {
                return Err(ExportError::Failed { exporter: "otlp_http", reason, attempts: retry.attempts });
            }
        }
    }
}

fn body(request: &ExportTraceServiceRequest, gzip: bool) -> std::io::Result<Vec<u8>> {
    let raw = request.encode_to_vec();
    if !gzip {
        return Ok(raw);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
    gz.write_all(&raw)?;
    gz.finish()
}

pub struct FileExporter {
    dir: PathBuf,
    format: FileFormat,
}

impl FileExporter {
    pub fn new(c: &FileExporterConfig) -> Result<Self, ExportError> {
        std::fs::create_dir_all(&c.dir).map_err(|e| ExportError::File { path: c.dir.clone(), reason: e.to_string() })?;
        Ok(FileExporter { dir: c.dir.clone(), format: c.format })
    }

    /// Written under a temporary name and renamed: a reader of the folder never
    /// sees half a window.
    async fn export(&self, window: &WindowName, traces: Arc<Vec<Trace>>) -> Result<String, ExportError> {
        let (format, ext) = match self.format {
            FileFormat::OtlpJson => (OutputFormat::OtlpJson, "jsonl"),
            FileFormat::Jaeger => (OutputFormat::Jaeger, "json"),
        };
        let name = format!("{}.{ext}", window.file_stem());
        let path = self.dir.join(&name);
        let partial = self.dir.join(format!(".{name}.partial"));
        let done = path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ExportError> {
            io::write_file(&traces, format, &partial)
                .map_err(|e| ExportError::File { path: partial.clone(), reason: e.to_string() })?;
            std::fs::rename(&partial, &done).map_err(|e| ExportError::File { path: done.clone(), reason: e.to_string() })
        })
        .await
        .map_err(|e| ExportError::File { path: path.clone(), reason: e.to_string() })??;
        Ok(path.display().to_string())
    }
}
