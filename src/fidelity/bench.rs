//! The cost–fidelity benchmark (`gent bench cost-fidelity`): gent against
//! the methods it replaces, on the same data, with the same queries and the
//! same scores. Every method is charged for the bytes it ships and the
//! compute it spends ([`Prices`]):
//!
//! * gent: the packet; training and generation time on every core; its
//!   regenerated traces are written as an OTLP file and scored as read back,
//!   as a backend would receive them, over [`GENT_SEEDS`] generation seeds
//!   (the regenerated traces vary with the seed as the kept ones do with
//!   head sampling's);
//! * head sampling 1:N (N = 5, 10, 15, 20, 50, 100; 10 seeds): the kept
//!   traces as gzip-compressed OTLP protobuf, counts scaled by N;
//! * tail sampling (errors, traces slower than the real 90th percentile, and
//!   1% of the rest): gzip OTLP of the kept traces, counts scaled by
//!   all traces / kept traces;
//! * lossless: every span as gzip or zstd OTLP protobuf (fidelity 1);
//! * a reference: one random half of the real traces scored against the
//!   other, what an independent sample of the same traffic scores;
//! * head sampling at the rate whose gzip bytes equal gent's packet, the
//!   comparison that says whether gent pays for itself.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::Device;

use super::cost::{Prices, wire_sizes};
use super::sampling::{Sampler, TailPolicy};
use super::{FidelityError, Reference};
use crate::gent::{GenTConfig, WindowModel};
use crate::nn::weights::Precision;
use crate::trace::{Trace, TraceSet};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Fidelity(#[from] FidelityError),
    #[error("gent: {0}")]
    Model(#[from] crate::gent::ModelError),
    #[error("gent: {0}")]
    Pack(#[from] crate::codec::PackError),
    #[error("encoding the traces: {0}")]
    Encode(#[from] std::io::Error),
    #[error("reading the regenerated traces back: {0}")]
    ReadBack(#[from] crate::io::IoError),
}

/// Head sampling rates compared.
pub const HEAD_RATES: [u64; 6] = [5, 10, 15, 20, 50, 100];
/// Seeds per head sampling rate.
pub const SEEDS: u64 = 10;

/// One method's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MethodResult {
    pub method: String,
    /// Bytes shipped (mean over seeds for head sampling).
    pub bytes: f64,
    /// `bytes` over the gzip of every span.
    pub ratio_to_gzip: f64,
    pub compute_seconds: f64,
    pub cost_usd: f64,
    /// Mean overall fidelity, and its standard deviation over seeds (0 for one run).
    pub fidelity: f64,
    pub fidelity_sd: f64,
    /// Mean score per query.
    pub queries: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub traces: usize,
    pub spans: usize,
    pub gzip_bytes: u64,
    pub prices: Prices,
    pub methods: Vec<MethodResult>,
    /// The head sampling rates whose mean fidelity gent reaches or beats.
    pub gent_matches_head: Vec<u64>,
    /// The head sampling rates whose mean shipped bytes gent's packet does not exceed.
    pub gent_smaller_than_head: Vec<u64>,
    /// Head sampling at the rate whose bytes equal gent's packet.
    pub equal_bytes_head: EqualBytes,
}

/// The head sampling rate 1:N whose gzip bytes equal gent's packet
/// (interpolated between the measured rates, bytes falling as 1/N), and that
/// rate's bytes and fidelity, mean over the seeds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EqualBytes {
    pub rate: u64,
    pub bytes: f64,
    pub fidelity: f64,
    pub gent_fidelity: f64,
}

struct Runs {
    bytes: Vec<f64>,
    seconds: Vec<f64>,
    scores: Vec<super::Evaluation>,
}

impl Runs {
    fn result(self, method: String, gzip: u64, prices: &Prices, cores: f64) -> MethodResult {
        let n = self.scores.len().max(1) as f64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let overall: Vec<f64> = self.scores.iter().map(|e| e.overall).collect();
        let fidelity = mean(&overall);
        let fidelity_sd = (overall.iter().map(|f| (f - fidelity).powi(2)).sum::<f64>() / n).sqrt();
        let mut queries: BTreeMap<String, f64> = BTreeMap::new();
        for e in &self.scores {
            for q in &e.queries {
                *queries.entry(q.name.clone()).or_default() += q.score / n;
            }
        }
        let (bytes, compute_seconds) = (mean(&self.bytes), mean(&self.seconds));
        MethodResult {
            method,
            bytes,
            ratio_to_gzip: bytes / gzip.max(1) as f64,
            compute_seconds,
            cost_usd: prices.cost(bytes as u64, compute_seconds * cores, 0.0),
            fidelity,
            fidelity_sd,
            queries,
        }
    }
}

fn set(traces: Vec<Trace>) -> TraceSet {
    TraceSet { traces, defects: Default::default() }
}

/// The 90th percentile of trace durations, for the tail policy.
fn p90_duration(traces: &[Trace]) -> std::time::Duration {
    let mut d: Vec<u64> = traces.iter().map(|t| t.end().saturating_sub(t.start())).collect();
    d.sort_unstable();
    std::time::Duration::from_nanos(d.get(d.len() * 9 / 10).copied().unwrap_or(0))
}

/// Generation seeds gent is scored over (from the configured seed on): one
/// seed's RED duration on hipster ranges 0.80–0.83 over seeds 1–7.
pub const GENT_SEEDS: u64 = 3;

/// Runs every method on `real` and scores it. `progress` hears each method's name as it starts.
pub fn run(
    real: &TraceSet,
    config: &GenTConfig,
    device: &Device,
    prices: Prices,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport, BenchError> {
    let reference = Reference::new(real, Vec::new())?;
    let full = wire_sizes(&real.traces)?;
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let mut methods = Vec::new();

    progress("gent");
    let started = Instant::now();
    let model = WindowModel::train(&real.traces, config, device, None)?;
    let packet = crate::codec::pack(&model, 0, config, Precision::F16, config.ctgan.seed, None)?;
    let unpacked = crate::codec::unpack(&packet, device)?;
    let mut seconds = started.elapsed().as_secs_f64();
    let mut scores = Vec::with_capacity(GENT_SEEDS as usize);
    for i in 0..GENT_SEEDS {
        let started = Instant::now();
        let (generated, _) = unpacked.model.generate(config.ctgan.seed.wrapping_add(i))?;
        if i == 0 {
            // Compute is one training and one regeneration.
            seconds += started.elapsed().as_secs_f64();
        }
        scores.push(reference.evaluate(&read_back(&generated)?, 1.0)?);
    }
    let gent = Runs { bytes: vec![packet.len() as f64], seconds: vec![seconds], scores };
    methods.push(gent.result("gent (f16)".into(), full.gzip, &prices, cores));

    for n in HEAD_RATES {
        progress(&format!("head 1:{n}"));
        methods.push(head(real, &reference, n, full.gzip, &prices, cores)?);
    }

    progress("tail");
    let started = Instant::now();
    let policy = Sampler::Tail(vec![
        TailPolicy::StatusCode(vec![crate::trace::StatusCode::Error]),
        TailPolicy::Latency(p90_duration(&real.traces)),
        TailPolicy::Probabilistic(1.0),
    ]);
    let kept = policy.sample(&real.traces, 0);
    let bytes = wire_sizes(&kept)?.gzip;
    let seconds = started.elapsed().as_secs_f64();
    let scale = real.traces.len() as f64 / kept.len().max(1) as f64;
    let tail =
        Runs { bytes: vec![bytes as f64], seconds: vec![seconds], scores: vec![reference.evaluate_any(&set(kept), scale)?] };
    methods.push(tail.result("tail (errors, > p90 latency, 1%) + gzip".into(), full.gzip, &prices, cores));

    progress("lossless");
    let everything = reference.evaluate(real, 1.0)?;
    for (name, bytes) in [("lossless gzip", full.gzip), ("lossless zstd", full.zstd)] {
        let runs = Runs { bytes: vec![bytes as f64], seconds: vec![0.0], scores: vec![everything.clone()] };
        methods.push(runs.result(name.into(), full.gzip, &prices, cores));
    }

    progress("real against real");
    methods.push(halves(real, full.gzip, &prices, cores)?);

    let rate = equal_bytes_rate(&methods);
    progress(&format!("head 1:{rate} (gent's bytes)"));
    let same = head(real, &reference, rate, full.gzip, &prices, cores)?;
    let equal_bytes_head = EqualBytes { rate, bytes: same.bytes, fidelity: same.fidelity, gent_fidelity: methods[0].fidelity };
    let mut same = same;
    same.method = format!("head 1:{rate} + gzip (gent's bytes)");
    methods.push(same);

    let gent = &methods[0];
    let head_rate = |m: &MethodResult| {
        m.method
            .strip_prefix("head 1:")
            .filter(|r| r.ends_with("+ gzip"))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let gent_matches_head = methods.iter().filter(|m| m.fidelity <= gent.fidelity).filter_map(head_rate).collect();
    let gent_smaller_than_head = methods.iter().filter(|m| gent.bytes <= m.bytes).filter_map(head_rate).collect();
    Ok(BenchReport {
        traces: real.traces.len(),
        spans: real.span_count(),
        gzip_bytes: full.gzip,
        prices,
        methods,
        gent_matches_head,
        gent_smaller_than_head,
        equal_bytes_head,
    })
}

/// Head sampling 1:`n` over [`SEEDS`] seeds: gzip OTLP bytes of the kept
/// traces, counts scaled by `n`.
fn head(
    real: &TraceSet,
    reference: &Reference,
    n: u64,
    gzip: u64,
    prices: &Prices,
    cores: f64,
) -> Result<MethodResult, BenchError> {
    let mut runs = Runs { bytes: Vec::new(), seconds: Vec::new(), scores: Vec::new() };
    for seed in 0..SEEDS {
        let started = Instant::now();
        let kept = Sampler::Head { n }.sample(&real.traces, seed);
        let bytes = wire_sizes(&kept)?.gzip;
        runs.seconds.push(started.elapsed().as_secs_f64());
        runs.bytes.push(bytes as f64);
        runs.scores.push(reference.evaluate_any(&set(kept), n as f64)?);
    }
    Ok(runs.result(format!("head 1:{n} + gzip"), gzip, prices, cores))
}

/// Seeded splits the real-against-real reference averages over.
const HALVES_SEEDS: u64 = 3;

/// A reference, not a method: one random half of the window's traces scored
/// against the other half (counts scaled by their sizes), over
/// [`HALVES_SEEDS`] splits. It is what an independent sample of the same
/// traffic scores, so no model that does not copy the real traces can be
/// expected to do much better (a whole-window sample would do somewhat
/// better than a half: its sampling noise is about 1/√2 of a half's).
fn halves(real: &TraceSet, gzip: u64, prices: &Prices, cores: f64) -> Result<MethodResult, BenchError> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut runs = Runs { bytes: Vec::new(), seconds: Vec::new(), scores: Vec::new() };
    for seed in 0..HALVES_SEEDS {
        let mut order: Vec<usize> = (0..real.traces.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let (a, b) = order.split_at(order.len() / 2);
        let pick = |ix: &[usize]| set(ix.iter().map(|&i| real.traces[i].clone()).collect());
        let (a, b) = (pick(a), pick(b));
        let reference = Reference::new(&a, Vec::new())?;
        runs.bytes.push(wire_sizes(&b.traces)?.gzip as f64);
        runs.seconds.push(0.0);
        runs.scores.push(reference.evaluate_any(&b, a.traces.len() as f64 / b.traces.len().max(1) as f64)?);
    }
    Ok(runs.result("real, half against half (reference)".into(), gzip, prices, cores))
}

/// The head sampling rate whose bytes equal gent's packet: interpolated in
/// log-log between the two measured rates around it (bytes fall as about
/// 1/N), extrapolated from the nearest pair beyond them.
fn equal_bytes_rate(methods: &[MethodResult]) -> u64 {
    let target = methods[0].bytes.max(1.0);
    let points: Vec<(f64, f64)> =
        HEAD_RATES.iter().zip(&methods[1..]).map(|(&n, m)| ((n as f64).ln(), m.bytes.max(1.0).ln())).collect();
    let pair = points.windows(2).find(|w| w[1].1 <= target.ln()).unwrap_or(&points[points.len() - 2..]);
    let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
    let slope = if (y1 - y0).abs() > 1e-12 { (x1 - x0) / (y1 - y0) } else { 0.0 };
    (x0 + (target.ln() - y0) * slope).exp().round().clamp(1.0, 1e9) as u64
}

/// `traces` written as an OTLP JSON file and read back, as a backend would
/// receive them.
fn read_back(traces: &[Trace]) -> Result<TraceSet, BenchError> {
    let path = std::env::temp_dir().join(format!("gent-bench-{}-{}.jsonl", std::process::id(), rand::random::<u64>()));
    let written = crate::io::write_file(traces, crate::io::OutputFormat::OtlpJson, &path);
    let read = written.and_then(|()| crate::io::read_inputs(std::slice::from_ref(&path), None));
    let _ = std::fs::remove_file(&path);
    Ok(crate::trace::assemble(read?.spans))
}

impl MethodResult {
    /// The table's cells: method, bytes, ratio to gzip, compute seconds, cost, fidelity ± sd.
    pub fn cells(&self) -> [String; 6] {
        [
            self.method.clone(),
            format!("{:.0}", self.bytes),
            format!("{:.2}%", 100.0 * self.ratio_to_gzip),
            format!("{:.2}", self.compute_seconds),
            format!("{:.8}", self.cost_usd),
            format!("{:.3} ± {:.3}", self.fidelity, self.fidelity_sd),
        ]
    }
}

impl BenchReport {
    /// The tables printed on stdout: every method, then every query's score
    /// side by side, then gent against head sampling at the same bytes.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<42} {:>12} {:>9} {:>10} {:>12} {:>17}\n",
            "method", "bytes", "vs gzip", "compute s", "cost $", "fidelity (± sd)"
        );
        for m in &self.methods {
            let [method, bytes, ratio, seconds, cost, fidelity] = m.cells();
            out.push_str(&format!("{method:<42} {bytes:>12} {ratio:>9} {seconds:>10} {cost:>12} {fidelity:>17}\n"));
        }
        out.push('\n');
        out.push_str(&self.query_table());
        let e = &self.equal_bytes_head;
        out.push_str(&format!(
            "\ngent's {:.0} bytes buy head sampling 1:{} ({:.0} bytes): fidelity {:.3} against gent's {:.3}\n",
            self.methods.first().map_or(0.0, |m| m.bytes),
            e.rate,
            e.bytes,
            e.fidelity,
            e.gent_fidelity
        ));
        out
    }

    /// Every query's score (rows) for gent, each head rate and tail sampling (columns).
    fn query_table(&self) -> String {
        let shown: Vec<&MethodResult> = self.methods.iter().filter(|m| !m.method.starts_with("lossless")).collect();
        let short = |m: &MethodResult| {
            m.method
                .split(" + ")
                .next()
                .unwrap_or(&m.method)
                .replace(" (f16)", "")
                .replace("tail (errors, > p90 latency, 1%)", "tail")
                .replace("real, half against half (reference)", "real ½")
        };
        let mut out = format!("{:<44}", "query");
        for m in &shown {
            out.push_str(&format!(" {:>9}", short(m)));
        }
        out.push('\n');
        let names: Vec<&String> = shown.first().map(|m| m.queries.keys().collect()).unwrap_or_default();
        for name in names {
            let label: String = name.chars().take(44).collect();
            out.push_str(&format!("{label:<44}"));
            for m in &shown {
                out.push_str(&format!(" {:>9.3}", m.queries.get(name).copied().unwrap_or(0.0)));
            }
            out.push('\n');
        }
        out
    }
}
