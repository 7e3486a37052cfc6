//! Closed windows become packets on the link. For each window, on the sink
//! thread (the receivers keep accepting meanwhile): fold its traces into a
//! [`WindowDigest`] (exact histogram and start counts, a bounded share to
//! train on, a bounded sample to score against) and give their budget back;
//! train the Gen-T model on the digest, warm-started from the previous
//! window; pack it; regenerate a sample from the packet itself and score it
//! against the scoring sample with the fidelity suite; if the score is under
//! the configured floor (or training failed), ship the window's head-sampled
//! real traces instead, so an operator never silently loses visibility; spool
//! the result for the sender.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::codec::Payload;
use crate::config::PipelineConfig;
use crate::fidelity::Reference;
use crate::fidelity::sampling::{Stratum, stratum, systematic};
use crate::gent::{DigestConfig, GenTConfig, WindowDigest, WindowModel};
use crate::llm::regeneration::WindowConditions;
use crate::metrics::PipelineMetrics;
use crate::nn::weights::Precision;
use crate::packet::link::{PayloadKind, PushRequest};
use crate::packet::spool::Spool;
use crate::trace::{Trace, TraceSet};
use crate::window::{ClosedWindow, SinkError, WindowSink};

/// Seeds (xor the fidelity seed) the 1:k sample a large window is measured on.
const SAMPLE_SEED: u64 = 0x5a3b_1e00_c0ff_ee00;

/// What happened to one window at the compressor: the one event its
/// metrics, log line and report (for `gent demo` and tests) all come from.
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
    pub kind: Payload,
    /// Self-evaluated fidelity of the model (None when not evaluated or not trained).
    pub fidelity: Option<f64>,
    /// Head sampling at the same bytes as the model: its rate 1:N and its
    /// fidelity on the same queries (None when not evaluated).
    pub head_rate: Option<u64>,
    pub head_fidelity: Option<f64>,
    pub train_seconds: f64,
    /// Training failed; the window went out as head-sampled traces.
    pub training_failed: bool,
    /// Seconds the self-evaluation took (None when it did not run).
    pub evaluate_seconds: Option<f64>,
    /// N of the 1:N head sampling a `sampled` window shipped at.
    pub sampled_rate: Option<u64>,
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
    reports: Option<mpsc::UnboundedSender<Shipped>>,
    /// How long a window lasts: the sink must finish one within it.
    window_duration: Duration,
    /// Share of the configured training steps windows train with (see [`paced_share`]).
    step_share: f64,
}

/// Why a window could not be trained, checked or spooled.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("the window was folded without a digest")]
    NoDigest,
    #[error("training: {0}")]
    Train(#[from] crate::gent::ModelError),
    #[error("packing or unpacking: {0}")]
    Pack(#[from] crate::codec::PackError),
    #[error("scoring: {0}")]
    Score(#[from] crate::fidelity::FidelityError),
    #[error("measuring the window's OTLP bytes: {0}")]
    Sizes(std::io::Error),
    #[error("the window's traces: {0}")]
    Traces(#[from] crate::codec::TracesError),
    #[error("spooling: {0}")]
    Spool(#[from] crate::packet::spool::SpoolError),
}

fn ship_error(window: u64, e: ShipError) -> SinkError {
    SinkError::Take { window, source: Box::new(e) }
}

impl ShipSink {
    pub fn new(
        config: PipelineConfig,
        device: burn::tensor::Device,
        spool: Arc<Spool>,
        producer: String,
        metrics: PipelineMetrics,
        reports: Option<mpsc::UnboundedSender<Shipped>>,
        window_duration: Duration,
    ) -> Self {
        metrics.training_step_share.set(1.0);
        ShipSink { config, device, previous: None, spool, producer, metrics, reports, window_duration, step_share: 1.0 }
    }

    /// Trains and packs; returns the model, its packet and the training time.
    fn train(
        &self,
        digest: &WindowDigest,
        conditions: Option<WindowConditions>,
        window: u64,
    ) -> Result<(WindowModel, Vec<u8>, f64), ShipError> {
        let c: &GenTConfig = &self.config.model;
        let previous = if self.config.warm_start { self.previous.as_ref() } else { None };
        let started = Instant::now();
        let paced = paced_config(c, self.step_share);
        let model = WindowModel::train_digest(digest, &paced, &self.device, previous)?;
        let seconds = started.elapsed().as_secs_f64();
        let precision = if self.config.f16 { Precision::F16 } else { Precision::F32 };
        // Regeneration draws trace and span ids from this seed: unique per
        // producer run and window, so two windows never regenerate the same ids.
        let seed = xxhash_rust::xxh3::xxh3_64_with_seed(self.producer.as_bytes(), c.ctgan.seed ^ window);
        let packet = crate::codec::pack(&model, window, c, precision, seed, conditions)?;
        Ok((model, packet, seconds))
    }

    /// The window's traces (all of them for `n` = 1, which only a whole
    /// digest has), else head-sampled 1:`n` or, past the share's rate, at
    /// the share's; as gzip-compressed OTLP protobuf, with the rate.
    fn traces_payload(&self, digest: &WindowDigest, n: u64) -> Result<(u64, Vec<u8>), ShipError> {
        let (rate, kept) = digest.head_sample(n);
        Ok((rate, crate::codec::encode_traces(kept)?))
    }
}

/// How the compressor folds a window: the share within `train_spans` (0:
/// all), seeded as the fallback's head sampling (so the share holds the
/// fallback's traces), a scoring sample within `fidelity.sample_spans` (0:
/// all) with a seed of its own, and every trace's timing binned per minute
/// when a window of `window` spans three time buckets or more (fewer gain
/// nothing over the share, and the bins cost the fold a hash per span).
pub fn digest_config(p: &PipelineConfig, window: std::time::Duration) -> DigestConfig {
    let (f, calibration) = (&p.fidelity, &p.model.calibration);
    let timed = calibration.enabled && calibration.time_effects && window >= 3 * calibration.topology_bucket;
    DigestConfig {
        share_spans: p.train_spans,
        seed: f.seed,
        check_spans: if f.sample_spans == 0 { usize::MAX } else { f.sample_spans },
        check_seed: f.seed ^ SAMPLE_SEED,
        cells_bucket_ns: if timed { calibration.topology_bucket.as_nanos() as u64 } else { 0 },
        timing_spans: if calibration.enabled && calibration.node_effects { p.timing_spans } else { 0 },
        status_bucket_ns: if calibration.enabled { calibration.topology_bucket.as_nanos() as u64 } else { 0 },
    }
}

/// The window's OTLP sizes: exact when the scoring sample is the whole
/// window, else the sample's scaled by spans (estimates).
fn wire_sizes(digest: &WindowDigest) -> std::io::Result<crate::fidelity::cost::WireSizes> {
    let sample: &[Trace] = digest.check.as_ref().map_or(digest.share(), |(_, traces)| traces);
    let s = crate::fidelity::cost::wire_sizes(sample)?;
    let sampled: usize = sample.iter().map(|t| t.spans.len()).sum();
    let scale = |bytes: u64| (bytes as f64 * digest.spans as f64 / sampled.max(1) as f64).round() as u64;
    Ok(crate::fidelity::cost::WireSizes { raw: scale(s.raw), gzip: scale(s.gzip), zstd: scale(s.zstd) })
}

impl WindowSink for ShipSink {
    fn take(&mut self, window: &mut ClosedWindow) -> Result<(), SinkError> {
        let started = Instant::now();
        let (outcome, train_seconds) = self.ship(window);
        let share = paced_share(self.step_share, started.elapsed().as_secs_f64(), train_seconds, self.window_duration);
        if share != self.step_share {
            tracing::warn!(
                window = window.id,
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                share = format!("{share:.2}"),
                "training paced to finish each window within window.duration: it now takes this share of its steps"
            );
            self.step_share = share;
            self.metrics.training_step_share.set(share);
        }
        outcome
    }
}

impl ShipSink {
    /// Trains, checks and spools one window; returns the training seconds too.
    fn ship(&mut self, window: &mut ClosedWindow) -> (Result<(), SinkError>, f64) {
        let mut train_seconds = 0.0;
        let outcome = self.ship_timed(window, &mut train_seconds);
        (outcome, train_seconds)
    }

    fn ship_timed(&mut self, window: &mut ClosedWindow, train_seconds: &mut f64) -> Result<(), SinkError> {
        let Some(mut digest) = window.digest.take() else {
            return Err(ship_error(window.id, ShipError::NoDigest));
        };
        if digest.traces() == 0 {
            return Ok(());
        }
        let conditions = window.conditions.take();
        // The pool the scoring sample was thinned from is gone.
        window.held.release_all_but(digest.held_spans());
        let sizes = wire_sizes(&digest).map_err(|e| ship_error(window.id, ShipError::Sizes(e)))?;
        let mut event = Shipped {
            window_id: window.id,
            traces: digest.traces(),
            spans: digest.spans as usize,
            raw_bytes: sizes.raw,
            gzip_bytes: sizes.gzip,
            packet_bytes: 0,
            kind: Payload::Model,
            fidelity: None,
            head_rate: None,
            head_fidelity: None,
            train_seconds: 0.0,
            training_failed: false,
            evaluate_seconds: None,
            sampled_rate: None,
        };
        let trained = self.train_and_check(&mut digest, conditions, &mut event);
        *train_seconds = event.train_seconds;
        let payload = self.choose(&digest, trained, &mut event).map_err(|e| ship_error(window.id, e))?;
        event.packet_bytes = payload.len() as u64;
        let push = PushRequest {
            producer: self.producer.clone(),
            window_id: window.id,
            kind: PayloadKind::of(event.kind) as i32,
            payload,
            window_spans: digest.spans,
            window_traces: digest.traces() as u64,
            closed_unix_nano: window.end_unix_nano,
        };
        self.spool.put(&push).map_err(|e| ship_error(window.id, e.into()))?;
        event.count(&self.metrics);
        event.log(&self.config);
        if let Some(reports) = &self.reports {
            let _ = reports.send(event);
        }
        Ok(())
    }

    /// Trains the window's model and, when configured, scores a sample
    /// regenerated from its packet; the packet, or `None` when training failed.
    fn train_and_check(
        &mut self,
        digest: &mut WindowDigest,
        conditions: Option<WindowConditions>,
        event: &mut Shipped,
    ) -> Option<Vec<u8>> {
        let (model, packet, seconds) = match self.train(digest, conditions, event.window_id) {
            Ok(trained) => trained,
            Err(e) => {
                tracing::error!(window = event.window_id, error = %e, "training failed; shipping head-sampled traces instead");
                event.training_failed = true;
                return None;
            }
        };
        event.train_seconds = seconds;
        if self.config.fidelity.self_evaluate {
            let started = Instant::now();
            let evaluation = self_evaluate(digest, &packet, &self.device);
            event.evaluate_seconds = Some(started.elapsed().as_secs_f64());
            match evaluation {
                Ok(e) => {
                    event.fidelity = Some(e.fidelity);
                    (event.head_rate, event.head_fidelity) = (Some(e.head_rate), Some(e.head_fidelity));
                }
                Err(e) => tracing::warn!(window = event.window_id, error = %e, "self-evaluation failed"),
            }
        }
        self.previous = Some(model);
        Some(packet)
    }

    /// What goes on the link: the window whole when that is smaller than its
    /// model, the model when it is faithful enough, else head-sampled traces.
    fn choose(&self, digest: &WindowDigest, trained: Option<Vec<u8>>, event: &mut Shipped) -> Result<Vec<u8>, ShipError> {
        let faithful = event.fidelity.is_none_or(|f| f >= self.config.fidelity.floor);
        // What the model would cost on the link; a model that failed costs "infinity".
        let model_bytes = trained.as_ref().map_or(u64::MAX, |p| p.len() as u64);
        // Only a whole digest holds every trace; a larger window's gzip is
        // far above its model anyway.
        if self.config.raw_when_smaller && digest.whole() && event.gzip_bytes <= model_bytes {
            // Lossless and cheaper: the model does not pay for itself on a window this small.
            event.kind = Payload::Raw;
            return Ok(self.traces_payload(digest, 1)?.1);
        }
        if let (Some(packet), true) = (trained, faithful) {
            event.kind = Payload::Model;
            return Ok(packet);
        }
        let (rate, payload) = self.traces_payload(digest, self.config.fidelity.fallback_head)?;
        (event.kind, event.sampled_rate) = (Payload::Sampled, Some(rate));
        Ok(payload)
    }
}

impl Shipped {
    /// The window in the compressor's metrics: each per-window counter is
    /// incremented here and nowhere else.
    fn count(&self, m: &PipelineMetrics) {
        m.window_raw_bytes.inc_by(self.raw_bytes);
        m.window_gzip_bytes.inc_by(self.gzip_bytes);
        m.packet_bytes.inc_by(self.packet_bytes);
        if self.training_failed {
            m.training_errors.inc();
        } else {
            m.training_seconds.observe(self.train_seconds);
        }
        if let Some(seconds) = self.evaluate_seconds {
            m.self_evaluation_seconds.observe(seconds);
        }
        if let Some(f) = self.fidelity {
            m.fidelity_last.set(f);
            m.fidelity.observe(f);
        }
        if let Some(f) = self.head_fidelity {
            m.fidelity_head_same_bytes.set(f);
        }
        match self.kind {
            Payload::Raw => m.raw_windows.inc(),
            Payload::Sampled => m.fallback_windows.inc(),
            Payload::Model => {}
        }
    }

    /// The window in the compressor's log: why it fell back, if it did, and
    /// what was spooled.
    fn log(&self, config: &PipelineConfig) {
        let (window, head) = (self.window_id, config.fidelity.fallback_head);
        if let (Payload::Sampled, Some(f)) = (self.kind, self.fidelity) {
            let floor = config.fidelity.floor;
            tracing::warn!(window, fidelity = f, floor, head, "fidelity below the floor; shipping head-sampled traces instead");
        }
        if let Some(rate) = self.sampled_rate.filter(|&r| r > head) {
            tracing::warn!(window, head, rate, "window larger than its share: head-sampled at the share's rate");
        }
        tracing::info!(
            window,
            kind = self.kind.as_str(),
            packet_bytes = self.packet_bytes,
            gzip_bytes = self.gzip_bytes,
            fidelity = self.fidelity.map(|f| format!("{f:.3}")),
            train_seconds = format!("{:.1}", self.train_seconds),
            evaluate_seconds = format!("{:.1}", self.evaluate_seconds.unwrap_or(0.0)),
            "window spooled for the link"
        );
    }
}

/// The share of its training steps the next window trains with, after one
/// that took the sink `took` seconds, `trained` of them training: so that
/// the sink keeps within 80 % of a window's duration (closed windows never
/// queue up behind training), and back up by a quarter a window while it has
/// room to spare. Never below 2 % of the steps.
pub fn paced_share(share: f64, took: f64, trained: f64, window: Duration) -> f64 {
    let budget = window.as_secs_f64() * 0.8;
    let next = if took > budget && trained > 0.0 {
        // Only training shortens: the rest of the sink's time is fixed.
        share * (budget - (took - trained)).max(0.0) / trained
    } else if took < budget / 2.0 {
        share * 1.25
    } else {
        share
    };
    next.clamp(0.02, 1.0)
}

/// `config` with `share` of its training: of `ctgan.max_steps`, or of the
/// epochs when steps are not capped.
fn paced_config(config: &GenTConfig, share: f64) -> GenTConfig {
    let mut c = config.clone();
    if share < 1.0 {
        let scaled = |n: usize| ((n as f64 * share).ceil() as usize).max(1);
        match c.ctgan.max_steps {
            Some(max) => c.ctgan.max_steps = Some(scaled(max)),
            None => c.ctgan.epochs = scaled(c.ctgan.epochs),
        }
    }
    c
}

/// Regenerates from the packet as the decompressor will and scores it;
/// also scores head sampling at the rate whose bytes match the packet,
/// the comparison that says whether the model pays for itself.
///
/// A window over `fidelity.sample_spans` is scored on a 1:k share, so the
/// work per window stays bounded: the digest's scoring sample (head sampling
/// 1:k with a seed of its own, not the traces the model was fitted on), the
/// same share of strata regenerated from the packet (each entry point, trace
/// size and minute keeps its share; only those traces are built,
/// [`crate::gent::WindowModel::generate_only`]), and head sampling's counts
/// scaled to that share. Two samples differ a little, so a sampled score
/// runs a little below a whole-window one (see the pipeline test on
/// TrainTicket hour 12).
///
/// Takes the digest's scoring sample (scored once; moved, not copied).
pub fn self_evaluate(
    digest: &mut WindowDigest,
    packet: &[u8],
    device: &burn::tensor::Device,
) -> Result<SelfEvaluation, ShipError> {
    let (k, real) = match digest.check.take() {
        Some(check) => check,
        None => (digest.share_rate, digest.share().to_vec()),
    };
    let digest = &*digest;
    // Its own packet, of a window of any size: only the sample is regenerated.
    let unpacked = crate::codec::unpack_within(packet, device, digest.spans)?;
    let model = &unpacked.model;
    // Only the share the score reads is regenerated, by stratum, then
    // (length unknown before timing) by start.
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
        // The real sample's phase: the two line up stratum for stratum.
        systematic(&keys, k, digest.check_seed)
    };
    let (traces, _) = model.generate_only(unpacked.header.seed, pick)?;
    let real = TraceSet { traces: real, defects: Default::default() };
    let scored_spans = real.span_count();
    let reference = Reference::new(&real, Vec::new())?;
    let synthetic = TraceSet { traces, defects: Default::default() };
    let fidelity = reference.evaluate_any(&synthetic, 1.0)?.overall;
    let head_rate = same_bytes_rate(digest, packet.len());
    // Never more traces than the sample: a packet larger than the sample's
    // own bytes is compared with head sampling at the sample's rate.
    let (rate, kept) = digest.head_sample(head_rate.max(k));
    let sampled = TraceSet { traces: kept.into_iter().cloned().collect(), defects: Default::default() };
    let head_fidelity = reference.evaluate_any(&sampled, rate as f64 / k as f64)?.overall;
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

/// The head sampling rate whose gzip OTLP bytes on the window equal `packet`
/// bytes: measured at 1:10 and 1:100 and interpolated in log-log (bytes
/// fall as about 1/N, a little slower since few traces compress worse).
fn same_bytes_rate(digest: &WindowDigest, packet: usize) -> u64 {
    let (at_10, at_100) = (digest.head_gzip_bytes(10), digest.head_gzip_bytes(100));
    if at_10 <= 0.0 || at_100 <= 0.0 {
        return 1;
    }
    let slope = ((at_100 / at_10).ln() / 10f64.ln()).min(-0.1);
    (100.0 * (packet.max(1) as f64 / at_100).powf(1.0 / slope)).round().clamp(1.0, 1e9) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_is_paced_to_finish_within_the_window_and_recovers_when_there_is_room() {
        let minute = Duration::from_secs(60);
        assert_eq!(paced_share(1.0, 30.0, 25.0, minute), 1.0, "within 80 % of the window: kept");
        // 90 s, 80 of them training, against a 48 s budget: training gets 38 s of its 80.
        let share = paced_share(1.0, 90.0, 80.0, minute);
        assert!((share - 38.0 / 80.0).abs() < 1e-9, "{share}");
        assert_eq!(paced_share(share, 10.0, 8.0, minute), share * 1.25, "room to spare: back up by a quarter");
        assert_eq!(paced_share(0.9, 10.0, 8.0, minute), 1.0, "never above every step");
        assert_eq!(paced_share(0.5, 500.0, 1.0, minute), 0.02, "never below 2 %");
        let c = GenTConfig::default();
        let mut capped = c.clone();
        capped.ctgan.max_steps = Some(500);
        assert_eq!(paced_config(&capped, 0.1).ctgan.max_steps, Some(50));
        let uncapped = paced_config(&c, 0.25);
        assert_eq!((uncapped.ctgan.max_steps, uncapped.ctgan.epochs), (None, c.ctgan.epochs.div_ceil(4)));
    }
}
