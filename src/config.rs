//! YAML configuration of the daemons. Every field has a default, so an empty
//! file is a working configuration; unknown fields are errors (a typo must not
//! silently fall back to a default), and `validate` names the field at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: yaml_serde::Error },
    #[error("{path}: {field}: {reason}")]
    Invalid { path: PathBuf, field: &'static str, reason: String },
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
}

/// YAML text as `T`; an empty document means "all defaults".
fn parse_yaml<T: serde::de::DeserializeOwned + Default>(text: &[u8], path: &Path) -> Result<T, ConfigError> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    yaml_serde::from_slice(text).map_err(|source| ConfigError::Parse { path: path.into(), source })
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read { path: path.into(), source })
}

/// `gent train --config FILE`: Gen-T model settings (see config/model.yaml),
/// read and validated.
pub fn load_model(path: &Path) -> Result<crate::gent::GenTConfig, ConfigError> {
    parse_model(&read(path)?, path)
}

/// Parses and validates model settings; `path` only names them in errors.
pub fn parse_model(text: &[u8], path: &Path) -> Result<crate::gent::GenTConfig, ConfigError> {
    let config = parse_yaml::<ModelFile>(text, path)?.apply();
    config.validate().map_err(|e| ConfigError::Model { path: path.into(), reason: e.to_string() })?;
    Ok(config)
}

/// `gent compressor --config FILE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressorConfig {
    pub receiver: ReceiverConfig,
    pub window: WindowConfig,
    pub sink: SinkConfig,
    pub metrics: MetricsConfig,
}

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
        }
    }
}

/// How spans are grouped into windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// A window closes this long after it opened...
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// ...or once it holds this many traces, whichever comes first.
    pub max_traces: usize,
    /// A trace is complete when no span of it has arrived for this long.
    #[serde(with = "humantime_serde")]
    pub trace_idle: Duration,
    /// Most spans held at once between receipt and the sink finishing with
    /// them; beyond it the receiver answers with backpressure.
    pub span_budget: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            duration: Duration::from_secs(60),
            max_traces: 20_000,
            trace_idle: Duration::from_secs(5),
            span_budget: 4_000_000,
        }
    }
}

/// What happens to a closed window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Write each closed window as OTLP JSON lines into this folder (a
    /// debugging aid); `null` writes nothing.
    pub otlp_json_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus `/metrics` listen address; `null` turns it off.
    pub endpoint: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { endpoint: Some(SocketAddr::from(([0, 0, 0, 0], 9464))) }
    }
}

/// config/model.yaml as written: every field optional, and a missing one
/// takes Gen-T's default (not CTGAN's: a file that sets only `ctgan.epochs`
/// must keep Gen-T's 128-wide networks).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ModelFile {
    chain_length: Option<usize>,
    gcn: Option<bool>,
    ctgan: CtganFile,
    attributes: Option<crate::gent::AttributeConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CtganFile {
    epochs: Option<usize>,
    embedding: Option<usize>,
    generator: Option<Vec<usize>>,
    critic: Option<Vec<usize>>,
    graph_embedding: Option<usize>,
    pac: Option<usize>,
    batch: Option<usize>,
    learning_rate: Option<f64>,
    weight_decay: Option<f32>,
    gradient_penalty: Option<f32>,
    seed: Option<u64>,
}

impl ModelFile {
    fn apply(self) -> crate::gent::GenTConfig {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        let mut c = crate::gent::GenTConfig::default();
        set(&mut c.chain_length, self.chain_length);
        set(&mut c.gcn, self.gcn);
        set(&mut c.attributes, self.attributes);
        let (n, f) = (&mut c.ctgan, self.ctgan);
        set(&mut n.epochs, f.epochs);
        set(&mut n.embedding, f.embedding);
        set(&mut n.generator, f.generator);
        set(&mut n.critic, f.critic);
        set(&mut n.graph_embedding, f.graph_embedding);
        set(&mut n.pac, f.pac);
        set(&mut n.batch, f.batch);
        set(&mut n.learning_rate, f.learning_rate);
        set(&mut n.weight_decay, f.weight_decay);
        set(&mut n.gradient_penalty, f.gradient_penalty);
        set(&mut n.seed, f.seed);
        c
    }
}

impl CompressorConfig {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }

    /// Parses and validates YAML text; `path` only names it in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<Self, ConfigError> {
        let config: Self = parse_yaml(text, path)?;
        config.validate().map_err(|(field, reason)| ConfigError::Invalid { path: path.into(), field, reason })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let r = &self.receiver;
        let w = &self.window;
        let positive = [
            ("receiver.max_message_bytes", r.max_message_bytes),
            ("receiver.max_spans_per_request", r.max_spans_per_request),
            ("receiver.max_attribute_value_bytes", r.max_attribute_value_bytes),
            ("window.max_traces", w.max_traces),
            ("window.span_budget", w.span_budget),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field, "must be greater than 0".into()));
            }
        }
        if r.max_spans_per_request > w.span_budget {
            return Err((
                "receiver.max_spans_per_request",
                format!(
                    "{} exceeds window.span_budget {}: such a request could never be accepted",
                    r.max_spans_per_request, w.span_budget
                ),
            ));
        }
        if w.duration.is_zero() {
            return Err(("window.duration", "must be longer than 0s".into()));
        }
        if w.trace_idle > w.duration {
            return Err(("window.trace_idle", "must not be longer than window.duration".into()));
        }
        if r.grpc.is_none() && r.http.is_none() {
            return Err(("receiver", "grpc and http are both off: nothing could be received".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CompressorConfig, ConfigError> {
        CompressorConfig::parse(text.as_bytes(), Path::new("c.yaml"))
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let shipped = include_str!("../config/compressor.yaml");
        assert_eq!(
            parse(shipped).unwrap(),
            CompressorConfig { sink: SinkConfig { otlp_json_dir: Some("windows".into()) }, ..CompressorConfig::default() }
        );
        assert_eq!(parse("").unwrap(), CompressorConfig::default());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("window:\n  duraton: 5s\n").unwrap_err().to_string();
        assert!(e.contains("duraton") && e.contains("c.yaml"), "{e}");
        let e = parse("window:\n  duration: soon\n").unwrap_err().to_string();
        assert!(e.contains("window.duration"), "{e}");
        let e = parse("window:\n  span_budget: 10\n").unwrap_err().to_string();
        assert!(e.contains("receiver.max_spans_per_request"), "{e}");
        let e = parse("receiver:\n  grpc: null\n  http: null\n").unwrap_err().to_string();
        assert!(e.contains("nothing could be received"), "{e}");
    }

    #[test]
    fn the_shipped_model_file_is_the_model_defaults() {
        let shipped = include_str!("../config/model.yaml");
        let path = Path::new("m.yaml");
        assert_eq!(parse_model(shipped.as_bytes(), path).unwrap(), crate::gent::GenTConfig::default());
        assert_eq!(parse_model(b"", path).unwrap(), crate::gent::GenTConfig::default());
        let c = parse_model(b"ctgan:\n  epochs: 3\nattributes:\n  keys: [http.route]\n", path).unwrap();
        assert_eq!(
            (c.ctgan.epochs, c.ctgan.generator.clone(), c.attributes.keys.clone()),
            (3, vec![128], vec!["http.route".to_string()])
        );
    }

    #[test]
    fn model_errors_name_the_setting() {
        let path = Path::new("m.yaml");
        let e = parse_model(b"chain_lenght: 4\n", path).unwrap_err().to_string();
        assert!(e.contains("chain_lenght") && e.contains("m.yaml"), "{e}");
        let e = parse_model(b"chain_length: 1\n", path).unwrap_err().to_string();
        assert!(e.contains("chain_length"), "{e}");
        let e = parse_model(b"ctgan:\n  batch: 15\n", path).unwrap_err().to_string();
        assert!(e.contains("multiple of pac"), "{e}");
        let e = parse_model(b"attributes:\n  vocabulary: 0\n", path).unwrap_err().to_string();
        assert!(e.contains("attributes.vocabulary"), "{e}");
    }

    #[test]
    fn durations_read_as_humans_write_them() {
        let c = parse("window:\n  duration: 2m\n  trace_idle: 1500ms\n").unwrap();
        assert_eq!(c.window.duration, Duration::from_secs(120));
        assert_eq!(c.window.trace_idle, Duration::from_millis(1500));
    }
}
