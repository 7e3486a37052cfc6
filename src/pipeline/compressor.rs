//! The compressor daemon: receivers → budgeted queue → window assembler → sink,
//! plus `/metrics`. Shutdown stops the receivers first (finishing requests in
//! flight), then flushes the open windows through the sink, so nothing accepted
//! is lost, and stops `/metrics` last.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::lifecycle::{serve_metrics, signal, wait_for_signal};
use super::ship::{ShipSink, Shipped};
use crate::config::CompressorConfig;
use crate::metrics::{Metrics, MetricsError, Readiness};
use crate::packet::sender::{self, SenderError, SenderSettings, Stop};
use crate::packet::spool::Spool;
use crate::receiver::{self, Ingest, ReceiverError};
use crate::window::{self, Assembler, Budget, DiscardSink, FoldConfig, FoldError, Folder, WindowSink};

#[derive(Debug, thiserror::Error)]
pub enum CompressorError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("a compressor task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Spool(#[from] crate::packet::spool::SpoolError),
    #[error(transparent)]
    Token(#[from] crate::packet::TokenError),
    #[error(transparent)]
    Link(#[from] crate::packet::link::LinkError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("backend: {0}")]
    Backend(#[from] crate::nn::BackendError),
}

/// The pipeline's link half: the spool and the task draining it.
struct Link {
    spool: Arc<Spool>,
    sender: JoinHandle<Result<(), SenderError>>,
    drain: watch::Sender<bool>,
    abandon: watch::Sender<bool>,
    drain_timeout: std::time::Duration,
}

/// A running compressor and where it listens (useful with port 0).
pub struct Running {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Metrics,
    pub budget: Budget,
    stop_receivers: watch::Sender<bool>,
    stop_metrics: watch::Sender<bool>,
    receivers: Vec<JoinHandle<Result<(), ReceiverError>>>,
    assembler: JoinHandle<()>,
    sink: std::thread::JoinHandle<()>,
    metrics_server: Option<JoinHandle<std::io::Result<()>>>,
    link: Option<Link>,
}

async fn bind(addr: SocketAddr, protocol: &'static str) -> Result<TcpListener, ReceiverError> {
    TcpListener::bind(addr).await.map_err(|source| ReceiverError::Bind { protocol, addr, source })
}

/// Binds every listener and starts every task.
pub async fn start(config: CompressorConfig) -> Result<Running, CompressorError> {
    start_with(config, None).await
}

/// [`start`], telling `reports` what became of every window.
pub async fn start_with(
    config: CompressorConfig,
    reports: Option<mpsc::UnboundedSender<Shipped>>,
) -> Result<Running, CompressorError> {
    let metrics = Metrics::new()?;
    let budget = Budget::new(config.window.span_budget, metrics.resident_spans.clone());
    metrics.span_budget.set(config.window.span_budget as i64);

    let mut fold = FoldConfig { json_dir: config.sink.otlp_json_dir.clone(), ..FoldConfig::default() };
    let mut link = None;
    let sink: Box<dyn WindowSink> = match &config.pipeline {
        Some(p) => {
            let device = p.backend.device()?;
            let spool = Arc::new(Spool::open(&p.link.spool_dir, p.link.spool_max_bytes, Some(metrics.pipeline.clone()))?);
            let settings =
                SenderSettings { link: p.link.settings()?, retry_initial: p.link.retry_initial, retry_max: p.link.retry_max };
            // Fails now, not at the first window, on a bad endpoint or CA file.
            crate::packet::link::channel(&settings.link)?;
            let (drain, drain_rx) = watch::channel(false);
            let (abandon, abandon_rx) = watch::channel(false);
            let stop = Stop { drain: drain_rx, abandon: abandon_rx };
            let sender = tokio::spawn(sender::run(spool.clone(), settings, metrics.pipeline.clone(), stop));
            let producer = super::ship::producer_name(p.link.producer.as_deref());
            tracing::info!(producer, endpoint = p.link.endpoint, "shipping window models over the link");
            link = Some(Link { spool: spool.clone(), sender, drain, abandon, drain_timeout: p.link.drain_timeout });
            fold.digest = Some(super::ship::digest_config(p, config.window.duration));
            fold.conditions = p.call_graph_conditions;
            let duration = config.window.duration;
            Box::new(ShipSink::new(p.clone(), device, spool, producer, metrics.pipeline.clone(), reports, duration))
        }
        None => Box::new(DiscardSink),
    };
    let folder = Folder::new(fold, budget.clone(), metrics.clone())?;
    // Room for a few batches of completed traces: their spans stay counted
    // against the budget, which bounds what waits here.
    let (window_tx, window_rx) = mpsc::channel(16);
    let sink = window::spawn(folder, sink, window_rx, metrics.clone(), config.window.duration)?;
    let (queue_tx, queue_rx) = mpsc::unbounded_channel();
    let assembler = Assembler::new(config.window.clone(), budget.clone(), metrics.clone());
    let assembler = tokio::spawn(assembler.run(queue_rx, window_tx));

    let (stop_receivers, stop_rx) = watch::channel(false);
    let ingest = Ingest::new(config.receiver.clone(), budget.clone(), queue_tx, metrics.clone());
    let mut receivers = Vec::new();
    let mut grpc = None;
    if let Some(addr) = config.receiver.grpc {
        let listener = bind(addr, "grpc").await?;
        grpc = Some(listener.local_addr().unwrap_or(addr));
        receivers.push(tokio::spawn(receiver::serve_grpc(Arc::clone(&ingest), listener, signal(&stop_rx))));
    }
    let mut http = None;
    if let Some(addr) = config.receiver.http {
        let listener = bind(addr, "http").await?;
        http = Some(listener.local_addr().unwrap_or(addr));
        receivers.push(tokio::spawn(receiver::serve_http(Arc::clone(&ingest), listener, signal(&stop_rx))));
    }
    // The servers now hold the only handles on the queue: when they stop, it closes.
    drop(ingest);

    let (stop_metrics, metrics_rx) = watch::channel(false);
    let ready = readiness(stop_rx.clone(), budget.clone(), config.receiver.max_spans_per_request, link.as_ref());
    let stats = metrics.connections.stats("metrics");
    let (metrics_addr, metrics_server) =
        serve_metrics(config.metrics.endpoint, metrics.registry.clone(), ready, stats, &metrics_rx).await?;
    tracing::info!(?grpc, ?http, metrics = ?metrics_addr, "compressor listening");
    Ok(Running {
        grpc,
        http,
        metrics_addr,
        metrics,
        budget,
        stop_receivers,
        stop_metrics,
        receivers,
        assembler,
        sink,
        metrics_server,
        link,
    })
}

/// `/readyz` for the compressor. The receivers are bound before it serves; it is
/// not ready while shutting down, while a full-size request would be refused for
/// want of span budget, or while the spool cannot take a packet.
fn readiness(stopping: watch::Receiver<bool>, budget: Budget, max_request: usize, link: Option<&Link>) -> Readiness {
    let spool = link.map(|l| l.spool.clone());
    Arc::new(move || {
        if *stopping.borrow() {
            return Err("shutting down".into());
        }
        let free = budget.free();
        if free < max_request.min(budget.total()) {
            return Err(format!("span budget spent ({} of {} spans held); retry later", budget.resident(), budget.total()));
        }
        spool.as_ref().map_or(Ok(()), |s| s.check_writable())
    })
}

impl Running {
    /// Stops receiving, flushes every open window through the sink, then stops
    /// serving metrics.
    pub async fn shutdown(self) -> Result<(), CompressorError> {
        let _ = self.stop_receivers.send(true);
        // The last windows must not wait for room in a full spool.
        if let Some(link) = &self.link {
            link.spool.close();
        }
        let mut first_error = None;
        for task in self.receivers {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_error = first_error.or(Some(CompressorError::Receiver(e))),
                Err(e) => first_error = first_error.or(Some(CompressorError::Task(e.to_string()))),
            }
        }
        if let Err(e) = self.assembler.await {
            first_error = first_error.or(Some(CompressorError::Task(e.to_string())));
        }
        let sink = self.sink;
        if tokio::task::spawn_blocking(move || sink.join()).await.map_or(true, |r| r.is_err()) {
            first_error = first_error.or(Some(CompressorError::Task("the sink thread panicked".into())));
        }
        if let Some(link) = self.link {
            if let Err(e) = link.finish().await {
                first_error = first_error.or(Some(e));
            }
        }
        let _ = self.stop_metrics.send(true);
        if let Some(server) = self.metrics_server {
            let _ = server.await;
        }
        tracing::info!("compressor stopped; every accepted span was flushed");
        first_error.map_or(Ok(()), Err)
    }
}

impl Link {
    /// Delivers what is spooled within the drain timeout; the rest stays on
    /// disk and goes first at the next start.
    async fn finish(mut self) -> Result<(), CompressorError> {
        let _ = self.drain.send(true);
        let outcome = match tokio::time::timeout(self.drain_timeout, &mut self.sender).await {
            Ok(joined) => joined,
            Err(_) => {
                let _ = self.abandon.send(true);
                self.sender.await
            }
        };
        let left = self.spool.len();
        if left > 0 {
            tracing::warn!(packets = left, "decompressor unreachable: packets stay spooled for the next start");
        }
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CompressorError::Task(e.to_string())),
            Err(e) => Err(CompressorError::Task(e.to_string())),
        }
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: CompressorConfig) -> Result<(), CompressorError> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: flushing open windows");
    running.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_while_stopping_or_without_room_for_a_full_request() {
        let gauge = prometheus::IntGauge::new("resident", "test").unwrap();
        let budget = Budget::new(100, gauge);
        let (stop, stopping) = watch::channel(false);
        let ready = readiness(stopping, budget.clone(), 40, None);
        assert_eq!(ready(), Ok(()));
        let held = budget.try_reserve(61).unwrap();
        assert!(ready().unwrap_err().contains("span budget spent (61 of 100"), "{:?}", ready());
        drop(held);
        assert_eq!(ready(), Ok(()));
        stop.send(true).unwrap();
        assert_eq!(ready(), Err("shutting down".into()));
    }
}
