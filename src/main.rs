//! The `gent` command line: parse, dispatch, exit codes (0 ok, 2 bad usage or
//! bad input, 1 anything else). Logs go to stderr; with `--json` the last line on
//! stdout is one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use gent::config::{CompressorConfig, ConfigError};
use gent::gent::{GenTConfig, WindowModel};
use gent::io::{self, Format, IoError, OutputFormat};
use gent::llm::window::WindowConditions;

// mimalloc instead of the system allocator: generation and ingest allocate
// and free large buffers per batch, and glibc hands those back to the kernel
// each time, so every batch paid page faults again (15% of generation time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use gent::nn::Backend;
use gent::nn::weights::Precision;
use gent::replay::{ReplayOptions, ReplayProtocol};
use gent::trace::{self, Stats};

#[derive(Parser)]
#[command(name = "gent", version, about = "Trace compression for OpenTelemetry: ship a generative model, not sampled spans")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Most decompressed bytes of all input files one command reads (about
    /// 5× this in memory at worst).
    #[arg(long, global = true, default_value_t = io::DEFAULT_MAX_INPUT_BYTES)]
    max_input_bytes: u64,
    /// Most spans one command reads from input files (about 600 bytes of
    /// memory each).
    #[arg(long, global = true, default_value_t = io::DEFAULT_MAX_INPUT_SPANS)]
    max_input_spans: usize,
}

/// mimalloc's `mi_option_purge_delay`: the same index in its v2 and v3 headers,
/// which libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before handing them back to the
/// kernel, in ms. A one-shot command's memory peaks in phases (decode,
/// generate, write), and mimalloc otherwise keeps what one phase freed for up
/// to a second (its v3 default) while the next allocates: generating the
/// largest crafted packet --max-input-spans admits peaked at 489 MiB with
/// the default delay and 263 MiB with none. The daemons free a window's
/// traces as they complete and allocate the next ones at once, so no delay
/// at all costs them a page fault per reuse; a tenth of a second returns
/// what a closed window's training freed before the open traces climb
/// again (BENCHMARKS.md "Samples counted once", the soak: RSS at the budget
/// 542–600 → 507–586 MiB).
fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: sets an integer option, which mimalloc allows at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// The purge delay of the long-running commands, in ms.
const DAEMON_PURGE_DELAY_MS: std::ffi::c_long = 100;

/// The command line's bounds on reading input files, set once at start.
static READ_LIMITS: std::sync::OnceLock<io::ReadLimits> = std::sync::OnceLock::new();

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
    /// Run the decompressor daemon: link server, regeneration, exporters, /metrics.
    Decompressor {
        /// YAML configuration (see config/decompressor.yaml); built-in defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The whole pipeline in one process on loopback: replays the bundled
    /// TrainTicket sample into a compressor, ships each window's model to a
    /// decompressor, and writes the regenerated traces as Jaeger and OTLP JSON.
    Demo {
        /// Folder for regenerated traces and the spool.
        #[arg(long, default_value = "gent-demo")]
        out: PathBuf,
        /// Traces per window.
        #[arg(long, default_value_t = 750)]
        window_traces: usize,
        /// Passes over the sample (75 traces, 1,244 spans), each with fresh ids.
        #[arg(long = "loop", default_value_t = 20)]
        loops: u64,
        /// Training epochs per window (Gen-T default when absent).
        #[arg(long)]
        epochs: Option<usize>,
        /// Print one JSON object as the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Learn a Gen-T model of the input (one window) and write it as a packet.
    Train {
        /// Files or folders of any supported format (gzip accepted).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
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
        #[arg(long)]
        f16: bool,
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
        /// Force the input format instead of sniffing it from content.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Print one JSON object as the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Regenerate a packet's traces.
    Generate {
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
        /// Print one JSON object as the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Keep a sample of the input's traces, as head or tail sampling would (the baselines gent replaces).
    Sample {
        /// Files or folders of any supported format (gzip accepted).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Head sampling: keep 1 trace in N, decided from the trace id (1:N).
        #[arg(long, conflicts_with = "tail", required_unless_present = "tail")]
        head: Option<String>,
        /// Tail sampling policies, any of which keeps a trace:
        /// status_code:ERROR, latency:500ms, probabilistic:10 (percent); `+` joins an `and`.
        #[arg(long)]
        tail: Option<String>,
        /// Seed of the trace-id hash.
        #[arg(long, default_value_t = 0)]
        seed: u64,
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
    /// Score how well a candidate data set answers the query suite against the real data.
    Eval {
        /// The real traces.
        #[arg(long, required = true, num_args = 1..)]
        real: Vec<PathBuf>,
        /// The candidate traces (regenerated, or sampled with --scale).
        #[arg(long, required = true, num_args = 1..)]
        synthetic: Vec<PathBuf>,
        /// The candidate's sampling rate N of 1:N; its counts are multiplied by it.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// More queries, in SQL (see README "Fidelity").
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Write a self-contained HTML report (scores table and bars) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Print one JSON object as the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
    /// TraceLLM: language-model generation of call graphs.
    Llm {
        #[command(subcommand)]
        llm: LlmCommand,
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

#[derive(Subcommand)]
enum LlmCommand {
    /// Pre-train a language model on call graphs (tabular Alibaba text) in the
    /// recursive layer encoding, and write it.
    Train {
        /// Call-graph files in the tabular encoding (e.g. ../shared/data/alibaba/callgraphs_train.txt).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Model file to write.
        #[arg(long)]
        out: PathBuf,
        /// Model size: tiny (~0.1 M parameters), small (~5 M), base (~30 M, for a GPU).
        #[arg(long, value_enum, default_value = "tiny")]
        size: LmSize,
        /// layers: TraceLLM's recursive layer encoding; tabular: whole graphs in
        /// one sequence (the paper's non-recursive baseline).
        #[arg(long, value_enum, default_value = "layers")]
        encoding: LmEncoding,
        /// Optimiser steps.
        #[arg(long, default_value_t = 200)]
        steps: usize,
        /// Sequences (layers) per step.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 3e-3)]
        learning_rate: f64,
        /// Probability of dropping each first-layer condition but the service id.
        #[arg(long, default_value_t = 0.5)]
        p_drop: f64,
        /// Instruction-tuning steps after pre-training (0: none); the model then
        /// answers questions in the instruction encoding (layer encoding only).
        #[arg(long, default_value_t = 0)]
        tune_steps: usize,
        /// Share of the graphs made into instruction samples (the paper: 0.05).
        #[arg(long, default_value_t = 0.05)]
        tune_fraction: f64,
        /// Tune LoRA adapters of this rank on the attention query and key
        /// projections, the rest frozen, merged into the weights afterwards
        /// (the paper: 8); 0 tunes every weight.
        #[arg(long, default_value_t = 0)]
        lora_rank: usize,
        /// LoRA scaling numerator: adapters add x·A·B·alpha/rank (the paper: 16).
        #[arg(long, default_value_t = 16.0)]
        lora_alpha: f32,
        /// Dropout on the adapters' input while tuning (the paper: 0.1).
        #[arg(long, default_value_t = 0.1)]
        lora_dropout: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "cpu")]
        backend: Backend,
        #[arg(long)]
        json: bool,
    },
    /// Split call graphs (tabular text) into a training file and a held-back
    /// file for evaluation, by a seeded shuffle.
    Split {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where the training graphs go.
        #[arg(long)]
        train: PathBuf,
        /// Where the held-back graphs go.
        #[arg(long)]
        held_back: PathBuf,
        /// Share of the graphs held back.
        #[arg(long, default_value_t = 0.1)]
        fraction: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Accuracy over a grid of requests and similarity to real call graphs,
    /// for each method given, side by side.
    Eval {
        /// Recursive (layer encoding) model file from `gent llm train`.
        model: Option<PathBuf>,
        /// A model trained with `--encoding tabular` (the non-recursive baseline).
        #[arg(long)]
        tabular: Option<PathBuf>,
        /// An instruction-tuned model (`--tune-steps`): accuracy and similarity
        /// in the instruction encoding, and instruction following (needs --train).
        #[arg(long, requires = "train")]
        instructed: Option<PathBuf>,
        /// Directory of the probabilistic baseline's parameters (e.g. ../shared/data/probabilistic).
        #[arg(long, requires = "train")]
        probabilistic: Option<PathBuf>,
        /// The training graphs (tabular text): the probabilistic baseline names its nodes after their microservices.
        #[arg(long, num_args = 1..)]
        train: Vec<PathBuf>,
        /// Real call graphs (tabular text) to compare with, held back from training (`gent llm split`).
        #[arg(long, required = true, num_args = 1..)]
        real: Vec<PathBuf>,
        /// Decode the recursive model with constraints (otherwise freely, as the paper).
        #[arg(long)]
        constrained: bool,
        /// Graphs per grid cell.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Grid: num_edges 1..=max_edges × depth 1..=max_depth.
        #[arg(long, default_value_t = 30)]
        max_edges: u64,
        #[arg(long, default_value_t = 6)]
        max_depth: u64,
        /// Real graphs whose conditions are requested for the similarity figures.
        #[arg(long, default_value_t = 200)]
        similarity_graphs: usize,
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "cpu")]
        backend: Backend,
        #[arg(long)]
        json: bool,
    },
    /// Generate call graphs layer by layer from conditions.
    Generate {
        /// Model file from `gent llm train`.
        model: PathBuf,
        /// `num_edges:N/depth:D/id:S_…[/latency:MS]` (latency defaults to 1000 ms).
        #[arg(long)]
        conditions: String,
        /// Graphs to generate.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Mask every token that would break the format or a constraint: every graph is valid.
        #[arg(long)]
        constrained: bool,
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// Keep the k best tokens (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run the whole context at every step instead of caching keys and
        /// values (same output, slower; for measuring the cache).
        #[arg(long)]
        no_kv_cache: bool,
        /// User instruction (instruction-tuned models): "Build a call graph with high latency".
        #[arg(long, conflicts_with = "include_edge")]
        high_latency: bool,
        /// User instruction (instruction-tuned models): "Include an edge from
        /// SOURCE to DESTINATION with TYPE type", given as SOURCE,DESTINATION,TYPE.
        #[arg(long, value_name = "SOURCE,DESTINATION,TYPE")]
        include_edge: Option<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "otlp-json")]
        format: LlmFormat,
        #[arg(long, value_enum, default_value = "cpu")]
        backend: Backend,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LmEncoding {
    Layers,
    Tabular,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LmSize {
    Tiny,
    Small,
    Base,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LlmFormat {
    /// OTLP JSON lines: each graph a trace, each call a span of its destination.
    OtlpJson,
    /// The tabular Alibaba call-graph text (`[GENERATE GRAPH]…`).
    Alibaba,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// gent against head sampling (1:5 … 1:100, 10 seeds), tail sampling and lossless
    /// compression: bytes, cost and fidelity on the query suite.
    CostFidelity {
        /// Files or folders of any supported format (gzip accepted), taken as one window.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Model settings for gent (see config/model.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write a self-contained HTML report with plots here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the fidelity-against-bytes plot alone here, as SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Dollars per GB shipped (Gen-T paper: Cribl's rate).
        #[arg(long, default_value_t = 0.32)]
        price_per_gb: f64,
        /// Dollars per CPU-hour (an on-demand cloud vCPU).
        #[arg(long, default_value_t = 0.03)]
        price_per_cpu_hour: f64,
        /// Dollars per GPU-hour (Gen-T paper: GCP's rate).
        #[arg(long, default_value_t = 0.25)]
        price_per_gpu_hour: f64,
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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let _ = READ_LIMITS.set(io::ReadLimits { bytes: cli.max_input_bytes, spans: cli.max_input_spans });
    // An operator's own MIMALLOC_PURGE_DELAY wins.
    let daemon = matches!(
        cli.command,
        Command::Compressor { .. } | Command::Decompressor { .. } | Command::Demo { .. } | Command::Replay { .. }
    );
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_purge_delay(if daemon { DAEMON_PURGE_DELAY_MS } else { 0 });
    }
    let result = match cli.command {
        Command::Stats { inputs, format, json } => stats(&inputs, format, json),
        Command::Convert { inputs, out, to, format, json } => convert(&inputs, &out, to, format, json),
        Command::Compressor { config } => compressor(config.as_deref()),
        Command::Decompressor { config } => decompressor(config.as_deref()),
        Command::Demo { out, window_traces, loops, epochs, json } => demo(out, window_traces, loops, epochs, json),
        Command::Train {
            inputs,
            out,
            config,
            epochs,
            chain_length,
            seed,
            f16,
            no_gcn,
            warm_start,
            call_graph_conditions,
            backend,
            format,
            json,
        } => {
            let options =
                TrainOptions { out, config, epochs, chain_length, seed, f16, no_gcn, warm_start, call_graph_conditions, backend };
            train(&inputs, format, options, json)
        }
        Command::Generate { model, out, format, seed, llm, max_edges, backend, json } => {
            let engine = match llm {
                Some(path) => Engine::Llm { path, max_edges },
                None => Engine::GenT,
            };
            generate(&model, &out, format, seed, engine, backend, json)
        }
        Command::Sample { inputs, out, head, tail, seed, to, format, json } => {
            sample(&inputs, &out, head, tail, seed, to, format, json)
        }
        Command::Eval { real, synthetic, scale, queries, report, json } => {
            eval(&real, &synthetic, scale, queries.as_deref(), report.as_deref(), json)
        }
        Command::Bench {
            bench:
                BenchCommand::CostFidelity {
                    inputs,
                    config,
                    report,
                    plot,
                    price_per_gb,
                    price_per_cpu_hour,
                    price_per_gpu_hour,
                    format,
                    json,
                },
        } => {
            let prices = gent::fidelity::cost::Prices {
                per_gb: price_per_gb,
                per_cpu_hour: price_per_cpu_hour,
                per_gpu_hour: price_per_gpu_hour,
            };
            cost_fidelity(&inputs, config.as_deref(), report.as_deref(), plot.as_deref(), prices, format, json)
        }
        Command::Llm { llm } => llm_command(llm),
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
    let limits = READ_LIMITS.get().copied().unwrap_or_default();
    let mut input = io::read_inputs_within(inputs, format, limits)?;
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
    println!("spans per trace     p50 {}  p99 {}  max {}", s.spans_per_trace.p50, s.spans_per_trace.p99, s.spans_per_trace.max);
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
    runtime()?.block_on(gent::pipeline::compressor::run(config)).map_err(|e| Failure::Other(e.to_string()))
}

fn decompressor(config: Option<&std::path::Path>) -> Result<(), Failure> {
    let config = match config {
        Some(path) => gent::config::DecompressorConfig::load(path)?,
        None => gent::config::DecompressorConfig::default(),
    };
    runtime()?.block_on(gent::pipeline::decompressor::run(config)).map_err(|e| Failure::Other(e.to_string()))
}

fn demo(out: PathBuf, window_traces: usize, loops: u64, epochs: Option<usize>, json: bool) -> Result<(), Failure> {
    if window_traces == 0 || loops == 0 || epochs == Some(0) {
        return Err(Failure::BadInput("--window-traces, --loop and --epochs must be at least 1".into()));
    }
    let options = gent::demo::DemoOptions { out, window_traces, loops, epochs };
    println!(
        "gent demo: compressor and decompressor on loopback; replaying the bundled TrainTicket sample (75 traces) {loops} times"
    );
    println!(
        "{:>6}  {:>6}  {:>9}  {:>10}  {:>8}  {:>8}  {:>16}  {:>7}  {:>9}  regenerated traces",
        "window", "spans", "gzip OTLP", "packet", "vs gzip", "fidelity", "same bytes: head", "shipped", "spans out"
    );
    let report = runtime()?
        .block_on(gent::demo::run(&options, |w| {
            let s = &w.shipped;
            let head = match (s.head_rate, s.head_fidelity) {
                (Some(n), Some(f)) => format!("1:{n} {f:.3}"),
                _ => "-".into(),
            };
            println!(
                "{:>6}  {:>6}  {:>7} B  {:>8} B  {:>7.1}%  {:>8}  {:>16}  {:>7}  {:>9}  {}",
                s.window_id,
                s.spans,
                s.gzip_bytes,
                s.packet_bytes,
                100.0 * s.packet_bytes as f64 / s.gzip_bytes.max(1) as f64,
                s.fidelity.map_or("-".into(), |f| format!("{f:.3}")),
                head,
                s.kind,
                w.delivered.spans,
                w.delivered.outputs.join(", ")
            );
        }))
        .map_err(|e| Failure::Other(e.to_string()))?;
    println!(
        "total: {} spans in, {} regenerated; {} packet bytes vs {} gzip OTLP bytes ({:.1}%); {:.1} s",
        report.spans_in,
        report.spans_regenerated,
        report.packet_bytes,
        report.gzip_bytes,
        100.0 * report.packet_bytes as f64 / report.gzip_bytes.max(1) as f64,
        report.seconds
    );
    if json { print_json(&report) } else { Ok(()) }
}

/// One method's figures for `gent llm eval`: grid accuracy (language models
/// only) and similarity of its graphs to the real ones.
fn method_report(
    method: &str,
    decoding: &str,
    cells: Option<&[gent::llm::eval::Cell]>,
    real: &[gent::llm::CallGraph],
    generated: &[gent::llm::CallGraph],
    started: std::time::Instant,
) -> serde_json::Value {
    let s = gent::llm::eval::similarity(real, generated);
    let hh = |k: usize| s.heavy_hitters.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
    let (mean, worst) = match cells {
        Some(cells) => {
            let tried: usize = cells.iter().map(|c| c.tried).sum();
            let valid: usize = cells.iter().map(|c| c.valid).sum();
            let worst = cells.iter().map(|c| c.valid as f64 / c.tried.max(1) as f64).fold(1.0, f64::min);
            (Some(valid as f64 / tried.max(1) as f64), Some(worst))
        }
        None => (None, None),
    };
    serde_json::json!({
        "method": method,
        "decoding": decoding,
        "accuracy_mean": mean,
        "accuracy_min_cell": worst,
        "cells": cells,
        "similarity_generated": generated.len(),
        "kl_popular_calls": s.kl_popular_calls,
        "heavy_hitter_top10": hh(10),
        "heavy_hitter_top50": hh(50),
        "heavy_hitter_top100": hh(100),
        "heavy_hitter_top500": hh(500),
        "seconds": started.elapsed().as_secs_f64(),
    })
}

/// The user instruction `gent llm generate` was given, if any.
fn user_instruction(
    high_latency: bool,
    include_edge: Option<&str>,
) -> Result<Option<gent::llm::instruct::UserInstruction>, Failure> {
    use gent::llm::instruct::UserInstruction;
    if high_latency {
        return Ok(Some(UserInstruction::HighLatency));
    }
    let Some(edge) = include_edge else { return Ok(None) };
    match edge.split(',').map(str::trim).collect::<Vec<_>>()[..] {
        [source, destination, kind] if !source.is_empty() && !destination.is_empty() && !kind.is_empty() => {
            Ok(Some(UserInstruction::IncludeEdge { source: source.into(), destination: destination.into(), kind: kind.into() }))
        }
        _ => Err(Failure::BadInput(format!(
            "--include-edge {edge:?}: expected SOURCE,DESTINATION,TYPE, e.g. MS_57649,MS_03426,rpc"
        ))),
    }
}

fn read_call_graphs(paths: &[PathBuf]) -> Result<Vec<gent::llm::CallGraph>, Failure> {
    let mut graphs = Vec::new();
    for path in paths {
        let raw = read_text(path)?;
        let doc = gent::llm::text::parse_tabular(&raw).map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?;
        for r in &doc.records {
            graphs.push(r.graph().map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?);
        }
    }
    if graphs.is_empty() {
        return Err(Failure::BadInput("the input holds no call graphs".into()));
    }
    Ok(graphs)
}

fn llm_command(command: LlmCommand) -> Result<(), Failure> {
    use gent::llm::{eval, generate, model, text};
    match command {
        LlmCommand::Split { inputs, train, held_back, fraction, seed } => {
            if !(0.0..1.0).contains(&fraction) || fraction == 0.0 {
                return Err(Failure::BadInput("--fraction must be above 0 and below 1".into()));
            }
            let mut records = Vec::new();
            for path in &inputs {
                let raw = read_text(path)?;
                let doc = text::parse_tabular(&raw).map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?;
                records.extend(doc.records);
            }
            let (kept, back) = eval::hold_out(records, fraction, seed);
            for (path, records) in [(&train, kept), (&held_back, back)] {
                let n = records.len();
                let doc = text::Document { records, final_newline: true };
                std::fs::write(path, text::write_tabular(&doc))
                    .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
                tracing::info!(graphs = n, file = %path.display(), "call graphs written");
            }
            Ok(())
        }
        LlmCommand::Eval {
            model: path,
            tabular,
            instructed,
            probabilistic,
            train,
            real,
            constrained,
            count,
            max_edges,
            max_depth,
            similarity_graphs,
            temperature,
            seed,
            backend,
            json,
        } => {
            if count == 0 || max_edges == 0 || max_depth == 0 || similarity_graphs == 0 {
                return Err(Failure::BadInput(
                    "--count, --max-edges, --max-depth and --similarity-graphs must be at least 1".into(),
                ));
            }
            if path.is_none() && tabular.is_none() && instructed.is_none() && probabilistic.is_none() {
                return Err(Failure::BadInput(
                    "give a model, --tabular MODEL, --instructed MODEL or --probabilistic DIR to evaluate".into(),
                ));
            }
            let training = if train.is_empty() { Vec::new() } else { read_call_graphs(&train)? };
            let real = read_call_graphs(&real)?;
            let compared = &real[..similarity_graphs.min(real.len())];
            let device = device(backend)?;
            let mut methods = Vec::new();
            let lms = [
                (
                    path,
                    if constrained { generate::Decoding::Constrained } else { generate::Decoding::Free },
                    model::Encoding::Layers,
                ),
                (tabular, generate::Decoding::Tabular, model::Encoding::Tabular),
                (instructed, generate::Decoding::Instructed, model::Encoding::Layers),
            ];
            for (file, decoding, encoding) in lms {
                let Some(file) = file else { continue };
                let lm = model::LanguageModel::from_bytes(&read_file(&file)?, &device)
                    .map_err(|e| Failure::BadInput(format!("{}: {e}", file.display())))?;
                if lm.encoding != encoding {
                    return Err(Failure::BadInput(format!(
                        "{}: a model of the {:?} encoding, where one of the {encoding:?} encoding is expected",
                        file.display(),
                        lm.encoding
                    )));
                }
                let tuned = decoding == generate::Decoding::Instructed;
                if tuned && !lm.instructed {
                    return Err(Failure::BadInput(format!(
                        "{}: not instruction-tuned (train it with --tune-steps)",
                        file.display()
                    )));
                }
                let (mut scorer, tok) = lm.scorer();
                let sampling = generate::Sampling { temperature, ..generate::Sampling::default() };
                let mut g = generate::Generator::new(&mut scorer, tok, sampling, seed)
                    .map_err(|e| Failure::Other(e.to_string()))?
                    .known_destinations(&lm.destinations);
                let started = std::time::Instant::now();
                let cells = eval::accuracy(&mut g, 1..=max_edges, 1..=max_depth, count, decoding, lm.config.max_len);
                let generated = eval::requested(&mut g, compared, decoding, lm.config.max_len);
                let name = serde_json::to_value(decoding).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                let mut report = method_report(&file.display().to_string(), &name, Some(&cells), compared, &generated, started);
                if tuned {
                    let facts = gent::llm::instruct::Facts::of(&training);
                    let high = eval::high_latency(&mut g, compared, &facts, lm.config.max_len);
                    let uncommon = eval::uncommon_calls(&mut g, compared, &facts, lm.config.max_len);
                    println!(
                        "instruction following: high latency {:.3} (without the instruction {:.3}, {} requests); uncommon communication {:.3} (without {:.3}, {} layers)",
                        high.with_instruction,
                        high.without_instruction,
                        high.tried,
                        uncommon.with_instruction,
                        uncommon.without_instruction,
                        uncommon.tried
                    );
                    report["high_latency"] = serde_json::json!(high);
                    report["uncommon_communication"] = serde_json::json!(uncommon);
                    report["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
                }
                methods.push(report);
            }
            if let Some(dir) = probabilistic {
                let started = std::time::Instant::now();
                let baseline =
                    gent::llm::baseline::Probabilistic::load(&dir, &training).map_err(|e| Failure::BadInput(e.to_string()))?;
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
                let generated: Vec<_> = compared.iter().map(|r| baseline.graph(&r.service, &mut rng)).collect();
                methods.push(method_report("probabilistic", "probabilistic", None, compared, &generated, started));
            }
            for m in &methods {
                println!(
                    "{:<14} {:<40} accuracy {} | KL of popular calls {:.3} | heavy hitters top-10 {:.2}, top-100 {:.2} | {:.1} s",
                    m["decoding"].as_str().unwrap_or(""),
                    m["method"].as_str().unwrap_or(""),
                    m["accuracy_mean"].as_f64().map_or("n/a".to_string(), |a| format!(
                        "{a:.3} (worst cell {:.3})",
                        m["accuracy_min_cell"].as_f64().unwrap_or(0.0)
                    )),
                    m["kl_popular_calls"].as_f64().unwrap_or(f64::NAN),
                    m["heavy_hitter_top10"].as_f64().unwrap_or(f64::NAN),
                    m["heavy_hitter_top100"].as_f64().unwrap_or(f64::NAN),
                    m["seconds"].as_f64().unwrap_or(0.0),
                );
            }
            if json {
                print_json(&serde_json::json!({ "similarity_requests": compared.len(), "methods": methods }))
            } else {
                Ok(())
            }
        }
        LlmCommand::Train {
            inputs,
            out,
            size,
            encoding,
            steps,
            batch,
            learning_rate,
            p_drop,
            tune_steps,
            tune_fraction,
            lora_rank,
            lora_alpha,
            lora_dropout,
            seed,
            backend,
            json,
        } => {
            if steps == 0 || batch == 0 || !(learning_rate > 0.0) || !(0.0..1.0).contains(&p_drop) {
                return Err(Failure::BadInput(
                    "--steps and --batch must be at least 1, --learning-rate positive, --p-drop in [0, 1)".into(),
                ));
            }
            if !(tune_fraction > 0.0 && tune_fraction <= 1.0) {
                return Err(Failure::BadInput("--tune-fraction must be above 0 and at most 1".into()));
            }
            if tune_steps > 0 && matches!(encoding, LmEncoding::Tabular) {
                return Err(Failure::BadInput("--tune-steps needs the layer encoding (instruction samples are layers)".into()));
            }
            let graphs = read_call_graphs(&inputs)?;
            let size = match size {
                LmSize::Tiny => gent::nn::lm::LmConfig::tiny,
                LmSize::Small => gent::nn::lm::LmConfig::small,
                LmSize::Base => gent::nn::lm::LmConfig::base,
            };
            let encoding = match encoding {
                LmEncoding::Layers => model::Encoding::Layers,
                LmEncoding::Tabular => model::Encoding::Tabular,
            };
            let p = model::Pretraining {
                encoding,
                size,
                train: gent::nn::lm::TrainConfig { steps, batch, learning_rate, seed },
                p_drop,
            };
            let started = std::time::Instant::now();
            let (mut lm, losses) =
                model::LanguageModel::pretrain(&graphs, &p, &device(backend)?).map_err(|e| Failure::Other(e.to_string()))?;
            let train_seconds = started.elapsed().as_secs_f64();
            let started = std::time::Instant::now();
            let lora =
                (lora_rank > 0).then_some(gent::nn::lm::LoraConfig { rank: lora_rank, alpha: lora_alpha, dropout: lora_dropout });
            let tuned = if tune_steps > 0 {
                let t = model::Tuning {
                    train: gent::nn::lm::TrainConfig { steps: tune_steps, batch, learning_rate, seed },
                    fraction: tune_fraction,
                    sampling: gent::llm::instruct::Sampling { p_drop, ..Default::default() },
                    lora,
                };
                Some(lm.tune(&graphs, &t).map_err(|e| match e {
                    model::ModelError::Lm(gent::nn::lm::LmError::Lora(_)) => Failure::BadInput(format!("--lora-*: {e}")),
                    e => Failure::Other(e.to_string()),
                })?)
            } else {
                None
            };
            let tune_losses = tuned.as_ref().map(|t| t.losses.clone()).unwrap_or_default();
            let tune_seconds = started.elapsed().as_secs_f64();
            let bytes = lm.to_bytes().map_err(|e| Failure::Other(e.to_string()))?;
            std::fs::write(&out, &bytes).map_err(|e| Failure::Other(format!("{}: {e}", out.display())))?;
            let report = serde_json::json!({
                "graphs": graphs.len(),
                "vocabulary": lm.tokenizer.len(),
                "steps": steps,
                "first_loss": losses.first(),
                "last_loss": losses.last(),
                "train_seconds": train_seconds,
                "tune_steps": tune_steps,
                "tune_lora_rank": lora.map(|c| c.rank),
                "tune_trainable_parameters": tuned.as_ref().map(|t| t.trainable),
                "tune_first_loss": tune_losses.first(),
                "tune_last_loss": tune_losses.last(),
                "tune_seconds": tune_seconds,
                "model_bytes": bytes.len(),
            });
            tracing::info!(graphs = graphs.len(), steps, train_seconds = format!("{train_seconds:.1}"), loss = ?losses.last(), out = %out.display(), "language model written");
            if json { print_json(&report) } else { Ok(()) }
        }
        LlmCommand::Generate {
            model: path,
            conditions,
            count,
            constrained,
            temperature,
            top_k,
            top_p,
            seed,
            no_kv_cache,
            high_latency,
            include_edge,
            out,
            format,
            backend,
            json,
        } => {
            let user = user_instruction(high_latency, include_edge.as_deref())?;
            let c = text::Conditions::parse(&conditions, 1, 1).map_err(|e| Failure::BadInput(format!("--conditions: {e}")))?;
            let number = |key: &str, default: Option<u64>| -> Result<u64, Failure> {
                match c.get(key) {
                    Some(v) => v.parse().map_err(|_| Failure::BadInput(format!("--conditions: {key}:{v} is not a whole number"))),
                    None => default.ok_or_else(|| Failure::BadInput(format!("--conditions must give {key}"))),
                }
            };
            let request = generate::Request {
                service: c.get("id").unwrap_or("S_000000000").to_string(),
                num_edges: number("num_edges", None)?,
                depth: number("depth", None)?,
                latency: number("latency", Some(1000))?,
            };
            if request.depth == 0 || request.num_edges < request.depth {
                return Err(Failure::BadInput(format!(
                    "--conditions: {} edges cannot make a graph {} deep",
                    request.num_edges, request.depth
                )));
            }
            let bytes = read_file(&path)?;
            let lm = model::LanguageModel::from_bytes(&bytes, &device(backend)?)
                .map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?;
            let (mut scorer, tok) = if no_kv_cache { lm.uncached_scorer() } else { lm.scorer() };
            let sampling = generate::Sampling { temperature, top_k, top_p };
            let mut g = generate::Generator::new(&mut scorer, tok, sampling, seed)
                .map_err(|e| Failure::Other(e.to_string()))?
                .known_destinations(&lm.destinations);
            let started = std::time::Instant::now();
            let decoding = match (lm.encoding, constrained) {
                (model::Encoding::Layers, true) => generate::Decoding::Constrained,
                (model::Encoding::Layers, false) if lm.instructed => generate::Decoding::Instructed,
                (model::Encoding::Layers, false) => generate::Decoding::Free,
                (model::Encoding::Tabular, false) => generate::Decoding::Tabular,
                (model::Encoding::Tabular, true) => {
                    return Err(Failure::BadInput(format!(
                        "{}: constrained decoding needs a model of the layer encoding; this one writes whole graphs (tabular)",
                        path.display()
                    )));
                }
            };
            if user.is_some() && decoding != generate::Decoding::Instructed {
                return Err(Failure::BadInput(format!(
                    "{}: --high-latency and --include-edge are instructions for an instruction-tuned model \
                     (gent llm train --tune-steps N) decoding freely; this model {}",
                    path.display(),
                    if constrained { "was asked for --constrained decoding" } else { "is not instruction-tuned" }
                )));
            }
            let (mut graphs, mut invalid) = (Vec::new(), Vec::new());
            for _ in 0..count {
                let outcome = match &user {
                    Some(u) => g.graph_instructed(&request, u, lm.config.max_len),
                    None => g.run(&request, decoding, lm.config.max_len),
                };
                match outcome {
                    generate::Outcome::Valid(x) => graphs.push(x.graph),
                    generate::Outcome::Invalid { reason, .. } if decoding == generate::Decoding::Constrained => {
                        return Err(Failure::Other(reason));
                    }
                    generate::Outcome::Invalid { reason, .. } => invalid.push(reason),
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let doc = text::Document {
                records: graphs
                    .iter()
                    .map(|g| text::Tabular {
                        conditions: text::Conditions(vec![
                            ("id".into(), g.service.clone()),
                            ("num_edges".into(), g.edges.len().to_string()),
                            ("depth".into(), g.depth().to_string()),
                            ("latency".into(), g.latency().to_string()),
                        ]),
                        edges: g.edges.iter().map(|e| text::EdgeLine::from_edge(e, &[0, 1, 2, 3, 4, 5], true)).collect(),
                        lines: Vec::new(),
                    })
                    .collect(),
                final_newline: true,
            };
            let tabular = text::write_tabular(&doc);
            match format {
                LlmFormat::Alibaba => {
                    std::fs::write(&out, &tabular).map_err(|e| Failure::Other(format!("{}: {e}", out.display())))?
                }
                LlmFormat::OtlpJson => {
                    // As the Alibaba reader would read the text, marked synthetic.
                    use gent::io::alibaba::{call_graph_trace, graph_trace_id};
                    let traces: Vec<trace::Trace> = graphs
                        .iter()
                        .enumerate()
                        .map(|(i, g)| call_graph_trace(g, graph_trace_id(i as u64, &g.service), 0))
                        .collect();
                    io::write_file(&traces, OutputFormat::OtlpJson, &out)?;
                }
            }
            for reason in invalid.iter().take(3) {
                tracing::warn!(reason, "invalid graph discarded");
            }
            let report = serde_json::json!({
                "requested": count,
                "valid": graphs.len(),
                "invalid": invalid.len(),
                "accuracy": graphs.len() as f64 / count.max(1) as f64,
                "seconds": seconds,
                "out": out.display().to_string(),
            });
            tracing::info!(valid = graphs.len(), invalid = invalid.len(), seconds = format!("{seconds:.2}"), out = %out.display(), "call graphs generated");
            if json { print_json(&report) } else { Ok(()) }
        }
    }
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

struct TrainOptions {
    out: PathBuf,
    config: Option<PathBuf>,
    epochs: Option<usize>,
    chain_length: Option<usize>,
    seed: Option<u64>,
    f16: bool,
    no_gcn: bool,
    warm_start: Option<PathBuf>,
    call_graph_conditions: bool,
    backend: Backend,
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
    packet: gent::gent::Breakdown,
    /// How the calibrated timing met `calibration.budget`.
    budget: Option<gent::gent::Budget>,
}

/// A text file (call graphs) within `--max-input-bytes`.
fn read_text(path: &std::path::Path) -> Result<String, Failure> {
    String::from_utf8(read_file(path)?)
        .map_err(|e| Failure::BadInput(format!("{}: byte {}: not UTF-8 text", path.display(), e.utf8_error().valid_up_to())))
}

/// A packet, model or query file, whole, within `--max-input-bytes`.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let limit = READ_LIMITS.get().copied().unwrap_or_default().bytes;
    let file = std::fs::File::open(path).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
    // Sized from the file's length when it has one (a pipe reads as 0), refused before reading when it is over.
    let length = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::with_capacity(length.min(limit.saturating_add(1)) as usize);
    file.take(if length > limit { 0 } else { limit.saturating_add(1) })
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
    if length > limit || bytes.len() as u64 > limit {
        return Err(Failure::BadInput(format!(
            "{}: larger than {limit} bytes; raise --max-input-bytes if it is meant to be read",
            path.display()
        )));
    }
    Ok(bytes)
}

fn device(backend: Backend) -> Result<burn::tensor::Device, Failure> {
    backend.device().map_err(|e| Failure::BadInput(e.to_string()))
}

/// The window's size as OTLP protobuf, raw and gzip-compressed: what shipping
/// every span would cost, the yardstick for the packet.
fn otlp_sizes(traces: &[trace::Trace]) -> Result<(usize, usize), Failure> {
    let sizes = gent::fidelity::cost::wire_sizes(traces).map_err(|e| Failure::Other(e.to_string()))?;
    Ok((sizes.raw as usize, sizes.gzip as usize))
}

fn train(inputs: &[PathBuf], format: Option<Format>, o: TrainOptions, json: bool) -> Result<(), Failure> {
    let device = device(o.backend)?;
    let (set, _) = read(inputs, format)?;
    if set.traces.is_empty() {
        return Err(Failure::BadInput("the input holds no traces".into()));
    }
    let mut config = match &o.config {
        Some(path) => gent::config::load_model(path).map_err(|e| Failure::BadInput(e.to_string()))?,
        None => GenTConfig::default(),
    };
    // Flags given on the command line win over the file.
    config.chain_length = o.chain_length.unwrap_or(config.chain_length);
    config.ctgan.epochs = o.epochs.unwrap_or(config.ctgan.epochs);
    config.ctgan.seed = o.seed.unwrap_or(config.ctgan.seed);
    config.gcn &= !o.no_gcn;
    config.validate().map_err(|e| Failure::BadInput(e.to_string()))?;
    let previous = match &o.warm_start {
        Some(path) => Some(
            gent::gent::unpack(&read_file(path)?, &device)
                .map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?
                .model,
        ),
        None => None,
    };
    let started = std::time::Instant::now();
    let model =
        WindowModel::train(&set.traces, &config, &device, previous.as_ref()).map_err(|e| Failure::BadInput(e.to_string()))?;
    let train_seconds = started.elapsed().as_secs_f64();
    let precision = if o.f16 { Precision::F16 } else { Precision::F32 };
    let conditions = o.call_graph_conditions.then(|| WindowConditions::of(&set.traces, model.window_start));
    let packet = gent::gent::pack(&model, 0, &config, precision, config.ctgan.seed, conditions.clone())
        .map_err(|e| Failure::Other(e.to_string()))?;
    let conditions_ref = conditions.as_ref();
    std::fs::write(&o.out, &packet).map_err(|e| Failure::Other(format!("{}: {e}", o.out.display())))?;
    let (raw_otlp_bytes, gzip_otlp_bytes) = otlp_sizes(&set.traces)?;
    let (roots_warm, chains_warm) = model.warm_started();
    let packet_breakdown =
        gent::gent::breakdown(&model, &packet, &config, precision, conditions_ref).map_err(|e| Failure::Other(e.to_string()))?;
    let report = TrainReport {
        traces: model.histogram.traces(),
        spans: model.histogram.spans(),
        topologies: model.histogram.topologies.len(),
        packet_bytes: packet.len(),
        raw_otlp_bytes,
        gzip_otlp_bytes,
        train_seconds,
        warm_started: roots_warm || chains_warm,
        packet: packet_breakdown,
        budget: model.budget,
    };
    tracing::info!(
        traces = report.traces,
        spans = report.spans,
        topologies = report.topologies,
        packet_bytes = report.packet_bytes,
        gzip_otlp_bytes = report.gzip_otlp_bytes,
        train_seconds = format!("{train_seconds:.1}"),
        out = %o.out.display(),
        "packet written"
    );
    if json { print_json(&report) } else { Ok(()) }
}

#[derive(Serialize)]
struct GenerateReport {
    traces: usize,
    spans: usize,
    generate_seconds: f64,
    /// `gent` or `llm`.
    engine: &'static str,
    repairs: Option<gent::gent::Repairs>,
    /// With --llm: traces written smaller than they were (over --max-edges).
    clamped: Option<usize>,
    /// The process's peak resident memory once the traces were written
    /// (Linux; absent elsewhere).
    peak_rss_bytes: Option<u64>,
}

/// This process's peak resident set (VmHWM), where the OS reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// What regenerates a packet's traces.
enum Engine {
    GenT,
    Llm { path: PathBuf, max_edges: u64 },
}

fn generate(
    packet: &std::path::Path,
    out: &std::path::Path,
    format: OutputFormat,
    seed: Option<u64>,
    engine: Engine,
    backend: Backend,
    json: bool,
) -> Result<(), Failure> {
    let device = device(backend)?;
    // A packet is read like any input: it may not ask for more spans than
    // --max-input-spans, which also bounds what generating it holds in memory.
    let max_spans = READ_LIMITS.get().copied().unwrap_or_default().spans as u64;
    let unpacked = gent::gent::unpack_within(&read_file(packet)?, &device, max_spans).map_err(|e| {
        let raise = if matches!(e, gent::gent::PackError::TooLarge { .. }) { " (raise --max-input-spans)" } else { "" };
        Failure::BadInput(format!("{}: {e}{raise}", packet.display()))
    })?;
    let seed = seed.unwrap_or(unpacked.header.seed);
    let started = std::time::Instant::now();
    let (traces, engine, repairs, clamped) = match engine {
        Engine::GenT => {
            let (traces, repairs) = unpacked.model.generate(seed).map_err(|e| Failure::Other(e.to_string()))?;
            (traces, "gent", Some(repairs), None)
        }
        Engine::Llm { path, max_edges } => {
            let conditions = unpacked.conditions.ok_or_else(|| {
                Failure::BadInput(format!(
                    "{}: the packet carries no call-graph conditions (train it with --call-graph-conditions)",
                    packet.display()
                ))
            })?;
            let lm = gent::llm::model::LanguageModel::from_bytes(&read_file(&path)?, &device)
                .map_err(|e| Failure::BadInput(format!("{}: {e}", path.display())))?;
            let r = gent::llm::window::Regeneration { sampling: Default::default(), max_edges, seed };
            let regenerated = gent::llm::window::regenerate(&lm, &conditions, unpacked.header.window_start, &r)
                .map_err(|e| Failure::BadInput(format!("{}: {e}", packet.display())))?;
            (regenerated.traces, "llm", None, Some(regenerated.clamped))
        }
    };
    let generate_seconds = started.elapsed().as_secs_f64();
    io::write_file(&traces, format, out)?;
    let report = GenerateReport {
        traces: traces.len(),
        spans: traces.iter().map(|t| t.spans.len()).sum(),
        generate_seconds,
        engine,
        repairs,
        clamped,
        peak_rss_bytes: peak_rss_bytes(),
    };
    tracing::info!(traces = report.traces, spans = report.spans, engine, generate_seconds = format!("{generate_seconds:.2}"), out = %out.display(), "traces regenerated");
    if json { print_json(&report) } else { Ok(()) }
}

#[derive(Serialize)]
struct SampleReport {
    traces_in: usize,
    traces_kept: usize,
    spans_kept: usize,
}

#[allow(clippy::too_many_arguments)]
fn sample(
    inputs: &[PathBuf],
    out: &std::path::Path,
    head: Option<String>,
    tail: Option<String>,
    seed: u64,
    to: OutputFormat,
    format: Option<Format>,
    json: bool,
) -> Result<(), Failure> {
    use gent::fidelity::sampling::{Sampler, TailPolicy, parse_head};
    let bad = |e: gent::fidelity::sampling::SamplingError| Failure::BadInput(e.to_string());
    let sampler = match (head, tail) {
        (Some(h), _) => Sampler::Head { n: parse_head(&h).map_err(bad)? },
        (None, Some(t)) => Sampler::Tail(TailPolicy::parse_list(&t).map_err(bad)?),
        (None, None) => return Err(Failure::BadInput("give --head 1:N or --tail POLICY".into())),
    };
    let (set, _) = read(inputs, format)?;
    let kept = sampler.sample(&set.traces, seed);
    io::write_file(&kept, to, out)?;
    let report = SampleReport {
        traces_in: set.traces.len(),
        traces_kept: kept.len(),
        spans_kept: kept.iter().map(|t| t.spans.len()).sum(),
    };
    tracing::info!(traces_in = report.traces_in, traces_kept = report.traces_kept, out = %out.display(), "sample written");
    if json { print_json(&report) } else { Ok(()) }
}

#[derive(Serialize)]
struct EvalReport {
    overall: f64,
    queries: Vec<gent::fidelity::QueryScore>,
    dropped: Vec<String>,
}

fn eval(
    real: &[PathBuf],
    synthetic: &[PathBuf],
    scale: f64,
    queries: Option<&std::path::Path>,
    report_path: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Failure> {
    use gent::fidelity::{FidelityError, Reference, parse_user_queries};
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Failure::BadInput("--scale must be a positive number".into()));
    }
    let fidelity = |e: FidelityError| match e {
        FidelityError::Sql { .. } | FidelityError::Shape { .. } | FidelityError::Queries { .. } | FidelityError::Empty { .. } => {
            Failure::BadInput(e.to_string())
        }
    };
    let user = match queries {
        Some(path) => parse_user_queries(&String::from_utf8_lossy(&read_file(path)?), path).map_err(fidelity)?,
        None => Vec::new(),
    };
    let (real, _) = read(real, None)?;
    let (candidate, _) = read(synthetic, None)?;
    let reference = Reference::new(&real, user).map_err(fidelity)?;
    let evaluation = reference.evaluate(&candidate, scale).map_err(fidelity)?;
    let width = evaluation.queries.iter().map(|q| q.name.len()).max().unwrap_or(5).max(5);
    println!("{:<width$}  {:<12}  score", "query", "kind");
    for q in &evaluation.queries {
        println!("{:<width$}  {:<12}  {:.3}", q.name, format!("{:?}", q.kind).to_lowercase(), q.score);
    }
    println!("{:<width$}  {:<12}  {:.3}", "overall", "", evaluation.overall);
    if let Some(path) = report_path {
        let html = gent::fidelity::report::eval_html(&evaluation).map_err(|e| Failure::Other(e.to_string()))?;
        std::fs::write(path, html).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
    }
    let report = EvalReport { overall: evaluation.overall, queries: evaluation.queries, dropped: reference.dropped };
    if json { print_json(&report) } else { Ok(()) }
}

fn cost_fidelity(
    inputs: &[PathBuf],
    config: Option<&std::path::Path>,
    report: Option<&std::path::Path>,
    plot: Option<&std::path::Path>,
    prices: gent::fidelity::cost::Prices,
    format: Option<Format>,
    json: bool,
) -> Result<(), Failure> {
    use gent::fidelity::bench::{self, BenchError};
    if ![prices.per_gb, prices.per_cpu_hour, prices.per_gpu_hour].iter().all(|p| p.is_finite() && *p >= 0.0) {
        return Err(Failure::BadInput("prices must be non-negative numbers".into()));
    }
    let config = match config {
        Some(path) => gent::config::load_model(path).map_err(|e| Failure::BadInput(e.to_string()))?,
        None => GenTConfig::default(),
    };
    let (set, _) = read(inputs, format)?;
    if set.traces.is_empty() {
        return Err(Failure::BadInput("the input holds no traces".into()));
    }
    let device = device(Backend::Cpu)?;
    let outcome = bench::run(&set, &config, &device, prices, |method| tracing::info!(method, "benchmarking"));
    let outcome = outcome.map_err(|e| match e {
        BenchError::Fidelity(_) => Failure::BadInput(e.to_string()),
        _ => Failure::Other(e.to_string()),
    })?;
    print!("{}", outcome.table());
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))
    };
    if let Some(path) = report {
        write(path, gent::fidelity::report::html(&outcome).map_err(|e| Failure::Other(e.to_string()))?)?;
    }
    if let Some(path) = plot {
        write(path, gent::fidelity::report::fidelity_plot(&outcome).map_err(|e| Failure::Other(e.to_string()))?)?;
    }
    if json { print_json(&outcome) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is mimalloc's purge delay: it holds that option's default
    /// (1,000 ms in mimalloc v3, 10 ms in v2), and setting it takes.
    #[test]
    fn purge_delay_option_is_the_one_set() {
        // SAFETY: reads an integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!([1000, 10].contains(&get()), "{}", get());
        }
        set_purge_delay(0);
        assert_eq!(get(), 0);
        set_purge_delay(DAEMON_PURGE_DELAY_MS);
        assert_eq!(get(), DAEMON_PURGE_DELAY_MS);
    }
}
