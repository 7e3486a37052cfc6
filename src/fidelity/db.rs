//! A trace set as an in-memory SQLite database, the form operators query
//! traces in. Three tables:
//!
//! ```sql
//! spans(trace_id, span_id, parent_id, service, name, kind, status,
//!       start, "end", duration, log_duration, self_duration, log_self_duration)
//! attributes(trace_id, span_id, key, value)
//! traces(trace_id, span_id, service, start, duration, failed)
//! ```
//!
//! `traces` has one row per trace: its root (the earliest span without a
//! parent; a fragmented trace has several) and whether any of its spans
//! failed. Queries about a trace's root join through it, so they cost the
//! trace's spans once, not once per root: a trace of 10,000 root spans made
//! a self-join of the spans table cost 10⁸ rows.
//!
//! Ids are lower-case hex; `parent_id` is NULL for a root; `kind` is
//! lower-case (`server`, `client`, ...), `status` `UNSET`, `OK` or `ERROR`;
//! `start` and `end` are
//! Unix nanoseconds, `duration` nanoseconds, `log_duration` ln(1 + duration
//! in µs) (SQLite has no logarithm). `self_duration` is the span's exclusive
//! time: its duration minus the union of its children's intervals within it,
//! what Jaeger's critical path is built on; `log_self_duration` its log. Attribute values are text (numbers in
//! decimal, booleans `true`/`false`). Span ids are unique within a trace only,
//! so joins go through `(trace_id, span_id)`, which is indexed.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use rusqlite::Connection;

use std::collections::HashMap;

use super::FidelityError;
use crate::trace::{Span, SpanId, Trace, TraceSet};

pub struct SpanDb {
    pub(crate) conn: Connection,
    pub spans: usize,
}

const SCHEMA: &str = r#"
CREATE TABLE spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT,
    service TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, duration INTEGER NOT NULL, log_duration REAL NOT NULL,
    self_duration INTEGER NOT NULL, log_self_duration REAL NOT NULL
);
CREATE TABLE attributes (trace_id TEXT NOT NULL, span_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE traces (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, service TEXT NOT NULL,
    start INTEGER NOT NULL, duration INTEGER NOT NULL, failed INTEGER NOT NULL
);
"#;

const INDEXES: &str = r#"
CREATE INDEX spans_by_id ON spans (trace_id, span_id);
CREATE INDEX spans_by_parent ON spans (trace_id, parent_id);
CREATE INDEX attributes_by_span ON attributes (trace_id, span_id);
CREATE INDEX attributes_by_key ON attributes (key);
CREATE INDEX traces_by_id ON traces (trace_id);
ANALYZE;
"#;

fn sql(query: &str) -> impl Fn(rusqlite::Error) -> FidelityError + '_ {
    move |source| FidelityError::Sql { query: query.to_string(), source }
}

/// An attribute value as the `attributes` table holds it.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => hex::encode(b),
        other => format!("{other:?}"),
    }
}

impl SpanDb {
    /// Loads every span of `set` (one transaction, then the indexes).
    pub fn load(set: &TraceSet) -> Result<Self, FidelityError> {
        let mut conn = Connection::open_in_memory().map_err(sql("open"))?;
        conn.execute_batch(SCHEMA).map_err(sql("schema"))?;
        let mut spans = 0;
        {
            let tx = conn.transaction().map_err(sql("begin"))?;
            {
                let insert = "INSERT INTO spans VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
                let mut span_stmt = tx.prepare(insert).map_err(sql(insert))?;
                let insert_attr = "INSERT INTO attributes VALUES (?1, ?2, ?3, ?4)";
                let mut attr_stmt = tx.prepare(insert_attr).map_err(sql(insert_attr))?;
                let insert_trace = "INSERT INTO traces VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
                let mut trace_stmt = tx.prepare(insert_trace).map_err(sql(insert_trace))?;
                let mut exclusive = Vec::new();
                for trace in &set.traces {
                    let trace_id = hex::encode(trace.trace_id);
                    insert_trace_row(&mut trace_stmt, &trace_id, trace).map_err(sql(insert_trace))?;
                    self_durations(trace, &mut exclusive);
                    for (span, &own) in trace.spans.iter().zip(&exclusive) {
                        insert_span(&mut span_stmt, &trace_id, span, own).map_err(sql(insert))?;
                        let span_id = hex::encode(span.span_id);
                        for kv in &span.attributes {
                            if let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                attr_stmt.execute((&trace_id, &span_id, &kv.key, value_text(v))).map_err(sql(insert_attr))?;
                            }
                        }
                        spans += 1;
                    }
                }
            }
            tx.commit().map_err(sql("commit"))?;
        }
        conn.execute_batch(INDEXES).map_err(sql("indexes"))?;
        Ok(SpanDb { conn, spans })
    }

    /// The rows of `query`, every value as text (`NULL` for null) or number.
    pub fn rows(&self, query: &str) -> Result<Vec<Vec<Cell>>, FidelityError> {
        let mut stmt = self.conn.prepare(query).map_err(sql(query))?;
        let columns = stmt.column_count();
        let mut out = Vec::new();
        let mut rows = stmt.query([]).map_err(sql(query))?;
        while let Some(row) = rows.next().map_err(sql(query))? {
            let mut cells = Vec::with_capacity(columns);
            for i in 0..columns {
                use rusqlite::types::ValueRef;
                cells.push(match row.get_ref(i).map_err(sql(query))? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Number(v as f64),
                    ValueRef::Real(v) => Cell::Number(v),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                });
            }
            out.push(cells);
        }
        Ok(out)
    }

    /// The first column of `query`'s rows, as text.
    pub fn column(&self, query: &str) -> Result<Vec<String>, FidelityError> {
        Ok(self.rows(query)?.into_iter().filter_map(|r| r.into_iter().next()).map(|c| c.text()).collect())
    }
}

/// Each span's exclusive time (ns): its duration minus the union of its
/// children's intervals clipped to it. Linear after one sort, so any trace
/// shape costs its size, not its size squared.
fn self_durations(trace: &Trace, out: &mut Vec<u64>) {
    let index: HashMap<SpanId, usize> = trace.spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let mut intervals: Vec<(usize, u64, u64)> = Vec::new();
    for span in &trace.spans {
        let Some(&p) = span.parent_span_id.as_ref().and_then(|id| index.get(id)) else { continue };
        let parent = &trace.spans[p];
        let (s, e) = (span.start.max(parent.start), span.end.min(parent.end));
        if e > s {
            intervals.push((p, s, e));
        }
    }
    intervals.sort_unstable();
    out.clear();
    out.extend(trace.spans.iter().map(Span::duration));
    let mut i = 0;
    while i < intervals.len() {
        let parent = intervals[i].0;
        let (mut covered, mut from, mut to) = (0u64, intervals[i].1, intervals[i].2);
        while i < intervals.len() && intervals[i].0 == parent {
            let (_, s, e) = intervals[i];
            if s > to {
                covered += to - from;
                (from, to) = (s, e);
            } else {
                to = to.max(e);
            }
            i += 1;
        }
        covered += to - from;
        out[parent] = out[parent].saturating_sub(covered);
    }
}

fn insert_span(stmt: &mut rusqlite::Statement<'_>, trace_id: &str, span: &Span, own: u64) -> rusqlite::Result<usize> {
    let duration = span.duration();
    stmt.execute((
        trace_id,
        hex::encode(span.span_id),
        span.parent_span_id.map(hex::encode),
        span.service(),
        &span.name,
        span.kind.as_str(),
        span.status.code.as_str(),
        span.start as i64,
        span.end as i64,
        duration as i64,
        (duration as f64 / 1e3).ln_1p(),
        own as i64,
        (own as f64 / 1e3).ln_1p(),
    ))
}

/// The `traces` row of `trace`: its earliest root (spans are sorted by
/// start) and whether it failed; none for a trace without a root.
fn insert_trace_row(stmt: &mut rusqlite::Statement<'_>, trace_id: &str, trace: &Trace) -> rusqlite::Result<usize> {
    let Some(root) = trace.spans.iter().find(|s| s.parent_span_id.is_none()) else { return Ok(0) };
    let failed = trace.spans.iter().any(|s| s.status.code == crate::trace::StatusCode::Error);
    stmt.execute((
        trace_id,
        hex::encode(root.span_id),
        root.service(),
        root.start as i64,
        root.duration() as i64,
        i64::from(failed),
    ))
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Number(f64),
    Text(String),
}

impl Cell {
    pub fn text(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Number(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", *v as i64),
            Cell::Number(v) => v.to_string(),
            Cell::Text(t) => t.clone(),
        }
    }

    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Number(v) if v.is_finite() => Some(*v),
            Cell::Text(t) => t.trim().parse().ok().filter(|v: &f64| v.is_finite()),
            _ => None,
        }
    }
}
