//! The heap a window's close takes, stage by stage, as the compressor runs
//! it (pipeline defaults): the digest folded, its samples unpacked, training,
//! packing and the self-evaluation. The window is the given trace files
//! replayed LOOPS times with fresh trace ids. Counts every byte allocated
//! (not resident memory: the allocator's own overhead is not in it).
//!
//! cargo run --release --example close_memory LOOPS FILE...
//!
//! Prints, per stage, the heap held after it and its peak during it (MB over
//! the heap before the window).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// The system allocator, counting the bytes held and their peak.
struct Counting;
static NOW: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = NOW.fetch_add(l.size() as isize, Relaxed) + l.size() as isize;
        PEAK.fetch_max(n, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size() as isize, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, s: usize) -> *mut u8 {
        let n = NOW.fetch_add(s as isize - l.size() as isize, Relaxed) + s as isize - l.size() as isize;
        PEAK.fetch_max(n, Relaxed);
        unsafe { System.realloc(p, l, s) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn mb(x: isize) -> f64 {
    x as f64 / 1048576.0
}

/// Prints the heap now and its peak since the last stage; starts the next.
fn stage(name: &str, base: isize) {
    println!("{name:<28} now {:>8.1} MB  peak {:>8.1} MB", mb(NOW.load(Relaxed) - base), mb(PEAK.load(Relaxed) - base));
    PEAK.store(NOW.load(Relaxed), Relaxed);
}

fn main() {
    let usage = "usage: close_memory LOOPS FILE...";
    let loops: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).expect(usage);
    let files: Vec<std::path::PathBuf> = std::env::args().skip(2).map(Into::into).collect();
    assert!(!files.is_empty(), "{usage}");
    let set = gent::trace::assemble(gent::io::read_inputs(&files, None).unwrap().spans);
    let base_traces = set.traces;
    let config = gent::config::PipelineConfig::default();
    let dc = gent::pipeline::ship::digest_config(&config, gent::config::WindowConfig::default().duration);
    let base = NOW.load(Relaxed);

    PEAK.store(base, Relaxed);
    let mut digest = gent::gent::Digest::new(dc);
    for l in 0..loops {
        for t in &base_traces {
            let mut t = t.clone();
            t.trace_id[0..4].copy_from_slice(&l.to_le_bytes());
            for s in &mut t.spans {
                s.trace_id = t.trace_id;
            }
            digest.add(t);
        }
    }
    println!("spans {}; the samples hold {} of the span budget", digest.spans(), digest.held_spans());
    stage("digest filled", base);
    let digest = digest.finish();
    stage("finish (unpacked)", base);
    let sp = |t: &[gent::trace::Trace]| t.iter().map(|t| t.spans.len()).sum::<usize>();
    println!(
        "share rate {} traces {} spans {}; rare traces {} spans {}; topologies {}",
        digest.share_rate,
        digest.shared,
        sp(digest.share()),
        digest.fitted.len() - digest.shared,
        sp(&digest.fitted[digest.shared..]),
        digest.histogram.topologies.len()
    );
    let device = burn::tensor::Device::flex();
    let model = gent::gent::WindowModel::train_digest(&digest, &config.model, &device, None).unwrap();
    stage("trained", base);
    let packet = gent::codec::pack(&model, 1, &config.model, gent::nn::weights::Precision::F16, 1, None).unwrap();
    drop(model);
    stage("packed", base);
    let mut digest = digest;
    let e = gent::pipeline::ship::self_evaluate(&mut digest, &packet, &device).unwrap();
    stage("self-evaluated", base);
    println!("fidelity {:.3} of {} spans scored", e.fidelity, e.scored_spans);
}
