//! The `gent` command line: parse, dispatch, exit codes (0 ok, 2 bad usage or
//! bad input, 1 anything else). Logs go to stderr; with `--json` the last line on
//! stdout is one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use gent::config::{CompressorConfig, ConfigError};
use gent::io::{self, Format, IoError, OutputFormat};
use gent::replay::{ReplayOptions, ReplayProtocol};
use gent::trace::{self, Stats};

#[derive(Parser)]
#[command(name = "gent", version, about = "Trace compression for OpenTelemetry: ship a generative model, not sampled spans")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise trace files: traces, spans, services, topologies, defects.
    Stats {
        /// Files or folders of any supported format (gzip accepted).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Force the input format instead of sniffing it from content.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Print one JSON object as the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Read trace files of any format and write them as OTLP or Jaeger JSON.
    Convert {
        /// Files or folders of any supported format (gzip accepted).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "otlp-json")]
        to: OutputFormat,
        /// Force the input format instead of sniffing it from content.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Print one JSON object as the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the compressor daemon: OTLP receivers, trace windows, /metrics.
    Compressor {
        /// YAML configuration (see config/compressor.yaml); built-in defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Send recorded traces over OTLP with fresh ids and timestamps shifted to now.
    Replay {
        /// Files or folders of any supported format (gzip accepted).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Receiver URL, e.g. http://localhost:4317 (gRPC) or http://localhost:4318 (HTTP).
        #[arg(long)]
        endpoint: String,
        #[arg(long, value_enum, default_value = "grpc")]
        protocol: ReplayProtocol,
        /// Spans per second; as fast as the receiver takes them when absent.
        #[arg(long)]
        rate: Option<f64>,
        /// Passes over the input.
        #[arg(long = "loop", default_value_t = 1)]
        loops: u64,
        /// Spans per request (whole traces are never split).
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Force the input format instead of sniffing it from content.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Print one JSON object as the last line of stdout.
        #[arg(long)]
        json: bool,
    },
}

/// What failed, and so which exit code applies.
enum Failure {
    BadInput(String),
    Other(String),
}

impl From<IoError> for Failure {
    fn from(e: IoError) -> Self {
        if e.is_bad_input() { Failure::BadInput(e.to_string()) } else { Failure::Other(e.to_string()) }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stats { inputs, format, json } => stats(&inputs, format, json),
        Command::Convert { inputs, out, to, format, json } => convert(&inputs, &out, to, format, json),
        Command::Compressor { config } => compressor(config.as_deref()),
        Command::Replay { inputs, endpoint, protocol, rate, loops, batch, concurrency, format, json } => {
            let options = ReplayOptions { endpoint, protocol, rate, loops, batch_spans: batch, concurrency };
            replay(&inputs, format, options, json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

#[derive(Serialize)]
struct StatsReport {
    #[serde(flatten)]
    stats: Stats,
    spans_per_trace_p50: u64,
    spans_per_trace_p99: u64,
    files: usize,
    skipped_files: Vec<PathBuf>,
}

fn read(inputs: &[PathBuf], format: Option<Format>) -> Result<(trace::TraceSet, io::Input), Failure> {
    let mut input = io::read_inputs(inputs, format)?;
    let set = trace::assemble(std::mem::take(&mut input.spans));
    let d = &set.defects;
    if d.duplicate_spans + d.conflicting_duplicates + d.cycles + d.end_before_start > 0 {
        tracing::warn!(
            duplicate_spans = d.duplicate_spans,
            conflicting_duplicates = d.conflicting_duplicates,
            cycles = d.cycles,
            end_before_start = d.end_before_start,
            "input defects repaired or rejected"
        );
    }
    Ok((set, input))
}

fn stats(inputs: &[PathBuf], format: Option<Format>, json: bool) -> Result<(), Failure> {
    let (set, input) = read(inputs, format)?;
    let stats = Stats::of(&set);
    let report = StatsReport {
        spans_per_trace_p50: stats.spans_per_trace.p50,
        spans_per_trace_p99: stats.spans_per_trace.p99,
        stats,
        files: input.files.len(),
        skipped_files: input.skipped,
    };
    if json {
        print_json(&report)
    } else {
        print_stats(&report);
        Ok(())
    }
}

fn print_stats(r: &StatsReport) {
    let s = &r.stats;
    println!("files               {} ({} skipped)", r.files, r.skipped_files.len());
    println!("traces              {}", s.traces);
    println!("spans               {}", s.spans);
    println!("duplicate spans     {} (dropped)", s.duplicate_spans);
    println!("services            {}", s.services);
    println!("span names          {}", s.span_names);
    println!("topologies          {}", s.topologies);
    println!("max depth           {}", s.max_depth);
    println!("max fan-out         {}", s.max_fan_out);
    println!(
        "spans per trace     p50 {}  p99 {}  max {}",
        s.spans_per_trace.p50, s.spans_per_trace.p99, s.spans_per_trace.max
    );
    println!("orphan spans        {} (in {} fragmented traces)", s.orphan_spans, s.fragmented_traces);
    println!(
        "defects             conflicting duplicates {}, cycles {}, end before start {}",
        s.defects.conflicting_duplicates, s.defects.cycles, s.defects.end_before_start
    );
}

#[derive(Serialize)]
struct ConvertReport<'a> {
    out: &'a std::path::Path,
    format: OutputFormat,
    traces: usize,
    spans: usize,
}

fn convert(
    inputs: &[PathBuf],
    out: &std::path::Path,
    to: OutputFormat,
    format: Option<Format>,
    json: bool,
) -> Result<(), Failure> {
    let (set, _) = read(inputs, format)?;
    io::write_file(&set.traces, to, out)?;
    let report = ConvertReport { out, format: to, traces: set.traces.len(), spans: set.span_count() };
    tracing::info!(traces = report.traces, spans = report.spans, out = %out.display(), "written");
    if json { print_json(&report) } else { Ok(()) }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Read { .. } => Failure::Other(e.to_string()),
            _ => Failure::BadInput(e.to_string()),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new().map_err(|e| Failure::Other(format!("cannot start the async runtime: {e}")))
}

fn compressor(config: Option<&std::path::Path>) -> Result<(), Failure> {
    let config = match config {
        Some(path) => CompressorConfig::load(path)?,
        None => CompressorConfig::default(),
    };
    runtime()?.block_on(gent::compressor::run(config)).map_err(|e| Failure::Other(e.to_string()))
}

fn replay(inputs: &[PathBuf], format: Option<Format>, options: ReplayOptions, json: bool) -> Result<(), Failure> {
    if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Failure::BadInput("--rate must be a positive number of spans per second".into()));
    }
    let (set, _) = read(inputs, format)?;
    let report = runtime()?.block_on(gent::replay::replay(&set.traces, &options)).map_err(|e| match e {
        gent::replay::ReplayError::Empty => Failure::BadInput(e.to_string()),
        _ => Failure::Other(e.to_string()),
    })?;
    tracing::info!(
        spans = report.spans_sent,
        traces = report.traces_sent,
        retries = report.retries,
        failed_requests = report.failed_requests,
        spans_per_second = report.spans_per_second as u64,
        "replay finished"
    );
    if json { print_json(&report) } else { Ok(()) }
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let line = serde_json::to_string(value).map_err(|e| Failure::Other(e.to_string()))?;
    println!("{line}");
    Ok(())
}
