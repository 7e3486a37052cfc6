//! Reader throughput on the TrainTicket hour-12 files (60 one-minute files),
//! in spans decoded per second on one core.
//!
//! - `span-csv-gz`: `io::read_file` on each `.csv.gz` file, so reading the
//!   (page-cached) file and gunzip are included.
//! - `otlp-proto`, `otlp-json`, `jaeger`: the same spans written once by gent's
//!   writers, then decoded from memory.
//!
//! Run: `cargo bench --bench readers` (set GENT_DATA to use another data folder).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gent::io::{self, Format, OutputFormat};
use gent::trace::{self, Span};

fn data_dir() -> PathBuf {
    std::env::var_os("GENT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

fn hour_12_files() -> Vec<PathBuf> {
    let dir = data_dir().join("trainticket");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("12_"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 60, "expected 60 hour-12 files in {}", dir.display());
    files
}

fn read_all(files: &[PathBuf]) -> Vec<Span> {
    let mut spans = Vec::new();
    for file in files {
        io::read_file(file, None, &mut spans).unwrap();
    }
    spans
}

fn readers(c: &mut Criterion) {
    let files = hour_12_files();
    let spans = read_all(&files);
    let rows = spans.len() as u64;
    let set = trace::assemble(spans);

    let mut group = c.benchmark_group("readers");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));

    group.throughput(Throughput::Elements(rows));
    group.bench_function("span-csv-gz", |b| {
        b.iter(|| {
            let spans = read_all(&files);
            assert_eq!(spans.len() as u64, rows);
            spans
        })
    });

    for (name, to, from) in [
        ("otlp-proto", OutputFormat::OtlpProto, Format::OtlpProto),
        ("otlp-json", OutputFormat::OtlpJson, Format::OtlpJson),
        ("jaeger", OutputFormat::Jaeger, Format::Jaeger),
    ] {
        let mut bytes = Vec::new();
        io::write_traces(&set.traces, to, &mut bytes).unwrap();
        let unique = set.span_count() as u64;
        group.throughput(Throughput::Elements(unique));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut spans = Vec::with_capacity(unique as usize);
                io::decode(&bytes, from, &mut spans).unwrap();
                assert_eq!(spans.len() as u64, unique);
                spans
            })
        });
    }
    group.finish();
}

criterion_group!(benches, readers);
criterion_main!(benches);
