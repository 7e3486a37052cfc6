//! CTGAN quality on real data (issue 4's acceptance measure; the test suite
//! runs it at 40 epochs, `tests/ctgan.rs`): a table of TrainTicket hour-12 spans
//! (service, span name, log duration, gap from parent) is learned and sampled,
//! and compared with a baseline that samples every column independently.
//! Prints the figures; exits 1 when the thresholds (duration W1 below 0.8 ×
//! the baseline's, joint TV below 0.1) are not met.
//!
//! Run: `cargo run --release --example ctgan_quality [EPOCHS] [WIDTH] [flex|ndarray] [LEARNING_RATE] [BATCH] [CATEGORY_LOSS]`

use std::path::PathBuf;

fn data(rel: &str) -> PathBuf {
    let root = std::env::var_os("GENT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    root.join(rel)
}

use std::time::Instant;

use burn::tensor::Device;
use gent::nn::{Ctgan, CtganConfig};
use gent::tabular::quality;

/// One row per span of the first `rows` spans of hour 12 (in trace order).
fn span_table(rows: usize) -> gent::tabular::Table {
    let paths: Vec<_> = (0..60).map(|m| data(&format!("trainticket/12_{m:02}_trace.csv.gz"))).collect();
    let input = gent::io::read_inputs(&paths, None).unwrap_or_else(|e| panic!("{e}"));
    quality::span_table(&gent::trace::assemble(input.spans), rows).unwrap()
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
    let category_loss = std::env::args().nth(6).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let config = CtganConfig {
        epochs,
        batch,
        seed: 7,
        learning_rate,
        category_loss,
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
    let baseline = quality::independent_columns(&real, real.rows(), 3);
    let w1 = |t: &gent::tabular::Table| quality::grouped_w1(&real, t, 0, 2, f64::ln_1p);
    let (w_model, w_base) = (w1(&synthetic), w1(&baseline));
    let (tv_model, tv_base) = (quality::tv(&real, &synthetic, &[0, 1]), quality::tv(&real, &baseline, &[0, 1]));
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
    println!(
        "diagnostics | pairs seen in the real data {:.3} | service TV {:.3} | name TV {:.3}",
        quality::seen_combinations(&real, &synthetic, &[0, 1]),
        quality::tv(&real, &synthetic, &[0]),
        quality::tv(&real, &synthetic, &[1])
    );
    let met = w_model < 0.8 * w_base && tv_model < 0.1;
    println!("thresholds (W1 < 0.8 x baseline, TV < 0.1): {}", if met { "met" } else { "not met" });
    if !met {
        std::process::exit(1);
    }
}
