//! How a candidate's answer to a query is scored against the real answer;
//! every score is in [0, 1], 1 meaning the same answer. Each kind of query
//! has one rule, applied the same way to every method (README "Fidelity").
//!
//! Grouped answers average a per-group score over the union of the groups of
//! both answers; a group only one side has scores 0.

use std::collections::{BTreeMap, BTreeSet};

use crate::tabular::quality::w1;

/// F1 of the candidate set against the real one (1 when both are empty).
pub fn f1(real: &BTreeSet<String>, candidate: &BTreeSet<String>) -> f64 {
    if real.is_empty() && candidate.is_empty() {
        return 1.0;
    }
    let hits = real.intersection(candidate).count() as f64;
    if hits == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (hits / candidate.len() as f64, hits / real.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// Mean over groups of `score(real, candidate)`, a group missing on one side
/// scoring 0; 1 when neither side has any group.
pub fn grouped<T>(real: &BTreeMap<String, T>, candidate: &BTreeMap<String, T>, score: impl Fn(&T, &T) -> f64) -> f64 {
    let groups: BTreeSet<&String> = real.keys().chain(candidate.keys()).collect();
    if groups.is_empty() {
        return 1.0;
    }
    let total: f64 = groups
        .iter()
        .map(|g| match (real.get(*g), candidate.get(*g)) {
            (Some(r), Some(c)) => score(r, c),
            _ => 0.0,
        })
        .sum();
    total / groups.len() as f64
}

/// 1 − total variation between two histograms (counts per bucket, normalised here).
pub fn histogram(real: &BTreeMap<String, f64>, candidate: &BTreeMap<String, f64>) -> f64 {
    let (r_total, c_total): (f64, f64) = (real.values().sum(), candidate.values().sum());
    if r_total <= 0.0 || c_total <= 0.0 {
        return if r_total <= 0.0 && c_total <= 0.0 { 1.0 } else { 0.0 };
    }
    let buckets: BTreeSet<&String> = real.keys().chain(candidate.keys()).collect();
    let tv: f64 = buckets
        .into_iter()
        .map(|b| (real.get(b).unwrap_or(&0.0) / r_total - candidate.get(b).unwrap_or(&0.0) / c_total).abs())
        .sum::<f64>()
        / 2.0;
    (1.0 - tv).clamp(0.0, 1.0)
}

/// A value distribution's score: `max(0, 1 − W1(real, candidate) / s)`, with
/// `s` the W1 distance between the real values and a point mass at their
/// median (their mean absolute deviation from it). A candidate no closer than
/// "always the median" scores 0; identical distributions score 1.
pub fn distribution(real: &[f64], candidate: &[f64]) -> f64 {
    if real.is_empty() || candidate.is_empty() {
        return if real.is_empty() && candidate.is_empty() { 1.0 } else { 0.0 };
    }
    let mut sorted = real.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let spread = sorted.iter().map(|v| (v - median).abs()).sum::<f64>() / sorted.len() as f64;
    let distance = w1(real, candidate);
    if spread <= f64::EPSILON {
        // Every real value is the same: only an exact answer scores.
        return if distance <= f64::EPSILON { 1.0 } else { 0.0 };
    }
    (1.0 - distance / spread).clamp(0.0, 1.0)
}

/// A count's score: `max(0, 1 − |c − r| / r)` for the real count `r` and the
/// candidate count `c` (already scaled by the sampling rate); for `r = 0`, 1
/// when `c = 0` too and 0 otherwise.
pub fn rate(real: f64, candidate: f64) -> f64 {
    if real <= 0.0 {
        return if candidate <= 0.0 { 1.0 } else { 0.0 };
    }
    (1.0 - (candidate - real).abs() / real).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn hist(items: &[(&str, f64)]) -> BTreeMap<String, f64> {
        items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn f1_by_hand() {
        assert_eq!(f1(&set(&["a", "b"]), &set(&["a", "b"])), 1.0);
        // Precision 1/2, recall 1/2.
        assert_eq!(f1(&set(&["a", "b"]), &set(&["a", "c"])), 0.5);
        // Precision 1, recall 1/4: 2 · 0.25 / 1.25.
        assert!((f1(&set(&["a", "b", "c", "d"]), &set(&["a"])) - 0.4).abs() < 1e-12);
        assert_eq!(f1(&set(&[]), &set(&[])), 1.0);
        assert_eq!(f1(&set(&["a"]), &set(&[])), 0.0);
    }

    #[test]
    fn histograms_by_hand() {
        assert_eq!(histogram(&hist(&[("x", 2.0), ("y", 2.0)]), &hist(&[("x", 10.0), ("y", 10.0)])), 1.0);
        // Real (1/2, 1/2), candidate (1, 0): TV 1/2.
        assert_eq!(histogram(&hist(&[("x", 1.0), ("y", 1.0)]), &hist(&[("x", 3.0)])), 0.5);
        assert_eq!(histogram(&hist(&[("x", 1.0)]), &hist(&[("y", 1.0)])), 0.0);
    }

    #[test]
    fn distributions_by_hand() {
        let real = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(distribution(&real, &real), 1.0);
        // Median 3 (upper), mean absolute deviation (2 + 1 + 0 + 1) / 4 = 1;
        // shifting every value by 0.5 costs W1 0.5: score 0.5.
        let shifted: Vec<f64> = real.iter().map(|v| v + 0.5).collect();
        assert!((distribution(&real, &shifted) - 0.5).abs() < 1e-9);
        // Always answering the median scores 0.
        assert_eq!(distribution(&real, &[3.0]), 0.0);
        assert_eq!(distribution(&real, &[]), 0.0);
    }

    #[test]
    fn rates_and_groups_by_hand() {
        assert_eq!(rate(100.0, 100.0), 1.0);
        assert_eq!(rate(100.0, 80.0), 0.8);
        assert_eq!(rate(100.0, 300.0), 0.0);
        assert_eq!(rate(0.0, 0.0), 1.0);
        let real: BTreeMap<String, f64> = hist(&[("a", 10.0), ("b", 10.0)]);
        let candidate = hist(&[("a", 5.0), ("c", 1.0)]);
        // a: 0.5; b and c only on one side: 0. Mean over three groups.
        assert!((grouped(&real, &candidate, |r, c| rate(*r, *c)) - 0.5 / 3.0).abs() < 1e-12);
    }
}
