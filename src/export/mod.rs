//! Regenerated traces out of the decompressor: OTLP/gRPC and OTLP/HTTP towards
//! Jaeger (which takes OTLP natively) or a Collector, and files (OTLP JSON lines
//! or Jaeger JSON). Network exporters batch whole traces, gzip, and retry with
//! exponential back-off on the failures OTLP calls retryable; a window that
//! still fails is reported, so the decompressor leaves it unacknowledged and the
//! compressor sends it again.

mod config;

pub use config::{ExportersConfig, FileExporterConfig, FileFormat, OtlpExporterConfig};

use std::path::PathBuf;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::io::{self, OutputFormat};
use crate::otlp;
use crate::trace::Trace;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{exporter}: {source}")]
    Client { exporter: &'static str, source: otlp::ClientError },
    #[error("{exporter}: {reason} (gave up after {attempts} attempts)")]
    Failed { exporter: &'static str, reason: String, attempts: u32 },
    #[error("{exporter}: {reason} (not retryable)")]
    Refused { exporter: &'static str, reason: String },
    #[error("file exporter: {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("file exporter: {0}")]
    Write(#[from] io::IoError),
    #[error("file exporter: {path}: the writing task failed: {reason}")]
    Task { path: PathBuf, reason: String },
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
    Otlp(Arc<OtlpExporter>),
    File(FileExporter),
}

/// Every exporter the configuration names.
pub fn from_config(c: &ExportersConfig) -> Result<Vec<Exporter>, ExportError> {
    let mut out = Vec::new();
    if let Some(g) = &c.otlp_grpc {
        out.push(Exporter::Otlp(Arc::new(OtlpExporter::new(g, otlp::Protocol::Grpc)?)));
    }
    if let Some(h) = &c.otlp_http {
        out.push(Exporter::Otlp(Arc::new(OtlpExporter::new(h, otlp::Protocol::Http)?)));
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
            Exporter::Otlp(o) => o.name,
            Exporter::File(f) => match f.format {
                FileFormat::OtlpJson => "file_otlp_json",
                FileFormat::Jaeger => "file_jaeger",
            },
        }
    }

    /// Exports one window; returns where it went (a URL or a file path).
    pub async fn export(&self, window: &WindowName, traces: Arc<Vec<Trace>>) -> Result<String, ExportError> {
        match self {
            Exporter::Otlp(o) => o.export(traces).await,
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

/// An OTLP exporter (gRPC or HTTP): whole traces batched, each request sent
/// with the shared OTLP client and retried by its policy until `retry_for`.
pub struct OtlpExporter {
    client: otlp::Client,
    config: OtlpExporterConfig,
    name: &'static str,
}

impl OtlpExporter {
    pub fn new(c: &OtlpExporterConfig, protocol: otlp::Protocol) -> Result<Self, ExportError> {
        let name = match protocol {
            otlp::Protocol::Grpc => "otlp_grpc",
            otlp::Protocol::Http => "otlp_http",
        };
        let config = otlp::ClientConfig {
            endpoint: c.endpoint.clone(),
            protocol,
            timeout: Some(c.timeout),
            gzip: c.gzip,
            headers: c.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let client = otlp::Client::new(&config).map_err(|source| ExportError::Client { exporter: name, source })?;
        Ok(OtlpExporter { client, config: c.clone(), name })
    }

    async fn export(self: &Arc<Self>, traces: Arc<Vec<Trace>>) -> Result<String, ExportError> {
        let this = self.clone();
        let requests = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<otlp::Prepared>> {
            batches(&traces, this.config.batch_spans).into_iter().map(|r| this.client.prepare(r)).collect()
        })
        .await
        .map_err(|e| ExportError::Refused { exporter: self.name, reason: e.to_string() })?
        .map_err(|e| ExportError::Refused { exporter: self.name, reason: e.to_string() })?;
        for request in &requests {
            self.send(request).await?;
        }
        Ok(self.config.endpoint.clone())
    }

    async fn send(&self, request: &otlp::Prepared) -> Result<(), ExportError> {
        let c = &self.config;
        let mut backoff = otlp::Backoff::new(c.retry_initial, c.retry_max, Some(c.retry_for));
        loop {
            match self.client.send(request).await {
                otlp::Attempt::Sent { rejected, message } => {
                    if rejected > 0 {
                        tracing::warn!(exporter = self.name, rejected, message, "backend rejected spans");
                    }
                    return Ok(());
                }
                otlp::Attempt::Refused { reason } => return Err(ExportError::Refused { exporter: self.name, reason }),
                otlp::Attempt::Retry { reason, asked } => {
                    tracing::debug!(exporter = self.name, reason, "export failed; retrying");
                    if !backoff.again(asked).await {
                        return Err(ExportError::Failed { exporter: self.name, reason, attempts: backoff.attempts });
                    }
                }
            }
        }
    }
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
        let path = self.dir.join(format!("{}.{ext}", window.file_stem()));
        let done = path.clone();
        tokio::task::spawn_blocking(move || io::write_traces_atomic(&traces, format, &done))
            .await
            .map_err(|e| ExportError::Task { path: path.clone(), reason: e.to_string() })??;
        Ok(path.display().to_string())
    }
}
