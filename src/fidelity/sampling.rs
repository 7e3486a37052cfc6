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

pub use crate::trace::{Stratum, head_keeps, stratified, stratum, systematic};

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

#[cfg(test)]
mod tests {
    use super::*;

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
