//! The fold thread's work, timed alone: the given trace files replayed LOOPS
//! times with fresh trace ids through the assembler (as the receivers hand
//! spans on, in 512-span batches), then each loop's completed traces folded
//! as the compressor folds them (pipeline defaults, 60 s windows). Prints the
//! fold's CPU seconds per million spans, and the close (digest finish).
//!
//! cargo run --release --example fold_bench LOOPS FILE...
use std::time::{Duration, Instant};

use gent::window::{Assembler, Batch, Budget, FoldConfig, Folder, WindowConfig, WindowEvent};

fn main() {
    let usage = "usage: fold_bench LOOPS FILE...";
    let loops: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).expect(usage);
    let files: Vec<std::path::PathBuf> = std::env::args().skip(2).map(Into::into).collect();
    assert!(!files.is_empty(), "{usage}");
    let spans = gent::io::read_inputs(&files, None).unwrap().spans;
    let metrics = gent::metrics::Metrics::new().unwrap();
    let budget = Budget::new(usize::MAX >> 8, metrics.resident_spans.clone());
    let window = WindowConfig {
        duration: Duration::from_secs(3600),
        trace_idle: Duration::from_secs(1),
        max_traces: usize::MAX,
        max_spans: usize::MAX,
        ..WindowConfig::default()
    };
    let pipeline = gent::config::PipelineConfig::default();
    let fold = FoldConfig {
        digest: Some(gent::pipeline::ship::digest_config(&pipeline, Duration::from_secs(60))),
        ..Default::default()
    };
    let mut folder = Folder::new(fold, budget.clone(), metrics.clone()).unwrap();
    let mut assembler = Assembler::new(window, budget.clone(), metrics);
    let (mut folding, mut total) = (Duration::ZERO, 0usize);
    let t0 = Instant::now();
    for l in 0..loops {
        for chunk in spans.chunks(512) {
            let mut chunk = chunk.to_vec();
            for s in &mut chunk {
                s.trace_id[0..4].copy_from_slice(&l.to_le_bytes());
            }
            let held = budget.try_reserve(chunk.len()).unwrap();
            assert!(assembler.accept(Batch { spans: chunk, held }, t0).is_empty());
        }
        total += spans.len();
        let Some(WindowEvent::Completed(c)) = assembler.tick(t0 + Duration::from_secs(2)) else { panic!("nothing completed") };
        let started = Instant::now();
        folder.fold(c);
        folding += started.elapsed();
    }
    let Some(WindowEvent::Closed(raw)) = assembler.flush().into_iter().next() else { panic!("no window") };
    let started = Instant::now();
    let closed = folder.close(raw);
    let closing = started.elapsed();
    println!(
        "spans {total} ({} folded): fold {:.3} s per million spans; close {:.2} s",
        closed.spans,
        folding.as_secs_f64() / total as f64 * 1e6,
        closing.as_secs_f64()
    );
}
