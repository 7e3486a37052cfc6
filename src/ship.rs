//! Closed windows become packets on the link. For each window, on the sink
//! thread (the receivers keep accepting meanwhile): train the Gen-T model,
//! warm-started from the previous window; pack it; regenerate a sample from the
//! packet itself and score it against the window with the fidelity suite; if
//! the score is under the configured floor (or training failed), ship the
//! window's head-sampled real traces instead, so an operator never silently
//! loses visibility; spool the result for the sender.

use std::io::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio::sync::mpsc;

use crate::config::{FidelityConfig, PipelineConfig};
use crate::fidelity::Reference;
use crate::fidelity::sampling::{Sampler, Stratum, stratified, stratum, systematic};
use crate::gent::{GenTConfig, WindowModel};
use crate::metrics::PipelineMetrics;
use crate::nn::weights::Precision;
use crate::packet::link::{PayloadKind, PushRequest};
use crate::packet::spool::Spool;
use crate::trace::{Trace, TraceSet};
use crate::window::{ClosedWindow, SinkError, WindowSink};

/// Seeds (xor the fidelity seed) the 1:k sample a large window is measured on.
const SAMPLE_SEED: u64 = 0x5a3b_1e00_c0ff_ee00;

/// What happened to one window at the compressor (for `gent demo` and tests).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shipped {
    pub window_id: u64,
    pub traces: usize,
    pub spans: usize,
    /// The window as OTLP protobuf, raw and gzip-compressed.
    pub raw_bytes: u64,
    pub gzip_bytes: u64,
    /// Bytes put on the link for it.
    pub packet_bytes: u64,
    /// `model`; `raw` when the whole window was smaller than its model; `sampled`
    /// when the model's fidelity was below the floor (or training failed).
    pub kind: &'static str,
    /// Self-evaluated fidelity of the model (None when not evaluated or not trained).
    pub fidelity: Option<f64>,
    /// Head sampling at the same bytes as the model: its rate 1:N and its
    /// fidelity on the same queries (None when not evaluated).
    pub head_rate: Option<u64>,
    pub head_fidelity: Option<f64>,
    pub train_seconds: f64,
}

/// A model's self-evaluated fidelity and that of head sampling at its bytes.
#[derive(Debug, Clone, Copy)]
pub struct SelfEvaluation {
    pub fidelity: f64,
    /// N of the 1:N head sampling whose gzip bytes equal the packet's.
    pub head_rate: u64,
    pub head_fidelity: f64,
    /// Real spans the scores were computed on (all, or the sample's).
    pub scored_spans: usize,
}

pub struct ShipSink {
    config: PipelineConfig,
    device: burn::tensor::Device,
    previous: Option<WindowModel>,
    spool: Arc<Spool>,
    producer: String,
    metrics: PipelineMetrics,
    /// The plain window sink (OTLP JSON files), when also configured.
    also: Option<Box<dyn WindowSink>>,
    reports: Option<mpsc::UnboundedSender<Shipped>>,
}

fn ship_error(window: u64, reason: impl std::fmt::Display) -> SinkError {
    SinkError::Ship { window, reason: reason.to_string() }
}

impl ShipSink {
    pub fn new(
        config: PipelineConfig,
        device: burn::tensor::Device,
        spool: Arc<Spool>,
        producer: String,
        metrics: PipelineMetrics,
        also: Option<Box<dyn WindowSink>>,
        reports: Option<mpsc::UnboundedSender<Shipped>>,
    ) -> Self {
        ShipSink { config, device, previous: None, spool, producer, metrics, also, reports }
    }

    /// Trains and packs; returns the model, its packet and the training time.
    fn train(&self, traces: &[Trace], window: u64) -> Result<(WindowModel, Vec<u8>, f64), String> {
        let c: &GenTConfig = &self.config.model;
        let previous = if self.config.warm_start { self.previous.as_ref() } else { None };
        let started = Instant::now();
        let model =
            WindowModel::train_within(traces, c, &self.device, previous, self.config.train_spans).map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        let precision = if self.config.f16 { Precision::F16 } else { Precision::F32 };
        // Regeneration draws trace and span ids from this seed: unique per
        // producer run and window, so two windows never regenerate the same ids.
        let seed = xxhash_rust::xxh3::xxh3_64_with_seed(self.producer.as_bytes(), c.ctgan.seed ^ window);
        let conditions =
            self.config.call_graph_conditions.then(|| crate::llm::window::WindowConditions::of(traces, model.window_start));
        let packet = crate::gent::pack(&model, window, c, precision, seed, conditions).map_err(|e| e.to_string())?;
        Ok((model, packet, seconds))
    }

    /// The window's traces, head-sampled 1:`n` (all of them for 1), as
    /// gzip-compressed OTLP protobuf.
    fn traces_payload(&self, traces: &[Trace], n: u64) -> Result<Vec<u8>, String> {
        let request = if n == 1 {
            crate::io::to_request(traces.iter().flat_map(|t| &t.spans))
        } else {
            let kept = Sampler::Head { n }.sample(traces, self.config.fidelity.seed);
            crate::io::to_request(kept.iter().flat_map(|t| &t.spans))
        };
        let raw = request.encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())
    }
}

impl WindowSink for ShipSink {
    fn take(&mut self, window: &ClosedWindow) -> Result<(), SinkError> {
        if let Some(also) = &mut self.also {
            also.take(window)?;
        }
        let traces = &window.traces.traces;
        if traces.is_empty() {
            return Ok(());
        }
        let m = &self.metrics;
        let f = &self.config.fidelity;
        let (sizes, _) = crate::fidelity::cost::wire_sizes_within(traces, f.sample_spans, f.seed ^ SAMPLE_SEED)
            .map_err(|e| ship_error(window.id, e))?;
        m.window_raw_bytes.inc_by(sizes.raw);
        m.window_gzip_bytes.inc_by(sizes.gzip);

        let mut fidelity = None;
        let mut head = None;
        let mut train_seconds = 0.0;
        let trained = match self.train(traces, window.id) {
            Ok((model, packet, seconds)) => {
                m.training_seconds.observe(seconds);
                train_seconds = seconds;
                if self.config.fidelity.self_evaluate {
                    match self_evaluate(&window.traces, &packet, &self.device, &self.config.fidelity) {
                        Ok(e) => {
                            m.fidelity_last.set(e.fidelity);
                            m.fidelity.observe(e.fidelity);
                            m.fidelity_head_same_bytes.set(e.head_fidelity);
                            fidelity = Some(e.fidelity);
                            head = Some((e.head_rate, e.head_fidelity));
                        }
                        Err(e) => tracing::warn!(window = window.id, error = %e, "self-evaluation failed"),
                    }
                }
                self.previous = Some(model);
                Some(packet)
            }
            Err(e) => {
                m.training_errors.inc();
                tracing::error!(window = window.id, error = %e, "training failed; shipping head-sampled traces instead");
                None
            }
        };
        let floor = self.config.fidelity.floor;
        let faithful = fidelity.is_none_or(|f| f >= floor);
        // What the model would cost on the link; a model that failed costs "infinity".
        let model_bytes = trained.as_ref().map_or(u64::MAX, |p| p.len() as u64);
        let (kind, label, payload) = if self.config.raw_when_smaller && sizes.gzip <= model_bytes {
            // Lossless and cheaper: the model does not pay for itself on a window this small.
            m.raw_windows.inc();
            (PayloadKind::Traces, "raw", self.traces_payload(traces, 1).map_err(|e| ship_error(window.id, e))?)
        } else if let (Some(packet), true) = (trained, faithful) {
            (PayloadKind::Model, "model", packet)
        } else {
            if let Some(f) = fidelity {
                tracing::warn!(
                    window = window.id,
                    fidelity = f,
                    floor,
                    head = self.config.fidelity.fallback_head,
                    "fidelity below the floor; shipping head-sampled traces instead"
                );
            }
            m.fallback_windows.inc();
            let n = self.config.fidelity.fallback_head;
            (PayloadKind::Traces, "sampled", self.traces_payload(traces, n).map_err(|e| ship_error(window.id, e))?)
        };
        let packet_bytes = payload.len() as u64;
        m.packet_bytes.inc_by(packet_bytes);
        let push = PushRequest {
            producer: self.producer.clone(),
            window_id: window.id,
            kind: kind as i32,
            payload,
            window_spans: window.traces.span_count() as u64,
            window_traces: traces.len() as u64,
            closed_unix_nano: window.end_unix_nano,
        };
        self.spool.put(&push).map_err(|e| ship_error(window.id, e))?;
        let kind = label;
        tracing::info!(
            window = window.id,
            kind,
            packet_bytes,
            gzip_bytes = sizes.gzip,
            fidelity = fidelity.map(|f| format!("{f:.3}")),
            train_seconds = format!("{train_seconds:.1}"),
            "window spooled for the link"
        );
        if let Some(reports) = &self.reports {
            let _ = reports.send(Shipped {
                window_id: window.id,
                traces: traces.len(),
                spans: window.traces.span_count(),
                raw_bytes: sizes.raw,
                gzip_bytes: sizes.gzip,
                packet_bytes,
                kind,
                fidelity,
                head_rate: head.map(|h| h.0),
                head_fidelity: head.map(|h| h.1),
                train_seconds,
            });
        }
        Ok(())
    }
}

/// Regenerates from the packet as the decompressor will and scores it;
/// also scores head sampling at the rate whose bytes match the packet,
/// the comparison that says whether the model pays for itself.
///
/// A window over `fidelity.sample_spans` is scored on a 1:k share, so the
/// work per window stays bounded: a stratified 1:k sample of its real traces
/// (each entry point, trace size, minute and spread of durations keeps its
/// share), the same share of strata regenerated from the packet (only those
/// traces are built, [`crate::gent::WindowModel::generate_only`]), and head
/// sampling's counts scaled to that share. Two samples differ a little, so a
/// sampled score runs a little below a whole-window one (see the pipeline
/// test on TrainTicket hour 12).
pub fn self_evaluate(
    real: &TraceSet,
    packet: &[u8],
    device: &burn::tensor::Device,
    f: &FidelityConfig,
) -> Result<SelfEvaluation, String> {
    let k = crate::fidelity::cost::sample_rate(real.span_count(), f.sample_spans);
    // Not the head sampler's seed: at equal rates the two would keep the same traces.
    let sample_seed = f.seed ^ SAMPLE_SEED;
    let unpacked = crate::gent::unpack(packet, device).map_err(|e| e.to_string())?;
    let model = &unpacked.model;
    // Only the share the score reads is regenerated, picked as the real
    // sample is: by stratum, then (length unknown before timing) by start.
    let pick = |topologies: &[usize], starts: &[u64]| {
        if k == 1 {
            return (0..topologies.len()).collect();
        }
        let h = &model.histogram;
        let keys: Vec<(Stratum<'_>, u64)> = topologies
            .iter()
            .zip(starts)
            .map(|(&t, &start)| {
                let topology = &h.topologies[t];
                let entry = topology.roots().next().and_then(|r| h.labels.get(topology.labels[r] as usize));
                let (service, name) = entry.map_or(("", ""), |l| (l.service.as_str(), l.name.as_str()));
                (stratum(service, name, topology.len(), start), start)
            })
            .collect();
        systematic(&keys, k, sample_seed)
    };
    let (traces, _) = model.generate_only(unpacked.header.seed, pick).map_err(|e| e.to_string())?;
    let (reference, scored_spans) = if k == 1 {
        (Reference::new(real, Vec::new()), real.span_count())
    } else {
        let kept: Vec<Trace> = stratified(&real.traces, k, sample_seed).into_iter().map(|i| real.traces[i].clone()).collect();
        let spans = kept.iter().map(|t| t.spans.len()).sum();
        (Reference::new(&TraceSet { traces: kept, defects: Default::default() }, Vec::new()), spans)
    };
    let reference = reference.map_err(|e| e.to_string())?;
    let synthetic = TraceSet { traces, defects: Default::default() };
    let fidelity = reference.evaluate_any(&synthetic, 1.0).map_err(|e| e.to_string())?.overall;
    let head_rate = same_bytes_rate(&real.traces, packet.len());
    // Never more traces than the sample: a packet larger than the sample's
    // own bytes is compared with head sampling at the sample's rate.
    let rate = head_rate.max(k);
    let kept = Sampler::Head { n: rate }.sample(&real.traces, f.seed);
    let sampled = TraceSet { traces: kept, defects: Default::default() };
    let head_fidelity = reference.evaluate_any(&sampled, rate as f64 / k as f64).map_err(|e| e.to_string())?.overall;
    Ok(SelfEvaluation { fidelity, head_rate, head_fidelity, scored_spans })
}

/// This compressor's name on the link: the configured name (or host name) and
/// the start time, so window ids (counted from 1 each run) never repeat.
pub fn producer_name(configured: Option<&str>) -> String {
    let name = configured.map(str::to_string).unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "gent".into())
    });
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{name}/{started}")
}

/// The head sampling rate whose gzip OTLP bytes on `traces` equal `packet`
/// bytes: measured at 1:10 and 1:100 and interpolated in log-log (bytes
/// fall as about 1/N, a little slower since few traces compress worse).
fn same_bytes_rate(traces: &[Trace], packet: usize) -> u64 {
    let (at_10, at_100) = (crate::gent::head_gzip_bytes(traces, 10), crate::gent::head_gzip_bytes(traces, 100));
    if at_10 <= 0.0 || at_100 <= 0.0 {
        return 1;
    }
    let slope = ((at_100 / at_10).ln() / 10f64.ln()).min(-0.1);
    (100.0 * (packet.max(1) as f64 / at_100).powf(1.0 / slope)).round().clamp(1.0, 1e9) as u64
}
