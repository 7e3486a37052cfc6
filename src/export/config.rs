//! The exporters' section of the decompressor's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where regenerated traces go; every configured exporter gets every window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportersConfig {
    /// OTLP/gRPC (Jaeger ≥ 1.35 and the Collector accept it on 4317).
    pub otlp_grpc: Option<OtlpExporterConfig>,
    /// OTLP/HTTP protobuf; `endpoint` is the full URL (…/v1/traces).
    pub otlp_http: Option<OtlpExporterConfig>,
    /// Files, one per window, in each listed format.
    pub files: Vec<FileExporterConfig>,
}

impl Default for ExportersConfig {
    fn default() -> Self {
        ExportersConfig {
            otlp_grpc: None,
            otlp_http: None,
            files: vec![FileExporterConfig { dir: "regenerated".into(), format: FileFormat::OtlpJson }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpExporterConfig {
    pub endpoint: String,
    /// gzip-compress requests.
    pub gzip: bool,
    /// Most spans per request (whole traces are never split).
    pub batch_spans: usize,
    /// Deadline of one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed request: first wait, doubled up to `retry_max`,
    /// giving up after `retry_for` in all (the window is then retried by the compressor).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// Extra request headers (gRPC metadata), e.g. an API key for a SaaS backend.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        OtlpExporterConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            gzip: true,
            batch_spans: 5_000,
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            retry_for: Duration::from_secs(60),
            headers: Default::default(),
        }
    }
}

impl OtlpExporterConfig {
    /// What is wrong with these settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(format!("endpoint {:?} must start with http:// or https://", self.endpoint));
        }
        if self.batch_spans == 0 {
            return Err("batch_spans must be greater than 0".into());
        }
        if self.timeout.is_zero() || self.retry_initial.is_zero() {
            return Err("timeout and retry_initial must be longer than 0s".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// Folder; each window becomes `window-<producer>-<id>.<ext>`.
    pub dir: PathBuf,
    pub format: FileFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// OTLP JSON, one ExportTraceServiceRequest per line (`.jsonl`).
    OtlpJson,
    /// Jaeger's JSON (`{"data": [...]}`, as its UI imports) (`.json`).
    Jaeger,
}
