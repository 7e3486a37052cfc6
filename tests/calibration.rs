//! Calibrated timing against the sampling gent replaces, on the shared data:
//! TrainTicket hour 12, hour 16 (each one window) and hipster. The default
//! packet must cost no more than 1:100 head sampling with gzip and answer the
//! query suite at least as well as 1:5; regenerated traces are scored as read
//! back from the OTLP file they are written to.

mod common;

use std::collections::HashMap;

use burn::tensor::Device;
use common::{data, read_set};
use gent::fidelity::Reference;
use gent::fidelity::cost::wire_sizes;
use gent::fidelity::sampling::Sampler;
use gent::gent::{GenTConfig, NodeLocations, Repairs, WindowModel};
use gent::nn::weights::Precision;
use gent::trace::{StatusCode, Trace, TraceSet};

fn hour(h: u32) -> TraceSet {
    read_set(&(0..60).map(|m| data(&format!("trainticket/{h}_{m:02}_trace.csv.gz"))).collect::<Vec<_>>())
}

fn set(traces: Vec<Trace>) -> TraceSet {
    TraceSet { traces, defects: Default::default() }
}

/// The default model of `real` as a packet, regenerated with the packet's
/// seed, written as OTLP JSON and read back; also the packet's bytes, the
/// repairs and the written file's bytes.
fn regenerate(real: &TraceSet, dir: &std::path::Path, seed: Option<u64>) -> (usize, TraceSet, Repairs, Vec<u8>) {
    regenerate_with(real, dir, seed, &GenTConfig::default())
}

/// [`regenerate`] with the model trained under `config`.
fn regenerate_with(
    real: &TraceSet,
    dir: &std::path::Path,
    seed: Option<u64>,
    config: &GenTConfig,
) -> (usize, TraceSet, Repairs, Vec<u8>) {
    let device = Device::flex();
    let config = config.clone();
    let model = WindowModel::train(&real.traces, &config, &device, None).unwrap();
    let packet = gent::codec::pack(&model, 1, &config, Precision::F16, 7, None).unwrap();
    let unpacked = gent::codec::unpack(&packet, &device).unwrap();
    let (traces, repairs) = unpacked.model.generate(seed.unwrap_or(unpacked.header.seed)).unwrap();
    let path = dir.join("regenerated.jsonl");
    gent::io::write_file(&traces, gent::io::OutputFormat::OtlpJson, &path).unwrap();
    let written = std::fs::read(&path).unwrap();
    (packet.len(), read_set(&[path]), repairs, written)
}

/// `real` regenerated in memory with seed 7 by the model trained under the
/// default configuration as `change` leaves it.
fn regenerated_under(real: &TraceSet, change: impl FnOnce(&mut GenTConfig)) -> TraceSet {
    let mut config = GenTConfig::default();
    change(&mut config);
    let model = WindowModel::train(&real.traces, &config, &Device::flex(), None).unwrap();
    set(model.generate(7).unwrap().0)
}

/// Head sampling 1:`n`: mean gzip OTLP bytes over `seeds` seeds, and mean
/// overall fidelity over the first `scored` of them.
fn head(real: &TraceSet, reference: &Reference, n: u64, seeds: u64, scored: u64) -> (f64, f64) {
    let (mut bytes, mut fidelity) = (0.0, 0.0);
    for seed in 0..seeds {
        let kept = Sampler::Head { n }.sample(&real.traces, seed);
        bytes += wire_sizes(&kept).unwrap().gzip as f64 / seeds as f64;
        if seed < scored {
            fidelity += reference.evaluate_any(&set(kept), n as f64).unwrap().overall / scored as f64;
        }
    }
    (bytes, fidelity)
}

/// The suite's timing queries (those with one query per entry service
/// averaged over them, as the bench reports them).
const TIMING_QUERIES: [&str; 6] = ["bottlenecks", "red_duration", "subtask_durations", "latency_alarm", "nesting", "self_time"];

fn check_window(name: &str, real: TraceSet) {
    let dir = tempfile::tempdir().unwrap();
    let reference = Reference::new(&real, Vec::new()).unwrap();
    let (packet_bytes, regenerated, repairs, written) = regenerate(&real, dir.path(), None);
    let gent = reference.evaluate(&regenerated, 1.0).unwrap();
    let (bytes_100, fidelity_100) = head(&real, &reference, 100, 10, 3);
    let (bytes_5, fidelity_5) = head(&real, &reference, 5, 3, 3);
    println!(
        "{name}: packet {packet_bytes} B (head 1:100 {bytes_100:.0} B, fidelity {fidelity_100:.3}; 1:5 {bytes_5:.0} B); \
         fidelity {:.3} against 1:5's {fidelity_5:.3}; repairs {repairs:?}",
        gent.overall
    );
    for q in &gent.queries {
        println!("  {:<44} {:.3}", q.name, q.score);
    }
    assert!(packet_bytes as f64 <= bytes_100, "{name}: packet {packet_bytes} B, 1:100 head sampling {bytes_100:.0} B");
    assert!(gent.overall >= fidelity_5, "{name}: fidelity {:.3}, 1:5 head sampling {fidelity_5:.3}", gent.overall);
    // Structure and rates come back exactly.
    for exact in ["trigger_correlations", "call_counts"] {
        assert_eq!(gent.queries.iter().find(|q| q.name == exact).map(|q| q.score), Some(1.0), "{name}: {exact}");
    }
    // Every timing query answers at 0.8 or better. Duration per service and
    // minute, from a handful of spans each, scores about 0.78 with a random
    // draw per span and 0.80–0.82 with ranks stratified per label and minute
    // and timings drawn again in the minute the latency bands move them to;
    // one seed's score moves by about ±0.008 (0.795–0.812 over seeds 1–6 on
    // hour 16), and hour 16's bottlenecks by ±0.01. So the bar is held by
    // the mean of three seeds, as the bench reports it: the packet's own and
    // the next two.
    let timing_of = |set: &TraceSet| -> Vec<f64> {
        let scores = reference.evaluate(set, 1.0).unwrap();
        TIMING_QUERIES
            .iter()
            .map(|&query| {
                let of: Vec<f64> =
                    (scores.queries.iter()).filter(|q| q.name.split('[').next() == Some(query)).map(|q| q.score).collect();
                of.iter().sum::<f64>() / of.len().max(1) as f64
            })
            .collect()
    };
    let mut timing = timing_of(&regenerated);
    for seed in [8, 9] {
        let more = timing_of(&regenerate(&real, dir.path(), Some(seed)).1);
        timing.iter_mut().zip(more).for_each(|(t, m)| *t += m);
    }
    for (query, sum) in TIMING_QUERIES.iter().zip(timing) {
        assert!(sum / 3.0 >= 0.8, "{name}: {query} {:.3} (mean of 3 seeds)", sum / 3.0);
    }
    let spans = real.span_count() as u64;
    assert!(repairs.changed_over_10pct * 100 <= spans, "{name}: {repairs:?} of {spans} spans");
    assert_eq!(regenerated.span_count() as u64, spans);

    // The same packet and seed write the same bytes.
    let again = tempfile::tempdir().unwrap();
    assert_eq!(regenerate(&real, again.path(), None).3, written, "{name}: output differs for the same packet and seed");
}

#[test]
fn trainticket_hour_12_costs_no_more_than_1_in_100_and_answers_as_well_as_1_in_5() {
    check_window("trainticket hour 12", hour(12));
}

#[test]
fn trainticket_hour_16_costs_no_more_than_1_in_100_and_answers_as_well_as_1_in_5() {
    check_window("trainticket hour 16", hour(16));
}

#[test]
fn hipster_costs_no_more_than_1_in_100_and_answers_as_well_as_1_in_5() {
    check_window("hipster", read_set(&[data("hipster")]));
}

/// Per (caller service, callee service), every call's share of its
/// caller's duration, sorted.
fn shares_by_pair(set: &TraceSet) -> HashMap<(String, String), Vec<f64>> {
    let mut out: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for t in &set.traces {
        let by_id: HashMap<_, &gent::trace::Span> = t.spans.iter().map(|s| (s.span_id, s)).collect();
        for call in &t.spans {
            let Some(caller) = call.parent_span_id.and_then(|p| by_id.get(&p)).filter(|c| c.duration() > 0) else { continue };
            let pair = (caller.service().to_string(), call.service().to_string());
            out.entry(pair).or_default().push(call.duration() as f64 / caller.duration() as f64);
        }
    }
    out.values_mut().for_each(|v| v.sort_by(f64::total_cmp));
    out
}

#[test]
fn trainticket_hour_16_rare_calls_keep_their_shares_of_their_callers() {
    // 11 of hour 16's 42 caller-callee pairs are seen at most 4 times, where
    // a sketch has nothing to spread: composed from their callers' sketches,
    // their shares came back up to 0.06 off and those pairs scored 0 to 0.75
    // on the bottlenecks query. Kept call by call, they come back within the
    // 0.05% a share is stored to.
    let real = hour(16);
    let want = shares_by_pair(&real);
    let rare: Vec<(&(String, String), &Vec<f64>)> = want.iter().filter(|(_, v)| v.len() <= 4).collect();
    assert!(rare.len() >= 5, "hour 16 has rare pairs: {}", rare.len());
    let worst = |rare_calls: u32| {
        let got = shares_by_pair(&regenerated_under(&real, |c| c.calibration.rare_calls = rare_calls));
        let off = |(pair, shares): &(&(String, String), &Vec<f64>)| {
            let back = got.get(*pair).expect("the pair comes back");
            assert_eq!(back.len(), shares.len(), "{pair:?} comes back as often");
            shares.iter().zip(back).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
        };
        rare.iter().map(off).fold(0.0, f64::max)
    };
    let (with, without) = (worst(GenTConfig::default().calibration.rare_calls), worst(0));
    println!("rare calls' shares: at most {with:.4} off kept, {without:.4} composed");
    assert!(with < 0.002 && without > 0.02, "kept {with:.4}, composed {without:.4}");
}

/// ln(1 + duration in µs) of every span, per (service, span name).
fn log_durations(set: &TraceSet) -> HashMap<(String, String), Vec<f64>> {
    let mut out: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for s in set.traces.iter().flat_map(|t| &t.spans) {
        out.entry((s.service().to_string(), s.name.clone())).or_default().push((s.duration() as f64 / 1e3).ln_1p());
    }
    for v in out.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    out
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// Per label (with at least 20 spans) of `real`: the largest relative error
/// of `regenerated`'s log-duration p10, p50 and p90, with both's, worst first.
fn label_errors(real: &TraceSet, regenerated: &TraceSet) -> Vec<(f64, String, [f64; 3], [f64; 3])> {
    let (want, got) = (log_durations(real), log_durations(regenerated));
    let mut errors: Vec<(f64, String, [f64; 3], [f64; 3])> = want
        .iter()
        .filter(|(_, v)| v.len() >= 20)
        .map(|(label, w)| {
            let g = &got[label];
            let qs = |v: &[f64]| [0.1, 0.5, 0.9].map(|p| quantile(v, p));
            let (w, g) = (qs(w), qs(g));
            let error = w.iter().zip(&g).map(|(a, b)| (a - b).abs() / a.max(1e-9)).fold(0.0, f64::max);
            (error, format!("{}/{}", label.0, label.1), w, g)
        })
        .collect();
    errors.sort_by(|a, b| b.0.total_cmp(&a.0));
    errors
}

#[test]
fn trainticket_hour_12_labels_keep_their_duration_quantiles() {
    let real = hour(12);
    let dir = tempfile::tempdir().unwrap();
    // The packet's seed, and seed 2, at which a label of a hundred spans
    // whose p90 sits on a jump (9.68 to 10.33 ln µs from its 89th to its
    // 90th) missed by 6.1% while its composed durations were sketched at
    // fewer points than values (BENCHMARKS.md "Session 60").
    let at_seeds: Vec<_> = [None, Some(2)]
        .into_iter()
        .map(|seed| {
            let (_, regenerated, _, _) = regenerate(&real, dir.path(), seed);
            let errors = label_errors(&real, &regenerated);
            let within = errors.iter().filter(|e| e.0 <= 0.05).count();
            println!("seed {seed:?}: labels with p10, p50 and p90 within 5%: {within} of {}; the worst:", errors.len());
            for (error, label, w, g) in errors.iter().take(10) {
                println!("  {:>5.1}%  {label}: real {w:.2?}, regenerated {g:.2?}", 100.0 * error);
            }
            assert_eq!(within, errors.len(), "seed {seed:?}: worst label {} at {:.3}", errors[0].1, errors[0].0);
            errors
        })
        .collect();
    let first = &at_seeds[0];
    // Composed spans drawn apart and summed miss by more.
    let apart = label_errors(&real, &regenerated_under(&real, |c| c.calibration.composed = false));
    let worst = |errors: &[(f64, String, [f64; 3], [f64; 3])]| errors.iter().take(5).map(|e| e.0).sum::<f64>();
    println!("the five worst without composed durations: {:?}", &apart[..5].iter().map(|e| (e.0, &e.1)).collect::<Vec<_>>());
    assert!(worst(first) < worst(&apart), "five worst {:.3} with composed durations, {:.3} without", worst(first), worst(&apart));
}

/// Per (parent label, leaf label): the median share of its parent's duration
/// the leaf lasts, with the number of such leaves.
fn coverage(set: &TraceSet) -> HashMap<(String, String), (f64, usize)> {
    let mut shares: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for t in &set.traces {
        let by_id: HashMap<_, _> = t.spans.iter().map(|s| (s.span_id, s)).collect();
        let parents: std::collections::HashSet<_> = t.spans.iter().filter_map(|s| s.parent_span_id).collect();
        for s in t.spans.iter().filter(|s| !parents.contains(&s.span_id)) {
            let Some(p) = s.parent_span_id.and_then(|p| by_id.get(&p)) else { continue };
            let label = |s: &gent::trace::Span| format!("{}/{}", s.service(), s.name);
            let share = s.duration() as f64 / p.duration().max(1) as f64;
            shares.entry((label(p), label(s))).or_default().push(share);
        }
    }
    shares
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, (v[v.len() / 2], v.len()))
        })
        .collect()
}

#[test]
fn trainticket_hour_12_leaves_that_span_their_parent_still_do() {
    // A gateway's filter chain lasts as long as the request it forwards,
    // beside the client call that does the work: drawn on its own, its
    // duration would not follow its parent's.
    let real = hour(12);
    let dir = tempfile::tempdir().unwrap();
    let (_, regenerated, _, _) = regenerate(&real, dir.path(), None);
    let got = coverage(&regenerated);
    let spanning: Vec<_> = coverage(&real).into_iter().filter(|(_, (share, n))| *share >= 0.9 && *n >= 100).collect();
    assert!(!spanning.is_empty(), "hour 12 has leaves that span their parent");
    for ((parent, leaf), (share, _)) in spanning {
        let (regenerated_share, _) = got[&(parent.clone(), leaf.clone())];
        println!("{leaf} under {parent}: median share {share:.3}, regenerated {regenerated_share:.3}");
        assert!((regenerated_share - share).abs() < 0.05, "{leaf} under {parent}: {regenerated_share:.3} against {share:.3}");
    }
}

/// Per (minute of the trace's start, service) with at least 20 spans: the
/// mean of its spans' log durations less their label's median.
fn minute_shifts(set: &TraceSet) -> HashMap<(u64, String), f64> {
    let durations = log_durations(set);
    let medians: HashMap<_, _> = durations.iter().map(|(k, v)| (k.clone(), v[v.len() / 2])).collect();
    let mut cells: HashMap<(u64, String), (f64, usize)> = HashMap::new();
    for t in &set.traces {
        let minute = t.start() / 60_000_000_000;
        for s in &t.spans {
            let label = (s.service().to_string(), s.name.clone());
            let c = cells.entry((minute, label.0.clone())).or_default();
            *c = (c.0 + (s.duration() as f64 / 1e3).ln_1p() - medians[&label], c.1 + 1);
        }
    }
    cells.into_iter().filter(|(_, (_, n))| *n >= 20).map(|(k, (sum, n))| (k, sum / n as f64)).collect()
}

/// Pearson correlation of paired values.
fn correlation(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = pairs.iter().map(|(a, b)| (a - ma) * (b - mb)).sum();
    let (va, vb): (f64, f64) = (pairs.iter().map(|p| (p.0 - ma).powi(2)).sum(), pairs.iter().map(|p| (p.1 - mb).powi(2)).sum());
    cov / (va * vb).sqrt()
}

#[test]
fn trainticket_hour_12_minutes_in_which_a_service_ran_slow_come_back_slow() {
    let real = hour(12);
    let want = minute_shifts(&real);
    let agreement = |time_effects: bool| {
        let got = minute_shifts(&regenerated_under(&real, |c| c.calibration.time_effects = time_effects));
        let pairs: Vec<(f64, f64)> = want.iter().filter_map(|(k, &w)| got.get(k).map(|&g| (w, g))).collect();
        correlation(&pairs)
    };
    let (with, without) = (agreement(true), agreement(false));
    println!("per minute and service, slowness agrees at {with:.3} with time effects, {without:.3} without");
    assert!(with > without + 0.05 && with > 0.6, "with {with:.3}, without {without:.3}");
}

/// Per parent label: the largest duration of its longest call against its
/// own, over calls lasting at least `least` ns.
fn largest_reach(set: &TraceSet, least: u64) -> HashMap<String, f64> {
    let mut longest: HashMap<(usize, gent::trace::SpanId), u64> = HashMap::new();
    for (i, t) in set.traces.iter().enumerate() {
        for s in t.spans.iter().filter(|s| s.duration() >= least) {
            if let Some(p) = s.parent_span_id {
                let l = longest.entry((i, p)).or_default();
                *l = (*l).max(s.duration());
            }
        }
    }
    let mut out: HashMap<String, f64> = HashMap::new();
    for (i, t) in set.traces.iter().enumerate() {
        for p in &t.spans {
            let Some(&l) = longest.get(&(i, p.span_id)) else { continue };
            let r = out.entry(format!("{}/{}", p.service(), p.name)).or_insert(0.0);
            *r = r.max(l as f64 / p.duration().max(1) as f64);
        }
    }
    out
}

/// A call under an async parent (its tail negative, its duration its own)
/// used to be drawn apart from the parent: a food → station-food call came
/// back 37 times its parent's length where the hour's largest was twice.
/// No parent's longest call is now longer against it than the window ever
/// had it (within the 6% of the bound's code and the read-back's rounding).
#[test]
fn trainticket_hour_12_calls_are_never_longer_against_their_parent_than_in_the_window() {
    let real = hour(12);
    let dir = tempfile::tempdir().unwrap();
    let (_, regenerated, _, _) = regenerate(&real, dir.path(), None);
    let want = largest_reach(&real, 0);
    let got = largest_reach(&regenerated, 1_000_000);
    let mut over: Vec<(f64, &String, f64)> =
        (got.iter()).filter_map(|(k, &g)| want.get(k).filter(|&&w| g > w * 1.1).map(|&w| (g / w, k, w))).collect();
    over.sort_by(|a, b| b.0.total_cmp(&a.0));
    assert!(over.is_empty(), "calls longer against their parent than in the window: {over:?}");
    assert!(got.len() > 50, "{} parents compared", got.len());
}

/// Per minute of the trace's start: how many traces last longer than `limit`
/// (ns); every minute with a trace is listed.
fn slow_per_minute(set: &TraceSet, limit: u64) -> HashMap<u64, f64> {
    let mut out: HashMap<u64, f64> = HashMap::new();
    for t in &set.traces {
        let slow = t.end().saturating_sub(t.start()) > limit;
        *out.entry(t.start() / 60_000_000_000).or_default() += f64::from(u8::from(slow));
    }
    out
}

#[test]
fn trainticket_hour_12_minutes_of_a_retry_storm_come_back_with_it() {
    // In a few minutes of hour 12 a quarter of some HTTP POST calls wait a
    // second (timeouts and retries): up to 33 of 57 traces a minute are
    // slower than the hour's 90th percentile, against 0–3 in calm minutes.
    let real = hour(12);
    let mut lengths: Vec<u64> = real.traces.iter().map(|t| t.end().saturating_sub(t.start())).collect();
    lengths.sort_unstable();
    let p90 = lengths[lengths.len() * 9 / 10];
    let want = slow_per_minute(&real, p90);
    let agreement = |bursts: bool, latency_bands: bool| {
        let regenerated =
            regenerated_under(&real, |c| (c.calibration.bursts, c.calibration.latency_bands) = (bursts, latency_bands));
        let got = slow_per_minute(&regenerated, p90);
        let pairs: Vec<(f64, f64)> = want.iter().map(|(k, &w)| (w, got.get(k).copied().unwrap_or(0.0))).collect();
        correlation(&pairs)
    };
    // Bursts alone bring the storm back into the timing; the latency bands
    // then put each minute's slow traces where they were.
    let (with, without) = (agreement(true, false), agreement(false, false));
    let banded = agreement(true, true);
    println!(
        "per minute, traces slower than the real p90 agree at {with:.3} with bursts, {without:.3} without, \
         {banded:.3} with bursts and latency bands"
    );
    assert!(with > without + 0.2 && with > 0.7, "with {with:.3}, without {without:.3}");
    assert!(banded > 0.95, "with latency bands {banded:.3}");
}

/// The latency alarm reads, per minute, how many of an entry's traces were
/// slower than its p90: drawn independently, a minute of fifty traces gets
/// its handful of slow ones by chance. The packet's latency bands put each
/// minute's slow traces back in it (`calibration.latency_bands`), and the
/// traces nearest a cut are stretched across it where a minute still lacks
/// or holds too many; scored as read back from the written OTLP file, mean
/// of three seeds (0.966, 0.956 and 1.000 when this was written).
#[test]
fn minutes_that_held_slow_traces_hold_them_again_on_every_window() {
    for (name, real) in [("hour 12", hour(12)), ("hour 16", hour(16)), ("hipster", read_set(&[data("hipster")]))] {
        let reference = Reference::new(&real, Vec::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let alarm = |latency_bands: bool| {
            let mut config = GenTConfig::default();
            config.calibration.latency_bands = latency_bands;
            let mut scores = Vec::new();
            for seed in 1..=3 {
                let (_, regenerated, repairs, _) = regenerate_with(&real, dir.path(), Some(seed), &config);
                assert_eq!(repairs.latency_arranged > 0, latency_bands, "{name}: {repairs:?}");
                let report = reference.evaluate(&regenerated, 1.0).unwrap();
                let alarms = report.queries.iter().filter(|q| q.name.starts_with("latency_alarm"));
                let alarms: Vec<f64> = alarms.map(|q| q.score).collect();
                scores.push(alarms.iter().sum::<f64>() / alarms.len() as f64);
            }
            scores.iter().sum::<f64>() / scores.len() as f64
        };
        let (with, without) = (alarm(true), alarm(false));
        println!("{name}: latency alarm {with:.3} with latency bands, {without:.3} without");
        assert!(with >= 0.9, "{name}: latency alarm {with:.3} with latency bands");
        assert!(with >= without, "{name}: {with:.3} with latency bands, {without:.3} without");
    }
}

/// Issue 20: a window larger than its share fits its generators on a head
/// sample of its traces, its timing on the timing of a larger head sample
/// (at the default `timing_spans`, every trace of this hour), and reads
/// every trace minute by minute (the bins it folded). Hour 12 with a share
/// of about 100k of its 216k spans scores within 0.02 of the whole window
/// overall and in every timing query, as means over 8 generation seeds (one
/// seed's latency alarm moves by ±0.1). With a timing sample of 150k spans,
/// 70% of the window, bottlenecks come within 0.04: the copula's
/// correlations and each node's spread of ranks read off fewer traces than
/// the queries score against (BENCHMARKS.md, session 44).
#[test]
fn trainticket_hour_12_fitted_on_half_its_spans_keeps_its_structure_and_its_fidelity() {
    let real = hour(12);
    let device = Device::flex();
    let config = GenTConfig::default();
    let reference = Reference::new(&real, Vec::new()).unwrap();
    const SEEDS: u64 = 8;
    let score = |spans: (usize, usize)| {
        let started = std::time::Instant::now();
        let model = WindowModel::train_within(&real.traces, &config, &device, None, spans).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let packet = gent::codec::pack(&model, 1, &config, Precision::F16, 7, None).unwrap();
        let unpacked = gent::codec::unpack(&packet, &device).unwrap();
        let mut means: Vec<(String, f64)> = Vec::new();
        let mut overall = 0.0;
        for seed in 1..=SEEDS {
            let (traces, _) = unpacked.model.generate(seed).unwrap();
            let report = reference.evaluate_any(&set(traces), 1.0).unwrap();
            if means.is_empty() {
                means = report.queries.iter().map(|q| (q.name.clone(), 0.0)).collect();
            }
            for (mean, q) in means.iter_mut().zip(&report.queries) {
                assert_eq!(mean.0, q.name);
                mean.1 += q.score / SEEDS as f64;
            }
            overall += report.overall / SEEDS as f64;
        }
        println!("{spans:?}: {overall:.3} in {seconds:.2} s, {} B", packet.len());
        (model, overall, means)
    };
    let (whole, whole_overall, whole_queries) = score((0, 0));
    let (part, part_overall, part_queries) = score((100_000, gent::gent::TIMING_SPANS));
    let (_, fewer_overall, fewer_queries) = score((100_000, 150_000));
    println!("  {:<44} whole  share  timed on 150k", "");
    for ((w, p), f) in whole_queries.iter().zip(&part_queries).zip(&fewer_queries) {
        println!("  {:<44} {:.4} {:.4} {:.4}", w.0, w.1, p.1, f.1);
    }
    // The histogram (and so every topology's count) is the whole window's.
    assert_eq!(whole.histogram, part.histogram);
    let timing = ["bottlenecks", "red_duration", "subtask_durations", "latency_alarm", "nesting", "self_time"];
    let check = |(overall, queries): (f64, &[(String, f64)]), bottlenecks: f64| {
        let score = |name: &str| queries.iter().find(|q| q.0 == name).map(|q| q.1);
        for exact in ["trigger_correlations", "call_counts"] {
            assert_eq!(score(exact), Some(1.0), "{exact}");
        }
        assert!(overall >= whole_overall - 0.02, "{overall:.3} against {whole_overall:.3}");
        for query in timing {
            let within = if query == "bottlenecks" { bottlenecks } else { 0.02 };
            for (name, w) in whole_queries.iter().filter(|q| q.0.starts_with(query)) {
                let p = score(name).unwrap();
                assert!(p >= w - within, "{name}: {p:.4} fitted on samples against {w:.4} on the whole window");
            }
        }
    };
    check((part_overall, &part_queries), 0.02);
    check((fewer_overall, &fewer_queries), 0.04);
}

/// Per label of a parent with exactly one call, with at least 100 such
/// spans: the rank correlation of the call's duration with the parent's self
/// time (its duration less the call's).
fn self_time_follows_the_call(set: &TraceSet) -> HashMap<String, f64> {
    let mut pairs: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for t in &set.traces {
        let mut calls: HashMap<_, Vec<&gent::trace::Span>> = HashMap::new();
        for s in &t.spans {
            if let Some(p) = s.parent_span_id {
                calls.entry(p).or_default().push(s);
            }
        }
        for p in &t.spans {
            let Some([call]) = calls.get(&p.span_id).map(Vec::as_slice) else { continue };
            let own = p.duration().saturating_sub(call.duration());
            pairs.entry(format!("{}/{}", p.service(), p.name)).or_default().push((call.duration() as f64, own as f64));
        }
    }
    pairs.into_iter().filter(|(_, v)| v.len() >= 100).map(|(k, v)| (k, correlation(&ranks(&v)))).collect()
}

/// Each value of the pairs replaced by its rank on its side.
fn ranks(pairs: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let rank = |side: &dyn Fn(&(f64, f64)) -> f64| {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by(|&a, &b| side(&pairs[a]).total_cmp(&side(&pairs[b])));
        let mut r = vec![0.0; pairs.len()];
        for (k, i) in order.into_iter().enumerate() {
            r[i] = k as f64;
        }
        r
    };
    let (a, b) = (rank(&|p| p.0), rank(&|p| p.1));
    a.into_iter().zip(b).collect()
}

#[test]
fn trainticket_hour_16_self_time_follows_the_call_with_couplings_alone() {
    // A parent's own work grows with the call it waits for (serialising a
    // larger answer, a loaded node): on hour 16 the verification service's
    // self time correlates with its controller's duration at about 0.7. The
    // per key couplings carry this at a byte a key; a budget that has to
    // drop the per node locations keeps them.
    let real = hour(16);
    let want = self_time_follows_the_call(&real);
    assert!(want.values().any(|&c| c > 0.5), "hour 16 has parents whose self time follows their call: {want:?}");
    let mean = |node_effects: bool| {
        let got = self_time_follows_the_call(&regenerated_under(&real, |c| {
            c.calibration.budget = None;
            (c.calibration.node_effects, c.calibration.node_locations) = (node_effects, NodeLocations::None);
        }));
        let strong: Vec<f64> = want.iter().filter(|&(_, &c)| c > 0.5).map(|(k, _)| got.get(k).copied().unwrap_or(0.0)).collect();
        strong.iter().sum::<f64>() / strong.len() as f64
    };
    let real_mean = {
        let strong: Vec<f64> = want.values().copied().filter(|&c| c > 0.5).collect();
        strong.iter().sum::<f64>() / strong.len() as f64
    };
    let (with, without) = (mean(true), mean(false));
    println!("self time against the call: real {real_mean:.3}, couplings alone {with:.3}, no node effects {without:.3}");
    assert!(with > 0.5 * real_mean && with > without + 0.2, "couplings alone {with:.3}, none {without:.3}, real {real_mean:.3}");
}

/// Per (path, call label) with at least 50 calls, the path being the labels
/// from the parent up to the trace's root: the gaps from the end of the
/// calls before each call (the parent's start for the first) to its start,
/// sorted. (Calls of one label are pooled: siblings of one label may come
/// back in another order.)
fn gaps_by_path(set: &TraceSet) -> HashMap<(String, String), Vec<f64>> {
    let label = |s: &gent::trace::Span| format!("{}/{}", s.service(), s.name);
    let mut gaps: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for t in &set.traces {
        let by_id: HashMap<_, _> = t.spans.iter().map(|s| (s.span_id, s)).collect();
        let mut calls: HashMap<_, Vec<&gent::trace::Span>> = HashMap::new();
        for s in &t.spans {
            if let Some(p) = s.parent_span_id {
                calls.entry(p).or_default().push(s);
            }
        }
        for p in &t.spans {
            let Some(calls) = calls.get_mut(&p.span_id) else { continue };
            // The path, walked up iteratively (bounded by the trace's size).
            let mut path = vec![label(p)];
            let mut up = p.parent_span_id.and_then(|id| by_id.get(&id));
            while let Some(a) = up.filter(|_| path.len() <= t.spans.len()) {
                path.push(label(a));
                up = a.parent_span_id.and_then(|id| by_id.get(&id));
            }
            let path = path.join(" < ");
            calls.sort_by_key(|s| s.start);
            let mut end = p.start;
            for c in calls.iter() {
                gaps.entry((path.clone(), label(c))).or_default().push(c.start as f64 - end as f64);
                end = end.max(c.end);
            }
        }
    }
    gaps.retain(|_, v| v.len() >= 50);
    gaps.values_mut().for_each(|v| v.sort_by(f64::total_cmp));
    gaps
}

/// The median of sorted values.
fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

#[test]
fn trainticket_hour_12_the_work_between_calls_follows_the_trace_it_is_in() {
    // The seat service works 24 ms (median) between its two calls in a
    // booking, over the tickets it was sent, and 1 ms in a browse: one lead
    // key, two places. Lead locations per node (or per path) bring each
    // place's back.
    let real = hour(12);
    let want = gaps_by_path(&real);
    // The places whose median gap is over twice, or under half, that of
    // their key (parent label, call label) over every place.
    let mut keys: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    for ((path, call), gaps) in &want {
        let parent = path.split(" < ").next().unwrap_or_default();
        keys.entry((parent, call)).or_default().extend(gaps);
    }
    keys.values_mut().for_each(|v| v.sort_by(f64::total_cmp));
    let placed: Vec<(&(String, String), f64)> = (want.iter())
        .map(|(k, gaps)| (k, median(gaps)))
        .filter(|&((path, call), m)| {
            let key = median(&keys[&(path.split(" < ").next().unwrap_or_default(), call.as_str())]);
            m >= 1e5 && (m > 2.0 * key || m < 0.5 * key)
        })
        .collect();
    assert!(placed.len() >= 3, "hour 12 has gaps that depend on their place: {}", placed.len());
    let within = |locations: NodeLocations| {
        let got = gaps_by_path(&regenerated_under(&real, |c| c.calibration.node_locations = locations));
        let close =
            (placed.iter()).filter(|&&(k, m)| got.get(k).is_some_and(|g| (median(g) - m).abs() <= 0.25 * m.abs())).count();
        close as f64 / placed.len() as f64
    };
    let (nodes, paths, none) = (within(NodeLocations::Nodes), within(NodeLocations::Paths), within(NodeLocations::None));
    println!(
        "{} places whose gap is not their key's; median within 25%: per node {nodes:.3}, per path {paths:.3}, couplings alone {none:.3}",
        placed.len()
    );
    assert!(nodes >= 0.6 && nodes > none + 0.2, "per node {nodes:.3}, couplings alone {none:.3}");
    assert!(paths > none + 0.2, "per path {paths:.3}, couplings alone {none:.3}");
}

/// Alibaba call graphs: 911 graphs of 347 topologies, where the status or
/// kind varies, so C_G trains a network. At Gen-T's width it was 118 KB of a
/// 124 KB packet, more than the window's gzip OTLP (107 KB). The budget now
/// narrows each generator to an eighth of it; no packet meets 1:100 head
/// sampling here (the histogram alone is twice its bytes), so the timing
/// stays as configured rather than shrinking for nothing.
#[test]
fn alibaba_call_graphs_pack_far_under_their_gzip_with_a_narrowed_generator_and_full_timing() {
    let real = read_set(&[data("alibaba/callgraphs_train.txt")]);
    let dir = tempfile::tempdir().unwrap();
    let reference = Reference::new(&real, Vec::new()).unwrap();
    let (packet_bytes, regenerated, _, _) = regenerate(&real, dir.path(), Some(1));
    let gzip = wire_sizes(&real.traces).unwrap().gzip;
    let gent = reference.evaluate(&regenerated, 1.0).unwrap().overall;
    let (bytes_5, fidelity_5) = head(&real, &reference, 5, 3, 3);
    println!(
        "packet {packet_bytes} B, gzip OTLP {gzip} B; fidelity {gent:.3} against 1:5 head sampling's {fidelity_5:.3} ({bytes_5:.0} B)"
    );
    assert!((packet_bytes as u64) * 4 < gzip as u64, "packet {packet_bytes} B, gzip {gzip} B");
    assert!(gent >= fidelity_5, "fidelity {gent:.3}, 1:5 {fidelity_5:.3}");
    // Each label keeps its span kinds (3 of 3,885 spans are not servers;
    // the generator alone made 912 of them consumers).
    let kinds = |set: &TraceSet| {
        let mut out: HashMap<(String, String, i32), usize> = HashMap::new();
        for s in set.traces.iter().flat_map(|t| &t.spans) {
            *out.entry((s.service().to_string(), s.name.clone(), s.kind.to_otlp())).or_default() += 1;
        }
        out
    };
    assert_eq!(kinds(&regenerated), kinds(&real), "span kinds per label");
    let model = WindowModel::train(&real.traces, &GenTConfig::default(), &Device::flex(), None).unwrap();
    let budget = model.budget.unwrap();
    let configured = GenTConfig::default().calibration;
    assert!(!budget.met && budget.quantiles_per_root == configured.quantiles_per_root && budget.node_effects, "{budget:?}");
}

/// Hour 16 as if some calls failed: status ERROR and HTTP status code 500
/// on 30% of the travel, travel2 and auth services' spans slower than
/// 50 ms and on 2% of the spans (chosen by span id): 613 of 18,856.
fn failing(mut set: TraceSet) -> TraceSet {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    const SLOW: [&str; 3] = ["ts-travel-service", "ts-travel2-service", "ts-auth-service"];
    for span in set.traces.iter_mut().flat_map(|t| &mut t.spans) {
        let draw = u64::from_le_bytes(span.span_id) % 100;
        let slow = SLOW.contains(&span.service()) && span.duration() > 50_000_000;
        if (slow && draw < 30) || draw < 2 {
            span.status.code = StatusCode::Error;
            span.attributes.retain(|kv| kv.key != "http.response.status_code");
            let value = Some(AnyValue { value: Some(Value::IntValue(500)) });
            span.attributes.push(KeyValue { key: "http.response.status_code".into(), value, ..Default::default() });
        }
    }
    set
}

/// Per label: failed spans and spans with status OK.
fn statuses(set: &TraceSet) -> HashMap<(String, String), (usize, usize)> {
    let mut out: HashMap<(String, String), (usize, usize)> = HashMap::new();
    for s in set.traces.iter().flat_map(|t| &t.spans) {
        let entry = out.entry((s.service().to_string(), s.name.clone())).or_default();
        entry.0 += usize::from(s.status.code == StatusCode::Error);
        entry.1 += usize::from(s.status.code == StatusCode::Ok);
    }
    out
}

/// Instrumentations differ in whether a span that did not fail says OK or
/// nothing: with the auth service's saying OK, each label keeps its OKs and
/// its failures exactly, and no generator learns status for it.
#[test]
fn trainticket_hour_16_with_failures_and_ok_statuses_keeps_both_per_label() {
    let mut real = failing(hour(16));
    for span in real.traces.iter_mut().flat_map(|t| &mut t.spans) {
        if span.service() == "ts-auth-service" && span.status.code != StatusCode::Error {
            span.status.code = StatusCode::Ok;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (bytes, regenerated, repairs, _) = regenerate(&real, dir.path(), None);
    let (want, got) = (statuses(&real), statuses(&regenerated));
    let oks: usize = want.values().map(|v| v.1).sum();
    println!("packet {bytes} B; {oks} spans OK; repairs {repairs:?}");
    assert!(oks > 1000, "the auth service's spans say OK: {oks}");
    for (label, counts) in &want {
        assert_eq!(got.get(label).copied().unwrap_or_default(), *counts, "{label:?}: (failed, OK)");
    }
    // No generator learns status: the packet stays within 1:100 head sampling.
    let reference = Reference::new(&real, Vec::new()).unwrap();
    let (head_bytes, _) = head(&real, &reference, 100, 10, 0);
    assert!(bytes as f64 <= head_bytes, "packet {bytes} B against 1:100 head sampling's {head_bytes:.0} B");
}

/// Per label: failed spans, and those with HTTP status 500 that did not fail.
fn failures(set: &TraceSet) -> HashMap<(String, String), (usize, usize)> {
    let mut out: HashMap<(String, String), (usize, usize)> = HashMap::new();
    for s in set.traces.iter().flat_map(|t| &t.spans) {
        let failed = s.status.code == StatusCode::Error;
        let code = s.attributes.iter().find(|kv| kv.key == "http.response.status_code").and_then(|kv| kv.value.as_ref());
        let server_error = code.and_then(|v| v.value.as_ref()).is_some_and(|v| format!("{v:?}").contains("500"));
        let entry = out.entry((s.service().to_string(), s.name.clone())).or_default();
        entry.0 += usize::from(failed);
        entry.1 += usize::from(server_error && !failed);
    }
    out
}

/// Failed spans of the slow-failing services that lasted over 50 ms, as a
/// share of their failed spans.
fn slow_failures(set: &TraceSet) -> f64 {
    let failed: Vec<u64> = (set.traces.iter().flat_map(|t| &t.spans))
        .filter(|s| s.status.code == StatusCode::Error && ["ts-travel-service", "ts-auth-service"].contains(&s.service()))
        .map(|s| s.duration())
        .collect();
    failed.iter().filter(|&&d| d > 50_000_000).count() as f64 / failed.len().max(1) as f64
}

/// The generators learned little of which spans fail (session 56: 1,955
/// regenerated failures against 475, on labels that never failed); the
/// packet counts them per label and minute, and their attributes per label
/// and status, and trains no generator for them.
#[test]
fn trainticket_hour_16_with_failures_fails_where_and_when_it_did() {
    let real = failing(hour(16));
    let dir = tempfile::tempdir().unwrap();
    let reference = Reference::new(&real, Vec::new()).unwrap();
    let (bytes, regenerated, repairs, _) = regenerate(&real, dir.path(), None);
    let scores = reference.evaluate(&regenerated, 1.0).unwrap();
    let score = |name: &str| scores.queries.iter().filter(|q| q.name.starts_with(name)).map(|q| q.score).fold(1.0, f64::min);
    let uncalibrated = regenerated_under(&real, |c| c.calibration.status = false);
    let (want, got, without) = (failures(&real), failures(&regenerated), failures(&uncalibrated));
    let total = |f: &HashMap<(String, String), (usize, usize)>| f.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    println!(
        "packet {bytes} B; failed spans (and non-failed with status 500): real {:?}, calibrated {:?}, without {:?}; \
         over 50 ms: real {:.3}, calibrated {:.3}, without {:.3}; repairs {repairs:?}",
        total(&want),
        total(&got),
        total(&without),
        slow_failures(&real),
        slow_failures(&regenerated),
        slow_failures(&uncalibrated)
    );
    for q in scores.queries.iter().filter(|q| q.name.contains("error") || q.name.starts_with("attribute")) {
        println!("  {:<44} {:.3}", q.name, q.score);
    }
    // Each label fails exactly as often, and 500 goes with failing only.
    for (label, &(failed, _)) in &want {
        assert_eq!(got.get(label).map_or(0, |g| g.0), failed, "{label:?} fails as often");
    }
    assert_eq!(total(&got).1, 0, "no span that did not fail has status 500");
    // Failures land in the minutes and at the durations they had.
    for name in ["red_errors", "error_alarm", "attribute_frequency"] {
        assert!(score(name) >= 0.95, "{name}: {:.3}", score(name));
    }
    // The duration quartiles of a label's failures: 0.55 against the real
    // 0.61 (0.18 without calibration).
    let slow = (slow_failures(&regenerated), slow_failures(&real));
    assert!((slow.0 - slow.1).abs() < 0.1, "{:.3} of failures over 50 ms, real {:.3}", slow.0, slow.1);
    // What the counts decide needs no generator: the packet is no larger
    // than 1:100 head sampling (it was 14 KB with C_G learning status and
    // the status code, against 5.7 KB).
    let (head_bytes, _) = head(&real, &reference, 100, 10, 0);
    println!("packet {bytes} B, 1:100 head sampling {head_bytes:.0} B");
    assert!(bytes as f64 <= head_bytes, "packet {bytes} B against 1:100 head sampling's {head_bytes:.0} B");
    // A window regenerated in parts fails as often in all: each part takes
    // its share of every (label, minute), rounded at a phase they share.
    let model = WindowModel::train(&real.traces, &GenTConfig::default(), &Device::flex(), None).unwrap();
    let mut failed = 0;
    model
        .generate_parts(3, 4, |traces, _| {
            failed += traces.iter().flat_map(|t| &t.spans).filter(|s| s.status.code == StatusCode::Error).count();
            true
        })
        .unwrap();
    let real_failed = total(&want).0 as f64;
    println!("in 4 parts: {failed} failed spans against {real_failed}");
    assert_eq!(failed as f64, real_failed, "failed spans in parts");
}
