//! The query suite: what operators ask of their traces, as SQL over
//! [`SpanDb`](super::db::SpanDb), each with the kind of answer it gives and so
//! the rule that scores it ([`score`](super::score)).
//!
//! Result shapes by kind (the last columns carry the values):
//! * `set`: every row is one item (all columns);
//! * `histogram`: `group..., bucket, count`;
//! * `distribution`: `group..., value` (one row per observation);
//! * `rate`: `group..., count` (summed per group; a sampled candidate's counts
//!   are multiplied by its sampling rate);
//! * `alarm`: `group..., count`; a group fires when its (scaled) count
//!   exceeds the query's threshold (by default the mean of the real counts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::FidelityError;
use super::db::{Cell, SpanDb};
use super::score;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Set,
    Histogram,
    Distribution,
    Rate,
    Alarm,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "set" => Kind::Set,
            "histogram" => Kind::Histogram,
            "distribution" => Kind::Distribution,
            "rate" => Kind::Rate,
            "alarm" => Kind::Alarm,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub name: String,
    pub kind: Kind,
    pub sql: String,
    /// Alarm threshold on scaled counts; `None`: the mean of the real counts.
    pub threshold: Option<f64>,
}

/// A query's answer, shaped by its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Set(BTreeSet<String>),
    Histogram(BTreeMap<String, BTreeMap<String, f64>>),
    Distribution(BTreeMap<String, Vec<f64>>),
    Counts(BTreeMap<String, f64>),
}

impl Answer {
    pub fn is_empty(&self) -> bool {
        match self {
            Answer::Set(s) => s.is_empty(),
            Answer::Histogram(h) => h.is_empty(),
            Answer::Distribution(d) => d.is_empty(),
            Answer::Counts(c) => c.is_empty(),
        }
    }
}

fn key(cells: &[Cell]) -> String {
    cells.iter().map(Cell::text).collect::<Vec<_>>().join(" | ")
}

impl Query {
    fn new(name: impl Into<String>, kind: Kind, sql: impl Into<String>) -> Self {
        Query { name: name.into(), kind, sql: sql.into(), threshold: None }
    }

    /// Runs the query on `db` and shapes its rows by kind.
    pub fn answer(&self, db: &SpanDb) -> Result<Answer, FidelityError> {
        let rows = db.rows(&self.sql).map_err(|e| e.in_query(&self.name))?;
        let shape_error = |need: usize| FidelityError::Shape { query: self.name.clone(), kind: self.kind, need };
        Ok(match self.kind {
            Kind::Set => Answer::Set(rows.iter().map(|r| key(r)).collect()),
            Kind::Histogram => {
                let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
                for r in &rows {
                    let n = r.len();
                    if n < 2 {
                        return Err(shape_error(2));
                    }
                    let Some(count) = r[n - 1].number() else { continue };
                    *out.entry(key(&r[..n - 2])).or_default().entry(r[n - 2].text()).or_default() += count;
                }
                Answer::Histogram(out)
            }
            Kind::Distribution => {
                let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                for r in &rows {
                    let n = r.len();
                    if n < 1 {
                        return Err(shape_error(1));
                    }
                    if let Some(v) = r[n - 1].number() {
                        out.entry(key(&r[..n - 1])).or_default().push(v);
                    }
                }
                Answer::Distribution(out)
            }
            Kind::Rate | Kind::Alarm => {
                let mut out: BTreeMap<String, f64> = BTreeMap::new();
                for r in &rows {
                    let n = r.len();
                    if n < 1 {
                        return Err(shape_error(1));
                    }
                    if let Some(v) = r[n - 1].number() {
                        *out.entry(key(&r[..n - 1])).or_default() += v;
                    }
                }
                Answer::Counts(out)
            }
        })
    }

    /// The candidate's score against the real answer; `scale` multiplies the
    /// candidate's counts (rate and alarm queries).
    pub fn score(&self, real: &Answer, candidate: &Answer, scale: f64) -> f64 {
        match (real, candidate) {
            (Answer::Set(r), Answer::Set(c)) => score::f1(r, c),
            (Answer::Histogram(r), Answer::Histogram(c)) => score::grouped(r, c, score::histogram),
            (Answer::Distribution(r), Answer::Distribution(c)) => score::grouped(r, c, |r, c| score::distribution(r, c)),
            (Answer::Counts(r), Answer::Counts(c)) => {
                let scaled: BTreeMap<String, f64> = c.iter().map(|(k, v)| (k.clone(), v * scale)).collect();
                match self.kind {
                    Kind::Alarm => {
                        let threshold = self
                            .threshold
                            .unwrap_or_else(|| if r.is_empty() { 0.0 } else { r.values().sum::<f64>() / r.len() as f64 });
                        let fired = |a: &BTreeMap<String, f64>| {
                            a.iter().filter(|(_, v)| **v > threshold).map(|(k, _)| k.clone()).collect()
                        };
                        score::f1(&fired(r), &fired(&scaled))
                    }
                    _ => score::grouped(r, &scaled, |r, c| score::rate(*r, *c)),
                }
            }
            _ => 0.0,
        }
    }
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One minute, in the nanoseconds `start` is written in.
const MINUTE: &str = "60000000000";

/// The built-in suite, parameterised over what `real` holds: every entry
/// service (the service of root spans) and every attribute key.
pub fn suite(real: &SpanDb) -> Result<Vec<Query>, FidelityError> {
    let mut q = vec![
        // Gen-T Query 1: which service calls which.
        Query::new(
            "trigger_correlations",
            Kind::Set,
            "SELECT DISTINCT p.service, c.service FROM spans p JOIN spans c ON c.trace_id = p.trace_id AND c.parent_id = p.span_id",
        ),
        // Architecture discovery with call counts.
        Query::new(
            "call_counts",
            Kind::Rate,
            "SELECT p.service, c.service, count(*) FROM spans p \
             JOIN spans c ON c.trace_id = p.trace_id AND c.parent_id = p.span_id GROUP BY 1, 2",
        ),
        // Bottlenecks: how much of its caller's time a callee takes.
        Query::new(
            "bottlenecks",
            Kind::Distribution,
            "SELECT p.service, c.service, CAST(c.duration AS REAL) / p.duration FROM spans p \
             JOIN spans c ON c.trace_id = p.trace_id AND c.parent_id = p.span_id WHERE p.duration > 0",
        ),
        // RED: requests, errors and duration per service per minute.
        Query::new("red_requests", Kind::Rate, format!("SELECT service, start / {MINUTE}, count(*) FROM spans GROUP BY 1, 2")),
        Query::new(
            "red_errors",
            Kind::Rate,
            format!("SELECT service, start / {MINUTE}, count(*) FROM spans WHERE status = 'ERROR' GROUP BY 1, 2"),
        ),
        Query::new("red_duration", Kind::Distribution, format!("SELECT service, start / {MINUTE}, log_duration FROM spans")),
        // Nesting: the share of a callee's spans that lie inside their caller's,
        // as a trace view shows them.
        Query::new(
            "nesting",
            Kind::Histogram,
            "SELECT p.service, c.service, CASE WHEN c.start >= p.start AND c.\"end\" <= p.\"end\" \
             THEN 'inside' ELSE 'outside' END, count(*) FROM spans p \
             JOIN spans c ON c.trace_id = p.trace_id AND c.parent_id = p.span_id GROUP BY 1, 2, 3",
        ),
        // Self time: per service, the exclusive duration of its spans (what
        // the critical path of a trace is made of).
        Query::new("self_time", Kind::Distribution, "SELECT service, log_self_duration FROM spans"),
    ];
    for entry in real.column("SELECT DISTINCT service FROM traces ORDER BY 1")? {
        let e = literal(&entry);
        // Gen-T Query 2: relative duration of every sub-task of the entry's traces.
        q.push(Query::new(
            format!("subtask_durations[{entry}]"),
            Kind::Histogram,
            format!(
                "SELECT c.service, ROUND(CAST(c.duration AS REAL) / r.duration, 1), count(*) FROM traces r \
                 JOIN spans c ON c.trace_id = r.trace_id AND c.span_id != r.span_id \
                 WHERE r.service = {e} AND r.duration > 0 GROUP BY 1, 2"
            ),
        ));
        // Gen-T Query 3: alarm when the entry's traces carry more than 10 errors (per minute).
        q.push(Query {
            threshold: Some(10.0),
            ..Query::new(
                format!("error_alarm[{entry}]"),
                Kind::Alarm,
                format!(
                    "SELECT r.start / {MINUTE}, count(*) FROM traces r JOIN spans s ON s.trace_id = r.trace_id \
                     WHERE r.service = {e} AND s.status = 'ERROR' GROUP BY 1"
                ),
            )
        });
        // The latency alarm operators set without error codes: minutes with more
        // traces slower than the real 90th percentile than the average minute.
        let durations = real.column(&format!("SELECT duration FROM traces WHERE service = {e} ORDER BY 1"))?;
        if let Some(p90) = durations.get(durations.len() * 9 / 10) {
            q.push(Query::new(
                format!("latency_alarm[{entry}]"),
                Kind::Alarm,
                format!("SELECT start / {MINUTE}, count(*) FROM traces WHERE service = {e} AND duration > {p90} GROUP BY 1"),
            ));
        }
        // Gen-T Query 4: histogram of each attribute of the entry's roots in failed traces.
        let keys = format!(
            "SELECT DISTINCT a.key FROM traces r JOIN attributes a ON a.trace_id = r.trace_id AND a.span_id = r.span_id \
             WHERE r.service = {e} ORDER BY 1"
        );
        for k in real.column(&keys)? {
            q.push(Query::new(
                format!("failed_trace_attributes[{entry}, {k}]"),
                Kind::Histogram,
                format!(
                    "SELECT a.value, count(*) FROM traces r \
                     JOIN attributes a ON a.trace_id = r.trace_id AND a.span_id = r.span_id AND a.key = {} \
                     WHERE r.service = {e} AND r.failed = 1 GROUP BY 1",
                    literal(&k)
                ),
            ));
        }
    }
    // Attribute frequency per service, for every key.
    for k in real.column("SELECT DISTINCT key FROM attributes ORDER BY 1")? {
        q.push(Query::new(
            format!("attribute_frequency[{k}]"),
            Kind::Histogram,
            format!(
                "SELECT s.service, a.value, count(*) FROM spans s \
                 JOIN attributes a ON a.trace_id = s.trace_id AND a.span_id = s.span_id AND a.key = {} GROUP BY 1, 2",
                literal(&k)
            ),
        ));
    }
    Ok(q)
}

/// User queries from an SQL file: statements end with `;` at the end of a
/// line; `-- name: ...` and `-- kind: set|histogram|distribution|rate|alarm`
/// comment lines (and, for alarms, `-- threshold: N`) describe the statement
/// that follows. Kind defaults to `set`, name to `user_query_N`.
pub fn parse_user_queries(text: &str, path: &Path) -> Result<Vec<Query>, FidelityError> {
    let bad = |line: usize, reason: String| FidelityError::Queries { path: path.into(), line, reason };
    let mut out = Vec::new();
    let (mut name, mut kind, mut threshold, mut sql) = (None, Kind::Set, None, String::new());
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(comment) = line.strip_prefix("--") {
            let comment = comment.trim();
            if let Some(v) = comment.strip_prefix("name:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = comment.strip_prefix("kind:") {
                kind = Kind::parse(v.trim()).ok_or_else(|| {
                    bad(i + 1, format!("unknown kind {:?} (set, histogram, distribution, rate, alarm)", v.trim()))
                })?;
            } else if let Some(v) = comment.strip_prefix("threshold:") {
                threshold =
                    Some(v.trim().parse::<f64>().map_err(|_| bad(i + 1, format!("threshold {:?} is not a number", v.trim())))?);
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        sql.push_str(raw);
        sql.push('\n');
        if line.ends_with(';') {
            let n = out.len() + 1;
            out.push(Query {
                name: name.take().unwrap_or_else(|| format!("user_query_{n}")),
                kind: std::mem::replace(&mut kind, Kind::Set),
                sql: std::mem::take(&mut sql),
                threshold: threshold.take(),
            });
        }
    }
    if !sql.trim().is_empty() {
        return Err(bad(text.lines().count(), "the last statement does not end with ';'".into()));
    }
    if out.is_empty() {
        return Err(bad(0, "no statements".into()));
    }
    Ok(out)
}
