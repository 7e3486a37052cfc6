//! The baselines gent replaces: head sampling (keep 1 trace in N, decided
//! from the trace id as the Collector's probabilistic sampler does) and tail
//! sampling (decided on the whole trace, with the Collector's
//! `tail_sampling` policy semantics: a trace is kept when any policy says so;
//! an `and` policy needs all of its parts).

use std::time::Duration;

use crate::trace::{StatusCode, Trace};

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("head sampling rate {0:?}: expected 1:N with N at least 1")]
    Head(String),
    #[error("tail policy {policy:?}: {reason}")]
    Tail { policy: String, reason: String },
}

pub use crate::trace::head_keeps;

/// Parses `1:N` (or `N`).
pub fn parse_head(text: &str) -> Result<u64, SamplingError> {
    let n = text.strip_prefix("1:").unwrap_or(text);
    n.trim().parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(|| SamplingError::Head(text.into()))
}

/// One tail-sampling policy.
#[derive(Debug, Clone, PartialEq)]
pub enum TailPolicy {
    /// Keep traces with a span of one of these status codes.
    StatusCode(Vec<StatusCode>),
    /// Keep traces lasting at least this long (first start to last end).
    Latency(Duration),
    /// Keep this percentage of traces, by trace id hash.
    Probabilistic(f64),
    /// Keep traces every part keeps.
    And(Vec<TailPolicy>),
}

impl TailPolicy {
    /// Policies separated by `,` (any keeps), parts of an `and` joined by
    /// `+`: `status_code:ERROR`, `latency:500ms`, `probabilistic:10` (percent);
    /// e.g. `status_code:ERROR,latency:2s+probabilistic:20`.
    pub fn parse_list(text: &str) -> Result<Vec<TailPolicy>, SamplingError> {
        let policies: Vec<TailPolicy> = text
            .split(',')
            .map(|p| {
                let parts: Vec<TailPolicy> = p.split('+').map(Self::parse_one).collect::<Result<_, _>>()?;
                Ok(if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { TailPolicy::And(parts) })
            })
            .collect::<Result<_, _>>()?;
        Ok(policies)
    }

    fn parse_one(text: &str) -> Result<TailPolicy, SamplingError> {
        let bad = |reason: &str| SamplingError::Tail { policy: text.into(), reason: reason.into() };
        let (name, value) = text.trim().split_once(':').ok_or_else(|| bad("expected NAME:VALUE"))?;
        match name.trim() {
            "status_code" => value
                .split('|')
                .map(|c| match c.trim().to_ascii_uppercase().as_str() {
                    "ERROR" => Ok(StatusCode::Error),
                    "OK" => Ok(StatusCode::Ok),
                    "UNSET" => Ok(StatusCode::Unset),
                    _ => Err(bad("status codes are ERROR, OK, UNSET (several joined by |)")),
                })
                .collect::<Result<_, _>>()
                .map(TailPolicy::StatusCode),
            "latency" => {
                humantime::parse_duration(value.trim()).map(TailPolicy::Latency).map_err(|_| bad("a duration such as 500ms"))
            }
            "probabilistic" => match value.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(TailPolicy::Probabilistic(p)),
                _ => Err(bad("a percentage from 0 to 100")),
            },
            _ => Err(bad("policies are status_code, latency, probabilistic")),
        }
    }

    pub fn keeps(&self, trace: &Trace, seed: u64) -> bool {
        match self {
            TailPolicy::StatusCode(codes) => trace.spans.iter().any(|s| codes.contains(&s.status.code)),
            TailPolicy::Latency(min) => trace.end().saturating_sub(trace.start()) >= min.as_nanos() as u64,
            TailPolicy::Probabilistic(percent) => {
                let hash = xxhash_rust::xxh3::xxh3_64_with_seed(&trace.trace_id, seed);
                (hash as f64 / u64::MAX as f64) * 100.0 < *percent
            }
            TailPolicy::And(parts) => parts.iter().all(|p| p.keeps(trace, seed)),
        }
    }
}

/// How traces are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    Head { n: u64 },
    Tail(Vec<TailPolicy>),
}

impl Sampler {
    pub fn keeps(&self, trace: &Trace, seed: u64) -> bool {
        match self {
            Sampler::Head { n } => head_keeps(&trace.trace_id, *n, seed),
            Sampler::Tail(policies) => policies.iter().any(|p| p.keeps(trace, seed)),
        }
    }

    /// The traces kept, in order.
    pub fn sample(&self, traces: &[Trace], seed: u64) -> Vec<Trace> {
        traces.iter().filter(|t| self.keeps(t, seed)).cloned().collect()
    }
}

const MINUTE_NS: u64 = 60_000_000_000;

/// A stratified 1:`k` sample of `traces` for measuring a large window: the
/// indices of every `k`-th trace (from a seeded phase) in order of entry point
/// (the first span's service and name), span count, minute and length. Each kind of
/// trace and each stretch of time keeps its share within one trace, so two
/// such samples (of real and regenerated traces) differ far less than two
/// random ones: a count per minute is not noise. Returned in input order.
pub fn stratified(traces: &[Trace], k: u64, seed: u64) -> Vec<usize> {
    if k <= 1 {
        return (0..traces.len()).collect();
    }
    // Keys computed once: a trace's start and end walk its spans.
    let keys: Vec<(Stratum<'_>, u64)> = traces
        .iter()
        .map(|t| {
            let (service, name) = t.spans.first().map_or(("", ""), |s| (s.service(), s.name.as_str()));
            let start = t.start();
            // Within a minute, by length: the sample keeps each minute's spread of durations too.
            (stratum(service, name, t.spans.len(), start), t.end().saturating_sub(start))
        })
        .collect();
    systematic(&keys, k, seed)
}

/// What a stratified sample keeps the shares of: entry point (service,
/// name), span count and minute.
pub type Stratum<'a> = (&'a str, &'a str, usize, u64);

/// The stratum of a trace starting at `start` (Unix ns).
pub fn stratum<'a>(service: &'a str, name: &'a str, spans: usize, start: u64) -> Stratum<'a> {
    (service, name, spans, start / MINUTE_NS)
}

/// The indices (ascending) of every `k`-th item in order of `keys` (ties in
/// input order), from a phase set by `seed`. Two lists whose strata hold
/// the same counts give the same number of items per stratum, whatever
/// the keys within one: the sample of [`stratified`] on real traces and this
/// on regenerated ones keyed by stratum and start (exact counts per
/// topology and minute) line up stratum for stratum.
pub fn systematic<K: Ord>(keys: &[K], k: u64, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| (&keys[a], a).cmp(&(&keys[b], b)));
    let phase = (seed % k.max(1)) as usize;
    let mut kept: Vec<usize> = order.into_iter().skip(phase).step_by(k.max(1) as usize).collect();
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stratified_sample_keeps_each_kind_and_minute_within_one_trace() {
        use crate::trace::test_span;
        // 3 kinds of trace (1, 2, 3 spans) over 10 minutes, 40 of each kind a minute.
        let mut traces = Vec::new();
        for i in 0..1200u32 {
            let (kind, minute) = (i % 3, (i / 3) % 10);
            let start = u64::from(minute) * 60_000_000_000 + u64::from(i) * 1000;
            let spans = (0..=kind).map(|s| test_span(0, s as u8, None, start + u64::from(s), start + 10)).collect();
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            traces.push(Trace { trace_id: id, spans });
        }
        let kept = stratified(&traces, 8, 3);
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "input order, no repeats");
        assert_eq!(kept.len(), 150);
        let mut cells = std::collections::HashMap::new();
        for &i in &kept {
            let t = &traces[i];
            *cells.entry((t.spans.len(), t.start() / 60_000_000_000)).or_insert(0) += 1;
        }
        assert_eq!(cells.len(), 30, "every kind in every minute");
        assert!(cells.values().all(|&c| c == 5), "{cells:?}");
        assert_ne!(stratified(&traces, 8, 3), stratified(&traces, 8, 4), "the seed sets the phase");
        assert_eq!(stratified(&traces, 1, 3).len(), 1200);
    }

    #[test]
    fn head_sampling_keeps_about_one_in_n_and_depends_on_the_seed() {
        let ids: Vec<[u8; 16]> = (0u128..100_000).map(|i| (i * 0x9e37_79b9_7f4a_7c15).to_le_bytes()).collect();
        for n in [1, 5, 20, 100] {
            let kept = ids.iter().filter(|id| head_keeps(id, n, 7)).count() as f64;
            let expected = 100_000.0 / n as f64;
            assert!((kept - expected).abs() < 4.0 * expected.sqrt() + 1.0, "1:{n} kept {kept}");
        }
        let a: Vec<bool> = ids.iter().map(|id| head_keeps(id, 10, 1)).collect();
        let b: Vec<bool> = ids.iter().map(|id| head_keeps(id, 10, 2)).collect();
        assert_ne!(a, b);
        assert_eq!(parse_head("1:20").unwrap(), 20);
        assert!(parse_head("1:0").is_err() && parse_head("x").is_err());
    }

    #[test]
    fn tail_policies_parse_with_the_collector_semantics() {
        let p = TailPolicy::parse_list("status_code:ERROR,latency:2s+probabilistic:20").unwrap();
        assert_eq!(
            p,
            vec![
                TailPolicy::StatusCode(vec![StatusCode::Error]),
                TailPolicy::And(vec![TailPolicy::Latency(Duration::from_secs(2)), TailPolicy::Probabilistic(20.0)]),
            ]
        );
        for bad in ["status_code:BROKEN", "latency:soon", "probabilistic:150", "sometimes:1", "latency"] {
            let e = TailPolicy::parse_list(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split(',').next().unwrap()), "{e}");
        }
    }
}
