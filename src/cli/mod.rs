//! The command groups of `gent`, one file each: [`files`] (stats, convert,
//! sample), [`model`] (train, generate), [`eval`] (eval, bench), [`llm`],
//! [`daemons`] (compressor, decompressor, demo, replay). [`args`] holds the
//! argument groups they share and reads input files within the global limits.

pub mod args;
pub mod daemons;
pub mod eval;
pub mod files;
pub mod llm;
pub mod memory;
pub mod model;

use clap::{Parser, Subcommand};
use serde::Serialize;

use gent::config::ConfigError;
use gent::io::{self, IoError};
use gent::nn::Backend;

#[derive(Parser)]
#[command(name = "gent", version, about = "Trace compression for OpenTelemetry: ship a generative model, not sampled spans")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Most decompressed bytes of all input files one command reads (about
    /// 5× this in memory at worst).
    #[arg(long, global = true, default_value_t = io::DEFAULT_MAX_INPUT_BYTES)]
    pub max_input_bytes: u64,
    /// Most spans one command reads from input files (about 600 bytes of
    /// memory each).
    #[arg(long, global = true, default_value_t = io::DEFAULT_MAX_INPUT_SPANS)]
    pub max_input_spans: usize,
}

#[derive(Subcommand)]
pub enum Command {
    /// Summarise trace files: traces, spans, services, topologies, defects.
    Stats(files::StatsArgs),
    /// Read trace files of any format and write them as OTLP or Jaeger JSON.
    Convert(files::ConvertArgs),
    /// Run the compressor daemon: OTLP receivers, trace windows, /metrics.
    Compressor(daemons::DaemonArgs),
    /// Run the decompressor daemon: link server, regeneration, exporters, /metrics.
    Decompressor(daemons::DaemonArgs),
    /// The whole pipeline in one process on loopback: replays the bundled
    /// TrainTicket sample into a compressor, ships each window's model to a
    /// decompressor, and writes the regenerated traces as Jaeger and OTLP JSON.
    Demo(daemons::DemoArgs),
    /// Learn a Gen-T model of the input (one window) and write it as a packet.
    Train(model::TrainArgs),
    /// Regenerate a packet's traces.
    Generate(model::GenerateArgs),
    /// Keep a sample of the input's traces, as head or tail sampling would (the baselines gent replaces).
    Sample(files::SampleArgs),
    /// Score how well a candidate data set answers the query suite against the real data.
    Eval(eval::EvalArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: eval::BenchCommand,
    },
    /// TraceLLM: language-model generation of call graphs.
    Llm {
        #[command(subcommand)]
        llm: llm::LlmCommand,
    },
    /// Send recorded traces over OTLP with fresh ids and timestamps shifted to now.
    Replay(daemons::ReplayArgs),
}

impl Command {
    /// Whether the command runs for long, serving or sending, rather than
    /// once over files.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Command::Compressor(_) | Command::Decompressor(_) | Command::Demo(_) | Command::Replay(_))
    }

    /// How the command uses memory (see `memory::Use`).
    pub fn memory_use(&self) -> memory::Use {
        match self {
            _ if self.is_daemon() => memory::Use::Daemon,
            Command::Llm { llm: llm::LlmCommand::Train(_) } => memory::Use::Training,
            _ => memory::Use::OneShot,
        }
    }
}

/// Runs one parsed command.
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Stats(a) => files::stats(a),
        Command::Convert(a) => files::convert(a),
        Command::Sample(a) => files::sample(a),
        Command::Compressor(a) => daemons::compressor(a),
        Command::Decompressor(a) => daemons::decompressor(a),
        Command::Demo(a) => daemons::demo(a),
        Command::Replay(a) => daemons::replay(a),
        Command::Train(a) => model::train(a),
        Command::Generate(a) => model::generate(a),
        Command::Eval(a) => eval::eval(a),
        Command::Bench { bench } => eval::bench(bench),
        Command::Llm { llm } => llm::run(llm),
    }
}

/// What failed, and so which exit code applies.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad usage or bad input: exit code 2.
    #[error("{0}")]
    BadInput(String),
    /// Anything else (I/O, the runtime, a bug): exit code 1.
    #[error("{0}")]
    Other(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::BadInput(_) => 2,
            Failure::Other(_) => 1,
        }
    }

    /// An error of the input (exit code 2), its display kept.
    pub fn bad(e: impl std::fmt::Display) -> Self {
        Failure::BadInput(e.to_string())
    }

    /// Any other error (exit code 1), its display kept.
    pub fn other(e: impl std::fmt::Display) -> Self {
        Failure::Other(e.to_string())
    }

    /// A failure to read or write `path`.
    pub fn file(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Failure::Other(format!("{}: {e}", path.display()))
    }
}

impl From<IoError> for Failure {
    fn from(e: IoError) -> Self {
        if e.is_bad_input() { Failure::bad(e) } else { Failure::other(e) }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Read { .. } => Failure::other(e),
            _ => Failure::bad(e),
        }
    }
}

/// Prints `value` as one JSON line on stdout (`--json`).
pub fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let line = serde_json::to_string(value).map_err(Failure::other)?;
    println!("{line}");
    Ok(())
}

/// Prints the report as JSON when `--json` was given.
pub fn report(json: bool, value: &impl Serialize) -> Result<(), Failure> {
    if json { print_json(value) } else { Ok(()) }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new().map_err(|e| Failure::Other(format!("cannot start the async runtime: {e}")))
}

pub fn device(backend: Backend) -> Result<burn::tensor::Device, Failure> {
    backend.device().map_err(Failure::bad)
}

/// Writes a command's output file.
pub fn write(path: &std::path::Path, contents: impl AsRef<[u8]>) -> Result<(), Failure> {
    std::fs::write(path, contents).map_err(|e| Failure::file(path, e))
}
