//! `gent demo`: the whole pipeline in one process on loopback, with built-in
//! defaults. A decompressor (link with a bearer token, file exporters) and a
//! compressor (OTLP/gRPC receiver, training, self-evaluation, spool, sender)
//! start on free ports; the bundled TrainTicket sample is replayed into the
//! compressor over OTLP; every window is trained, shipped and regenerated; and a
//! line per window says what it cost and where its traces went.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{
    CompressorConfig, DecompressorConfig, ExportersConfig, FileExporterConfig, FileFormat, LinkClientConfig, LinkServerConfig,
    MetricsConfig, PipelineConfig, ReceiverConfig, SinkConfig, WindowConfig,
};
use crate::otlp::replay::{ReplayOptions, ReplayProtocol};
use crate::pipeline::decompressor::Delivered;
use crate::pipeline::ship::Shipped;

/// The bundled sample (data/sample, TrainTicket hour 16, two minutes), built
/// into the binary so the demo runs from any folder.
const SAMPLE: [(&str, &[u8]); 2] = [
    ("16_00_trace.csv.gz", include_bytes!("../../data/sample/16_00_trace.csv.gz")),
    ("16_01_trace.csv.gz", include_bytes!("../../data/sample/16_01_trace.csv.gz")),
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Read(#[from] crate::io::IoError),
    #[error(transparent)]
    Compressor(#[from] crate::pipeline::compressor::CompressorError),
    #[error(transparent)]
    Decompressor(#[from] crate::pipeline::decompressor::DecompressorError),
    #[error(transparent)]
    Replay(#[from] crate::otlp::replay::ReplayError),
    #[error("window {0} was shipped but never delivered")]
    Undelivered(u64),
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where regenerated traces, the spool and the input copy go.
    pub out: PathBuf,
    /// Traces per window.
    pub window_traces: usize,
    /// Passes over the sample (fresh ids and times each pass).
    pub loops: u64,
    /// Training epochs per window.
    pub epochs: Option<usize>,
}

/// One window, both ends.
#[derive(Debug, Clone, Serialize)]
pub struct DemoWindow {
    pub shipped: Shipped,
    pub delivered: Delivered,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub windows: Vec<DemoWindow>,
    pub spans_in: u64,
    pub spans_regenerated: u64,
    pub packet_bytes: u64,
    pub gzip_bytes: u64,
    pub seconds: f64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io { path: path.into(), source }
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs the demo; every window's report arrives on `each` as it is delivered.
pub async fn run(o: &DemoOptions, mut each: impl FnMut(&DemoWindow)) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let input = o.out.join("input");
    std::fs::create_dir_all(&input).map_err(io_error(&input))?;
    for (name, bytes) in SAMPLE {
        let path = input.join(name);
        std::fs::write(&path, bytes).map_err(io_error(&path))?;
    }
    let set = crate::trace::assemble(crate::io::read_inputs(&[input], None)?.spans);

    // A fresh token each run: the link refuses anyone else.
    let token = format!("{:032x}", rand::random::<u128>());
    let exporters = ExportersConfig {
        otlp_grpc: None,
        otlp_http: None,
        files: vec![
            FileExporterConfig { dir: o.out.join("jaeger"), format: FileFormat::Jaeger },
            FileExporterConfig { dir: o.out.join("otlp"), format: FileFormat::OtlpJson },
        ],
    };
    let (delivered_tx, mut delivered_rx) = mpsc::unbounded_channel();
    let decompressor = crate::pipeline::decompressor::start(
        DecompressorConfig {
            link: LinkServerConfig { listen: loopback(), token: Some(token.clone()), ..Default::default() },
            exporters,
            metrics: MetricsConfig { endpoint: None },
            ..Default::default()
        },
        Some(delivered_tx),
    )
    .await?;

    let mut pipeline = PipelineConfig {
        link: LinkClientConfig {
            endpoint: format!("http://{}", decompressor.link),
            producer: Some("demo".into()),
            token: Some(token),
            spool_dir: o.out.join("spool"),
            drain_timeout: Duration::from_secs(60),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(e) = o.epochs {
        pipeline.model.ctgan.epochs = e;
    }
    let (shipped_tx, mut shipped_rx) = mpsc::unbounded_channel();
    let compressor = crate::pipeline::compressor::start_with(
        CompressorConfig {
            receiver: ReceiverConfig { grpc: Some(loopback()), http: None, ..Default::default() },
            window: WindowConfig {
                max_traces: o.window_traces,
                duration: Duration::from_secs(600),
                trace_idle: Duration::from_secs(1),
                ..Default::default()
            },
            sink: SinkConfig { otlp_json_dir: None },
            pipeline: Some(pipeline),
            metrics: MetricsConfig { endpoint: None },
        },
        Some(shipped_tx),
    )
    .await?;
    let grpc = compressor.grpc.map(|a| format!("http://{a}")).unwrap_or_default();
    let options = ReplayOptions {
        endpoint: grpc,
        protocol: ReplayProtocol::Grpc,
        rate: None,
        loops: o.loops,
        batch_spans: 500,
        concurrency: 2,
    };
    crate::otlp::replay::replay(&set.traces, &options).await?;
    // Shutdown closes the open windows, trains and ships them, and waits for the
    // link to deliver every packet.
    compressor.shutdown().await?;
    decompressor.shutdown().await?;

    let mut windows = Vec::new();
    let mut delivered = Vec::new();
    while let Ok(d) = delivered_rx.try_recv() {
        delivered.push(d);
    }
    while let Ok(s) = shipped_rx.try_recv() {
        let d = delivered.iter().position(|d| d.window_id == s.window_id).ok_or(DemoError::Undelivered(s.window_id))?;
        let window = DemoWindow { shipped: s, delivered: delivered.swap_remove(d) };
        each(&window);
        windows.push(window);
    }
    Ok(DemoReport {
        spans_in: windows.iter().map(|w| w.shipped.spans as u64).sum(),
        spans_regenerated: windows.iter().map(|w| w.delivered.spans as u64).sum(),
        packet_bytes: windows.iter().map(|w| w.shipped.packet_bytes).sum(),
        gzip_bytes: windows.iter().map(|w| w.shipped.gzip_bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
        windows,
    })
}
