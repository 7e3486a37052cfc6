//! The decompressor daemon: link server → verify → regenerate → exporters, plus
//! `/metrics`. A push is acknowledged only once every exporter has taken the
//! window, so a backend outage leaves the packet in the compressor's spool
//! rather than losing it; a repeated push of a delivered window is acknowledged
//! without exporting it twice.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::lifecycle::{serve_metrics, signal, wait_for_signal};
use crate::codec::{Engine, Origin};
use crate::config::{ConfigError, DecompressorConfig};
use crate::export::{self, ExportError, Exporter, WindowName};
use crate::metrics::{DecompressorMetrics, MetricsError, Readiness};
use crate::packet::link::{self, LinkError, PacketService, PayloadKind, PushRequest, PushResponse};
use crate::trace::Trace;

#[derive(Debug, thiserror::Error)]
pub enum DecompressorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Token(#[from] crate::packet::TokenError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("backend: {0}")]
    Backend(#[from] crate::nn::BackendError),
    #[error("a decompressor task failed: {0}")]
    Task(String),
    #[error("llm.model: engine llm needs a model file")]
    LlmMissing,
    #[error("llm.model {}: {source}", .path.display())]
    LlmRead { path: std::path::PathBuf, source: std::io::Error },
    #[error("llm.model {}: {source}", .path.display())]
    LlmModel { path: std::path::PathBuf, source: crate::llm::model::LanguageModelError },
    #[error("llm.model {}: a tabular-encoding model cannot decode under constraints; train it with --encoding layers", .0.display())]
    LlmEncoding(std::path::PathBuf),
}

/// One window delivered (for `gent demo` and tests).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivered {
    pub producer: String,
    pub window_id: u64,
    /// `model` (Gen-T regenerated), `llm` (a language model regenerated the call
    /// graphs) or `traces` (real traces: the whole window, or head-sampled).
    pub kind: Origin,
    /// Spans the compressor saw in the window.
    pub window_spans: u64,
    /// Traces and spans regenerated (or forwarded, for a traces payload).
    pub traces: usize,
    pub spans: usize,
    pub regenerate_seconds: f64,
    /// Seconds from the window's close at the compressor to the end of its export.
    pub lag_seconds: f64,
    /// Where each exporter put the window.
    pub outputs: Vec<String>,
}

impl Delivered {
    /// The window in the decompressor's metrics: each per-window counter is
    /// incremented here and nowhere else. `lag_seconds` is None when the
    /// compressor did not say when it closed the window.
    fn count(&self, m: &DecompressorMetrics, lag_seconds: Option<f64>) {
        m.regenerate_seconds.observe(self.regenerate_seconds);
        m.windows.with_label_values(&[self.kind.as_str()]).inc();
        m.window_spans.inc_by(self.window_spans);
        m.spans_regenerated.inc_by(self.spans as u64);
        if let Some(lag) = lag_seconds {
            m.lag_seconds.set(lag);
        }
    }

    fn log(&self) {
        tracing::info!(
            producer = self.producer,
            window = self.window_id,
            kind = self.kind.as_str(),
            traces = self.traces,
            spans = self.spans,
            regenerate_seconds = format!("{:.2}", self.regenerate_seconds),
            "window delivered"
        );
    }
}

/// Remembers delivered windows, the oldest forgotten first.
struct Seen {
    spans: HashMap<(String, u64), u64>,
    order: VecDeque<(String, u64)>,
    capacity: usize,
}

impl Seen {
    fn insert(&mut self, key: (String, u64), spans: u64) {
        if self.spans.insert(key.clone(), spans).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.spans.remove(&old);
            }
        }
    }
}

struct Handler {
    token: Option<String>,
    device: burn::tensor::Device,
    llm: Option<Arc<Mutex<LlmEngine>>>,
    exporters: Arc<Vec<Exporter>>,
    metrics: DecompressorMetrics,
    seen: Mutex<Seen>,
    /// One window regenerates at a time: memory stays bounded by one window.
    gate: Semaphore,
    /// Most spans one push may regenerate, and one trace of it
    /// (`link.max_window_spans`, `link.max_trace_spans`).
    max_spans: (u64, u64),
    reports: Option<mpsc::UnboundedSender<Delivered>>,
}

/// The language model of `engine: llm`, loaded once at start.
pub struct LlmEngine {
    model: crate::llm::model::LanguageModel,
    sampling: crate::llm::generate::Sampling,
    max_edges: u64,
}

impl LlmEngine {
    /// The engine `config` asks for (`None` for `engine: gent`).
    fn load(config: &DecompressorConfig, device: &burn::tensor::Device) -> Result<Option<Self>, DecompressorError> {
        if config.engine != Engine::Llm {
            return Ok(None);
        }
        let c = &config.llm;
        let path = c.model.as_deref().ok_or(DecompressorError::LlmMissing)?;
        let bytes = std::fs::read(path).map_err(|source| DecompressorError::LlmRead { path: path.into(), source })?;
        let model = crate::llm::model::LanguageModel::from_bytes(&bytes, device)
            .map_err(|source| DecompressorError::LlmModel { path: path.into(), source })?;
        if model.encoding != crate::llm::model::Encoding::Layers {
            return Err(DecompressorError::LlmEncoding(path.into()));
        }
        let sampling = crate::llm::generate::Sampling { temperature: c.temperature, top_k: c.top_k, top_p: c.top_p };
        Ok(Some(LlmEngine { model, sampling, max_edges: c.max_edges }))
    }
}

/// Regenerated spans handed to the exporters at once: a larger window is
/// regenerated and exported in parts, so memory holds one part whatever the
/// window's size.
const PART_SPANS: u64 = 500_000;

/// Part of a payload made traces.
struct Part {
    traces: Vec<Trace>,
    /// The `kind` label of the windows metric.
    kind: Origin,
    clamped: usize,
    index: usize,
    of: usize,
    seconds: f64,
}

impl Part {
    fn whole(traces: Vec<Trace>, kind: Origin, clamped: usize, started: Instant) -> Self {
        Part { traces, kind, clamped, index: 0, of: 1, seconds: started.elapsed().as_secs_f64() }
    }
}

/// Why a pushed payload yields no traces (or stops yielding them part way).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Packet(#[from] crate::codec::PackError),
    #[error(transparent)]
    Llm(#[from] crate::llm::regeneration::WindowError),
    #[error(transparent)]
    Model(#[from] crate::gent::ModelError),
    #[error("{0} (link.max_window_spans bounds the spans)")]
    Traces(#[from] crate::codec::TracesError),
    #[error("payload kind is unspecified")]
    Unspecified,
}

/// The payload's traces, handed to `each` part by part until it returns
/// false: regenerated from a model (by Gen-T, in parts of about
/// [`PART_SPANS`] spans; or by the language model when there is one and the
/// packet carries call-graph conditions), or the real traces as sent.
fn decode_parts(
    kind: PayloadKind,
    payload: &[u8],
    device: &burn::tensor::Device,
    llm: Option<&Mutex<LlmEngine>>,
    max_spans: (u64, u64),
    mut each: impl FnMut(Part) -> bool,
) -> Result<(), DecodeError> {
    let started = Instant::now();
    match kind {
        PayloadKind::Model => {
            let unpacked = crate::codec::unpack_bounded(payload, device, max_spans)?;
            let seed = unpacked.header.seed;
            if let (Some(llm), Some(conditions)) = (llm, &unpacked.conditions) {
                let engine = llm.lock().unwrap_or_else(|e| e.into_inner());
                let r = crate::llm::regeneration::Regeneration { sampling: engine.sampling, max_edges: engine.max_edges, seed };
                let out = crate::llm::regeneration::regenerate(&engine.model, conditions, unpacked.header.window_start, &r)?;
                each(Part::whole(out.traces, Origin::Llm, out.clamped, started));
                return Ok(());
            }
            if llm.is_some() {
                tracing::warn!(
                    window = unpacked.header.window_id,
                    "the packet carries no call-graph conditions (compressor pipeline.call_graph_conditions is off); regenerating with Gen-T"
                );
            }
            let of = unpacked.header.spans.div_ceil(PART_SPANS).max(1) as usize;
            let (mut index, mut started) = (0, started);
            let each_part = |traces, _| {
                let part = Part { traces, kind: Origin::Model, clamped: 0, index, of, seconds: started.elapsed().as_secs_f64() };
                index += 1;
                let go_on = each(part);
                started = Instant::now();
                go_on
            };
            Ok(unpacked.model.generate_parts(seed, of, each_part)?)
        }
        PayloadKind::Traces => {
            let traces = crate::codec::decode_traces(payload, max_spans.0)?;
            each(Part::whole(traces, Origin::Traces, 0, started));
            Ok(())
        }
        PayloadKind::Unspecified => Err(DecodeError::Unspecified),
    }
}

impl Handler {
    fn rejected(&self, reason: &str, status: Status) -> Status {
        self.metrics.packets_rejected.with_label_values(&[reason]).inc();
        tracing::warn!(reason, error = status.message(), "push refused");
        status
    }

    fn already(&self, key: &(String, u64)) -> Option<u64> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).spans.get(key).copied()
    }

    async fn deliver(&self, push: PushRequest) -> Result<PushResponse, Status> {
        let key = (push.producer.clone(), push.window_id);
        if let Some(spans) = self.already(&key) {
            self.metrics.packets_duplicate.inc();
            return Ok(PushResponse { duplicate: true, spans });
        }
        let _permit = self.gate.acquire().await.map_err(|_| Status::unavailable("shutting down"))?;
        // The same window may have been delivered while we waited.
        if let Some(spans) = self.already(&key) {
            self.metrics.packets_duplicate.inc();
            return Ok(PushResponse { duplicate: true, spans });
        }
        let kind = PayloadKind::try_from(push.kind).unwrap_or(PayloadKind::Unspecified);
        let device = self.device.clone();
        let llm = self.llm.clone();
        let payload = push.payload;
        let max_spans = self.max_spans;
        // Regenerated part by part on a blocking thread, each part exported
        // while the next is built; one part waits at most.
        let (parts_tx, mut parts) = mpsc::channel::<Part>(1);
        let worker = tokio::task::spawn_blocking(move || {
            decode_parts(kind, &payload, &device, llm.as_deref(), max_spans, |part| parts_tx.blocking_send(part).is_ok())
        });
        let (mut spans, mut count, mut regenerate_seconds, mut kind) = (0usize, 0usize, 0.0, Origin::Model);
        let mut outputs = Vec::with_capacity(self.exporters.len());
        while let Some(part) = parts.recv().await {
            if part.index == 0 {
                self.metrics.packets_received.inc();
            }
            if part.clamped > 0 {
                self.metrics.llm_clamped_traces.inc_by(part.clamped as u64);
                tracing::warn!(
                    producer = key.0,
                    window = key.1,
                    traces = part.clamped,
                    "traces over llm.max_edges regenerated at that size"
                );
            }
            regenerate_seconds += part.seconds;
            kind = part.kind;
            let part_spans: usize = part.traces.iter().map(|t| t.spans.len()).sum();
            spans += part_spans;
            count += part.traces.len();
            let name =
                WindowName { producer: key.0.clone(), window_id: key.1, part: (part.of > 1).then_some((part.index, part.of)) };
            let traces = Arc::new(part.traces);
            for exporter in self.exporters.iter() {
                match exporter.export(&name, traces.clone()).await {
                    Ok(place) => {
                        self.metrics.spans_exported.with_label_values(&[exporter.name()]).inc_by(part_spans as u64);
                        outputs.push(place);
                    }
                    Err(e) => {
                        self.metrics.export_errors.with_label_values(&[exporter.name()]).inc();
                        tracing::error!(producer = key.0, window = key.1, error = %e, "export failed; the compressor will push the window again");
                        return Err(Status::unavailable(format!("export failed: {e}")));
                    }
                }
            }
        }
        match worker.await {
            Err(e) => return Err(Status::internal(format!("regeneration failed: {e}"))),
            // Nothing was exported: the packet itself is at fault.
            Ok(Err(reason)) if count == 0 => {
                let status = Status::invalid_argument(format!("window {} of {}: {reason}", key.1, key.0));
                return Err(self.rejected("invalid", status));
            }
            Ok(Err(reason)) => {
                return Err(Status::internal(format!("window {} of {}: regeneration failed in part: {reason}", key.1, key.0)));
            }
            Ok(Ok(())) => {}
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let lag_seconds = (push.closed_unix_nano > 0).then(|| now.saturating_sub(push.closed_unix_nano) as f64 / 1e9);
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), spans as u64);
        let event = Delivered {
            producer: key.0,
            window_id: key.1,
            kind,
            window_spans: push.window_spans,
            traces: count,
            spans,
            regenerate_seconds,
            lag_seconds: lag_seconds.unwrap_or(0.0),
            outputs,
        };
        event.count(&self.metrics, lag_seconds);
        event.log();
        if let Some(reports) = &self.reports {
            let _ = reports.send(event);
        }
        Ok(PushResponse { duplicate: false, spans: spans as u64 })
    }
}

#[tonic::async_trait]
impl PacketService for Arc<Handler> {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        // The token was checked on the headers, before the body was read (see `start`).
        self.deliver(request.into_inner()).await.map(Response::new)
    }
}

/// A running decompressor and where it listens (useful with port 0).
pub struct Running {
    pub link: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: DecompressorMetrics,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), LinkError>>,
    metrics_server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Binds and starts serving; `reports` (if given) hears of every delivered window.
pub async fn start(
    config: DecompressorConfig,
    reports: Option<mpsc::UnboundedSender<Delivered>>,
) -> Result<Running, DecompressorError> {
    let metrics = DecompressorMetrics::new()?;
    let device = config.backend.device()?;
    let llm = LlmEngine::load(&config, &device)?.map(|e| Arc::new(Mutex::new(e)));
    let exporters = export::from_config(&config.exporters)?;
    for e in &exporters {
        metrics.spans_exported.with_label_values(&[e.name()]);
        metrics.export_errors.with_label_values(&[e.name()]);
    }
    let tls = match (&config.link.tls_cert_file, &config.link.tls_key_file) {
        (Some(cert), Some(key)) => Some(link::server_tls(cert, key)?),
        _ => None,
    };
    let handler = Arc::new(Handler {
        token: config.link.token()?,
        device,
        llm,
        exporters: Arc::new(exporters),
        metrics: metrics.clone(),
        seen: Mutex::new(Seen { spans: HashMap::new(), order: VecDeque::new(), capacity: config.link.remember_windows }),
        gate: Semaphore::new(1),
        max_spans: (config.link.max_window_spans, config.link.max_trace_spans),
        reports,
    });
    let addr = config.link.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| LinkError::Bind { addr, source })?;
    let link_addr = listener.local_addr().unwrap_or(addr);
    let (stop, stop_rx) = watch::channel(false);
    let admit = {
        let handler = handler.clone();
        move |request: Request<()>| {
            link::authorize(&request, handler.token.as_deref()).map_err(|s| handler.rejected("unauthenticated", s))?;
            Ok(request)
        }
    };
    let limits = link::ServerLimits {
        max_packet_bytes: config.link.max_packet_bytes,
        max_concurrent: config.link.max_concurrent_pushes,
        connections: config.link.connections.clone(),
        stats: metrics.connections.stats("link"),
    };
    let server = tokio::spawn(link::serve(handler, listener, tls, limits, admit, signal(&stop_rx)));
    // The link is bound before this serves; ready until shutdown begins.
    let stopping = stop_rx.clone();
    let ready: Readiness = Arc::new(move || if *stopping.borrow() { Err("shutting down".into()) } else { Ok(()) });
    let stats = metrics.connections.stats("metrics");
    let (metrics_addr, metrics_server) =
        serve_metrics(config.metrics.endpoint, metrics.registry.clone(), ready, stats, &stop_rx).await?;
    tracing::info!(link = %link_addr, metrics = ?metrics_addr, "decompressor listening");
    Ok(Running { link: link_addr, metrics_addr, metrics, stop, server, metrics_server })
}

impl Running {
    /// Stops accepting pushes, finishing the ones in flight.
    pub async fn shutdown(self) -> Result<(), DecompressorError> {
        let _ = self.stop.send(true);
        let served = self.server.await.map_err(|e| DecompressorError::Task(e.to_string()))?;
        if let Some(m) = self.metrics_server {
            let _ = m.await;
        }
        served?;
        tracing::info!("decompressor stopped");
        Ok(())
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(config: DecompressorConfig) -> Result<(), DecompressorError> {
    let running = start(config, None).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}
