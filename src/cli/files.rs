//! Commands over trace files: `stats`, `convert` and `sample`.

use std::path::PathBuf;

use serde::Serialize;

use gent::fidelity::sampling::{Sampler, SamplingError, TailPolicy, parse_head};
use gent::io::{self, OutputFormat};
use gent::trace::Stats;

use super::args::{InputArgs, JsonArg};
use super::{Failure, report};

#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "otlp-json")]
    to: OutputFormat,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(clap::Args)]
pub struct SampleArgs {
    #[command(flatten)]
    input: InputArgs,
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
    #[command(flatten)]
    json: JsonArg,
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

pub fn stats(a: StatsArgs) -> Result<(), Failure> {
    let (set, input) = a.input.read()?;
    let stats = Stats::of(&set);
    let r = StatsReport {
        spans_per_trace_p50: stats.spans_per_trace.p50,
        spans_per_trace_p99: stats.spans_per_trace.p99,
        stats,
        files: input.files.len(),
        skipped_files: input.skipped,
    };
    if !a.json.json {
        print_stats(&r);
    }
    report(a.json.json, &r)
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

pub fn convert(a: ConvertArgs) -> Result<(), Failure> {
    let (set, _) = a.input.read()?;
    io::write_file(&set.traces, a.to, &a.out)?;
    let r = ConvertReport { out: &a.out, format: a.to, traces: set.traces.len(), spans: set.span_count() };
    tracing::info!(traces = r.traces, spans = r.spans, out = %a.out.display(), "written");
    report(a.json.json, &r)
}

#[derive(Serialize)]
struct SampleReport {
    traces_in: usize,
    traces_kept: usize,
    spans_kept: usize,
}

pub fn sample(a: SampleArgs) -> Result<(), Failure> {
    let bad = |e: SamplingError| Failure::bad(e);
    let sampler = match (&a.head, &a.tail) {
        (Some(h), _) => Sampler::Head { n: parse_head(h).map_err(bad)? },
        (None, Some(t)) => Sampler::Tail(TailPolicy::parse_list(t).map_err(bad)?),
        (None, None) => return Err(Failure::BadInput("give --head 1:N or --tail POLICY".into())),
    };
    let (set, _) = a.input.read()?;
    let kept = sampler.sample(&set.traces, a.seed);
    io::write_file(&kept, a.to, &a.out)?;
    let r = SampleReport {
        traces_in: set.traces.len(),
        traces_kept: kept.len(),
        spans_kept: kept.iter().map(|t| t.spans.len()).sum(),
    };
    tracing::info!(traces_in = r.traces_in, traces_kept = r.traces_kept, out = %a.out.display(), "sample written");
    report(a.json.json, &r)
}
