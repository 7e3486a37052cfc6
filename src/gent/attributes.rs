//! Span attributes the model learns (Gen-T's "configured attributes"): the
//! configuration lists keys; in a window, each key that occurs becomes table
//! columns of R_G and C_G beside the node's timing, status and kind.
//!
//! * Strings, booleans and keys declared `categorical` (status codes: numbers
//!   that name outcomes) are one categorical column. Its categories are the
//!   `vocabulary` most frequent values, typed (`s:GET`, `i:200`, `b:true`) so
//!   regeneration restores the OTLP type, plus [`OTHER`] for the rest and
//!   [`ABSENT`] where the span lacks the key.
//! * Other numbers are two columns: present or not, and the value (continuous;
//!   integers are rounded back to integers).
//!
//! Only scalar values are modelled; an array or map value counts as absent.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::tabular::{Column, ColumnData, Table};
use crate::trace::Span;

/// Category of a span without the key.
pub const ABSENT: &str = "-";
/// Category of the values beyond the vocabulary; regenerated as the string `other`.
pub const OTHER: &str = "other";
const PRESENT: &str = "+";

/// Which attributes to model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributeConfig {
    /// Span attribute keys to model, in order.
    pub keys: Vec<String>,
    /// Keys whose numeric values are categories (codes), not quantities.
    pub categorical: Vec<String>,
    /// Most distinct values kept per categorical key; the rest become `other`.
    pub vocabulary: usize,
}

/// The OpenTelemetry semantic conventions for HTTP, RPC, databases,
/// messaging and errors, current names and the older ones still common.
const DEFAULT_KEYS: [&str; 21] = [
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "http.method",
    "http.status_code",
    "http.request.body.size",
    "http.response.body.size",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "db.system",
    "db.operation",
    "db.operation.name",
    "db.name",
    "db.namespace",
    "db.sql.table",
    "messaging.system",
    "messaging.operation",
    "error.type",
    "error",
];

const DEFAULT_CATEGORICAL: [&str; 3] = ["http.response.status_code", "http.status_code", "rpc.grpc.status_code"];

impl Default for AttributeConfig {
    fn default() -> Self {
        AttributeConfig {
            keys: DEFAULT_KEYS.iter().map(|k| k.to_string()).collect(),
            categorical: DEFAULT_CATEGORICAL.iter().map(|k| k.to_string()).collect(),
            vocabulary: 32,
        }
    }
}

impl AttributeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.vocabulary == 0 {
            return Err("attributes.vocabulary must be at least 1".into());
        }
        if let Some(k) = self.keys.iter().find(|k| k.is_empty()) {
            return Err(format!("attributes.keys holds an empty key {k:?}"));
        }
        Ok(())
    }
}

/// How one key is modelled in a window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Typed labels of the kept values.
    Categorical { vocabulary: Vec<String> },
    /// A number; `integer` values are rounded on the way out.
    Number { integer: bool },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyModel {
    pub key: String,
    pub kind: Kind,
}

/// The keys modelled in one window; stored with the model.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttributeSchema {
    pub keys: Vec<KeyModel>,
}

/// One node's modelled attribute values, in schema order.
pub type NodeValues = Vec<Option<Scalar>>;

/// A scalar attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Label(String),
    Number(f64),
}

fn typed_label(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(format!("s:{s}")),
        Value::BoolValue(b) => Some(format!("b:{b}")),
        Value::IntValue(i) => Some(format!("i:{i}")),
        Value::DoubleValue(d) if d.is_finite() => Some(format!("d:{d}")),
        _ => None,
    }
}

fn from_label(label: &str) -> Option<Value> {
    let (tag, text) = label.split_at_checked(2)?;
    match tag {
        "s:" => Some(Value::StringValue(text.to_string())),
        "b:" => text.parse().ok().map(Value::BoolValue),
        "i:" => text.parse().ok().map(Value::IntValue),
        "d:" => text.parse().ok().map(Value::DoubleValue),
        _ if label == OTHER => Some(Value::StringValue(OTHER.to_string())),
        _ => None,
    }
}

fn value_of<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) if d.is_finite() => Some(*d),
        _ => None,
    }
}

impl AttributeSchema {
    /// The keys of `config` that occur on `spans`, each typed from its values.
    pub fn infer<'a>(spans: impl Iterator<Item = &'a Span> + Clone, config: &AttributeConfig) -> Self {
        let mut keys = Vec::new();
        for key in &config.keys {
            let values: Vec<&Value> = spans.clone().filter_map(|s| value_of(s, key)).collect();
            if values.is_empty() {
                continue;
            }
            let numeric = values.iter().all(|v| number(v).is_some());
            let kind = if numeric && !config.categorical.contains(key) {
                Kind::Number { integer: values.iter().all(|v| matches!(v, Value::IntValue(_))) }
            } else {
                Kind::Categorical { vocabulary: top_labels(&values, config.vocabulary) }
            };
            keys.push(KeyModel { key: key.clone(), kind });
        }
        AttributeSchema { keys }
    }

    /// Table columns per node.
    pub fn width(&self) -> usize {
        self.keys.iter().map(|k| if matches!(k.kind, Kind::Number { .. }) { 2 } else { 1 }).sum()
    }

    /// Per column of [`Self::columns`], whether [`ValueCounts`] count it:
    /// a categorical key's, not a number's presence or value.
    pub fn counted_columns(&self) -> impl Iterator<Item = bool> + '_ {
        self.keys
            .iter()
            .flat_map(|k| match k.kind {
                Kind::Categorical { .. } => [Some(true), None],
                Kind::Number { .. } => [Some(false), Some(false)],
            })
            .flatten()
    }

    /// A span's modelled values.
    pub fn values(&self, span: &Span) -> NodeValues {
        self.keys
            .iter()
            .map(|k| {
                let v = value_of(span, &k.key)?;
                match &k.kind {
                    Kind::Number { .. } => number(v).map(Scalar::Number),
                    Kind::Categorical { vocabulary } => {
                        let label = typed_label(v)?;
                        Some(Scalar::Label(if vocabulary.contains(&label) { label } else { OTHER.to_string() }))
                    }
                }
            })
            .collect()
    }

    /// The columns of position `prefix` for `nodes` (`None`: a padding row).
    pub fn columns(&self, prefix: &str, nodes: &[Option<&NodeValues>]) -> Vec<Column> {
        let mut columns = Vec::with_capacity(self.width());
        for (i, k) in self.keys.iter().enumerate() {
            let name = format!("{prefix}attr.{}", k.key);
            let value = |n: &Option<&NodeValues>| n.and_then(|v| v.get(i).cloned().flatten());
            match k.kind {
                Kind::Categorical { .. } => columns.push(Column::categorical(
                    &name,
                    nodes
                        .iter()
                        .map(|n| match value(n) {
                            Some(Scalar::Label(l)) => l,
                            _ => ABSENT.to_string(),
                        })
                        .collect(),
                )),
                Kind::Number { .. } => {
                    let numbers: Vec<Option<f64>> = nodes
                        .iter()
                        .map(|n| match value(n) {
                            Some(Scalar::Number(x)) => Some(x),
                            _ => None,
                        })
                        .collect();
                    // Where the key is absent the value column holds the
                    // median, so the placeholder does not make a mode of its own.
                    let mut present: Vec<f64> = numbers.iter().flatten().copied().collect();
                    present.sort_by(f64::total_cmp);
                    let fill = present.get(present.len() / 2).copied().unwrap_or(0.0);
                    columns.push(Column::categorical(
                        &name,
                        numbers.iter().map(|x| if x.is_some() { PRESENT } else { ABSENT }.to_string()).collect(),
                    ));
                    columns.push(Column::continuous(
                        &format!("{name}.value"),
                        numbers.iter().map(|x| x.unwrap_or(fill)).collect(),
                        false,
                    ));
                }
            }
        }
        columns
    }

    /// The attributes of row `row`, reading this schema's columns from `first`.
    pub fn read(&self, table: &Table, first: usize, row: usize) -> Vec<KeyValue> {
        let label = |c: usize| match table.columns.get(c).map(|c| &c.data) {
            Some(ColumnData::Categorical(v)) => v.get(row).map(String::as_str),
            _ => None,
        };
        let mut out = Vec::new();
        let mut c = first;
        for k in &self.keys {
            let value = match &k.kind {
                Kind::Categorical { .. } => {
                    c += 1;
                    label(c - 1).and_then(from_label)
                }
                Kind::Number { integer } => {
                    c += 2;
                    let x = match table.columns.get(c - 1).map(|c| &c.data) {
                        Some(ColumnData::Continuous { values, .. }) => values.get(row).copied(),
                        _ => None,
                    };
                    match (label(c - 2), x) {
                        (Some(PRESENT), Some(x)) if *integer => Some(Value::IntValue(x.round() as i64)),
                        (Some(PRESENT), Some(x)) => Some(Value::DoubleValue(x)),
                        _ => None,
                    }
                }
            };
            if let Some(value) = value {
                out.push(KeyValue { key: k.key.clone(), value: Some(AnyValue { value: Some(value) }), ..Default::default() });
            }
        }
        out
    }
}

/// Per span label and status (failed or not) and per categorical key, how
/// many of the window's spans had each value: the generators give a label
/// its values only roughly (on TrainTicket hour 16 with failures, 1,668 of
/// the spans that did not fail came back with HTTP status 500, against
/// none), so after generation each (label, status) group's values are
/// brought to these shares, changing as few spans as it takes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValueCounts {
    /// Ascending by (label, failed, key).
    pub groups: Vec<ValueGroup>,
    /// When kinds vary in the window, the kind (OTLP value) most of its
    /// spans have (the generators gave 912 of the Alibaba call graphs'
    /// 3,885 spans the kind 3 of them had).
    pub kind: u8,
    /// Per label not all of that kind, its spans of each kind (OTLP value,
    /// spans); ascending by label. Empty, with `kind` 0, when one kind holds
    /// the whole window.
    pub kinds: Vec<(u32, Vec<(u8, u32)>)>,
    /// When the spans that did not fail carry both UNSET and OK, the one
    /// most of them carry (OTLP code; instrumentations differ in which they
    /// set), and per label not all of it, its spans that did not fail of
    /// each (code, spans); ascending by label. Empty, with `status` 0, when
    /// one holds the whole window.
    pub status: u8,
    pub statuses: Vec<(u32, Vec<(u8, u32)>)>,
    /// Per categorical key (index, category), ascending: the category most
    /// labels hold alone, failed or not. Those labels' groups are left out
    /// and their spans take it (hour 16 with failures: two keys, each one
    /// value per label for nearly all of its 200 labels).
    pub defaults: Vec<(u16, u16)>,
}

impl ValueCounts {
    /// Whether there is nothing to calibrate.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.kinds.is_empty() && self.defaults.is_empty() && self.statuses.is_empty()
    }

    /// The key's default category, if it has one.
    fn default_of(&self, key: u16) -> Option<u16> {
        self.defaults.binary_search_by_key(&key, |d| d.0).ok().map(|i| self.defaults[i].1)
    }
}

/// Per label counts of a field's codes: the code most spans have over all
/// labels, and the labels not all of it, ascending; `(0, [])` when every
/// span has one code.
fn unusual(counts: HashMap<u32, HashMap<u8, u32>>) -> (u8, Vec<(u32, Vec<(u8, u32)>)>) {
    let mut labels: Vec<(u32, Vec<(u8, u32)>)> = counts
        .into_iter()
        .map(|(label, c)| {
            let mut c: Vec<(u8, u32)> = c.into_iter().collect();
            c.sort_unstable();
            (label, c)
        })
        .collect();
    labels.sort_unstable_by_key(|k| k.0);
    let mut totals = [0u64; 256];
    for (code, n) in labels.iter().flat_map(|k| &k.1) {
        totals[usize::from(*code)] += u64::from(*n);
    }
    let usual = (0..=255u8).max_by_key(|&k| (totals[usize::from(k)], std::cmp::Reverse(k))).unwrap_or(0);
    labels.retain(|k| k.1.iter().any(|c| c.0 != usual));
    if labels.is_empty() { (0, labels) } else { (usual, labels) }
}

/// Leaves out the groups of each (label, key) that holds one category alone
/// in every status when that category is the key's default (the one most
/// labels hold alone), and gives the groups that hold one category a count
/// of 1: calibration reads shares. Returns the groups and the defaults.
fn with_defaults(mut groups: Vec<ValueGroup>) -> (Vec<ValueGroup>, Vec<(u16, u16)>) {
    use std::collections::BTreeMap;
    // (label, key) → the category every group of the pair holds alone, if one does.
    let mut alone: BTreeMap<(u32, u16), Option<u16>> = BTreeMap::new();
    for g in &groups {
        let single = (g.counts.len() == 1).then(|| g.counts[0].0);
        alone.entry((g.label, g.key)).and_modify(|c| *c = c.filter(|&c| Some(c) == single)).or_insert(single);
    }
    let mut tally: BTreeMap<(u16, u16), usize> = BTreeMap::new();
    for (&(_, key), category) in &alone {
        if let Some(c) = category {
            *tally.entry((key, *c)).or_default() += 1;
        }
    }
    // Per key the most held category; ties to the lowest.
    let mut defaults: BTreeMap<u16, (usize, u16)> = BTreeMap::new();
    for (&(key, category), &n) in &tally {
        let best = defaults.entry(key).or_insert((n, category));
        if n > best.0 {
            *best = (n, category);
        }
    }
    groups.retain(|g| alone[&(g.label, g.key)].is_none_or(|c| defaults.get(&g.key).is_none_or(|d| d.1 != c)));
    for g in groups.iter_mut().filter(|g| g.counts.len() == 1) {
        g.counts[0].1 = 1;
    }
    (groups, defaults.into_iter().map(|(key, (_, category))| (key, category)).collect())
}

/// One (label, status, key) group's values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValueGroup {
    pub label: u32,
    pub failed: bool,
    /// Index of the key in the schema.
    pub key: u16,
    /// (category, spans): categories index the key's vocabulary, then
    /// [`OTHER`], then [`ABSENT`]; ascending.
    pub counts: Vec<(u16, u32)>,
}

/// A span's (label, failed) and its attributes, as generation holds them.
pub struct Valued<'a> {
    pub label: u32,
    pub failed: bool,
    pub attributes: &'a mut Vec<KeyValue>,
}

impl AttributeSchema {
    /// The categorical keys: (index, vocabulary).
    fn categorical(&self) -> impl Iterator<Item = (usize, &[String])> {
        self.keys.iter().enumerate().filter_map(|(j, k)| match &k.kind {
            Kind::Categorical { vocabulary } => Some((j, vocabulary.as_slice())),
            Kind::Number { .. } => None,
        })
    }

    /// [`ValueCounts`] of `spans`, each with its label.
    pub fn value_counts<'a>(&self, spans: impl Iterator<Item = (u32, &'a Span)>) -> ValueCounts {
        let mut counts: HashMap<(u32, bool, u16), HashMap<u16, u32>> = HashMap::new();
        let mut kinds: HashMap<u32, HashMap<u8, u32>> = HashMap::new();
        let mut statuses: HashMap<u32, HashMap<u8, u32>> = HashMap::new();
        let keys: Vec<(usize, &[String])> = self.categorical().collect();
        for (label, span) in spans {
            *kinds.entry(label).or_default().entry(span.kind.to_otlp() as u8).or_default() += 1;
            let failed = span.status.code == crate::trace::StatusCode::Error;
            if !failed {
                *statuses.entry(label).or_default().entry(span.status.code.to_otlp() as u8).or_default() += 1;
            }
            for &(j, vocabulary) in &keys {
                let category = category_of(vocabulary, value_of(span, &self.keys[j].key));
                *counts.entry((label, failed, j as u16)).or_default().entry(category).or_default() += 1;
            }
        }
        let mut groups: Vec<ValueGroup> = counts
            .into_iter()
            .map(|((label, failed, key), c)| {
                let mut counts: Vec<(u16, u32)> = c.into_iter().collect();
                counts.sort_unstable();
                ValueGroup { label, failed, key, counts }
            })
            .collect();
        groups.sort_unstable_by_key(|g| (g.label, g.failed, g.key));
        let (groups, defaults) = with_defaults(groups);
        // One kind, or one status, in the whole window: the generators hold it as a constant.
        let (kind, kinds) = unusual(kinds);
        let (status, statuses) = unusual(statuses);
        ValueCounts { groups, kind, kinds, status, statuses, defaults }
    }

    /// Checks stored counts against this schema and `labels` labels.
    pub fn validate_counts(&self, counts: &ValueCounts, labels: usize) -> Result<(), String> {
        for g in &counts.groups {
            let categories = match self.keys.get(usize::from(g.key)).map(|k| &k.kind) {
                Some(Kind::Categorical { vocabulary }) => vocabulary.len() + 2,
                _ => return Err(format!("value counts name key {}, not a categorical key", g.key)),
            };
            if g.label as usize >= labels || g.counts.iter().any(|c| usize::from(c.0) >= categories) {
                return Err(format!("value counts of label {} out of range", g.label));
            }
        }
        if counts.defaults.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("default values out of order".to_string());
        }
        for &(key, category) in &counts.defaults {
            match self.keys.get(usize::from(key)).map(|k| &k.kind) {
                Some(Kind::Categorical { vocabulary }) if usize::from(category) < vocabulary.len() + 2 => {}
                _ => return Err(format!("default value of key {key} out of range or not a categorical key")),
            }
        }
        let kinds = crate::trace::SpanKind::ALL.len();
        if usize::from(counts.kind) >= kinds {
            return Err(format!("kind {} out of range", counts.kind));
        }
        for (label, counts) in &counts.kinds {
            if *label as usize >= labels || counts.iter().any(|k| usize::from(k.0) >= kinds) {
                return Err(format!("kind counts of label {label} out of range"));
            }
        }
        // Statuses of spans that did not fail: UNSET (0) or OK (1).
        if counts.status > 1 || counts.statuses.iter().any(|(label, c)| *label as usize >= labels || c.iter().any(|s| s.0 > 1)) {
            return Err("status counts out of range".to_string());
        }
        Ok(())
    }

    /// Brings each (label, status) group of `spans` to `counts`' shares of
    /// each categorical key's values (a group not counted takes its label's
    /// other status's shares; a label not counted is left as it is).
    /// Returns how many values changed.
    pub fn calibrate(&self, counts: &ValueCounts, spans: &mut [Valued], rng: &mut impl rand::Rng) -> u64 {
        let find = |label: u32, failed: bool, key: u16| {
            (counts.groups.binary_search_by_key(&(label, failed, key), |g| (g.label, g.failed, g.key)).ok())
                .map(|i| &counts.groups[i])
        };
        let mut groups: HashMap<(u32, bool), Vec<usize>> = HashMap::new();
        for (s, span) in spans.iter().enumerate() {
            groups.entry((span.label, span.failed)).or_default().push(s);
        }
        let mut ordered: Vec<((u32, bool), Vec<usize>)> = groups.into_iter().collect();
        ordered.sort_unstable_by_key(|g| g.0);
        let mut changed = 0;
        for (j, vocabulary) in self.categorical() {
            let key = j as u16;
            for ((label, failed), members) in &ordered {
                let (label, failed) = (*label, *failed);
                let default: [(u16, u32); 1];
                let want = match find(label, failed, key).or_else(|| find(label, !failed, key)) {
                    Some(group) => &group.counts[..],
                    None => match counts.default_of(key) {
                        Some(category) => {
                            default = [(category, 1)];
                            &default[..]
                        }
                        None => continue,
                    },
                };
                let current: Vec<u16> = (members.iter())
                    .map(|&s| category_of(vocabulary, attribute(spans[s].attributes, &self.keys[j].key)))
                    .collect();
                for (m, category) in reassigned(&current, want, rng) {
                    set_category(spans[members[m]].attributes, &self.keys[j].key, vocabulary, category);
                    changed += 1;
                }
            }
        }
        changed
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

/// A value's category: its index in `vocabulary`, then [`OTHER`], then [`ABSENT`].
fn category_of(vocabulary: &[String], value: Option<&Value>) -> u16 {
    let Some(label) = value.and_then(typed_label) else { return vocabulary.len() as u16 + 1 };
    vocabulary.iter().position(|v| *v == label).unwrap_or(vocabulary.len()) as u16
}

/// Sets (or removes, for [`ABSENT`]) `key` to `category`'s value.
fn set_category(attributes: &mut Vec<KeyValue>, key: &str, vocabulary: &[String], category: u16) {
    let label = vocabulary.get(usize::from(category)).map(String::as_str);
    let value = match label {
        Some(l) => from_label(l),
        None if usize::from(category) == vocabulary.len() => from_label(OTHER),
        None => None,
    };
    attributes.retain(|kv| kv.key != key);
    if let Some(value) = value {
        attributes.push(KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() });
    }
}

/// Which of `current` (categories) change, and to what, so that the
/// categories' counts are `want`'s shares of `current.len()` (largest
/// remainders): of a category over its share, randomly chosen members go
/// to the categories under theirs.
pub(super) fn reassigned(current: &[u16], want: &[(u16, u32)], rng: &mut impl rand::Rng) -> Vec<(usize, u16)> {
    let n = current.len() as u64;
    let total: u64 = want.iter().map(|w| u64::from(w.1)).sum::<u64>().max(1);
    let mut quota: Vec<(u16, u64, u64)> =
        want.iter().map(|&(c, k)| (c, n * u64::from(k) / total, n * u64::from(k) % total)).collect();
    let short = n - quota.iter().map(|q| q.1).sum::<u64>();
    let mut by_remainder: Vec<usize> = (0..quota.len()).collect();
    by_remainder.sort_by_key(|&i| (std::cmp::Reverse(quota[i].2), quota[i].0));
    for &i in by_remainder.iter().take(short as usize) {
        quota[i].1 += 1;
    }
    let quota_of = |c: u16| quota.iter().find(|q| q.0 == c).map_or(0, |q| q.1);
    // Members of each category, shuffled: the first `quota` keep it.
    let mut members: HashMap<u16, Vec<usize>> = HashMap::new();
    for (m, &c) in current.iter().enumerate() {
        members.entry(c).or_default().push(m);
    }
    let mut categories: Vec<u16> = members.keys().copied().collect();
    categories.sort_unstable();
    let mut spare = Vec::new();
    for c in categories {
        let list = members.get_mut(&c).map(std::mem::take).unwrap_or_default();
        let keep = quota_of(c) as usize;
        if list.len() > keep {
            let mut list = list;
            for i in (1..list.len()).rev() {
                list.swap(i, rng.random_range(0..=i));
            }
            spare.extend_from_slice(&list[keep..]);
            members.insert(c, list[..keep].to_vec());
        } else {
            members.insert(c, list);
        }
    }
    for i in (1..spare.len()).rev() {
        spare.swap(i, rng.random_range(0..=i));
    }
    let mut out = Vec::with_capacity(spare.len());
    let mut spare = spare.into_iter();
    for &(c, q, _) in &quota {
        let have = members.get(&c).map_or(0, Vec::len) as u64;
        for m in spare.by_ref().take(q.saturating_sub(have) as usize) {
            out.push((m, c));
        }
    }
    out
}

/// The `cap` most frequent typed labels (ties by label, so the choice is stable).
fn top_labels(values: &[&Value], cap: usize) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in values {
        if let Some(label) = typed_label(v) {
            *counts.entry(label).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().take(cap).map(|(l, _)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_labels_restore_the_otlp_type() {
        for v in [Value::StringValue("GET".into()), Value::IntValue(404), Value::BoolValue(true), Value::DoubleValue(1.5)] {
            assert_eq!(from_label(&typed_label(&v).unwrap()), Some(v));
        }
        assert_eq!(from_label(OTHER), Some(Value::StringValue("other".into())));
        assert_eq!(from_label(ABSENT), None);
        assert_eq!(typed_label(&Value::DoubleValue(f64::NAN)), None);
    }

    #[test]
    fn values_are_brought_to_their_shares_changing_as_few_as_it_takes() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // Ten spans: four of category 0, two of 1, four of 2 (not counted).
        let current = [0u16, 2, 0, 1, 2, 0, 2, 1, 0, 2];
        let changes = reassigned(&current, &[(0, 50), (1, 50)], &mut rng);
        let mut after = current;
        for &(m, c) in &changes {
            after[m] = c;
        }
        assert_eq!(changes.len(), 4, "only the spans of category 2 move: {changes:?}");
        assert!(changes.iter().all(|&(m, _)| current[m] == 2));
        assert_eq!((0..3).map(|c| after.iter().filter(|&&a| a == c).count()).collect::<Vec<_>>(), [5, 5, 0]);
        // Shares of a count that does not divide: largest remainders.
        let changes = reassigned(&[0; 7], &[(0, 1), (1, 1), (2, 1)], &mut rng);
        assert_eq!(changes.len(), 4);
    }

    #[test]
    fn labels_holding_their_keys_usual_value_alone_are_left_out_and_get_it_back() {
        let group = |label, failed, key, counts: &[(u16, u32)]| ValueGroup { label, failed, key, counts: counts.to_vec() };
        let groups = vec![
            // Label 0: key 0 holds category 3 alone, failed or not; key 1 varies.
            group(0, false, 0, &[(3, 40)]),
            group(0, false, 1, &[(0, 30), (1, 10)]),
            group(0, true, 0, &[(3, 2)]),
            group(0, true, 1, &[(1, 2)]),
            // Labels 1 and 2 hold category 3 of key 0 and 0 of key 1 alone.
            group(1, false, 0, &[(3, 7)]),
            group(1, false, 1, &[(0, 7)]),
            group(2, false, 0, &[(3, 9)]),
            group(2, false, 1, &[(0, 9)]),
            // Label 3 holds another category alone, but failed spans differ.
            group(3, false, 0, &[(1, 5)]),
            group(3, true, 0, &[(2, 1)]),
            group(3, false, 1, &[(0, 6)]),
        ];
        let (kept, defaults) = with_defaults(groups);
        assert_eq!(defaults, [(0, 3), (1, 0)]);
        let kept: Vec<(u32, bool, u16, Vec<(u16, u32)>)> =
            kept.into_iter().map(|g| (g.label, g.failed, g.key, g.counts)).collect();
        assert_eq!(
            kept,
            [
                (0, false, 1, vec![(0, 30), (1, 10)]),
                (0, true, 1, vec![(1, 1)]),
                (3, false, 0, vec![(1, 1)]),
                (3, true, 0, vec![(2, 1)]),
            ]
        );
        // Generation gives a left-out label its key's default.
        let schema = AttributeSchema {
            keys: vec![KeyModel {
                key: "http.method".into(),
                kind: Kind::Categorical { vocabulary: vec!["s:GET".into(), "s:POST".into()] },
            }],
        };
        let counts = ValueCounts { defaults: vec![(0, 1)], ..Default::default() };
        let value = |v: &str| Some(AnyValue { value: Some(Value::StringValue(v.into())) });
        let mut attributes: Vec<Vec<KeyValue>> =
            (0..3).map(|_| vec![KeyValue { key: "http.method".into(), value: value("GET"), ..Default::default() }]).collect();
        let mut spans: Vec<Valued> =
            attributes.iter_mut().map(|attributes| Valued { label: 5, failed: false, attributes }).collect();
        use rand::SeedableRng;
        assert_eq!(schema.calibrate(&counts, &mut spans, &mut rand::rngs::StdRng::seed_from_u64(1)), 3);
        assert!(attributes.iter().all(|a| a[0].value == value("POST")), "{attributes:?}");
    }
}
