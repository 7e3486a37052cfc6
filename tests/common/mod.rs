//! Helpers shared by the integration tests: paths to the real data, and reading.
#![allow(dead_code)]

use std::path::PathBuf;

use gent::io::{self, Format};
use gent::trace::{self, TraceSet};

/// `<data>/<rel>`, where `<data>` is `$GENT_DATA` or else `../shared/data` beside
/// the crate. Tests fail, never skip, when the data is missing.
pub fn data(rel: &str) -> PathBuf {
    let root = std::env::var_os("GENT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let path = root.join(rel);
    assert!(path.exists(), "test data missing: {} (see ../shared/data/README.md)", path.display());
    path
}

/// Every fixture file with the format it must be read as.
pub fn fixtures() -> Vec<(PathBuf, Format)> {
    let mut files = Vec::new();
    for (folder, format) in
        [("fixtures/otlp", Format::OtlpJson), ("fixtures/jaeger", Format::Jaeger), ("fixtures/zipkin", Format::Zipkin)]
    {
        for entry in std::fs::read_dir(data(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json" || e == "jsonl") {
                files.push((path, format));
            }
        }
    }
    files.push((data("trainticket/12_00_trace.csv.gz"), Format::SpanCsv));
    files.push((data("hipster/03_57_trace.csv.gz"), Format::SpanCsv));
    files.push((data("alibaba/callgraphs_train.txt"), Format::Alibaba));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(files.len() >= 20, "expected the 12 Jaeger, 4 Zipkin and 1 OTLP fixtures");
    files
}

pub fn read_set(paths: &[PathBuf]) -> TraceSet {
    let input = io::read_inputs(paths, None).unwrap_or_else(|e| panic!("{e}"));
    trace::assemble(input.spans)
}

pub fn gent() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_gent"))
}

/// Gen-T settings small enough for tests: one epoch, 16-wide networks.
pub fn tiny_model() -> gent::gent::GenTConfig {
    let mut m = gent::gent::GenTConfig::default();
    m.ctgan.epochs = 1;
    m.ctgan.embedding = 16;
    m.ctgan.generator = vec![16];
    m.ctgan.critic = vec![16];
    m.ctgan.graph_embedding = 8;
    m.ctgan.batch = 100;
    m
}

/// The largest peak RSS of any child process waited for so far, MiB.
pub fn children_peak_mib() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    usage.ru_maxrss as f64 / 1024.0
}

/// A language model of a few pre-training steps on `graphs` (any weights decode
/// to valid graphs under constraints): d_model 32, one layer, two heads, hidden 64.
pub fn tiny_language_model(graphs: &[gent::llm::CallGraph], steps: usize) -> gent::llm::model::LanguageModel {
    use gent::llm::model::{Encoding, LanguageModel, Pretraining};
    use gent::nn::lm::{LmConfig, TrainConfig};
    let tiny = |vocab| LmConfig { d_model: 32, layers: 1, heads: 2, hidden: 64, max_len: 256, ..LmConfig::tiny(vocab) };
    let p = Pretraining {
        encoding: Encoding::Layers,
        size: tiny,
        train: TrainConfig { steps, batch: 2, learning_rate: 1e-3, seed: 3 },
        p_drop: 0.5,
        max_ids: gent::llm::model::DEFAULT_MAX_IDS,
        held_back: 0.0,
    };
    let device = gent::nn::Backend::Cpu.device().unwrap();
    LanguageModel::pretrain(graphs, &p, &device).unwrap().0
}
