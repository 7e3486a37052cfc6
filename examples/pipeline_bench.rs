//! End-to-end benchmark of the pipeline on loopback: TrainTicket hour 16
//! replayed over OTLP/gRPC as fast as the compressor takes it, every window
//! trained (Gen-T defaults unless told), shipped over the link and regenerated
//! into OTLP JSON files by the decompressor — all in this process, on this
//! machine's cores.
//!
//! cargo run --release --example pipeline_bench [LOOPS] [WINDOW_TRACES] [EPOCHS] [MAX_STEPS]
//!
//! Prints: replay (ingest) spans/s; sustained spans/s from the first span sent
//! to the last window exported; per-window close→export latency; link bytes
//! against gzip-compressed OTLP of the same windows.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gent::config::{CompressorConfig, DecompressorConfig, FileExporterConfig, FileFormat, LinkClientConfig, PipelineConfig};
use gent::otlp::replay::{ReplayOptions, ReplayProtocol};
use tokio::sync::mpsc;

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let loops: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let window_traces: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let epochs: Option<usize> = args.get(3).and_then(|s| s.parse().ok());
    let max_steps: Option<usize> = args.get(4).and_then(|s| s.parse().ok());
    let files: Vec<_> = (0..60).map(|m| format!("../shared/data/trainticket/16_{m:02}_trace.csv.gz").into()).collect();
    let set = gent::trace::assemble(gent::io::read_inputs(&files, None).expect("TrainTicket hour 16").spans);
    let dir = tempfile::tempdir().unwrap();

    let mut d_config = DecompressorConfig::default();
    d_config.link.listen = local();
    d_config.link.token = Some("bench".into());
    d_config.metrics.endpoint = None;
    d_config.exporters.files = vec![FileExporterConfig { dir: dir.path().join("out"), format: FileFormat::OtlpJson }];
    let (delivered_tx, mut delivered_rx) = mpsc::unbounded_channel();
    let d = gent::pipeline::decompressor::start(d_config, Some(delivered_tx)).await.unwrap();

    let mut pipeline = PipelineConfig {
        link: LinkClientConfig {
            endpoint: format!("http://{}", d.link),
            token: Some("bench".into()),
            spool_dir: dir.path().join("spool"),
            drain_timeout: Duration::from_secs(600),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(e) = epochs {
        pipeline.model.ctgan.epochs = e;
    }
    if max_steps.is_some() {
        pipeline.model.ctgan.max_steps = max_steps;
    }
    let mut c_config = CompressorConfig::default();
    c_config.receiver.grpc = Some(local());
    c_config.receiver.http = None;
    c_config.metrics.endpoint = None;
    c_config.window.max_traces = window_traces;
    c_config.window.duration = Duration::from_secs(3600);
    c_config.pipeline = Some(pipeline);
    let (shipped_tx, mut shipped_rx) = mpsc::unbounded_channel();
    let c = gent::pipeline::compressor::start_with(c_config, Some(shipped_tx)).await.unwrap();

    let started = Instant::now();
    let options = ReplayOptions {
        endpoint: format!("http://{}", c.grpc.unwrap()),
        protocol: ReplayProtocol::Grpc,
        rate: None,
        loops,
        batch_spans: 1000,
        concurrency: 2,
    };
    let report = gent::otlp::replay::replay(&set.traces, &options).await.unwrap();
    c.shutdown().await.unwrap();
    let total = started.elapsed().as_secs_f64();
    d.shutdown().await.unwrap();

    let mut shipped = Vec::new();
    while let Ok(s) = shipped_rx.try_recv() {
        shipped.push(s);
    }
    let mut delivered = Vec::new();
    while let Ok(x) = delivered_rx.try_recv() {
        delivered.push(x);
    }
    assert_eq!(shipped.len(), delivered.len(), "every window delivered");
    let spans: u64 = shipped.iter().map(|s| s.spans as u64).sum();
    let packet: u64 = shipped.iter().map(|s| s.packet_bytes).sum();
    let gzip: u64 = shipped.iter().map(|s| s.gzip_bytes).sum();
    let mut lags: Vec<f64> = delivered.iter().map(|d| d.lag_seconds).collect();
    lags.sort_by(f64::total_cmp);
    let train: f64 = shipped.iter().map(|s| s.train_seconds).sum::<f64>() / shipped.len() as f64;
    let kinds: Vec<&str> = shipped.iter().map(|s| s.kind.as_str()).collect();
    let fidelity: Vec<String> = shipped.iter().map(|s| s.fidelity.map_or("-".into(), |f| format!("{f:.3}"))).collect();
    println!("windows: {} ({kinds:?}), {spans} spans, fidelity per window {fidelity:?}", shipped.len());
    println!(
        "replay into the compressor: {:.0} spans/s ({} spans in {:.1} s)",
        report.spans_per_second, report.spans_sent, report.seconds
    );
    println!(
        "end to end (first span sent to last window exported): {:.1} s, {:.0} spans/s sustained",
        total,
        spans as f64 / total
    );
    println!(
        "window close -> regenerated spans exported: median {:.1} s, max {:.1} s (training {:.1} s per window on average)",
        lags[lags.len() / 2],
        lags[lags.len() - 1],
        train
    );
    println!(
        "link bytes {packet} vs gzip OTLP {gzip}: {:.2}% ({:.1}x smaller)",
        100.0 * packet as f64 / gzip as f64,
        gzip as f64 / packet as f64
    );
}
