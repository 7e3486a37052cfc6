//! Samples that keep the shares of a window's kinds of trace: the
//! compressor scores its model on one, and a regenerated window is sampled
//! to match it.

use super::span::Trace;

const MINUTE_NS: u64 = 60_000_000_000;

/// A stratified 1:`k` sample of `traces` for measuring a large window: the
/// indices of every `k`-th trace (from a seeded phase) in order of entry point
/// (the first span's service and name), span count, minute and length. Each kind of
/// trace and each stretch of time keeps its share within one trace, so two
/// such samples (of real and regenerated traces) differ far less than two
/// random ones: a count per minute is not noise. Returned in input order.
pub fn stratified<T: std::borrow::Borrow<Trace>>(traces: &[T], k: u64, seed: u64) -> Vec<usize> {
    if k <= 1 {
        return (0..traces.len()).collect();
    }
    // Keys computed once: a trace's start and end walk its spans.
    let keys: Vec<(Stratum<'_>, u64)> = traces
        .iter()
        .map(|t| {
            let t: &Trace = t.borrow();
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
}
