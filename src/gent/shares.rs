//! Rare calls, call by call: each one's caller's duration and its share of it.
//!
//! A caller–callee pair of services seen a handful of times in a window
//! (TrainTicket hour 16: 11 of its 42 pairs at most 4 times) has no
//! distribution to sketch. Composed from the sketches of its caller's other
//! calls, leads and tail, a rare call's share of its caller comes back
//! spread where the window's few shares were alike (0.859 to 0.891 real,
//! 0.873 to 0.916 regenerated). A share alone is not enough: applied to a
//! caller composed at another length, a call that took 6% of a 240 ms
//! caller takes 6% of a 95 ms one, and its own duration is lost. Rare paths
//! are what sampling loses and what an SRE opens a trace view for, and they
//! are few, so the packet keeps, for each trace that holds one, its caller's
//! duration and the rare calls' shares of it (two bytes each). The calibrated
//! timing scales the caller's composed subtree to that duration and each
//! rare call's subtree to its share, so every share below them is unchanged.

use std::collections::HashMap;

use super::times::NodeTimes;
use super::topology::TopologyHistogram;

/// Steps per natural-log unit of a stored share: a share comes back within
/// 0.05% of itself, inside the spread of any few shares (0.5% of the
/// share on TrainTicket's closest), and one near 1 (a wrapping span) takes
/// a byte; shares from e^−32 to e^32 fit in 16 bits.
const SHARE_STEPS: f64 = 1024.0;
/// Steps per natural-log unit of a stored duration: within 0.2%, in two
/// bytes up to e^64 µs.
const DURATION_STEPS: f64 = 256.0;

/// A caller whose calls include a rare pair's (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Family {
    pub topology: u32,
    /// The caller's node.
    pub parent: u32,
    /// The caller's duration per trace of its topology held by the fit, in
    /// order of their starts: ln(1 + µs) in 1/256ths.
    pub durations: Vec<u16>,
    /// Its rare calls, by node (increasing), each with one share per trace:
    /// ln(share) in 1/1024ths (0 is a share of 1). A call may outlive its
    /// caller (an async call, clock skew between hosts): its share is then
    /// above 1.
    pub calls: Vec<(u32, Vec<i16>)>,
}

/// Every rare call's family, by (topology, parent), increasing; empty when off.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RareShares {
    pub families: Vec<Family>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharesError {
    #[error("rare shares: {0}")]
    Inconsistent(String),
}

impl RareShares {
    /// The families of every call of a service pair seen at most `most`
    /// times in `histogram`'s window (0: none), read off `traces` (the
    /// window's, or a sample of them). A family is left out when its caller
    /// took no time in one of them.
    pub fn fit(traces: &[NodeTimes], histogram: &TopologyHistogram, most: u32) -> Self {
        if most == 0 {
            return RareShares::default();
        }
        let rare = rare_nodes(histogram, most);
        if rare.is_empty() {
            return RareShares::default();
        }
        // Per rare topology, its traces in order of their starts.
        let mut by_topology: HashMap<u32, Vec<&NodeTimes>> = HashMap::new();
        for trace in traces {
            if rare.contains_key(&trace.topology) {
                by_topology.entry(trace.topology).or_default().push(trace);
            }
        }
        let mut families = Vec::new();
        let mut topologies: Vec<u32> = by_topology.keys().copied().collect();
        topologies.sort_unstable();
        for t in topologies {
            let mut held = by_topology.remove(&t).unwrap_or_default();
            held.sort_by_key(|trace| trace.times.iter().map(|&(s, _)| s).min());
            let topology = &histogram.topologies[t as usize];
            // The rare nodes by parent, parents and nodes increasing.
            let mut calls: Vec<(u32, u32)> =
                rare[&t].iter().filter_map(|&k| topology.parents[k as usize].map(|p| (p, k))).collect();
            calls.sort_unstable();
            for group in calls.chunk_by(|a, b| a.0 == b.0) {
                families.extend(family(t, group, &held));
            }
        }
        RareShares { families }
    }

    /// Checks decoded families against their histogram before use.
    pub fn validate(&self, histogram: &TopologyHistogram) -> Result<(), SharesError> {
        let bad = |what: String| Err(SharesError::Inconsistent(what));
        if self.families.windows(2).any(|w| (w[0].topology, w[0].parent) >= (w[1].topology, w[1].parent)) {
            return bad("families out of order".into());
        }
        for f in &self.families {
            let (t, p) = (f.topology, f.parent);
            let Some(topology) = histogram.topologies.get(t as usize) else {
                return bad(format!("topology {t} out of range ({} topologies)", histogram.topologies.len()));
            };
            let count = histogram.counts.get(t as usize).copied().unwrap_or(0) as usize;
            let n = f.durations.len();
            if n == 0 || n > count {
                return bad(format!("{n} durations for node {p} of topology {t}, seen {count} times"));
            }
            if f.calls.is_empty() || f.calls.windows(2).any(|w| w[0].0 >= w[1].0) {
                return bad(format!("the calls of node {p} of topology {t} are none or out of order"));
            }
            for (k, shares) in &f.calls {
                if topology.parents.get(*k as usize).copied().flatten() != Some(p) {
                    return bad(format!("node {k} of topology {t} is out of range or not a call of node {p}"));
                }
                if shares.len() != n {
                    return bad(format!("{} shares for node {k} of topology {t}, {n} durations", shares.len()));
                }
            }
        }
        Ok(())
    }

    /// Per topology of `histogram`, its families (empty for most), for
    /// looking up while composing.
    pub fn by_topology(&self, histogram: &TopologyHistogram) -> Vec<Vec<&Family>> {
        let mut out = vec![Vec::new(); histogram.topologies.len()];
        for f in &self.families {
            if let Some(list) = out.get_mut(f.topology as usize) {
                list.push(f);
            }
        }
        out
    }
}

/// The family of `calls` ((parent, node) pairs of one parent) in topology
/// `t`, read off its `held` traces; none when the parent took no time in one.
fn family(t: u32, calls: &[(u32, u32)], held: &[&NodeTimes]) -> Option<Family> {
    let p = calls.first()?.0 as usize;
    let mut durations = Vec::with_capacity(held.len());
    let mut shares = vec![Vec::with_capacity(held.len()); calls.len()];
    for trace in held {
        let (ps, pe) = *trace.times.get(p)?;
        if pe <= ps {
            return None;
        }
        let length = (pe - ps) as f64;
        durations.push(encode_duration(length / 1e3));
        for (&(_, k), out) in calls.iter().zip(&mut shares) {
            let (cs, ce) = *trace.times.get(k as usize)?;
            out.push(encode_share(ce.saturating_sub(cs) as f64 / length));
        }
    }
    (!durations.is_empty()).then(|| Family {
        topology: t,
        parent: p as u32,
        durations,
        calls: calls.iter().map(|&(_, k)| k).zip(shares).collect(),
    })
}

/// The share `code` stands for.
pub fn share(code: i16) -> f64 {
    (f64::from(code) / SHARE_STEPS).exp()
}

/// `share` as stored, clamped to e^±32 (a call that took no time: e^−32).
fn encode_share(share: f64) -> i16 {
    let nats = if share > 0.0 { share.ln() } else { f64::NEG_INFINITY };
    (nats * SHARE_STEPS).round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

/// The duration (µs) `code` stands for.
pub fn duration(code: u16) -> f64 {
    (f64::from(code) / DURATION_STEPS).exp_m1()
}

/// A duration (µs) as stored, clamped to e^64 µs.
fn encode_duration(us: f64) -> u16 {
    (us.max(0.0).ln_1p() * DURATION_STEPS).round().min(f64::from(u16::MAX)) as u16
}

/// Per topology, its nodes whose (caller service, callee service) pair the
/// window saw at most `most` times, counted over every topology's count.
fn rare_nodes(histogram: &TopologyHistogram, most: u32) -> HashMap<u32, Vec<u32>> {
    let service = |label: u32| histogram.labels.get(label as usize).map_or("", |l| l.service.as_str());
    let pair =
        |t: &super::topology::Topology, k: usize| t.parents[k].map(|p| (service(t.labels[p as usize]), service(t.labels[k])));
    let mut seen: HashMap<(&str, &str), u64> = HashMap::new();
    for (t, &count) in histogram.topologies.iter().zip(&histogram.counts) {
        for k in 0..t.len() {
            if let Some(pair) = pair(t, k) {
                *seen.entry(pair).or_default() += u64::from(count);
            }
        }
    }
    let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, t) in histogram.topologies.iter().enumerate() {
        for k in 0..t.len() {
            if pair(t, k).is_some_and(|p| seen[&p] <= u64::from(most)) {
                out.entry(i as u32).or_default().push(k as u32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gent::topology::{Label, Topology};

    fn label(service: &str) -> Label {
        Label { service: service.into(), name: "op".into() }
    }

    /// Topology 0: a → b, seen 10 times; topology 1: a → b and a → c, seen twice.
    fn histogram() -> TopologyHistogram {
        TopologyHistogram {
            labels: vec![label("a"), label("b"), label("c")],
            topologies: vec![
                Topology { labels: vec![0, 1], parents: vec![None, Some(0)] },
                Topology { labels: vec![0, 1, 2], parents: vec![None, Some(0), Some(0)] },
            ],
            counts: vec![10, 2],
        }
    }

    fn trace(topology: u32, times: &[(u64, u64)]) -> NodeTimes {
        NodeTimes { trace_id: Default::default(), topology, times: times.into() }
    }

    #[test]
    fn only_rare_pairs_keep_their_callers_and_shares_in_start_order() {
        let h = histogram();
        let traces = [
            trace(0, &[(0, 100_000), (10_000, 60_000)]),
            trace(1, &[(500_000, 600_000), (510_000, 520_000), (520_000, 600_000)]),
            trace(1, &[(0, 1_000_000), (0, 100_000), (100_000, 838_000)]),
        ];
        let shares = RareShares::fit(&traces, &h, 2);
        // a → b is seen 12 times, a → c twice.
        assert_eq!(shares.families.len(), 1);
        let f = &shares.families[0];
        assert_eq!((f.topology, f.parent, f.calls.len(), f.calls[0].0), (1, 0, 1, 2));
        let back: Vec<(f64, f64)> = f.durations.iter().zip(&f.calls[0].1).map(|(&d, &s)| (duration(d), share(s))).collect();
        assert!((back[0].0 - 1_000.0).abs() < 2.0 && (back[0].1 - 0.738).abs() < 4e-4, "{back:?}");
        assert!((back[1].0 - 100.0).abs() < 0.2 && (back[1].1 - 0.8).abs() < 4e-4, "{back:?}");
        shares.validate(&h).unwrap();
        assert!(RareShares::fit(&traces, &h, 0).families.is_empty());
    }

    #[test]
    fn a_call_outliving_its_caller_keeps_its_share_and_a_caller_of_no_time_none() {
        let h = histogram();
        let traces = [trace(1, &[(0, 100), (0, 10), (50, 150)]), trace(1, &[(0, 100), (0, 10), (50, 90)])];
        let f = &RareShares::fit(&traces, &h, 2).families[0];
        assert!((share(f.calls[0].1[0]) - 1.0).abs() < 1e-3 && (share(f.calls[0].1[1]) - 0.4).abs() < 1e-3);
        let instant = [trace(1, &[(0, 0), (0, 0), (0, 0)])];
        assert!(RareShares::fit(&instant, &h, 2).families.is_empty());
    }

    #[test]
    fn hostile_families_are_refused_by_what_is_wrong() {
        let h = histogram();
        let good = Family { topology: 1, parent: 0, durations: vec![1, 2], calls: vec![(1, vec![1, 1]), (2, vec![1, 1])] };
        let with = |change: &dyn Fn(&mut Family)| {
            let mut f = good.clone();
            change(&mut f);
            RareShares { families: vec![f] }
        };
        RareShares { families: vec![good.clone()] }.validate(&h).unwrap();
        let cases = [
            (RareShares { families: vec![good.clone(), good.clone()] }, "out of order"),
            (with(&|f| f.topology = 7), "topology 7"),
            (with(&|f| f.durations = vec![1, 2, 3]), "seen 2 times"),
            (with(&|f| f.durations.clear()), "0 durations"),
            (with(&|f| f.calls.clear()), "none or out of order"),
            (with(&|f| f.calls.reverse()), "none or out of order"),
            (with(&|f| f.calls[0].0 = 0), "not a call of node 0"),
            (with(&|f| f.calls[1].0 = 9), "out of range"),
            (with(&|f| f.calls[1].1.pop().map_or((), drop)), "1 shares"),
        ];
        for (shares, wanted) in cases {
            let e = shares.validate(&h).unwrap_err().to_string();
            assert!(e.contains(wanted), "{e} lacks {wanted}");
        }
    }

    #[test]
    fn shares_and_durations_come_back_within_their_step() {
        for s in [1.0, 0.999, 0.5, 0.02, 1e-6, 1.3, 2e6] {
            let back = share(encode_share(s));
            assert!((back / s - 1.0).abs() < 5e-4, "{s} → {back}");
        }
        assert_eq!(encode_share(0.0), i16::MIN);
        assert_eq!(encode_share(1e30), i16::MAX);
        for us in [1.0, 37.5, 14_500.0, 3.6e9] {
            let back = duration(encode_duration(us));
            assert!((back - us).abs() < 2e-3 * (1.0 + us), "{us} → {back}");
        }
        assert_eq!(encode_duration(1e300), u16::MAX);
    }
}
