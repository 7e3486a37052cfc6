//! How closely a synthetic table follows a real one: total variation between
//! label frequencies (one column or several jointly), Wasserstein-1 between the
//! numbers of each group, and the baseline that samples every column on its
//! own. Used by CTGAN's quality test and example.

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Column, ColumnData, Table};

/// The labels of categorical column `i` (`None` for a continuous or missing one).
pub fn labels(t: &Table, i: usize) -> Option<&[String]> {
    match &t.columns.get(i)?.data {
        ColumnData::Categorical(v) => Some(v),
        ColumnData::Continuous { .. } => None,
    }
}

/// The numbers of continuous column `i` (`None` for a categorical or missing one).
pub fn numbers(t: &Table, i: usize) -> Option<&[f64]> {
    match &t.columns.get(i)?.data {
        ColumnData::Continuous { values, .. } => Some(values),
        ColumnData::Categorical(_) => None,
    }
}

/// Each row's labels of the categorical `columns`, joined.
fn keys<'a>(t: &'a Table, columns: &[usize]) -> Vec<Vec<&'a str>> {
    let cols: Vec<&[String]> = columns.iter().filter_map(|&c| labels(t, c)).collect();
    (0..t.rows()).map(|r| cols.iter().map(|c| c[r].as_str()).collect()).collect()
}

fn frequencies<'a>(rows: &[Vec<&'a str>]) -> HashMap<Vec<&'a str>, f64> {
    let mut f = HashMap::new();
    for k in rows {
        *f.entry(k.clone()).or_insert(0.0) += 1.0 / rows.len() as f64;
    }
    f
}

/// Total variation between the joint label frequencies of the categorical
/// `columns` (one column: its marginal).
pub fn tv(real: &Table, synthetic: &Table, columns: &[usize]) -> f64 {
    let (r, s) = (frequencies(&keys(real, columns)), frequencies(&keys(synthetic, columns)));
    let all: HashSet<&Vec<&str>> = r.keys().chain(s.keys()).collect();
    0.5 * all.into_iter().map(|k| (r.get(k).unwrap_or(&0.0) - s.get(k).unwrap_or(&0.0)).abs()).sum::<f64>()
}

/// Share of the synthetic rows whose labels in `columns` occur together in a real row.
pub fn seen_combinations(real: &Table, synthetic: &Table, columns: &[usize]) -> f64 {
    let seen: HashSet<Vec<&str>> = keys(real, columns).into_iter().collect();
    let rows = keys(synthetic, columns);
    rows.iter().filter(|k| seen.contains(*k)).count() as f64 / rows.len().max(1) as f64
}

/// Wasserstein-1 distance between two samples, by matching 1,000 quantiles.
pub fn w1(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::INFINITY;
    }
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let q = 1000;
    let at = |v: &[f64], u: f64| v[((u * v.len() as f64) as usize).min(v.len() - 1)];
    (0..q)
        .map(|i| {
            let u = (i as f64 + 0.5) / q as f64;
            (at(&a, u) - at(&b, u)).abs()
        })
        .sum::<f64>()
        / q as f64
}

/// Wasserstein-1 between the real and synthetic `f(value)` of continuous
/// column `value` within each label of categorical column `group`, weighted by
/// the label's real frequency. A label the synthetic table holds fewer than 5
/// times is charged its spread around 0, so never producing a group costs.
pub fn grouped_w1(real: &Table, synthetic: &Table, group: usize, value: usize, f: impl Fn(f64) -> f64) -> f64 {
    let by = |t: &Table| {
        let mut by: HashMap<String, Vec<f64>> = HashMap::new();
        if let (Some(g), Some(v)) = (labels(t, group), numbers(t, value)) {
            for (g, v) in g.iter().zip(v) {
                by.entry(g.clone()).or_default().push(f(*v));
            }
        }
        by
    };
    let (r, s) = (by(real), by(synthetic));
    let total = real.rows() as f64;
    r.iter()
        .map(|(label, values)| {
            let weight = values.len() as f64 / total;
            match s.get(label) {
                Some(syn) if syn.len() >= 5 => weight * w1(values, syn),
                _ => weight * w1(values, &[0.0]),
            }
        })
        .sum()
}

/// `rows` rows with every column drawn on its own from its real values: the
/// baseline a generator of joint structure has to beat.
pub fn independent_columns(real: &Table, rows: usize, seed: u64) -> Table {
    let mut rng = StdRng::seed_from_u64(seed);
    let columns = real
        .columns
        .iter()
        .map(|c| {
            let n = c.len();
            let picks: Vec<usize> = (0..rows).map(|_| rng.random_range(0..n)).collect();
            match &c.data {
                ColumnData::Categorical(v) => Column::categorical(&c.name, picks.iter().map(|&i| v[i].clone()).collect()),
                ColumnData::Continuous { values, log } => {
                    Column::continuous(&c.name, picks.iter().map(|&i| values[i]).collect(), *log)
                }
            }
        })
        .collect();
    Table { columns }
}

/// One row per span of the first `rows` spans of `set` in trace order:
/// service and span name (categorical), duration in µs (log-scaled) and the
/// gap from the parent's start in µs (0 for roots). CTGAN's quality measure
/// learns this table from TrainTicket.
pub fn span_table(set: &crate::trace::TraceSet, rows: usize) -> Result<Table, super::TabularError> {
    let (mut service, mut name, mut duration, mut gap) = (vec![], vec![], vec![], vec![]);
    'traces: for trace in &set.traces {
        let starts: HashMap<_, _> = trace.spans.iter().map(|s| (s.span_id, s.start)).collect();
        for span in &trace.spans {
            if service.len() == rows {
                break 'traces;
            }
            service.push(span.service().to_string());
            name.push(span.name.clone());
            duration.push(span.duration() as f64 / 1e3);
            let parent = span.parent_span_id.and_then(|p| starts.get(&p)).copied().unwrap_or(span.start);
            gap.push((span.start as f64 - parent as f64) / 1e3);
        }
    }
    Table::new(vec![
        Column::categorical("service", service),
        Column::categorical("name", name),
        Column::continuous("duration_us", duration, true),
        Column::continuous("gap_us", gap, false),
    ])
}
