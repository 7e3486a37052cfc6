//! The long-running commands: the `compressor` and `decompressor` daemons,
//! the loopback `demo`, and `replay` as live load.

use std::path::PathBuf;

use gent::config::{CompressorConfig, DecompressorConfig};
use gent::otlp::replay::{ReplayError, ReplayOptions, ReplayProtocol};

use super::args::{InputArgs, JsonArg};
use super::{Failure, report, runtime};

#[derive(clap::Args)]
pub struct DaemonArgs {
    /// YAML configuration (see config/compressor.yaml or config/decompressor.yaml); built-in defaults without it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct DemoArgs {
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
    #[command(flatten)]
    json: JsonArg,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    input: InputArgs,
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
    #[command(flatten)]
    json: JsonArg,
}

pub fn compressor(a: DaemonArgs) -> Result<(), Failure> {
    let config = match a.config {
        Some(path) => CompressorConfig::load(&path)?,
        None => CompressorConfig::default(),
    };
    runtime()?.block_on(gent::pipeline::compressor::run(config)).map_err(Failure::other)
}

pub fn decompressor(a: DaemonArgs) -> Result<(), Failure> {
    let config = match a.config {
        Some(path) => DecompressorConfig::load(&path)?,
        None => DecompressorConfig::default(),
    };
    runtime()?.block_on(gent::pipeline::decompressor::run(config)).map_err(Failure::other)
}

pub fn demo(a: DemoArgs) -> Result<(), Failure> {
    let DemoArgs { out, window_traces, loops, epochs, json } = a;
    if window_traces == 0 || loops == 0 || epochs == Some(0) {
        return Err(Failure::BadInput("--window-traces, --loop and --epochs must be at least 1".into()));
    }
    let options = gent::pipeline::demo::DemoOptions { out, window_traces, loops, epochs };
    println!(
        "gent demo: compressor and decompressor on loopback; replaying the bundled TrainTicket sample (75 traces) {loops} times"
    );
    println!(
        "{:>6}  {:>6}  {:>9}  {:>10}  {:>8}  {:>8}  {:>16}  {:>7}  {:>9}  regenerated traces",
        "window", "spans", "gzip OTLP", "packet", "vs gzip", "fidelity", "same bytes: head", "shipped", "spans out"
    );
    let r = runtime()?.block_on(gent::pipeline::demo::run(&options, print_window)).map_err(Failure::other)?;
    println!(
        "total: {} spans in, {} regenerated; {} packet bytes vs {} gzip OTLP bytes ({:.1}%); {:.1} s",
        r.spans_in,
        r.spans_regenerated,
        r.packet_bytes,
        r.gzip_bytes,
        100.0 * r.packet_bytes as f64 / r.gzip_bytes.max(1) as f64,
        r.seconds
    );
    report(json.json, &r)
}

/// One line of the demo's table: a window shipped and regenerated.
fn print_window(w: &gent::pipeline::demo::DemoWindow) {
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
}

pub fn replay(a: ReplayArgs) -> Result<(), Failure> {
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Failure::BadInput("--rate must be a positive number of spans per second".into()));
    }
    let options = ReplayOptions {
        endpoint: a.endpoint,
        protocol: a.protocol,
        rate: a.rate,
        loops: a.loops,
        batch_spans: a.batch,
        concurrency: a.concurrency,
    };
    let (set, _) = a.input.read()?;
    let r = runtime()?.block_on(gent::otlp::replay::replay(&set.traces, &options)).map_err(|e| match e {
        ReplayError::Empty => Failure::bad(e),
        _ => Failure::other(e),
    })?;
    tracing::info!(
        spans = r.spans_sent,
        traces = r.traces_sent,
        retries = r.retries,
        failed_requests = r.failed_requests,
        spans_per_second = r.spans_per_second as u64,
        "replay finished"
    );
    report(a.json.json, &r)
}
