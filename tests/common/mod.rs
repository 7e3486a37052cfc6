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
