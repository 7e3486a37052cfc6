//! YAML configuration of the daemons. Every field has a default, so an empty
//! file is a working configuration; unknown fields are errors (a typo must not
//! silently fall back to a default), and `validate` names the field at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::codec::Engine;
pub use crate::connections::ConnectionConfig;
pub use crate::export::{ExportersConfig, FileExporterConfig, FileFormat, OtlpExporterConfig};
pub use crate::fidelity::FidelityConfig;
pub use crate::llm::LlmEngineConfig;
pub use crate::metrics::MetricsConfig;
pub use crate::packet::{LinkClientConfig, LinkServerConfig};
pub use crate::receiver::ReceiverConfig;
pub use crate::window::{SinkConfig, WindowConfig};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressorConfig {
    pub receiver: ReceiverConfig,
    pub window: WindowConfig,
    pub sink: SinkConfig,
    /// Training every closed window; `null` only writes windows (`sink`).
    pub pipeline: Option<PipelineConfig>,
    pub metrics: MetricsConfig,
}

impl Default for CompressorConfig {
    fn default() -> Self {
        CompressorConfig {
            receiver: ReceiverConfig::default(),
            window: WindowConfig::default(),
            sink: SinkConfig::default(),
            pipeline: Some(PipelineConfig::default()),
            metrics: MetricsConfig::default(),
        }
    }
}

/// What the compressor does with each closed window: train, check, ship.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Gen-T settings, the fields of config/model.yaml; missing ones keep Gen-T's defaults.
    #[serde(deserialize_with = "model_section")]
    pub model: crate::gent::GenTConfig,
    /// Store generator weights at half precision (halves the packet).
    pub f16: bool,
    /// Start each window's training from the previous window's weights.
    pub warm_start: bool,
    /// Compute backend for training (`cpu`; `wgpu`, `cuda` with the cargo feature).
    pub backend: crate::nn::Backend,
    /// Ship a window's traces whole (gzip OTLP) when that is smaller than its
    /// model: small windows cost less and lose nothing.
    pub raw_when_smaller: bool,
    /// Also carry each trace's call-graph conditions in the packet (a few bytes
    /// per trace), for decompressors that regenerate with a language model
    /// (`engine: llm`).
    pub call_graph_conditions: bool,
    /// Most spans a window's generators (and, without `timing_spans`, its
    /// timing) are fitted on (0: all). A larger window is fitted on a share of its traces, each topology and
    /// stretch of the window keeping its share, so training time stops growing
    /// with the window; the topology histogram and the start counts stay exact.
    pub train_spans: usize,
    /// Most spans of a larger window whose timing alone (16 bytes a span) is
    /// kept, head-sampled with the share's seed, to fit the calibrated
    /// timing on instead of the share: its correlations between a trace's
    /// spans need many whole traces (0: fitted on the share).
    pub timing_spans: usize,
    pub fidelity: FidelityConfig,
    pub link: LinkClientConfig,
}

/// Gen-T as the daemon trains it: the paper's settings, with training capped
/// at 500 steps per generator so a busy window costs bounded time (measured on
/// 188,560-span windows: 9.9 s instead of 23.9 s, fidelity unchanged).
pub fn pipeline_model() -> crate::gent::GenTConfig {
    let mut m = crate::gent::GenTConfig::default();
    m.ctgan.max_steps = Some(500);
    m
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            model: pipeline_model(),
            f16: true,
            warm_start: true,
            backend: crate::nn::Backend::Cpu,
            raw_when_smaller: true,
            call_graph_conditions: false,
            train_spans: 250_000,
            timing_spans: crate::gent::TIMING_SPANS,
            fidelity: FidelityConfig::default(),
            link: LinkClientConfig::default(),
        }
    }
}

fn model_section<'de, D: serde::Deserializer<'de>>(d: D) -> Result<crate::gent::GenTConfig, D::Error> {
    let config = ModelFile::deserialize(d)?.apply_to(pipeline_model());
    config.validate().map_err(serde::de::Error::custom)?;
    Ok(config)
}

/// `gent decompressor --config FILE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecompressorConfig {
    pub link: LinkServerConfig,
    /// Compute backend for regeneration.
    pub backend: crate::nn::Backend,
    /// What regenerates a model packet's traces.
    pub engine: Engine,
    /// The language model for `engine: llm`.
    pub llm: LlmEngineConfig,
    pub exporters: ExportersConfig,
    pub metrics: MetricsConfig,
}

impl Default for DecompressorConfig {
    fn default() -> Self {
        DecompressorConfig {
            link: LinkServerConfig::default(),
            backend: crate::nn::Backend::Cpu,
            engine: Engine::Gent,
            llm: LlmEngineConfig::default(),
            exporters: ExportersConfig::default(),
            metrics: MetricsConfig { endpoint: Some(SocketAddr::from(([0, 0, 0, 0], 9465))) },
        }
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
    calibration: Option<crate::gent::CalibrationConfig>,
    generators: Option<crate::gent::Generators>,
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
    /// Absent: keep the base's; `null`: no cap.
    #[serde(deserialize_with = "present")]
    max_steps: Option<Option<usize>>,
    category_loss: Option<f32>,
    max_generator_bytes: Option<usize>,
}

/// A field that is present, even as `null` (absent fields stay `None` by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<usize>>, D::Error> {
    Option::<usize>::deserialize(d).map(Some)
}

impl ModelFile {
    fn apply(self) -> crate::gent::GenTConfig {
        self.apply_to(crate::gent::GenTConfig::default())
    }

    /// The settings written here, the rest from `c`.
    fn apply_to(self, mut c: crate::gent::GenTConfig) -> crate::gent::GenTConfig {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        set(&mut c.chain_length, self.chain_length);
        set(&mut c.gcn, self.gcn);
        set(&mut c.attributes, self.attributes);
        set(&mut c.calibration, self.calibration);
        set(&mut c.generators, self.generators);
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
        set(&mut n.max_steps, f.max_steps);
        set(&mut n.category_loss, f.category_loss);
        set(&mut n.max_generator_bytes, f.max_generator_bytes.map(Some));
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
            ("window.max_spans", w.max_spans),
            ("window.span_budget", w.span_budget),
            ("window.max_spans_per_trace", w.max_spans_per_trace),
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
        r.connections.validate().map_err(|reason| ("receiver.connections", reason))?;
        if let Some(p) = &self.pipeline {
            p.fidelity.validate()?;
            let l = &p.link;
            if !(l.endpoint.starts_with("http://") || l.endpoint.starts_with("https://")) {
                return Err(("pipeline.link.endpoint", format!("{:?} must start with http:// or https://", l.endpoint)));
            }
            if l.spool_max_bytes == 0 {
                return Err(("pipeline.link.spool_max_bytes", "must be greater than 0".into()));
            }
            if l.retry_initial.is_zero() || l.retry_max < l.retry_initial {
                return Err(("pipeline.link.retry_initial", "must be longer than 0s and not longer than retry_max".into()));
            }
            if l.timeout.is_zero() {
                return Err(("pipeline.link.timeout", "must be longer than 0s".into()));
            }
            if !p.backend.compiled() {
                return Err(("pipeline.backend", format!("{} is not compiled into this gent", p.backend.name())));
            }
        }
        Ok(())
    }
}

impl DecompressorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }

    pub fn parse(text: &[u8], path: &Path) -> Result<Self, ConfigError> {
        let config: Self = parse_yaml(text, path)?;
        config.validate().map_err(|(field, reason)| ConfigError::Invalid { path: path.into(), field, reason })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let l = &self.link;
        if l.max_packet_bytes == 0 {
            return Err(("link.max_packet_bytes", "must be greater than 0".into()));
        }
        if l.remember_windows == 0 {
            return Err(("link.remember_windows", "must be greater than 0".into()));
        }
        if l.max_trace_spans == 0 {
            return Err(("link.max_trace_spans", "must be greater than 0".into()));
        }
        if l.tls_cert_file.is_some() != l.tls_key_file.is_some() {
            return Err(("link.tls_cert_file", "tls_cert_file and tls_key_file go together".into()));
        }
        l.connections.validate().map_err(|reason| ("link.connections", reason))?;
        self.validate_llm()?;
        let e = &self.exporters;
        for (field, exporter) in [("exporters.otlp_grpc", &e.otlp_grpc), ("exporters.otlp_http", &e.otlp_http)] {
            if let Some(x) = exporter {
                x.validate().map_err(|reason| (field, reason))?;
            }
        }
        if e.otlp_grpc.is_none() && e.otlp_http.is_none() && e.files.is_empty() {
            return Err(("exporters", "no exporter configured: regenerated traces would go nowhere".into()));
        }
        Ok(())
    }

    fn validate_llm(&self) -> Result<(), (&'static str, String)> {
        if self.engine == Engine::Llm && self.llm.model.is_none() {
            return Err(("llm.model", "engine llm needs a language model file (gent llm train --out)".into()));
        }
        self.llm.validate()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<CompressorConfig, ConfigError> {
        CompressorConfig::parse(text.as_bytes(), Path::new("c.yaml"))
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let shipped = include_str!("../config/compressor.yaml");
        assert_eq!(parse(shipped).unwrap(), CompressorConfig::default());
        assert_eq!(parse("").unwrap(), CompressorConfig::default());
        let shipped = include_str!("../config/decompressor.yaml");
        let path = Path::new("d.yaml");
        assert_eq!(DecompressorConfig::parse(shipped.as_bytes(), path).unwrap(), DecompressorConfig::default());
        assert_eq!(DecompressorConfig::parse(b"", path).unwrap(), DecompressorConfig::default());
    }

    #[test]
    fn a_connections_section_written_in_part_keeps_its_servers_defaults() {
        let d = |text: &str| DecompressorConfig::parse(text.as_bytes(), Path::new("d.yaml"));
        let link = d("link:\n  connections:\n    idle_timeout: 5s\n    keepalive_interval: null\n").unwrap().link.connections;
        assert_eq!(link.idle_timeout, Duration::from_secs(5));
        assert_eq!(link.request_timeout, ConnectionConfig::link().request_timeout);
        assert_eq!(link.keepalive_interval, None);
        let e = d("link:\n  connections:\n    idle: 5s\n").unwrap_err().to_string();
        assert!(e.contains("idle"), "{e}");
        let e = d("link:\n  connections:\n    idle_timeout: 0s\n").unwrap_err().to_string();
        assert!(e.contains("link.connections") && e.contains("idle_timeout"), "{e}");
        let r = parse("receiver:\n  connections:\n    max_connections: 8\n").unwrap().receiver.connections;
        assert_eq!((r.max_connections, r.request_timeout), (8, ConnectionConfig::default().request_timeout));
        let e = parse("receiver:\n  connections:\n    max_connections: 0\n").unwrap_err().to_string();
        assert!(e.contains("receiver.connections") && e.contains("max_connections"), "{e}");
    }

    #[test]
    fn pipeline_errors_name_the_field() {
        let e = parse("pipeline:\n  fidelity:\n    floor: 1.5\n").unwrap_err().to_string();
        assert!(e.contains("pipeline.fidelity.floor"), "{e}");
        let e = parse("pipeline:\n  link:\n    endpoint: 127.0.0.1:4320\n").unwrap_err().to_string();
        assert!(e.contains("pipeline.link.endpoint"), "{e}");
        let e = parse("pipeline:\n  link:\n    spool: x\n").unwrap_err().to_string();
        assert!(e.contains("spool") && e.contains("unknown field"), "{e}");
        let e = parse("pipeline:\n  model:\n    ctgan:\n      batch: 15\n").unwrap_err().to_string();
        assert!(e.contains("multiple of pac"), "{e}");
        let c = parse("pipeline:\n  model:\n    ctgan:\n      epochs: 2\n").unwrap().pipeline.unwrap();
        assert_eq!(c.model.ctgan.generator, vec![128], "a partial model section keeps Gen-T's sizes");
        assert_eq!(c.model.ctgan.max_steps, Some(500), "and the daemon's step cap");
        let c = parse("pipeline:\n  model:\n    ctgan:\n      max_steps: null\n").unwrap().pipeline.unwrap();
        assert_eq!(c.model.ctgan.max_steps, None, "null lifts the cap");
        assert_eq!(parse("pipeline: null\n").unwrap().pipeline, None);
        let d = |t: &str| DecompressorConfig::parse(t.as_bytes(), Path::new("d.yaml")).unwrap_err().to_string();
        assert!(d("exporters:\n  files: []\n").contains("exporters"));
        assert!(d("exporters:\n  otlp_grpc:\n    endpoint: jaeger:4317\n").contains("exporters.otlp_grpc"));
        assert!(d("link:\n  tls_cert_file: c.pem\n").contains("link.tls_cert_file"));
        assert!(d("exporters:\n  files:\n    - dir: x\n      format: csv\n").contains("csv"));
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
    fn the_llm_engine_needs_a_model_and_sane_sampling() {
        let path = Path::new("d.yaml");
        let e = DecompressorConfig::parse(b"engine: llm\n", path).unwrap_err().to_string();
        assert!(e.contains("llm.model") && e.contains("d.yaml"), "{e}");
        let e = DecompressorConfig::parse(b"engine: lm\n", path).unwrap_err().to_string();
        assert!(e.contains("gent") && e.contains("llm"), "the choices are named: {e}");
        let e = DecompressorConfig::parse(b"engine: llm\nllm:\n  model: lm.gent\n  top_p: 0\n", path).unwrap_err().to_string();
        assert!(e.contains("llm.top_p"), "{e}");
        let e = DecompressorConfig::parse(b"llm:\n  max_edges: 0\n", path).unwrap_err().to_string();
        assert!(e.contains("llm.max_edges"), "{e}");
        let c = DecompressorConfig::parse(b"engine: llm\nllm:\n  model: lm.gent\n  temperature: 0.5\n", path).unwrap();
        assert_eq!((c.engine, c.llm.model.as_deref(), c.llm.temperature), (Engine::Llm, Some(Path::new("lm.gent")), 0.5));
    }

    #[test]
    fn durations_read_as_humans_write_them() {
        let c = parse("window:\n  duration: 2m\n  trace_idle: 1500ms\n").unwrap();
        assert_eq!(c.window.duration, Duration::from_secs(120));
        assert_eq!(c.window.trace_idle, Duration::from_millis(1500));
    }
}
