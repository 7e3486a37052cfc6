//! CTGAN quality on real data (issue 4's acceptance measure, not yet met): a
//! table of TrainTicket hour-12 spans (service, span name, log duration, gap
//! from parent) is learned and sampled, and compared with a baseline that
//! samples every column independently. Prints the figures; exits 1 when the
//! thresholds (duration W1 below 0.8 × the baseline's, joint TV below 0.1) are
//! not met.
//!
//! Run: `cargo run --release --example ctgan_quality [EPOCHS] [WIDTH] [flex|ndarray] [LEARNING_RATE] [BATCH]`

use std::path::PathBuf;

fn data(rel: &str) -> PathBuf {
    let root = std::env::var_os("GENT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    root.join(rel)
}

fn read_set(paths: &[PathBuf]) -> gent::trace::TraceSet {
    let input = gent::io::read_inputs(paths, None).unwrap_or_else(|e| panic!("{e}"));
    gent::trace::assemble(input.spans)
}

use std::collections::HashMap;
use std::time::Instant;

use burn::tensor::Device;
use gent::nn::{Ctgan, CtganConfig};
use gent::tabular::{Column, ColumnData, Table};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One row per span of the first `rows` spans of hour 12 (in trace order).
fn span_table(rows: usize) -> Table {
    let paths: Vec<_> = (0..60).map(|m| data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect();
    let set = read_set(&paths);
    let (mut service, mut name, mut duration, mut gap) = (vec![], vec![], vec![], vec![]);
    'outer: for trace in &set.traces {
        let starts: HashMap<_, _> = trace.spans.iter().map(|s| (s.span_id, s.start)).collect();
        for span in &trace.spans {
            if service.len() == rows {
                break 'outer;
            }
            service.push(span.service().to_string());
            name.push(span.name.clone());
            duration.push(span.duration() as f64 / 1e3);
            let parent = span.parent_span_id.and_then(|p| starts.get(&p)).copied().unwrap_or(span.start);
            gap.push((span.start as f64 - parent as f64) / 1e3);
        }
    }
    Table::new(vec![
        Column::categorical("service", service),
        Column::categorical("name", name),
        Column::continuous("duration_us", duration, true),
        Column::continuous("gap_us", gap, false),
    ])
    .unwrap()
}

fn labels(t: &Table, i: usize) -> &Vec<String> {
    match &t.columns[i].data {
        ColumnData::Categorical(v) => v,
        _ => panic!("column {i} is categorical"),
    }
}

fn numbers(t: &Table, i: usize) -> &Vec<f64> {
    match &t.columns[i].data {
        ColumnData::Continuous { values, .. } => values,
        _ => panic!("column {i} is continuous"),
    }
}

use gent::fidelity::score::w1;

/// Per-service W1 of log durations, weighted by the real service frequency.
fn duration_w1(real: &Table, synthetic: &Table) -> f64 {
    let group = |t: &Table| {
        let mut by: HashMap<String, Vec<f64>> = HashMap::new();
        for (s, d) in labels(t, 0).iter().zip(numbers(t, 2)) {
            by.entry(s.clone()).or_default().push(d.ln_1p());
        }
        by
    };
    let (r, s) = (group(real), group(synthetic));
    let total = real.rows() as f64;
    r.iter()
        .map(|(service, values)| {
            let weight = values.len() as f64 / total;
            match s.get(service) {
                Some(syn) if syn.len() >= 5 => weight * w1(values, syn),
                // A service the model never produces: charge the spread of its durations.
                _ => weight * w1(values, &[0.0]),
            }
        })
        .sum()
}

/// Total variation between the (service, span name) frequencies.
fn joint_tv(real: &Table, synthetic: &Table) -> f64 {
    let freq = |t: &Table| {
        let mut f: HashMap<(String, String), f64> = HashMap::new();
        for (s, n) in labels(t, 0).iter().zip(labels(t, 1)) {
            *f.entry((s.clone(), n.clone())).or_default() += 1.0 / t.rows() as f64;
        }
        f
    };
    let (r, s) = (freq(real), freq(synthetic));
    let keys: std::collections::HashSet<_> = r.keys().chain(s.keys()).collect();
    0.5 * keys.into_iter().map(|k| (r.get(k).unwrap_or(&0.0) - s.get(k).unwrap_or(&0.0)).abs()).sum::<f64>()
}

/// Total variation between the frequencies of categorical column `i`.
fn marginal_tv(real: &Table, synthetic: &Table, i: usize) -> f64 {
    fn freq(t: &Table, i: usize) -> HashMap<&String, f64> {
        let mut f: HashMap<&String, f64> = HashMap::new();
        for v in labels(t, i) {
            *f.entry(v).or_default() += 1.0 / t.rows() as f64;
        }
        f
    }
    let (r, s) = (freq(real, i), freq(synthetic, i));
    let keys: std::collections::HashSet<_> = r.keys().chain(s.keys()).collect();
    0.5 * keys.into_iter().map(|k| (r.get(*k).unwrap_or(&0.0) - s.get(*k).unwrap_or(&0.0)).abs()).sum::<f64>()
}

/// Every column sampled on its own from its empirical marginal.
fn independent_baseline(real: &Table, rows: usize, seed: u64) -> Table {
    let mut rng = StdRng::seed_from_u64(seed);
    let columns = real
        .columns
        .iter()
        .map(|c| {
            let n = c.len();
            let picks: Vec<usize> = (0..rows).map(|_| rng.random_range(0..n)).collect();
            match &c.data {
                ColumnData::Categorical(v) => Column::categorical(&c.name, picks.iter().map(|&i| v[i].clone()).collect()),
                ColumnData::Continuous { values, log } => {
                    Column::continuous(&c.name, picks.iter().map(|&i| values[i]).collect(), *log)
                }
            }
        })
        .collect();
    Table::new(columns).unwrap()
}

fn main() {
    let real = span_table(20_000);
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (epochs, width) = (arg(1, 10), arg(2, 256));
    let backend = std::env::args().nth(3).unwrap_or_else(|| "flex".into());
    #[allow(deprecated)] // ndarray is deprecated in burn 0.22 but measured here against flex
    let device = match backend.as_str() {
        "ndarray" => Device::ndarray(),
        _ => Device::flex(),
    };
    let learning_rate = std::env::args().nth(4).and_then(|a| a.parse().ok()).unwrap_or(2e-4);
    let batch = arg(5, 500);
    let config = CtganConfig {
        epochs,
        batch,
        seed: 7,
        learning_rate,
        generator: vec![width, width],
        critic: vec![width, width],
        ..CtganConfig::default()
    };
    let started = Instant::now();
    let model = Ctgan::fit(&real, None, config, &device).unwrap();
    let trained = started.elapsed();
    let started = Instant::now();
    let synthetic = model.sample(real.rows(), None, 11).unwrap();
    let sampled = started.elapsed();
    let baseline = independent_baseline(&real, real.rows(), 3);
    let (w_model, w_base) = (duration_w1(&real, &synthetic), duration_w1(&real, &baseline));
    let (tv_model, tv_base) = (joint_tv(&real, &synthetic), joint_tv(&real, &baseline));
    println!(
        "{backend} | rows {} | training {:.1} s | sampling {:.2} s | per-service log-duration W1: ctgan {w_model:.3}, independent {w_base:.3} | (service, name) TV: ctgan {tv_model:.3}, independent {tv_base:.3}",
        real.rows(),
        trained.as_secs_f64(),
        sampled.as_secs_f64()
    );
    let (f32_bytes, f16_bytes) = (
        model.to_bytes(gent::nn::weights::Precision::F32).unwrap().len(),
        model.to_bytes(gent::nn::weights::Precision::F16).unwrap().len(),
    );
    println!("stored model: {f32_bytes} bytes with f32 weights, {f16_bytes} bytes with f16 weights");
    let real_pairs: std::collections::HashSet<(&String, &String)> = labels(&real, 0).iter().zip(labels(&real, 1)).collect();
    let valid = labels(&synthetic, 0).iter().zip(labels(&synthetic, 1)).filter(|p| real_pairs.contains(p)).count();
    println!(
        "diagnostics | pairs seen in the real data {:.3} | service TV {:.3} | name TV {:.3}",
        valid as f64 / synthetic.rows() as f64,
        marginal_tv(&real, &synthetic, 0),
        marginal_tv(&real, &synthetic, 1)
    );
    let met = w_model < 0.8 * w_base && tv_model < 0.1;
    println!("thresholds (W1 < 0.8 x baseline, TV < 0.1): {}", if met { "met" } else { "not met" });
    if !met {
        std::process::exit(1);
    }
}
