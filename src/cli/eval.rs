//! Fidelity commands: `eval` scores a candidate against the real traces,
//! `bench cost-fidelity` sets gent beside the sampling it replaces.

use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use gent::fidelity::bench::{self, BenchError};
use gent::fidelity::{FidelityError, Reference, parse_user_queries};
use gent::nn::Backend;

use super::args::{InputArgs, JsonArg, read_file, read_traces};
use super::model::model_config;
use super::{Failure, device, report, write};

#[derive(clap::Args)]
pub struct EvalArgs {
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
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// gent against head sampling (1:5 … 1:100, 10 seeds), tail sampling and lossless
    /// compression: bytes, cost and fidelity on the query suite.
    CostFidelity(CostFidelityArgs),
}

#[derive(clap::Args)]
pub struct CostFidelityArgs {
    // The inputs are taken as one window.
    #[command(flatten)]
    input: InputArgs,
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
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Serialize)]
struct EvalReport {
    overall: f64,
    queries: Vec<gent::fidelity::QueryScore>,
    dropped: Vec<String>,
}

/// Every fidelity error is one of the input: bad SQL, a bad shape, no data.
fn fidelity(e: FidelityError) -> Failure {
    match e {
        FidelityError::Sql { .. } | FidelityError::Shape { .. } | FidelityError::Queries { .. } | FidelityError::Empty { .. } => {
            Failure::bad(e)
        }
    }
}

pub fn eval(a: EvalArgs) -> Result<(), Failure> {
    if !(a.scale.is_finite() && a.scale > 0.0) {
        return Err(Failure::BadInput("--scale must be a positive number".into()));
    }
    let user = match &a.queries {
        Some(path) => parse_user_queries(&String::from_utf8_lossy(&read_file(path)?), path).map_err(fidelity)?,
        None => Vec::new(),
    };
    let (real, _) = read_traces(&a.real, None)?;
    let (candidate, _) = read_traces(&a.synthetic, None)?;
    let reference = Reference::new(&real, user).map_err(fidelity)?;
    let evaluation = reference.evaluate(&candidate, a.scale).map_err(fidelity)?;
    let width = evaluation.queries.iter().map(|q| q.name.len()).max().unwrap_or(5).max(5);
    println!("{:<width$}  {:<12}  score", "query", "kind");
    for q in &evaluation.queries {
        println!("{:<width$}  {:<12}  {:.3}", q.name, format!("{:?}", q.kind).to_lowercase(), q.score);
    }
    println!("{:<width$}  {:<12}  {:.3}", "overall", "", evaluation.overall);
    if let Some(path) = &a.report {
        write(path, gent::fidelity::report::eval_html(&evaluation).map_err(Failure::other)?)?;
    }
    let r = EvalReport { overall: evaluation.overall, queries: evaluation.queries, dropped: reference.dropped };
    report(a.json.json, &r)
}

pub fn bench(command: BenchCommand) -> Result<(), Failure> {
    match command {
        BenchCommand::CostFidelity(a) => cost_fidelity(a),
    }
}

fn cost_fidelity(a: CostFidelityArgs) -> Result<(), Failure> {
    let prices = gent::fidelity::cost::Prices {
        per_gb: a.price_per_gb,
        per_cpu_hour: a.price_per_cpu_hour,
        per_gpu_hour: a.price_per_gpu_hour,
    };
    if ![prices.per_gb, prices.per_cpu_hour, prices.per_gpu_hour].iter().all(|p| p.is_finite() && *p >= 0.0) {
        return Err(Failure::BadInput("prices must be non-negative numbers".into()));
    }
    let config = model_config(a.config.as_deref())?;
    let set = a.input.read_some()?;
    let device = device(Backend::Cpu)?;
    let outcome = bench::run(&set, &config, &device, prices, |method| tracing::info!(method, "benchmarking"));
    let outcome = outcome.map_err(|e| match e {
        BenchError::Fidelity(_) => Failure::bad(e),
        _ => Failure::other(e),
    })?;
    print!("{}", outcome.table());
    if let Some(path) = &a.report {
        write(path, gent::fidelity::report::html(&outcome).map_err(Failure::other)?)?;
    }
    if let Some(path) = &a.plot {
        write(path, gent::fidelity::report::fidelity_plot(&outcome).map_err(Failure::other)?)?;
    }
    report(a.json.json, &outcome)
}
