//! The Gen-T model commands: `train` a window into a packet, `generate` its
//! traces back (with Gen-T or, from the packet's conditions, a language model).

use std::path::{Path, PathBuf};

use serde::Serialize;

use gent::codec::PackError;
use gent::gent::{GenTConfig, WindowModel};
use gent::io::{self, OutputFormat};
use gent::llm::regeneration::WindowConditions;
use gent::nn::Backend;
use gent::nn::weights::Precision;
use gent::trace;

use super::args::{InputArgs, JsonArg, read_file, read_limits};
use super::memory::peak_rss_bytes;
use super::{Failure, device, report, write};

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Packet file to write.
    #[arg(long)]
    out: PathBuf,
    /// Model settings in YAML (see config/model.yaml); built-in defaults without it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training epochs of each generator [config: ctgan.epochs, default 10].
    #[arg(long)]
    epochs: Option<usize>,
    /// Most nodes per chain, head included, at least 2 [config: chain_length, default 3].
    #[arg(long)]
    chain_length: Option<usize>,
    /// Seed for training and, by default, for regeneration [config: ctgan.seed, default 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Store weights as f16 (half the size, about three significant digits).
    #[arg(long, conflicts_with = "int8")]
    f16: bool,
    /// Store weight matrices as int8 with an f16 scale per row, vectors as f16
    /// (about a quarter of the size; error up to half a step of 1/127 of the row's largest weight).
    #[arg(long)]
    int8: bool,
    /// Condition on a one-hot topology id instead of the GCN embedding (the paper's ablation).
    #[arg(long)]
    no_gcn: bool,
    /// Start R_G and C_G from this earlier packet's weights where they fit.
    #[arg(long)]
    warm_start: Option<PathBuf>,
    /// Also carry each trace's call-graph conditions (service, spans, depth,
    /// latency, start) so `gent generate --llm` can regenerate with a language model.
    #[arg(long)]
    call_graph_conditions: bool,
    /// Compute backend; GPU backends need the matching cargo feature.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: Backend,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Packet written by `gent train` or the compressor.
    model: PathBuf,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "otlp-json")]
    format: OutputFormat,
    /// Seed; the packet's own seed when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Regenerate the call graphs with this language model (`gent llm train`)
    /// from the conditions the packet carries (`gent train --call-graph-conditions`),
    /// constrained decoding, instead of the packet's Gen-T model.
    #[arg(long)]
    llm: Option<PathBuf>,
    /// With --llm: the largest graph written for one trace; larger traces are written at this size.
    #[arg(long, default_value_t = 500)]
    max_edges: u64,
    /// Compute backend; GPU backends need the matching cargo feature.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: Backend,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Serialize)]
struct TrainReport {
    traces: u64,
    spans: u64,
    topologies: usize,
    packet_bytes: usize,
    raw_otlp_bytes: usize,
    gzip_otlp_bytes: usize,
    train_seconds: f64,
    warm_started: bool,
    /// Where the packet's bytes go.
    packet: gent::codec::Breakdown,
    /// How the calibrated timing met `calibration.budget`.
    budget: Option<gent::gent::Budget>,
}

/// The model settings in the file at `path`, or the defaults.
pub fn model_config(path: Option<&Path>) -> Result<GenTConfig, Failure> {
    match path {
        Some(path) => gent::config::load_model(path).map_err(Failure::bad),
        None => Ok(GenTConfig::default()),
    }
}

impl TrainArgs {
    /// The model settings: the file's, then the flags, which win.
    fn config(&self) -> Result<GenTConfig, Failure> {
        let mut config = model_config(self.config.as_deref())?;
        config.chain_length = self.chain_length.unwrap_or(config.chain_length);
        config.ctgan.epochs = self.epochs.unwrap_or(config.ctgan.epochs);
        config.ctgan.seed = self.seed.unwrap_or(config.ctgan.seed);
        config.gcn &= !self.no_gcn;
        config.validate().map_err(Failure::bad)?;
        Ok(config)
    }

    /// The model `--warm-start` names, if any.
    fn previous(&self, device: &burn::tensor::Device) -> Result<Option<WindowModel>, Failure> {
        let Some(path) = &self.warm_start else { return Ok(None) };
        let unpacked =
            gent::codec::unpack(&read_file(path)?, device).map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?;
        Ok(Some(unpacked.model))
    }
}

pub fn train(a: TrainArgs) -> Result<(), Failure> {
    let device = device(a.backend)?;
    let set = a.input.read_some()?;
    let config = a.config()?;
    let previous = a.previous(&device)?;
    let started = std::time::Instant::now();
    let model = WindowModel::train(&set.traces, &config, &device, previous.as_ref()).map_err(Failure::bad)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let precision = match (a.f16, a.int8) {
        (_, true) => Precision::Int8,
        (true, _) => Precision::F16,
        _ => Precision::F32,
    };
    let conditions = a.call_graph_conditions.then(|| WindowConditions::of(&set.traces, model.window_start));
    let packet =
        gent::codec::pack(&model, 0, &config, precision, config.ctgan.seed, conditions.clone()).map_err(Failure::other)?;
    write(&a.out, &packet)?;
    let sizes = gent::fidelity::cost::wire_sizes(&set.traces).map_err(Failure::other)?;
    let (roots_warm, chains_warm) = model.warm_started();
    let breakdown = gent::codec::breakdown(&model, &packet, &config, precision, conditions.as_ref()).map_err(Failure::other)?;
    let r = TrainReport {
        traces: model.histogram.traces(),
        spans: model.histogram.spans(),
        topologies: model.histogram.topologies.len(),
        packet_bytes: packet.len(),
        raw_otlp_bytes: sizes.raw as usize,
        gzip_otlp_bytes: sizes.gzip as usize,
        train_seconds,
        warm_started: roots_warm || chains_warm,
        packet: breakdown,
        budget: model.budget,
    };
    tracing::info!(
        traces = r.traces,
        spans = r.spans,
        topologies = r.topologies,
        packet_bytes = r.packet_bytes,
        gzip_otlp_bytes = r.gzip_otlp_bytes,
        train_seconds = format!("{train_seconds:.1}"),
        out = %a.out.display(),
        "packet written"
    );
    report(a.json.json, &r)
}

#[derive(Serialize)]
struct GenerateReport {
    traces: usize,
    spans: usize,
    generate_seconds: f64,
    engine: gent::codec::Engine,
    repairs: Option<gent::gent::Repairs>,
    /// With --llm: traces written smaller than they were (over --max-edges).
    clamped: Option<usize>,
    /// The process's peak resident memory once the traces were written
    /// (Linux; absent elsewhere).
    peak_rss_bytes: Option<u64>,
}

/// Traces regenerated from a packet, with what the engine reports.
struct Regenerated {
    traces: Vec<trace::Trace>,
    engine: gent::codec::Engine,
    repairs: Option<gent::gent::Repairs>,
    clamped: Option<usize>,
}

pub fn generate(a: GenerateArgs) -> Result<(), Failure> {
    let device = device(a.backend)?;
    // A packet is read like any input: it may not ask for more spans than
    // --max-input-spans, which also bounds what generating it holds in memory.
    let max_spans = read_limits().spans as u64;
    let unpacked = gent::codec::unpack_within(&read_file(&a.model)?, &device, max_spans).map_err(|e| {
        let raise = if matches!(e, PackError::TooLarge { .. }) { " (raise --max-input-spans)" } else { "" };
        Failure::BadInput(format!("{}: {e}{raise}", a.model.display()))
    })?;
    let seed = a.seed.unwrap_or(unpacked.header.seed);
    let started = std::time::Instant::now();
    let out = match &a.llm {
        None => {
            let (traces, repairs) = unpacked.model.generate(seed).map_err(Failure::other)?;
            Regenerated { traces, engine: gent::codec::Engine::Gent, repairs: Some(repairs), clamped: None }
        }
        Some(lm) => by_language_model(&a, lm, unpacked, seed, &device)?,
    };
    let generate_seconds = started.elapsed().as_secs_f64();
    io::write_file(&out.traces, a.format, &a.out)?;
    let r = GenerateReport {
        traces: out.traces.len(),
        spans: out.traces.iter().map(|t| t.spans.len()).sum(),
        generate_seconds,
        engine: out.engine,
        repairs: out.repairs,
        clamped: out.clamped,
        peak_rss_bytes: peak_rss_bytes(),
    };
    tracing::info!(traces = r.traces, spans = r.spans, engine = r.engine.as_str(), generate_seconds = format!("{generate_seconds:.2}"), out = %a.out.display(), "traces regenerated");
    report(a.json.json, &r)
}

/// `generate --llm`: the packet's call-graph conditions decoded by a language model.
fn by_language_model(
    a: &GenerateArgs,
    lm_path: &Path,
    unpacked: gent::codec::Unpacked,
    seed: u64,
    device: &burn::tensor::Device,
) -> Result<Regenerated, Failure> {
    let packet = a.model.display();
    let conditions = unpacked.conditions.ok_or_else(|| {
        Failure::BadInput(format!(
            "{packet}: the packet carries no call-graph conditions (train it with --call-graph-conditions)"
        ))
    })?;
    let lm = gent::llm::model::LanguageModel::from_bytes(&read_file(lm_path)?, device)
        .map_err(|e| Failure::BadInput(format!("{}: {e}", lm_path.display())))?;
    let r = gent::llm::regeneration::Regeneration { sampling: Default::default(), max_edges: a.max_edges, seed };
    let regenerated = gent::llm::regeneration::regenerate(&lm, &conditions, unpacked.header.window_start, &r)
        .map_err(|e| Failure::BadInput(format!("{packet}: {e}")))?;
    Ok(Regenerated {
        traces: regenerated.traces,
        engine: gent::codec::Engine::Llm,
        repairs: None,
        clamped: Some(regenerated.clamped),
    })
}
